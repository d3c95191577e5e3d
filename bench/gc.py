#!/usr/bin/env python3
"""Online garbage collection at scale (issue 15): a registry holding 10,000 manifests and 50,000
blobs, half of the manifests deleted, then one whole pass of `berth-runner gc`: its wall time, the
registry's peak RSS during the pass, and the throughput of pushes that run during the pass as a
share of their throughput without it (target >= 0.8). With --distribution, CNCF Distribution
gets the same content through its HTTP API and the same deletes, and its offline
`docker-registry garbage-collect` is timed on it (it needs the registry stopped or read-only).

    bench/gc.py                        10,000 manifests, 50,000 blobs (~15 min with --distribution)
    bench/gc.py --quick                1,000 manifests, 5,000 blobs (~2 min)

Options: --manifests N (each has a config and 4 layers of its own: 5 blobs), --push-seconds S
(how long each baseline push load runs, before and after the pass), --concurrency N (blobs the
registry examines at once, `berth-runner gc --concurrency`), --pace F (the share of the pass's
time spent in steps, `berth-runner gc --pace`), --blob-store fs|kv, --distribution, --runner PATH,
--component PATH, --provider PATH, --out FILE (a Markdown table is appended there).

Servers start on free loopback ports with their data in a temp dir and are stopped by PID.
Needs python3; --distribution needs docker-registry (apt-get install docker-registry).
"""

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from growth import Client, digest, expect, parallel, push_blob, start_runner  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYERS = 4


