#!/usr/bin/env python3
"""What metrics and events cost a small request (issue 25's bound: within 5% of off), measured
A/B: two release runners at once, one as shipped and one with `--metrics-listen` and an event
endpoint (answered by bench/receiver.py), loaded in turn with wrk for several rounds, so that
the machine's drift falls on both alike. Each figure is the median over the rounds of the
requests per second; the ratio is on / off.

    bench/overhead.py [--rounds 5] [--seconds 8] [--connections 32] [--actions push]

Needs python3, wrk, and the release builds (cargo build --release -p berth-runner && cargo
build --release --target wasm32-wasip2 -p berth).
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from growth import start_runner  # bench/growth.py: the release runner on a free loopback port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(addr, method, path, body=None, headers=None):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def push_image(addr):
    """A config, a layer and a manifest in repository `bench/app`, tagged `v1`: its digest."""
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = os.urandom(4096)
    digests = []
    for blob in (config, layer):
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, body = request(addr, "POST", f"/v2/bench/app/blobs/uploads/?digest={d}", blob)
        assert status == 201, (status, body)
        digests.append((d, len(blob)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0][0],
                   "size": digests[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1][0],
                    "size": digests[1][1]}],
    }).encode()
    status, body = request(addr, "PUT", "/v2/bench/app/manifests/v1", manifest, {"Content-Type": MANIFEST_TYPE})
    assert status == 201, (status, body)
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), digests[1][0]


def wrk(url, seconds, connections):
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                          "-H", f"Accept: {MANIFEST_TYPE}", url], capture_output=True, text=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out:
        raise SystemExit(f"wrk {url}: {out}")
    return float(match.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--actions", default="push", help="the endpoint's actions (push,pull makes pulls events)")
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    runner = os.path.join(target, "release", "berth-runner")
    component = os.path.join(target, "wasm32-wasip2", "release", "berth.wasm")
    port = free_port()
    receiver = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "receiver.py"), str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    dirs = [tempfile.mkdtemp(prefix="berth-overhead-") for _ in range(2)]
    on_args = ["--metrics-listen", "127.0.0.1:0",
               "--var", f"events=hook http://127.0.0.1:{port}/ actions={args.actions}",
               "--var", f"events_outbound_hosts=http://127.0.0.1:{port}"]
    runners = {"off": start_runner(runner, component, dirs[0], []),
               "on": start_runner(runner, component, dirs[1], on_args)}
    try:
        targets = {}
        for name, (_, addr) in runners.items():
            manifest, layer = push_image(addr)
            targets[name] = {
                "manifest GET by tag": f"http://{addr}/v2/bench/app/manifests/v1",
                "manifest GET by digest": f"http://{addr}/v2/bench/app/manifests/{manifest}",
                "blob GET (4 KiB)": f"http://{addr}/v2/bench/app/blobs/{layer}",
                "GET /v2/": f"http://{addr}/v2/",
            }
        rates = {figure: {"off": [], "on": []} for figure in targets["off"]}
        for round_ in range(args.rounds):
            # Alternate which runs first, so that neither always follows the other.
            order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
            for figure in rates:
                for name in order:
                    rates[figure][name].append(wrk(targets[name][figure], args.seconds, args.connections))
            print(f"[overhead] round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        lines = [
            f"A/B, {args.rounds} rounds of {args.seconds} s per figure and runner, {args.connections} connections "
            f"(wrk), events actions={args.actions}; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores.",
            "",
            "| figure | off (median req/s) | on (median req/s) | on / off | rounds on/off, min-max |",
            "|---|--:|--:|--:|--:|",
        ]
        for figure, by in rates.items():
            off, on = statistics.median(by["off"]), statistics.median(by["on"])
            each = [b / a for a, b in zip(by["off"], by["on"])]
            lines.append(f"| {figure} | {off:,.0f} | {on:,.0f} | {on / off:.3f} | {min(each):.2f}-{max(each):.2f} |")
        print("\n".join(lines))
    finally:
        for proc, _ in runners.values():
            proc.terminate()
            proc.wait()
        receiver.terminate()
        receiver.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
