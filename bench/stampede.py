#!/usr/bin/env python3
"""The seed's scenario beside CNCF Distribution: hundreds of nodes pulling one image at once
(the fan-out), and a zb-like matrix of pushes and pulls. Both registries run here, on free
loopback ports, and are loaded by bench/loadgen (one thread, a connection per client, bodies
counted and dropped), whose CPU is reported beside the registry's.

    bench/stampede.py [--clients 100,500] [--image-mib 100] [--protocols http,https]
                      [--matrix-sizes-mib 1,10,100] [--matrix-concurrency 1,10,100]
                      [--matrix-budget-mib 512] [--no-fanout] [--no-matrix] [--quick]
                      [--out docs/benchmarks.md | -]

Fan-out: each client GETs the manifest by tag, the config and the 5 layers, over a connection of
its own; figures per (clients, protocol, registry): throughput, registry CPU seconds per GiB
served, client CPU per GiB, time to the first byte of each body p50/p99 over all requests, and the registry's
peak RSS split into anonymous and file-backed memory (polled every 20 ms from /proc).

Matrix: per blob size, concurrency and operation (push; pull; mix = three pulls to one push),
max(concurrency, budget / size) operations; MB/s, latency p50/p99 and registry CPU per GiB.
Each (registry, size) row starts from empty storage, so pushed bytes never pile up on disk.

BERTH_RUNNER=path runs another berth-runner build (e.g. one from before a change) in place of
target/release's.

Needs: docker-registry (Debian), openssl, and the release builds: cargo build --release -p
berth-runner -p berth-loadgen && cargo build --release --target wasm32-wasip2 -p berth.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
RUNNER = os.environ.get('BERTH_RUNNER') or os.path.join(TARGET, 'release', 'berth-runner')
LOADGEN = os.path.join(TARGET, "release", "berth-loadgen")
COMPONENT = os.path.join(TARGET, "wasm32-wasip2", "release", "berth.wasm")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
# Extra `berth-runner up` flags (--berth-args), e.g. "--blob-bodies component".
BERTH_ARGS = []
MIB = 1024 * 1024
GIB = 1024 * MIB
# The 5 layers' shares of the image, as in bench/run.sh's 5-layer image (1, 10, 30, 60, 150).
LAYER_SHARES = [1, 10, 30, 60, 150]


def log(*words):
    print(f"[stampede {time.strftime('%H:%M:%S')}]", *words, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(work):
    """A CA, and a certificate for 127.0.0.1 it signs: (ca, cert, key) paths."""
    ca_key, ca, key, csr, cert = (os.path.join(work, n) for n in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    ext = os.path.join(work, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=stampede CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return ca, cert, key


class Registry:
    """One registry process: Distribution or Berth, over HTTP or HTTPS, with storage of its own."""

    def __init__(self, kind, protocol, work, certs):
        self.kind, self.protocol, self.certs = kind, protocol, certs
        self.data = tempfile.mkdtemp(prefix=f"{kind}-{protocol}-", dir=work)
        self.port = free_port()
        self.base = f"{protocol}://127.0.0.1:{self.port}"
        self.ca = certs[0] if protocol == "https" else None
        if kind == "distribution":
            config = os.path.join(self.data, "config.yml")
            tls = (f"  tls:\n    certificate: {certs[1]}\n    key: {certs[2]}\n" if protocol == "https" else "")
            with open(config, "w") as f:
                f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                        f"  filesystem:\n    rootdirectory: {self.data}/store\n  delete:\n    enabled: true\n"
                        f"  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: 127.0.0.1:{self.port}\n{tls}")
            command = ["docker-registry", "serve", config]
        else:
            command = [RUNNER, "up", "--manifest", os.path.join(ROOT, "spin.toml"), "--component", COMPONENT,
                       "--listen", f"127.0.0.1:{self.port}", "--data", os.path.join(self.data, "store"),
                       "--compile-cache", os.path.join(work, "compile-cache")]
            if protocol == "https":
                command += ["--tls-cert", certs[1], "--tls-key", certs[2]]
            command += BERTH_ARGS
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.context = ssl.create_default_context(cafile=self.ca) if self.ca else None
        deadline = time.time() + 120
        while True:
            try:
                self.request("GET", "/v2/")
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"{kind} over {protocol} did not start")
                time.sleep(0.05)

    def request(self, method, path, body=None, headers=None):
        req = urllib.request.Request(path if path.startswith("http") else self.base + path, data=body,
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=600) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202, (self.kind, status, body)
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        status, _, body = self.request("PUT", f"{location}{sep}digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, (self.kind, status, body)
        return digest

    def push_image(self, repo, layers):
        """Config, layers and manifest, tagged v1: the URLs a node pulling it GETs, in order."""
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        config_digest = self.push_blob(repo, config)
        layer_digests = [self.push_blob(repo, layer) for layer in layers]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(b)}
                       for d, b in zip(layer_digests, layers)],
        }).encode()
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/v1", manifest, {"Content-Type": MANIFEST_TYPE})
        assert status == 201, (self.kind, status, body)
        blobs = [config_digest] + layer_digests
        return [f"{self.base}/v2/{repo}/manifests/v1"] + [f"{self.base}/v2/{repo}/blobs/{d}" for d in blobs]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid):
    values = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def load(registry, args):
    """Run berth-loadgen against the registry; its report with the registry's CPU and memory."""
    pid = registry.proc.pid
    command = [LOADGEN] + args + (["--ca", registry.ca] if registry.ca else [])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    # The setup (clients made, blobs to pull pushed) is not measured: CPU counts from here.
    if proc.stdout.readline().strip() != b"ready":
        proc.wait()
        raise SystemExit(f"berth-loadgen {' '.join(args[:3])} against {registry.kind} failed in its setup")
    cpu0, client0 = cpu_seconds(pid), cpu_seconds(proc.pid)
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM
    except OSError:
        pass
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for key, value in status_kib(pid).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)
            stop.wait(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu1 = cpu_seconds(pid)
    stop.set()
    poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"berth-loadgen {' '.join(args[:3])} against {registry.kind} failed")
    report = json.loads(out)
    if report["errors"]:
        raise SystemExit(f"{registry.kind}: {report['errors']} errors, the first: {report['first_error']}")
    gib = report["bytes"] / GIB
    report.update(
        registry_cpu_per_gib=(cpu1 - cpu0) / gib,
        client_cpu_per_gib=(usage.ru_utime + usage.ru_stime - client0) / gib,
        gbps=report["bytes"] / 1e9 / report["seconds"],
        peak_anon_mib=peaks["RssAnon"] / 1024,
        peak_file_mib=peaks["RssFile"] / 1024,
        hwm_mib=max(status_kib(pid)["VmHWM"], peaks["VmRSS"]) / 1024,
    )
    return report


