#!/usr/bin/env python3
"""Pull-through mirroring (issue 14), side by side: Berth as a mirror (`mirror_upstreams`) and CNCF
Distribution in proxy mode (`proxy: remoteurl:`), both in front of the same upstream (a
Distribution on loopback holding a 5-layer image). Figures: a cold pull (nothing cached) and a
warm pull (all cached) through each, and 20 concurrent cold pulls of a second image through each,
with the bytes each mirror fetched from the upstream (read off the upstream's access log).

    bench/mirror.py                 5 layers of 1, 4, 16, 32, 64 MiB (~3 min)
    bench/mirror.py --quick         5 layers of 64 KiB to 4 MiB (~30 s)

Options: --runner PATH, --component PATH, --concurrent N (20), --out FILE (a Markdown table is
appended there). A pull is what a client does: the manifest, then the config and the layers, 3
at a time, every byte read and hashed. Servers start on free loopback ports with their data in
temp dirs and are stopped by PID. Needs python3 and docker-registry (apt-get install
docker-registry).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from growth import Client, digest, expect, start_runner  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ACCESS = re.compile(r'"GET (/v2/[^ ]+/blobs/sha256:[0-9a-f]+) HTTP/[0-9.]+" (\d+) (\d+)')


def log(msg):
    print(f"[mirror {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distribution(work, proxy=None):
    """docker-registry on a free port (a proxy of `proxy` when given); process, address, access log."""
    os.makedirs(work, exist_ok=True)
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/data\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
        if proxy:
            f.write(f"proxy:\n  remoteurl: {proxy}\n")
    access = os.path.join(work, "access.log")
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=open(access, "w"),
                            stderr=subprocess.DEVNULL)
    client = Client(f"127.0.0.1:{port}")
    for _ in range(300):
        try:
            if client.request("GET", "/v2/")[0] == 200:
                return proc, f"127.0.0.1:{port}", access
        except OSError:
            time.sleep(0.05)
    raise SystemExit("docker-registry did not start")


def push(client, repo, sizes, seed):
    """An image of layers of the given sizes into Distribution (POST, then PUT with the bytes)."""
    def blob(data):
        d = digest(data)
        s, h, b = client.request("POST", f"/v2/{repo}/blobs/uploads/")
        expect(s, 202, "upload start", b)
        location = h.get("location") or h.get("Location")
        path = location.split("://", 1)[-1]
        path = path[path.index("/"):] if not location.startswith("/") else location
        sep = "&" if "?" in path else "?"
        s, _, b = client.request("PUT", f"{path}{sep}digest={d}", data, {"Content-Type": "application/octet-stream"})
        expect(s, 201, "upload finish", b)
        return d, len(data)

    layers = [blob(seed.to_bytes(4, "big") + i.to_bytes(4, "big") + os.urandom(size)) for i, size in enumerate(sizes)]
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    cd, cs = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in layers],
    }).encode()
    s, _, b = client.request("PUT", f"/v2/{repo}/manifests/v1", manifest, {"Content-Type": MANIFEST_TYPE})
    expect(s, 201, "manifest push", b)
    return sum(n for _, n in layers) + cs


def pull(addr, repo):
    """A client's pull: the manifest, then config and layers 3 at a time, each read and checked."""
    client = Client(addr)
    s, _, body = client.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": MANIFEST_TYPE})
    expect(s, 200, f"manifest of {repo} at {addr}", body)
    manifest = json.loads(body)
    blobs = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]

    def one(d):
        s, _, data = client.request("GET", f"/v2/{repo}/blobs/{d}")
        expect(s, 200, f"blob {d}", data[:200])
        if "sha256:" + hashlib.sha256(data).hexdigest() != d:
            raise SystemExit(f"blob {d} of {repo} at {addr} does not match its digest")
        return len(data)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        return sum(pool.map(one, blobs))


def timed(fn):
    t = time.time()
    fn()
    return time.time() - t


