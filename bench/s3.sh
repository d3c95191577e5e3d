#!/usr/bin/env bash
# Berth on S3 beside CNCF Distribution on S3: both registries store blobs in buckets of one S3
# server (moto's, as the tests run it), and the same client pushes and pulls the same image
# through each. Prints one table and, with --out FILE, appends it there.
#
#   bench/s3.sh                 a 1 GiB layer, 2 runs of each figure (~10 min)
#   bench/s3.sh --size-mib 64   a smaller layer, for development
#
# Figures, per registry:
#   push s        skopeo copy of a one-layer image (the layer of --size-mib) from an OCI layout,
#                 into a new repository each run with an empty skopeo cache (a full upload)
#   push MiB/s    the same, as throughput
#   push peak RSS the registry process's high-water mark of resident memory after the pushes
#   pull CPU s/GiB CPU time (all threads, from schedstat) the registry process spent while curl -L
#                 fetched the layer 5 times, per GiB: with redirects the bytes go from the bucket
#                 to the client
#
# Needs: docker-registry, skopeo, curl, python3 with moto[server] (bench and tests install
# nothing else), cargo with the wasm32-wasip2 target.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=1024
RUNS=2
OUT=""
BUILD=1
BERTH_ARGS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --berth-args) BERTH_ARGS=$2; shift ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/s3.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
log() { printf '[bench-s3 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cd "$ROOT"
if [[ $BUILD == 1 ]]; then
    log "building berth, berth-blob-s3 (wasm32-wasip2, release) and berth-runner (release)"
    cargo build --quiet --release --target wasm32-wasip2 -p berth -p berth-blob-s3
    cargo build --quiet --release -p berth-runner
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUNNER="$TARGET/release/berth-runner"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-s3.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url pid
    for _ in $(seq 1 1200); do
        curl -s -o /dev/null "$1" && return 0
        kill -0 "$2" 2>/dev/null || { echo "bench/s3.sh: a server exited:" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1; }
        sleep 0.1
    done
    echo "bench/s3.sh: $1 never answered" >&2; exit 1
}
# CPU time of every thread of the process so far, in nanoseconds (schedstat: finer than ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{sum += $1} END {print sum}'; }
PULLS=5
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

S3_PORT=$(free_port)
python3 "$ROOT/tests/fixtures/s3/moto_serve.py" 127.0.0.1 "$S3_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$S3_PORT/" "${PIDS[-1]}"
curl -sf -X PUT "http://127.0.0.1:$S3_PORT/berth" -o /dev/null
curl -sf -X PUT "http://127.0.0.1:$S3_PORT/distribution" -o /dev/null

DIST_PORT=$(free_port)
cat >"$WORK/distribution.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: bench
    secretkey: bench-secret
    region: us-east-1
    regionendpoint: http://127.0.0.1:$S3_PORT
    bucket: distribution
    secure: false
    v4auth: true
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DIST_PORT
EOF
# The AWS SDK in Distribution refuses a custom CA bundle with its transport: none is needed here.
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
DIST_PID=$!
PIDS+=("$DIST_PID")

start_berth() {
    BERTH_PORT=$(free_port)
    "$RUNNER" up --manifest "$ROOT/deploy/cluster/spin.toml" --blob-store "$TARGET/wasm32-wasip2/release/berth_blob_s3.wasm" \
        --component "$TARGET/wasm32-wasip2/release/berth.wasm" --listen "127.0.0.1:$BERTH_PORT" --data "$WORK/berth" \
        --compile-cache "$WORK/compile-cache" $BERTH_ARGS \
        --var "blob_s3_endpoint=http://127.0.0.1:$S3_PORT" --var blob_s3_bucket=berth \
        --var blob_s3_access_key_id=bench --var blob_s3_secret_access_key=bench-secret --var blob_redirect_seconds=300 \
        >>"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    PIDS+=("$BERTH_PID")
    wait_http "http://127.0.0.1:$BERTH_PORT/v2/" "$BERTH_PID"
}
# Measure the runner as it serves after its first start on a host (as bench/run.sh does): the
# first start compiles the component into the compile cache, and Cranelift's memory would count
# in its peak RSS; every later start maps the compiled code.
start_berth
kill "$BERTH_PID"
wait "$BERTH_PID" || true
start_berth
wait_http "http://127.0.0.1:$DIST_PORT/v2/" "$DIST_PID"
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
D_START=$(rss_mib "$DIST_PID"); B_START=$(rss_mib "$BERTH_PID")

