#!/usr/bin/env python3
"""Costs bounded by the page, not by history (issue 11): how long a page of a listing, an upload
POST and the web UI's first page of tags (issue 26: a repository of 100,000 tags beside one of
ten) take in a registry with a large repository and many repositories, before and after 10 GiB
of unrelated chunked blobs are pushed into it. Berth is measured against itself: the figure is the
ratio (with history) / (without), and the target is <= 2.

    bench/growth.py                      100,000 tags, 10,000 repositories, 10 GiB (~25 min)
    bench/growth.py --quick              2,000 tags, 500 repositories, 512 MiB (~1 min)

Options: --tags N, --repos N, --history-gib G, --chunk-mib M, --requests N (per figure),
--blob-store fs|kv (kv: the key-value blob provider composed in, as under `spin up`; its
objects, chunks and indexes then all live in the runner's SQLite key-value store),
--provider PATH, --runner PATH, --component PATH, --keep (leave the data dir), --out FILE (a
Markdown table is appended there; default: printed only).

The registry is the release build of berth-runner serving the release component on a free
loopback port, its data in a temp dir, stopped by PID at the end. Needs only python3 (stdlib).
"""

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def log(msg):
    print(f"[growth {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, addr):
        self.host, self.port = addr.split(":")
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=300)
        return c

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                c = self.conn()
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
            except (http.client.HTTPException, ConnectionError):
                self.local.conn = None
                if attempt:
                    raise


def start_runner(runner, component, data, extra):
    """berth-runner serving the component on a free loopback port: the process and its address."""
    proc = subprocess.Popen([runner, "up", "--manifest", os.path.join(ROOT, "spin.toml"), "--component", component,
                             "--listen", "127.0.0.1:0", "--data", data] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("berth-runner: serving"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, line.rsplit("://", 1)[1].strip()
    proc.wait()
    raise SystemExit("berth-runner did not start")


def expect(status, want, what, body=b""):
    if status != want:
        raise SystemExit(f"{what}: HTTP {status}, wanted {want}: {body[:300]!r}")


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_blob(client, repo, data):
    d = digest(data)
    s, _, b = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
    expect(s, 201, f"push blob to {repo}", b)
    return d


def seed_image(client):
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = os.urandom(4096)
    cd, ld = push_blob(client, "big", config), push_blob(client, "big", layer)
    for repo in ("small", "page"):
        push_blob(client, repo, config), push_blob(client, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}],
    }).encode()
    return manifest, ld


