#!/usr/bin/env bash
# Berth side by side with CNCF Distribution: the same workload against both registries, in one
# run, on free loopback ports. Prints one table (figure, Distribution, Berth, ratio > 1 = Berth
# better) and writes it into docs/benchmarks.md with the machine and the date.
#
#   bench/run.sh            full run: 3 runs of each figure, 10 s per load test (~12 min)
#   bench/run.sh --quick    small images, 1 run, 2 s load tests: for development (~2 min)
#
# Then the seed's scenario, bench/stampede.py (also runnable alone): a fan-out of 100 and 500
# clients pulling one image over HTTP and HTTPS, and a matrix of pushes, pulls and a 75/25 mix
# (1/10/100 MB x 1/10/100 clients), Berth beside Distribution again (~15 min; --no-stampede
# skips it).
#
# Options: --runs N, --load-seconds S, --no-build (use the release builds as they are),
#          --images DIR (keep generated images there and reuse them), --out FILE (default
#          docs/benchmarks.md; --out - prints only), --keep (leave the temp dir),
#          --berth-args "..." (extra `berth-runner up` flags, e.g. "--instance-reuse 1"),
#          --no-stampede.
#
# Needs (never installed by this script; see README "Benchmarks"): docker-registry, skopeo, wrk,
# hey, python3, openssl, curl, cargo with the wasm32-wasip2 target; unshare (util-linux) when run
# as root, to give each skopeo push an empty blob-info cache.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
LOAD_SECONDS=10
QUICK=0
BUILD=1
IMAGES=""
OUT="$ROOT/docs/benchmarks.md"
KEEP=0
BERTH_ARGS=""
STAMPEDE=1
CONNECTIONS=32
PARALLEL_PULLS=8

while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; RUNS=1; LOAD_SECONDS=2 ;;
        --runs) RUNS=$2; shift ;;
        --load-seconds) LOAD_SECONDS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --images) IMAGES=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        --berth-args) BERTH_ARGS=$2; shift ;;
        --no-stampede) STAMPEDE=0 ;;
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- what this needs -------------------------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need docker-registry "Debian: apt-get install docker-registry"
need skopeo "Debian: apt-get install skopeo"
need wrk "Debian: apt-get install wrk"
need hey "Debian: apt-get install hey"
need python3 "Debian: apt-get install python3"
need openssl "Debian: apt-get install openssl"
need curl "Debian: apt-get install curl"
need cargo "rustup, with: rustup target add wasm32-wasip2"
ISOLATE_CACHE=xdg
if [[ $(id -u) == 0 ]]; then
    need unshare "Debian: apt-get install util-linux"
    ISOLATE_CACHE=unshare
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "bench/run.sh: missing tools, install them first:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

if [[ $QUICK == 1 ]]; then
    MIB=$((1024 * 1024))
    FIVE_SIZES="$((1 * MIB)),$((2 * MIB)),$((3 * MIB)),$((4 * MIB)),$((6 * MIB))"
    BIG_SIZES="$((64 * MIB))"
    MANY_COUNT=20
else
    MIB=$((1024 * 1024))
    FIVE_SIZES="$((1 * MIB)),$((10 * MIB)),$((30 * MIB)),$((60 * MIB)),$((150 * MIB))"
    BIG_SIZES="$((1024 * MIB))"
    MANY_COUNT=100
fi
# 100 small layers of 4 KiB .. 40 KiB.
MANY_SIZES=$(python3 -c "print(','.join(str(4096 * (1 + i % 10)) for i in range($MANY_COUNT)))")

# ---- build ---------------------------------------------------------------------------------
cd "$ROOT"
if [[ $BUILD == 1 ]]; then
    log "building berth (wasm32-wasip2, release) and berth-runner (release)"
    cargo build --quiet --release --target wasm32-wasip2 -p berth
    cargo build --quiet --release -p berth-runner -p berth-loadgen
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUNNER="$TARGET/release/berth-runner"
COMPONENT="$TARGET/wasm32-wasip2/release/berth.wasm"
[[ -x $RUNNER && -f $COMPONENT ]] || { echo "bench/run.sh: no release build (drop --no-build)" >&2; exit 1; }

# ---- temp dir, servers, cleanup ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # name port pid
    local i
    for i in $(seq 1 1200); do # up to 2 min: Berth compiles its component at start
        if curl -sf -o /dev/null "http://127.0.0.1:$2/v2/"; then return 0; fi
        kill -0 "$3" 2>/dev/null || { echo "bench/run.sh: $1 exited; its log:" >&2; cat "$WORK/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "bench/run.sh: $1 did not answer on port $2" >&2
    exit 1
}

