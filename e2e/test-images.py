#!/usr/bin/env python3
"""Writes the broken and probe images the runner scenarios use, derived from the real
images scripts/images built:

  test-images.py <images dir> <out dir> <e2e-probe binary>

- e2e-wrong-entrypoint: turn-node's image whose ENTRYPOINT names a file that is not there
- e2e-missing-library: turn-node's image without libgcc_s.so.1, which the binary needs
- e2e-probe-image: the base of turn-node's image with e2e-probe as its entrypoint (for
  the read-only root, securityContext and probe checks)

Each is one OCI archive `<out>/<name>.tar` (index.json, oci-layout, blobs/sha256/*), with
one uncompressed layer holding the whole root filesystem.
"""

import hashlib
import io
import json
import pathlib
import sys
import tarfile

LIBGCC = "usr/lib/x86_64-linux-gnu/libgcc_s.so.1"


def read_image(archive):
    """(config JSON, [(TarInfo, bytes)]) of the single image in an OCI archive."""
    with tarfile.open(archive) as outer:
        def blob(digest):
            algo, hexd = digest.split(":", 1)
            return outer.extractfile(f"blobs/{algo}/{hexd}").read()

        index = json.loads(outer.extractfile("index.json").read())
        (desc,) = index["manifests"]
        manifest = json.loads(blob(desc["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        members = {}
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"])), mode="r:*") as t:
                for m in t.getmembers():
                    if pathlib.PurePosixPath(m.name).name.startswith(".wh."):
                        raise SystemExit(f"{archive}: whiteouts are not supported")
                    data = t.extractfile(m).read() if m.isfile() else b""
                    members[m.name.lstrip("./")] = (m, data)
    return config, members


def write_image(out, name, config, members):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path in sorted(members):
            info, data = members[path]
            info.name = path
            t.addfile(info, io.BytesIO(data) if info.isfile() else None)
    layer = layer.getvalue()
    blobs = {}

    def add(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
    config.pop("history", None)
    config_desc = add(json.dumps(config).encode())
    layer_desc = add(layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    manifest_desc = add(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **manifest_desc,
            "annotations": {"org.opencontainers.image.ref.name": f"e2e.switchyard.dev/{name}:test"},
        }],
    }
    path = out / f"{name}.tar"
    tmp = out / f".{name}.tar"
    with tarfile.open(tmp, "w") as t:
        def put(arcname, data):
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))

        put("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        put("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            put("blobs/sha256/" + digest.split(":", 1)[1], data)
    tmp.rename(path)
    print(f"{name} {manifest_desc['digest']} {len(layer)} bytes")


def main():
    images, out, probe = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    config, members = read_image(images / "turn-node.tar")
    if LIBGCC not in members:
        raise SystemExit(f"turn-node's image has no {LIBGCC}: update test-images.py")

    wrong = json.loads(json.dumps(config))
    wrong["config"]["Entrypoint"] = ["/usr/local/bin/turn-nod"]
    write_image(out, "e2e-wrong-entrypoint", wrong, members)

    write_image(out, "e2e-missing-library", config, {k: v for k, v in members.items() if k != LIBGCC})

    base = {k: v for k, v in members.items() if not k.startswith("usr/local/bin/")}
    info = tarfile.TarInfo("usr/local/bin/e2e-probe")
    data = probe.read_bytes()
    info.size, info.mode, info.uid, info.gid = len(data), 0o755, 0, 0
    base["usr/local/bin/e2e-probe"] = (info, data)
    probe_cfg = json.loads(json.dumps(config))
    probe_cfg["config"]["Entrypoint"] = ["/usr/local/bin/e2e-probe"]
    probe_cfg["config"]["ExposedPorts"] = {"8080/tcp": {}}
    write_image(out, "e2e-probe-image", probe_cfg, base)


if __name__ == "__main__":
    main()
