#!/usr/bin/env python3
"""Deterministic, incompressible test images for bench/run.sh, written as OCI image layouts.

Each layer is a tar holding one file of pseudo-random bytes (the AES-128-CTR keystream of
`openssl enc` under a key derived from the image name and layer index, so the same arguments
always give the same blobs and digests), gzipped at level 0 (stored blocks: the bytes are
incompressible anyway). Layers are tar+gzip because that is what images carry, and because skopeo
would gzip an uncompressed layer itself on push, timing its compressor instead of the registry.

usage: gen_images.py OUT_DIR NAME SIZE[,SIZE...]   (sizes in bytes; writes OUT_DIR/NAME/)
Prints the total layer bytes of the image.
"""
import hashlib
import json
import os
import subprocess
import sys
import zlib

CHUNK = 4 << 20


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def write_blob(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob_path(layout, digest), "wb") as f:
        f.write(data)
    return digest, len(data)


def tar_header(name, size):
    h = bytearray(512)

    def put(off, width, value):
        h[off : off + len(value)] = value

    put(0, 100, name.encode())
    put(100, 8, b"0000644\0")
    put(108, 8, b"0000000\0")
    put(116, 8, b"0000000\0")
    put(124, 12, b"%011o\0" % size)
    put(136, 12, b"%011o\0" % 0)
    put(156, 1, b"0")
    put(257, 8, b"ustar\x0000")
    h[148:156] = b" " * 8
    put(148, 8, b"%06o\0 " % sum(h))
    return bytes(h)


def write_layer(layout, seed, size):
    """A gzipped tar of one file `data` with `size` random bytes; streamed, hashed as written.
    Returns the blob's digest and size, and the digest of the tar (the diff id)."""
    key = hashlib.sha256(seed.encode()).hexdigest()[:32]
    gen = subprocess.Popen(
        ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", key, "-iv", "0" * 32],
        stdin=open("/dev/zero", "rb"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    tmp = os.path.join(layout, "blobs", "sha256", ".tmp")
    h = hashlib.sha256()
    diff = hashlib.sha256()
    gz = zlib.compressobj(level=0, wbits=31)
    total = 0
    with open(tmp, "wb") as out:

        def write(b):
            nonlocal total
            out.write(b)
            h.update(b)
            total += len(b)

        def emit(b):
            diff.update(b)
            write(gz.compress(b))

        emit(tar_header("data", size))
        left = size
        while left > 0:
            n = min(CHUNK, left)
            b = gen.stdout.read(n)
            while len(b) < n:
                more = gen.stdout.read(n - len(b))
                if not more:
                    raise SystemExit("openssl stopped early")
                b += more
            emit(b)
            left -= n
        emit(bytes((512 - size % 512) % 512) + bytes(1024))
        write(gz.flush())
    gen.kill()
    gen.stdout.close()
    gen.wait()
    digest = "sha256:" + h.hexdigest()
    os.replace(tmp, blob_path(layout, digest))
    return digest, total, "sha256:" + diff.hexdigest()


def main():
    out, name, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
    layout = os.path.join(out, name)
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    layers, diff_ids = [], []
    for i, size in enumerate(sizes):
        digest, n, diff_id = write_layer(layout, f"berth-bench/{name}/{i}/{size}", size)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": n})
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdigest, csize = write_blob(layout, json.dumps(config, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": layers,
    }
    mdigest, msize = write_blob(layout, json.dumps(manifest, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(sum(l["size"] for l in layers) + csize + msize)


if __name__ == "__main__":
    main()