log "generating a one-layer image of $SIZE_MIB MiB"
python3 "$ROOT/bench/gen_images.py" "$WORK/images" big "$((SIZE_MIB * 1024 * 1024))" >/dev/null
LAYER=$(python3 -c '
import json, sys
d = sys.argv[1]
m = json.load(open(d + "/index.json"))["manifests"][0]["digest"].split(":")[1]
print(json.load(open(d + "/blobs/sha256/" + m))["layers"][0]["digest"])' "$WORK/images/big")

# skopeo with an empty blob-info cache of its own, so that every run uploads the layer in full
# (the cache would let skopeo mount it from the previous run's repository), as bench/run.sh does.
sk() {
    local cache
    cache=$(mktemp -d "$WORK/skopeo-cache.XXXXXX")
    if [[ $(id -u) == 0 ]]; then
        mkdir -p /var/lib/containers/cache
        unshare -m sh -c 'mount --bind "$0" /var/lib/containers/cache && exec skopeo "$@"' "$cache" --insecure-policy "$@"
    else
        XDG_DATA_HOME=$cache skopeo --insecure-policy "$@"
    fi
    rm -rf "$cache"
}

declare -A PUSH_S PULL_CPU
for run in $(seq 1 "$RUNS"); do
    for reg in distribution berth; do
        port=$DIST_PORT; pid=$DIST_PID
        [[ $reg == berth ]] && { port=$BERTH_PORT; pid=$BERTH_PID; }
        start=$(date +%s.%N)
        # A repository of its own each run: the layer is not linked there, so it is uploaded again.
        sk copy --quiet --dest-tls-verify=false "oci:$WORK/images/big:v1" "docker://127.0.0.1:$port/bench/big$run:latest" >/dev/null
        end=$(date +%s.%N)
        PUSH_S[$reg]="${PUSH_S[$reg]:-} $(python3 -c "print($end - $start)")"
        before=$(cpu_ns "$pid")
        for _ in $(seq 1 $PULLS); do
            curl -sfL -o /dev/null "http://127.0.0.1:$port/v2/bench/big$run/blobs/$LAYER"
        done
        after=$(cpu_ns "$pid")
        PULL_CPU[$reg]="${PULL_CPU[$reg]:-} $(python3 -c "print(($after - $before) / 1e9 / $PULLS / ($SIZE_MIB / 1024))")"
        log "run $run $reg: push $(python3 -c "print(round($end - $start, 2))") s"
    done
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
D_PUSH=$(median "${PUSH_S[distribution]}"); B_PUSH=$(median "${PUSH_S[berth]}")
D_CPU=$(median "${PULL_CPU[distribution]}"); B_CPU=$(median "${PULL_CPU[berth]}")
D_RSS=$(peak_rss_mib "$DIST_PID"); B_RSS=$(peak_rss_mib "$BERTH_PID")
table=$(python3 - "$SIZE_MIB" "$D_PUSH" "$B_PUSH" "$D_CPU" "$B_CPU" "$D_RSS" "$B_RSS" "${PUSH_S[distribution]}" "${PUSH_S[berth]}" "$D_START" "$B_START" <<'EOF'
import sys
size, dpush, bpush, dcpu, bcpu, drss, brss, dall, ball, dstart, bstart = sys.argv[1:]
size, dpush, bpush, dcpu, bcpu, drss, brss, dstart, bstart = int(size), *map(float, (dpush, bpush, dcpu, bcpu, drss, brss, dstart, bstart))
def ratio(d, b, lower_better=True):
    if d == 0 and b == 0:
        return "="
    if b == 0:
        return "inf"
    return f"{(d / b if lower_better else b / d):.2f}"
print(f"| figure ({size} MiB layer, S3: moto on loopback) | Distribution (s3 driver) | Berth (blob-s3) | ratio (>1: Berth better) |")
print("|---|--:|--:|--:|")
print(f"| push (median), s | {dpush:.2f} | {bpush:.2f} | {ratio(dpush, bpush)} |")
print(f"| push (median), MiB/s | {size / dpush:.1f} | {size / bpush:.1f} | {ratio(dpush, bpush)} |")
print(f"| registry RSS when started, MiB | {dstart:.1f} | {bstart:.1f} | {ratio(dstart, bstart)} |")
print(f"| registry peak RSS after the pushes, MiB | {drss:.1f} | {brss:.1f} | {ratio(drss, brss)} |")
print(f"| pull (curl -L), registry CPU s per GiB | {dcpu:.4f} | {bcpu:.4f} | {ratio(dcpu, bcpu)} |")
print(f"\nall push times, s: Distribution{dall}; Berth{ball}")
EOF
)
echo "$table"
if [[ -n $OUT ]]; then
    { echo; echo "### S3 ($(date -u +%Y-%m-%d), $(nproc) cores, bench/s3.sh --size-mib $SIZE_MIB --runs $RUNS)"; echo; echo "$table"; } >>"$OUT"
fi