def parallel(n, fn, workers=8, what=""):
    done = 0
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, range(n)):
            done += 1
            if done % max(1, n // 10) == 0:
                log(f"  {what}: {done}/{n} ({done / (time.time() - start):.0f}/s)")


def populate(client, tags, repos):
    manifest, layer = seed_image(client)
    log(f"pushing {tags} tags to repository big")

    def tag(i):
        s, _, b = client.request("PUT", f"/v2/big/manifests/t{i:07d}", manifest, {"Content-Type": MANIFEST_TYPE})
        expect(s, 201, "tag push", b)

    parallel(tags, tag, what="tags")
    # Repositories of ten tags and of one page of them (50): the web UI's first page of tags is
    # measured against them (its rows cost the same whatever the repository holds beyond them).
    for repo, count in (("small", 10), ("page", 50)):
        for i in range(count):
            s, _, b = client.request("PUT", f"/v2/{repo}/manifests/t{i:07d}", manifest, {"Content-Type": MANIFEST_TYPE})
            expect(s, 201, "tag push", b)
    log(f"creating {repos} repositories (cross-repository mounts)")

    def repo(i):
        s, _, b = client.request("POST", f"/v2/team{i % 97:02d}/app{i:06d}/blobs/uploads/?mount={layer}&from=big")
        expect(s, 201, "mount", b)

    parallel(repos, repo, what="repositories")


def push_history(client, gib, chunk_mib):
    """`gib` GiB of unrelated blobs, each pushed in chunks of `chunk_mib` MiB (PATCH, then PUT)."""
    chunk = chunk_mib << 20
    per_blob = 16
    blobs = max(1, (gib << 30) // (chunk * per_blob))
    log(f"pushing {blobs} chunked blobs of {per_blob} x {chunk_mib} MiB into repository history")
    base = os.urandom(chunk)

    def blob(i):
        h = hashlib.sha256()
        s, hdr, b = client.request("POST", "/v2/history/blobs/uploads/")
        expect(s, 202, "open session", b)
        location = hdr["location"]
        for j in range(per_blob):
            data = (i * per_blob + j).to_bytes(8, "big") + base[8:]
            h.update(data)
            start = j * chunk
            s, hdr, b = client.request("PATCH", location, data,
                                       {"Content-Range": f"{start}-{start + chunk - 1}",
                                        "Content-Type": "application/octet-stream"})
            expect(s, 202, "patch", b)
            location = hdr["location"]
        sep = "&" if "?" in location else "?"
        s, _, b = client.request("PUT", f"{location}{sep}digest=sha256:{h.hexdigest()}")
        expect(s, 201, "finish", b)

    parallel(blobs, blob, workers=2, what="history blobs")
    return blobs * per_blob


def timed(client, n, method, path_fn, want):
    times = []
    for i in range(n):
        path = path_fn(i)
        t = time.perf_counter()
        s, hdr, b = client.request(method, path)
        times.append(time.perf_counter() - t)
        expect(s, want, f"{method} {path}", b)
        if method == "POST":
            # Leave no open session behind (it would stay in the sweep's index for a day).
            s, _, b = client.request("DELETE", hdr["location"])
            expect(s, 204, "cancel", b)
    return statistics.median(times) * 1000


def session_count(data, blob_store):
    """Sessions in the sweep's index (`index/uploads/<id>` objects)."""
    if blob_store == "kv":
        import sqlite3
        db = sqlite3.connect(os.path.join(data, "kv", "default.db"))
        try:
            return db.execute("SELECT count(*) FROM kv WHERE key >= 'blob-kv/obj/index/uploads/' "
                              "AND key < 'blob-kv/obj/index/uploads0'").fetchone()[0]
        finally:
            db.close()
    index = os.path.join(data, "blobs", "index", "uploads")
    return len(os.listdir(index)) if os.path.isdir(index) else 0


def settle(client, data, blob_store):
    """Wait out the grace time of the sessions the history push finished (60 s), then drive the
    sweep (one step per upload POST) until the index holds no more than one step's worth."""
    count = lambda: session_count(data, blob_store)
    log(f"settling: {count()} sessions in the sweep's index; waiting 61 s for their grace time")
    time.sleep(61)
    steps = 0
    while count() > 16 and steps < 5000:
        s, hdr, b = client.request("POST", "/v2/sweep/blobs/uploads/")
        expect(s, 202, "open session", b)
        client.request("DELETE", hdr["location"])
        steps += 1
    log(f"settled after {steps} sweep steps: {count()} sessions in the index")


def measure(client, tags, repos, n):
    mid_tag = f"t{tags // 2:07d}"
    mid_repo = f"team{(repos // 2) % 97:02d}/app{repos // 2:06d}"
    figures = {
        "tags/list first page (n=100)": timed(client, n, "GET", lambda i: "/v2/big/tags/list?n=100", 200),
        "tags/list middle page (n=100)":
            timed(client, n, "GET", lambda i: f"/v2/big/tags/list?n=100&last={mid_tag}", 200),
        "_catalog first page (n=100)": timed(client, n, "GET", lambda i: "/v2/_catalog?n=100", 200),
        "_catalog middle page (n=100)":
            timed(client, n, "GET", lambda i: "/v2/_catalog?n=100&last=" + urllib.parse.quote(mid_repo, safe=""), 200),
        "upload POST (one sweep step)": timed(client, n, "POST", lambda i: "/v2/sweep/blobs/uploads/", 202),
        # The web UI reads one page of tags (50) and their manifests, however many the repository has.
        "UI tags page, repository of 10 tags": timed(client, n, "GET", lambda i: "/ui/repo/small", 200),
        "UI tags page, repository of 50 tags (one page)": timed(client, n, "GET", lambda i: "/ui/repo/page", 200),
        f"UI tags page, repository of {tags:,} tags": timed(client, n, "GET", lambda i: "/ui/repo/big", 200),
    }
    for name, ms in figures.items():
        log(f"  {name}: {ms:.2f} ms")
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--repos", type=int, default=10_000)
    ap.add_argument("--history-gib", type=int, default=10)
    ap.add_argument("--chunk-mib", type=int, default=1)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--blob-store", choices=["fs", "kv"], default="fs")
    ap.add_argument("--provider", default=None)
    ap.add_argument("--runner", default=None)
    ap.add_argument("--component", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.tags, args.repos, args.history_gib, args.requests = 2_000, 500, 1, 50
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    runner = args.runner or os.path.join(target, "release", "berth-runner")
    component = args.component or os.path.join(target, "wasm32-wasip2", "release", "berth.wasm")
    provider = args.provider or os.path.join(target, "wasm32-wasip2", "release", "berth_blob_kv.wasm")
    for path in (runner, component) + ((provider,) if args.blob_store == "kv" else ()):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: cargo build --release -p berth-runner && "
                             "cargo build --release --target wasm32-wasip2 -p berth -p berth-blob-kv")
    data = tempfile.mkdtemp(prefix="berth-growth-")
    store_args = ["--blob-store", provider] if args.blob_store == "kv" else []
    proc, addr = start_runner(runner, component, data, store_args)
    try:
        client = Client(addr)
        started = time.time()
        populate(client, args.tags, args.repos)
        log("measuring without history")
        before = measure(client, args.tags, args.repos, args.requests)
        objects = push_history(client, args.history_gib, args.chunk_mib)
        log("measuring right after the history push")
        burst = measure(client, args.tags, args.repos, args.requests)
        settle(client, data, args.blob_store)
        log("measuring with history, settled")
        after = measure(client, args.tags, args.repos, args.requests)
        lines = [
            f"Growth ({'key-value provider' if args.blob_store == 'kv' else 'filesystem store'}): "
            f"{args.tags:,} tags in one repository, {args.repos:,} repositories; history: "
            f"{args.history_gib} GiB of unrelated chunked blobs ({objects:,} chunk objects of {args.chunk_mib} MiB). "
            f"Median of {args.requests} sequential requests, ms. \"Right after\" is measured at once after the "
            "history push, while its sessions are still in the sweep's index (their grace time); \"with history\" "
            f"once the sweep has settled them. {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
            f"{platform.machine()}; run took {time.time() - started:.0f} s.",
            "",
            "| figure | without history | right after the push | with history | ratio (target <= 2) |",
            "|---|--:|--:|--:|--:|",
        ]
        for name in before:
            lines.append(f"| {name} | {before[name]:.2f} | {burst[name]:.2f} | {after[name]:.2f} | "
                         f"{after[name] / before[name]:.2f} |")
        table = "\n".join(lines)
        print(table)
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n" + table + "\n")
    finally:
        proc.terminate()
        proc.wait()
        if args.keep:
            log(f"data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