def fanout(work, certs, clients_list, protocols, image_mib, runs):
    total = sum(LAYER_SHARES)
    layers = [os.urandom(max(1, image_mib * MIB * share // total)) for share in LAYER_SHARES]
    results = []
    for protocol in protocols:
        registries = {kind: Registry(kind, protocol, work, certs) for kind in ("distribution", "berth")}
        try:
            urls = {kind: r.push_image("stampede/app", layers) for kind, r in registries.items()}
            for clients in clients_list:
                for run in range(runs):
                    # Alternate who goes first: neither always meets a warmer page cache.
                    order = ["distribution", "berth"] if run % 2 == 0 else ["berth", "distribution"]
                    for kind in order:
                        log(f"fan-out: {clients} clients, {protocol}, {kind}, run {run + 1}/{runs}")
                        report = load(registries[kind], ["fanout", "--clients", str(clients)] + urls[kind])
                        report.update(kind=kind, protocol=protocol, clients=clients, run=run)
                        results.append(report)
        finally:
            for r in registries.values():
                r.stop()
    return results


def matrix(work, certs, sizes_mib, concurrencies, budget_mib, runs):
    results = []
    for size_mib in sizes_mib:
        size = int(size_mib * MIB)
        for kind in ("distribution", "berth"):
            registry = Registry(kind, "http", work, certs)
            try:
                for concurrency in concurrencies:
                    ops = max(concurrency, -(-budget_mib * MIB // size))
                    for op in ("push", "pull", "mix"):
                        for run in range(runs):
                            log(f"matrix: {kind} {op} {size_mib} MiB x {concurrency}, {ops} operations")
                            report = load(registry, ["matrix", "--base", registry.base, "--repo", "stampede/matrix",
                                                     "--op", op, "--size", str(size), "--concurrency",
                                                     str(concurrency), "--ops", str(ops)])
                            report.update(kind=kind, op=op, size_mib=size_mib, concurrency=concurrency, run=run)
                            results.append(report)
            finally:
                registry.stop()
    return results


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def fanout_table(results, image_mib):
    lines = [
        f"Each client pulls a {image_mib} MiB image (manifest, config, 5 layers) over a connection of its own. "
        "CPU is per GiB served; RSS is the registry's peak, anonymous and file-backed.",
        "",
        "| clients | protocol | registry | GB/s | registry CPU-s/GiB | client CPU-s/GiB | TTFB p50 / p99 ms "
        "| peak RssAnon MiB | peak RssFile MiB | Distribution/Berth CPU per GiB |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    keys = sorted({(r["clients"], r["protocol"]) for r in results}, key=lambda k: (k[1], k[0]))
    for clients, protocol in keys:
        by = {kind: [r for r in results if (r["clients"], r["protocol"], r["kind"]) == (clients, protocol, kind)]
              for kind in ("distribution", "berth")}
        ratio = median(by["distribution"], "registry_cpu_per_gib") / median(by["berth"], "registry_cpu_per_gib")
        for kind, rows in by.items():
            lines.append(
                f"| {clients} | {protocol} | {kind} | {median(rows, 'gbps'):.2f} | "
                f"{median(rows, 'registry_cpu_per_gib'):.3f} | {median(rows, 'client_cpu_per_gib'):.3f} | "
                f"{median(rows, 'p50_ms'):.1f} / {median(rows, 'p99_ms'):.1f} | {median(rows, 'peak_anon_mib'):.0f} | "
                f"{median(rows, 'peak_file_mib'):.0f} | {f'{ratio:.2f}' if kind == 'berth' else ''} |")
    return lines


def matrix_table(results):
    lines = [
        "| op | size MiB | concurrency | Distribution MB/s | Berth MB/s | Berth/Distribution | "
        "p99 ms Distribution / Berth | registry CPU-s/GiB Distribution / Berth | client CPU-s/GiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    keys = sorted({(r["op"], r["size_mib"], r["concurrency"]) for r in results},
                  key=lambda k: (["push", "pull", "mix"].index(k[0]), k[1], k[2]))
    for op, size_mib, concurrency in keys:
        by = {kind: [r for r in results if (r["op"], r["size_mib"], r["concurrency"], r["kind"]) ==
                     (op, size_mib, concurrency, kind)] for kind in ("distribution", "berth")}
        mbps = {kind: statistics.median(r["bytes"] / 1e6 / r["seconds"] for r in rows) for kind, rows in by.items()}
        lines.append(
            f"| {op} | {size_mib:g} | {concurrency} | {mbps['distribution']:.0f} | {mbps['berth']:.0f} | "
            f"{mbps['berth'] / mbps['distribution']:.2f} | {median(by['distribution'], 'p99_ms'):.0f} / "
            f"{median(by['berth'], 'p99_ms'):.0f} | {median(by['distribution'], 'registry_cpu_per_gib'):.2f} / "
            f"{median(by['berth'], 'registry_cpu_per_gib'):.2f} | {median(by['berth'], 'client_cpu_per_gib'):.2f} |")
    return lines


def write(out, lines):
    text = "\n".join(lines) + "\n"
    if out == "-":
        print(text)
        return
    doc = open(out).read()
    begin, end = "<!-- stampede:begin -->", "<!-- stampede:end -->"
    if begin in doc:
        doc = doc[:doc.index(begin)] + begin + "\n" + text + doc[doc.index(end):]
    else:
        doc += f"\n## The stampede (`bench/stampede.py`, also run by `bench/run.sh`)\n\n{begin}\n{text}{end}\n"
    open(out, "w").write(doc)
    log(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="100,500")
    ap.add_argument("--protocols", default="http,https")
    ap.add_argument("--image-mib", type=int, default=100)
    ap.add_argument("--matrix-sizes-mib", default="1,10,100")
    ap.add_argument("--matrix-concurrency", default="1,10,100")
    ap.add_argument("--matrix-budget-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-fanout", action="store_true")
    ap.add_argument("--no-matrix", action="store_true")
    ap.add_argument("--berth-args", default="", help='extra berth-runner flags, e.g. "--blob-bodies component"')
    ap.add_argument("--quick", action="store_true", help="small sizes: for development")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    args = ap.parse_args()
    BERTH_ARGS.extend(args.berth_args.split())
    if args.quick:
        args.image_mib, args.matrix_sizes_mib, args.matrix_budget_mib = 10, "0.1,1,10", 32
        if args.out.endswith("benchmarks.md"):
            args.out = "-"
    for tool in (RUNNER, LOADGEN, COMPONENT):
        if not os.path.exists(tool):
            raise SystemExit(f"bench/stampede.py: no {tool} (see --help for the builds)")
    if not shutil.which("docker-registry"):
        raise SystemExit("bench/stampede.py: needs docker-registry (Debian: apt-get install docker-registry)")
    work = tempfile.mkdtemp(prefix="berth-stampede-")
    try:
        certs = make_certs(work)
        lines = [f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
                 f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}; "
                 f"runs={args.runs} (medians){'; berth-runner ' + args.berth_args if args.berth_args else ''}.", ""]
        if not args.no_fanout:
            clients = [int(c) for c in args.clients.split(",")]
            results = fanout(work, certs, clients, args.protocols.split(","), args.image_mib, args.runs)
            lines += ["### Fan-out", ""] + fanout_table(results, args.image_mib) + [""]
        if not args.no_matrix:
            sizes = [float(s) for s in args.matrix_sizes_mib.split(",")]
            concurrencies = [int(c) for c in args.matrix_concurrency.split(",")]
            results = matrix(work, certs, sizes, concurrencies, args.matrix_budget_mib, args.runs)
            lines += ["### Push, pull and a 75/25 mix (HTTP)", ""] + matrix_table(results) + [""]
        write(args.out, lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