DIST_PORT=$(free_port)
mkdir -p "$WORK/distribution"
cat >"$WORK/distribution/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/distribution/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$DIST_PORT
EOF
docker-registry serve "$WORK/distribution/config.yml" >"$WORK/distribution.log" 2>&1 &
DIST_PID=$!
PIDS+=("$DIST_PID")

start_berth() {
    BERTH_PORT=$(free_port)
    # shellcheck disable=SC2086  # BERTH_ARGS is a list of flags
    "$RUNNER" up --manifest "$ROOT/spin.toml" --component "$COMPONENT" --listen "127.0.0.1:$BERTH_PORT" \
        --data "$WORK/berth-data" --compile-cache "$WORK/compile-cache" $BERTH_ARGS >>"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    PIDS+=("$BERTH_PID")
    wait_ready berth "$BERTH_PORT" "$BERTH_PID"
}
# Measure the runner as it serves after its first start on a host: the first start compiles the
# component into the compile cache, every later one maps the compiled code from there.
start_berth
kill "$BERTH_PID"
wait "$BERTH_PID" || true
start_berth

wait_ready distribution "$DIST_PORT" "$DIST_PID"
log "distribution: pid $DIST_PID on 127.0.0.1:$DIST_PORT; berth: pid $BERTH_PID on 127.0.0.1:$BERTH_PORT"

# ---- test images ---------------------------------------------------------------------------
IMG=${IMAGES:-$WORK/images}
mkdir -p "$IMG"
declare -A IMAGE_BYTES
for spec in "five:$FIVE_SIZES" "big:$BIG_SIZES" "many:$MANY_SIZES"; do
    name=${spec%%:*}
    sizes=${spec#*:}
    key=$(printf '%s' "$sizes" | sha256sum | cut -c1-16)
    if [[ -f $IMG/$name.$key.bytes ]]; then
        IMAGE_BYTES[$name]=$(cat "$IMG/$name.$key.bytes")
    else
        log "generating image $name"
        rm -rf "${IMG:?}/$name"
        IMAGE_BYTES[$name]=$(python3 "$ROOT/bench/gen_images.py" "$IMG" "$name" "$sizes")
        echo "${IMAGE_BYTES[$name]}" >"$IMG/$name.$key.bytes"
    fi
done
manifest_digest() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$IMG/$1/index.json"; }
first_layer() {
    python3 -c '
import json, sys
d = sys.argv[1]
m = json.load(open(d + "/index.json"))["manifests"][0]["digest"].split(":")[1]
print(json.load(open(d + "/blobs/sha256/" + m))["layers"][0]["digest"])' "$IMG/$1"
}
FIVE_MANIFEST=$(manifest_digest five)
FIVE_LAYER=$(first_layer five)

# ---- measuring helpers -----------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # figure registry run value

# skopeo with an empty blob-info cache of its own, so a push really uploads every blob (the cache
# would let skopeo skip blobs it knows, or mount them from another repository).
sk() {
    local cache
    cache=$(mktemp -d "$WORK/skopeo-cache.XXXXXX")
    if [[ $ISOLATE_CACHE == unshare ]]; then
        mkdir -p /var/lib/containers/cache
        unshare -m sh -c 'mount --bind "$0" /var/lib/containers/cache && exec skopeo "$@"' "$cache" \
            --insecure-policy "$@"
    else
        XDG_DATA_HOME=$cache skopeo --insecure-policy "$@"
    fi
    rm -rf "$cache"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.4f}')" "$1" "$2"; }
# CPU seconds (user + system, all threads) the process has used so far.
cpu_seconds() {
    python3 -c '
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))' "$1"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Peak RSS while a command runs (in this shell, so `timed` still sets TIMED_S): reset the
# high-water mark (clear_refs 5) where the kernel allows it, and also poll VmRSS every 20 ms.
# Sets PEAK_RSS_MIB to the larger of the two.
PEAK_RSS_MIB=0
peak_rss_during() { # pid command...
    local pid=$1 poll_file="$WORK/rss-poll" poller reset_hwm hwm polled
    shift
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    reset_hwm=$(status_kib "$pid" VmHWM)
    (
        max=0
        while kill -0 "$pid" 2>/dev/null; do
            r=$(status_kib "$pid" VmRSS)
            if ((r > max)); then max=$r; echo "$max" >"$poll_file"; fi
            sleep 0.02
        done
    ) &
    poller=$!
    "$@"
    kill "$poller" 2>/dev/null || true
    wait "$poller" 2>/dev/null || true
    hwm=$(status_kib "$pid" VmHWM)
    polled=$(cat "$poll_file" 2>/dev/null || echo 0)
    rm -f "$poll_file"
    # If the reset did not take, VmHWM is the peak since start: then trust the polled peak.
    if [[ $hwm == "$reset_hwm" && $reset_hwm -gt $polled ]]; then hwm=$polled; fi
    PEAK_RSS_MIB=$(python3 -c "import sys; print(f'{max(int(sys.argv[1]), int(sys.argv[2])) / 1024:.1f}')" "$hwm" "$polled")
}