def log(msg):
    print(f"[gc {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image(client, repo, i, layer_size=256):
    """Push config and layers of image i (all its own) and its manifest by tag; its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "image": i}).encode()
    layers = [i.to_bytes(8, "big") + j.to_bytes(2, "big") + os.urandom(layer_size) for j in range(LAYERS)]
    cd = push_blob(client, repo, config)
    lds = [push_blob(client, repo, layer) for layer in layers]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(l)}
                   for d, l in zip(lds, layers)],
    }).encode()
    s, _, b = client.request("PUT", f"/v2/{repo}/manifests/t{i}", manifest, {"Content-Type": MANIFEST_TYPE})
    expect(s, 201, "manifest push", b)
    return digest(manifest)


def populate(client, manifests):
    digests = [None] * manifests

    def one(i):
        digests[i] = image(client, f"bench/app{i % 100:02d}", i)

    log(f"pushing {manifests:,} images ({manifests * (LAYERS + 1):,} blobs)")
    parallel(manifests, one, workers=8, what="images")
    log(f"deleting {manifests // 2:,} manifests")

    def delete(i):
        s, _, b = client.request("DELETE", f"/v2/bench/app{i % 100:02d}/manifests/{digests[i]}")
        expect(s, 202, "manifest delete", b)

    parallel(manifests // 2, lambda k: delete(2 * k), workers=8, what="deletes")


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class Pushes:
    """Image pushes from 4 threads (new images, into a repository of their own) until stopped."""

    def __init__(self, client, first):
        self.client, self.next, self.done = client, first, 0
        self.lock, self.stop = threading.Lock(), threading.Event()

    def worker(self):
        while not self.stop.is_set():
            with self.lock:
                i, self.next = self.next, self.next + 1
            image(self.client, "bench/load", i)
            with self.lock:
                self.done += 1

    def run_while(self, wait):
        threads = [threading.Thread(target=self.worker) for _ in range(4)]
        start = time.time()
        for t in threads:
            t.start()
        wait()
        self.stop.set()
        for t in threads:
            t.join()
        elapsed = time.time() - start
        return self.done / elapsed, elapsed


def berth(args, target):
    runner = args.runner or os.path.join(target, "release", "berth-runner")
    component = args.component or os.path.join(target, "wasm32-wasip2", "release", "berth.wasm")
    provider = args.provider or os.path.join(target, "wasm32-wasip2", "release", "berth_blob_kv.wasm")
    data = tempfile.mkdtemp(prefix="berth-gc-")
    store = ["--blob-store", provider] if args.blob_store == "kv" else []
    proc, addr = start_runner(runner, component, data, ["--var", "gc_grace_seconds=0"] + store)
    try:
        client = Client(addr)
        started = time.time()
        populate(client, args.manifests)
        log(f"populated in {time.time() - started:.0f} s; baseline pushes for {args.push_seconds} s")
        before, _ = Pushes(client, 10_000_000).run_while(lambda: time.sleep(args.push_seconds))
        log(f"baseline before: {before:.1f} images/s; garbage collection pass with pushes running")
        peak = [0]
        result = {}

        def collect():
            t = time.time()
            out = subprocess.run([runner, "gc", "--registry", f"http://{addr}", "--concurrency", str(args.concurrency),
                                  "--pace", str(args.pace)], capture_output=True, text=True)
            result["seconds"] = time.time() - t
            result["summary"] = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
            if out.returncode != 0:
                raise SystemExit(f"berth-runner gc failed: {out.stderr}")

        def sample(stop):
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid, "VmRSS:"))
                time.sleep(0.05)

        before_rss = rss_kib(proc.pid, "VmRSS:")
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(stop,))
        sampler.start()
        gc_thread = threading.Thread(target=collect)
        gc_thread.start()
        during, _ = Pushes(client, 20_000_000).run_while(gc_thread.join)
        stop.set()
        sampler.join()
        log(f"pass: {result['seconds']:.1f} s ({result['summary']}); pushes during it: {during:.1f} images/s")
        # The baseline is measured on both sides of the pass (these machines drift): their mean.
        after, _ = Pushes(client, 30_000_000).run_while(lambda: time.sleep(args.push_seconds))
        log(f"baseline after: {after:.1f} images/s")
        return {"seconds": result["seconds"], "summary": result["summary"], "peak_mib": peak[0] / 1024,
                "before_mib": before_rss / 1024, "baseline": (before + after) / 2, "before": before,
                "after": after, "during": during}
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def distribution(args):
    work = tempfile.mkdtemp(prefix="distribution-gc-")
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {work}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(f"127.0.0.1:{port}")
        for _ in range(100):
            try:
                if client.request("GET", "/v2/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        started = time.time()
        populate(client, args.manifests)
        log(f"distribution populated in {time.time() - started:.0f} s; stopping it for its offline gc")
    finally:
        proc.terminate()
        proc.wait()
    t = time.time()
    out = subprocess.run(["docker-registry", "garbage-collect", config], capture_output=True, text=True)
    seconds = time.time() - t
    shutil.rmtree(work, ignore_errors=True)
    if out.returncode != 0:
        raise SystemExit(f"garbage-collect failed: {out.stderr[-500:]}")
    log(f"distribution garbage-collect: {seconds:.1f} s")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--manifests", type=int, default=10_000)
    ap.add_argument("--push-seconds", type=int, default=20)
    ap.add_argument("--blob-store", choices=["fs", "kv"], default="fs")
    ap.add_argument("--concurrency", type=int, default=8, help="berth-runner gc --concurrency")
    ap.add_argument("--pace", type=float, default=0.5, help="berth-runner gc --pace")
    ap.add_argument("--distribution", action="store_true")
    ap.add_argument("--runner", default=None)
    ap.add_argument("--component", default=None)
    ap.add_argument("--provider", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.manifests, args.push_seconds = 1_000, 10
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    b = berth(args, target)
    d = distribution(args) if args.distribution else None
    store = "key-value provider" if args.blob_store == "kv" else "filesystem store"
    lines = [
        f"GC ({store}): {args.manifests:,} manifests, {args.manifests * (LAYERS + 1):,} blobs (each image's "
        f"own), half the manifests deleted, then one pass of `berth-runner gc` while 4 clients push new "
        f"images (`--concurrency {args.concurrency} --pace {args.pace}`). {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{platform.machine()}.",
        "",
        "| figure | value |",
        "|---|--:|",
        f"| pass wall time, s | {b['seconds']:.1f} |",
        f"| pass result | {b['summary']} |",
        f"| registry RSS before the pass, MiB | {b['before_mib']:.1f} |",
        f"| registry peak RSS during the pass, MiB | {b['peak_mib']:.1f} |",
        f"| image pushes/s without GC (mean of before and after the pass) | {b['baseline']:.1f} "
        f"({b['before']:.1f}, {b['after']:.1f}) |",
        f"| image pushes/s during the pass | {b['during']:.1f} |",
        f"| pushes during GC / without (target >= 0.8) | {b['during'] / b['baseline']:.2f} |",
    ]
    if d is not None:
        lines.append(f"| Distribution `garbage-collect` (offline, registry stopped), s | {d:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