def fetched(access, repo):
    """Blob bytes the upstream sent for `repo`, and how many blob GETs."""
    total = gets = 0
    with open(access) as f:
        for line in f:
            m = ACCESS.search(line)
            if m and m.group(1).startswith(f"/v2/{repo}/blobs/"):
                gets += 1
                total += int(m.group(3))
    return total, gets


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--runner", default=None)
    ap.add_argument("--component", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    mib = 1024 * 1024
    sizes = [64 * 1024, 256 * 1024, mib, 2 * mib, 4 * mib] if args.quick else [mib, 4 * mib, 16 * mib, 32 * mib, 64 * mib]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    runner = args.runner or os.path.join(target, "release", "berth-runner")
    component = args.component or os.path.join(target, "wasm32-wasip2", "release", "berth.wasm")
    work = tempfile.mkdtemp(prefix="berth-mirror-bench-")
    procs = []
    try:
        up, up_addr, access = distribution(os.path.join(work, "upstream"))
        procs.append(up)
        upstream = Client(up_addr)
        image_bytes = push(upstream, "bench/warm", sizes, 1)
        push(upstream, "bench/berth", sizes, 2)
        push(upstream, "bench/dist", sizes, 3)
        log(f"upstream {up_addr}: 3 images of {image_bytes / mib:.1f} MiB")
        origin = f"http://{up_addr}"
        berth, berth_addr = start_runner(runner, component, os.path.join(work, "berth"), [
            "--var", f"mirror_upstreams=up {origin}", "--var", f"mirror_outbound_hosts={origin}"])
        procs.append(berth)
        proxy, proxy_addr, _ = distribution(os.path.join(work, "proxy"), proxy=origin)
        procs.append(proxy)
        rows = []
        for who, addr, repo in [("Berth", berth_addr, "up/bench/warm"), ("Distribution", proxy_addr, "bench/warm")]:
            cold = timed(lambda: pull(addr, repo))
            warm = min(timed(lambda: pull(addr, repo)) for _ in range(3))
            rows.append((who, cold, warm))
            log(f"{who}: cold {cold:.2f} s, warm {warm:.2f} s")
        concurrent_rows = []
        for who, addr, repo, up_repo in [("Berth", berth_addr, "up/bench/berth", "bench/berth"),
                                         ("Distribution", proxy_addr, "bench/dist", "bench/dist")]:
            t = time.time()
            with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
                list(pool.map(lambda _: pull(addr, repo), range(args.concurrent)))
            seconds = time.time() - t
            time.sleep(0.5)  # the access log is written after each response
            total, gets = fetched(access, up_repo)
            concurrent_rows.append((who, seconds, total, gets))
            log(f"{who}: {args.concurrent} cold pulls in {seconds:.1f} s; upstream sent {total / mib:.1f} MiB in {gets} blob GETs")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    (_, bc, bw), (_, dc, dw) = rows
    lines = [
        f"Mirror: a {len(sizes)}-layer image of {image_bytes / mib:.1f} MiB behind one upstream (Distribution on "
        f"loopback), pulled through Berth (`mirror_upstreams`) and through Distribution's proxy mode. "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {platform.machine()}.",
        "",
        "| figure | Berth | Distribution | Distribution / Berth |",
        "|---|--:|--:|--:|",
        f"| cold pull, s | {bc:.2f} | {dc:.2f} | {dc / bc:.2f} |",
        f"| warm pull (best of 3), s | {bw:.2f} | {dw:.2f} | {dw / bw:.2f} |",
    ]
    (_, bs, bt, bg), (_, ds, dt, dg) = concurrent_rows
    lines += [
        f"| {args.concurrent} concurrent cold pulls, s | {bs:.1f} | {ds:.1f} | {ds / bs:.2f} |",
        f"| bytes fetched from the upstream then, MiB (the image: {image_bytes / mib:.1f}) | {bt / mib:.1f} | "
        f"{dt / mib:.1f} | {dt / max(bt, 1):.2f} |",
        f"| blob GETs sent upstream then (the image has {len(sizes) + 1} blobs) | {bg} | {dg} | |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