TIMED_S=0
timed() { # command... ; sets TIMED_S to its wall time in seconds
    local t0 t1
    t0=$(now)
    "$@"
    t1=$(now)
    TIMED_S=$(elapsed "$t0" "$t1")
}

mbps() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e6 / float(sys.argv[2]):.1f}')" "$1" "$2"; }
per_gib() { python3 -c "import sys; print(f'{float(sys.argv[1]) / (int(sys.argv[2]) / 2**30):.2f}')" "$1" "$2"; }

push() { # image dest-ref
    sk copy --quiet --dest-tls-verify=false "oci:$IMG/$1:v1" "docker://$2" >/dev/null
}
pull() { # src-ref dir
    rm -rf "$2"
    sk copy --quiet --src-tls-verify=false "docker://$1" "dir:$2" >/dev/null
}

# Load test of one URL: requests/s, p50 ms, p99 ms (tab-separated). GETs with wrk (lightest on
# two cores); HEADs with hey, since wrk waits for a body after a HEAD answer.
load() { # method url [header]
    local method=$1 url=$2 header=${3:-} out="$WORK/load.out"
    if [[ $method == GET ]]; then
        local args=(-t 2 -c "$CONNECTIONS" -d "${LOAD_SECONDS}s" --latency)
        [[ -n $header ]] && args+=(-H "$header")
        wrk "${args[@]}" "$url" >"$out"
        python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s|m)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[unit]
if "Non-2xx" in text or "Socket errors" in text:
    sys.exit("load test saw errors:\n" + text)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\n\s+50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\n\s+99%\s+(\S+)", text).group(1))
print(f"{rps:.0f}\t{p50:.3f}\t{p99:.3f}")
PY
    else
        local args=(-z "${LOAD_SECONDS}s" -c "$CONNECTIONS" -m "$method")
        [[ -n $header ]] && args+=(-H "$header")
        hey "${args[@]}" "$url" >"$out"
        python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
codes = re.findall(r"\[(\d+)\]\s+\d+ responses", text)
if not codes or any(c != "200" for c in codes) or "Error distribution" in text:
    sys.exit("load test saw errors:\n" + text)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = float(re.search(r"50% in ([\d.]+) secs", text).group(1)) * 1e3
p99 = float(re.search(r"99% in ([\d.]+) secs", text).group(1)) * 1e3
print(f"{rps:.0f}\t{p50:.3f}\t{p99:.3f}")
PY
    fi
}

# ---- the workload ------------------------------------------------------------------------------
workload() { # registry pid port run
    local reg=$1 pid=$2 port=$3 run=$4
    local host="127.0.0.1:$port" repo="bench/run$run" c0 c1 t
    local pulled="$WORK/pulled"

    log "$reg run $run: push + pull of the 5-layer image"
    timed push five "$host/$repo/five:v1"
    record push_five_mbps "$reg" "$run" "$(mbps "${IMAGE_BYTES[five]}" "$TIMED_S")"
    record push_five_s "$reg" "$run" "$TIMED_S"
    # skopeo pushed the layout's bytes unchanged (no recompression), so the digest URL is right.
    local served
    served=$(curl -sfI -H "Accept: application/vnd.oci.image.manifest.v1+json" \
        "http://$host/v2/$repo/five/manifests/v1" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
    if [[ $served != "$FIVE_MANIFEST" ]]; then
        echo "bench/run.sh: $reg serves manifest $served for the 5-layer image, expected $FIVE_MANIFEST" >&2
        exit 1
    fi
    timed pull "$host/$repo/five:v1" "$pulled"
    record pull_five_mbps "$reg" "$run" "$(mbps "${IMAGE_BYTES[five]}" "$TIMED_S")"
    record pull_five_s "$reg" "$run" "$TIMED_S"
    rm -rf "$pulled"

    log "$reg run $run: push + pull of the 1 GiB layer"
    c0=$(cpu_seconds "$pid")
    peak_rss_during "$pid" timed push big "$host/$repo/big:v1"
    c1=$(cpu_seconds "$pid")
    record peak_rss_push_big "$reg" "$run" "$PEAK_RSS_MIB"
    record cpu_push_per_gib "$reg" "$run" "$(per_gib "$(elapsed "$c0" "$c1")" "${IMAGE_BYTES[big]}")"
    record push_big_mbps "$reg" "$run" "$(mbps "${IMAGE_BYTES[big]}" "$TIMED_S")"
    record push_big_s "$reg" "$run" "$TIMED_S"
    c0=$(cpu_seconds "$pid")
    timed pull "$host/$repo/big:v1" "$pulled"
    c1=$(cpu_seconds "$pid")
    record cpu_pull_per_gib "$reg" "$run" "$(per_gib "$(elapsed "$c0" "$c1")" "${IMAGE_BYTES[big]}")"
    record pull_big_mbps "$reg" "$run" "$(mbps "${IMAGE_BYTES[big]}" "$TIMED_S")"
    record pull_big_s "$reg" "$run" "$TIMED_S"
    rm -rf "$pulled"

    log "$reg run $run: push of the $MANY_COUNT-layer image"
    timed push many "$host/$repo/many:v1"
    record push_many_s "$reg" "$run" "$TIMED_S"

    log "$reg run $run: $PARALLEL_PULLS parallel pulls of the 5-layer image"
    local t0 t1 i pids=()
    t0=$(now)
    for i in $(seq 1 "$PARALLEL_PULLS"); do
        pull "$host/$repo/five:v1" "$pulled.$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    t1=$(now)
    t=$(elapsed "$t0" "$t1")
    record parallel_pull_mbps "$reg" "$run" "$(mbps $((PARALLEL_PULLS * IMAGE_BYTES[five])) "$t")"
    rm -rf "$pulled".*

    log "$reg run $run: load tests, $CONNECTIONS connections, ${LOAD_SECONDS}s each"
    local accept="Accept: application/vnd.oci.image.manifest.v1+json"
    local name method path header r
    while IFS='|' read -r name method path header; do
        r=$(load "$method" "http://$host$path" "$header")
        record "${name}_rps" "$reg" "$run" "$(cut -f1 <<<"$r")"
        record "${name}_p50" "$reg" "$run" "$(cut -f2 <<<"$r")"
        record "${name}_p99" "$reg" "$run" "$(cut -f3 <<<"$r")"
    done <<EOF
manifest_get_tag|GET|/v2/$repo/five/manifests/v1|$accept
manifest_get_digest|GET|/v2/$repo/five/manifests/$FIVE_MANIFEST|$accept
manifest_head|HEAD|/v2/$repo/five/manifests/v1|$accept
blob_head|HEAD|/v2/$repo/five/blobs/$FIVE_LAYER|
tags_list|GET|/v2/$repo/five/tags/list|
base|GET|/v2/|
EOF
}

for run in $(seq 1 "$RUNS"); do
    # Alternate who goes first, so neither always meets a warmer (or cooler) page cache.
    if ((run % 2 == 1)); then
        workload distribution "$DIST_PID" "$DIST_PORT" "$run"
        workload berth "$BERTH_PID" "$BERTH_PORT" "$run"
    else
        workload berth "$BERTH_PID" "$BERTH_PORT" "$run"
        workload distribution "$DIST_PID" "$DIST_PORT" "$run"
    fi
done

# ---- report ----------------------------------------------------------------------------------
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "cpu_flags=$(grep -o -m1 -w -e sha_ni -e avx2 /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "memory=$(free -h | awk '/^Mem:/ { print $2 }')"
    echo "kernel=$(uname -sr)"
    echo "distribution=$(docker-registry --version 2>&1 | head -1)"
    echo "skopeo=$(skopeo --version)"
    echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "berth=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "berth_args=$BERTH_ARGS"
    echo "runs=$RUNS"
    echo "load_seconds=$LOAD_SECONDS"
    echo "connections=$CONNECTIONS"
    echo "quick=$QUICK"
    echo "five_bytes=${IMAGE_BYTES[five]}"
    echo "big_bytes=${IMAGE_BYTES[big]}"
    echo "many_bytes=${IMAGE_BYTES[many]}"
    echo "many_count=$MANY_COUNT"
} >"$WORK/meta.txt"
if [[ $QUICK == 1 && $OUT == "$ROOT/docs/benchmarks.md" ]]; then OUT=-; fi
python3 "$ROOT/bench/report.py" "$RESULTS" "$WORK/meta.txt" "$OUT"

if [[ $STAMPEDE == 1 ]]; then
    log "the stampede: fan-out and matrix (bench/stampede.py)"
    stampede=(--out "$OUT")
    [[ $QUICK == 1 ]] && stampede+=(--quick)
    # shellcheck disable=SC2086  # BERTH_ARGS is a list of flags
    python3 "$ROOT/bench/stampede.py" "${stampede[@]}" --berth-args "$BERTH_ARGS"
fi
