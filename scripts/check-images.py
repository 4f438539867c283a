#!/usr/bin/env python3
"""Checks the OCI archives scripts/images wrote, as a platform team's admission policy
would: entrypoint, user, exposed ports, labels, no shell or package manager, no setuid or
setgid file, every file owned by root and not world-writable (but /tmp), and the size
budget. Prints name, digest and size per image; exits 1 on the first image that fails.

    scripts/check-images.py <dir> <registry> <version> <image>...
"""
import hashlib
import json
import sys
import tarfile

# Compressed size of all layers, per image. The base (glibc, libgcc, CA bundle) is about
# 3 MiB of it; the rest is the binary.
BUDGET_MIB = {"switchyard-operator": 16, "media-node": 20, "turn-node": 12}
PORTS = {
    "switchyard-operator": {"8080/tcp"},
    "media-node": {"7880/tcp", "7881/tcp", "7882/udp", "9090/tcp"},
    "turn-node": {"3478/udp", "3478/tcp", "443/tcp", "9090/tcp"},
}
LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version",
          "org.opencontainers.image.revision", "org.opencontainers.image.licenses")
FORBIDDEN = ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/apt", "usr/bin/dpkg", "bin/busybox")


def blob(archive, digest):
    algo, hexd = digest.split(":", 1)
    data = archive.extractfile(f"blobs/{algo}/{hexd}").read()
    if hashlib.sha256(data).hexdigest() != hexd:
        raise SystemExit(f"blob {digest} does not match its digest")
    return data


def check(path, name, version):
    problems = []
    with tarfile.open(path) as archive:
        index = json.loads(archive.extractfile("index.json").read())
        (desc,) = index["manifests"]
        manifest = json.loads(blob(archive, desc["digest"]))
        config = json.loads(blob(archive, manifest["config"]["digest"]))["config"]
        size = sum(layer["size"] for layer in manifest["layers"])
        files = {}
        for layer in manifest["layers"]:
            import io
            with tarfile.open(fileobj=io.BytesIO(blob(archive, layer["digest"]))) as t:
                for m in t.getmembers():
                    files[m.name.lstrip("./")] = m
    if config.get("Entrypoint") != [f"/usr/local/bin/{name}"]:
        problems.append(f"entrypoint {config.get('Entrypoint')}")
    if config.get("User") != "65532:65532":
        problems.append(f"user {config.get('User')!r}, not 65532:65532")
    if set(config.get("ExposedPorts", {})) != PORTS[name]:
        problems.append(f"exposed ports {sorted(config.get('ExposedPorts', {}))}, expected {sorted(PORTS[name])}")
    labels = config.get("Labels") or {}
    for label in LABELS:
        if not labels.get(label) or labels[label] == "unknown":
            problems.append(f"label {label} missing")
    if labels.get("org.opencontainers.image.version") != version:
        problems.append(f"version label {labels.get('org.opencontainers.image.version')!r}, expected {version}")
    for f in FORBIDDEN:
        if f in files:
            problems.append(f"contains {f}")
    for fname, m in files.items():
        if m.mode & 0o6000:
            problems.append(f"{fname} is setuid/setgid")
        if m.uid != 0 or m.gid != 0:
            problems.append(f"{fname} is owned by {m.uid}:{m.gid}, not root")
        if m.isfile() and m.mode & 0o002:
            problems.append(f"{fname} is world-writable")
    if f"usr/local/bin/{name}" not in files:
        problems.append("the binary is missing")
    for needed in ("etc/ssl/certs/ca-certificates.crt", "etc/passwd", "lib64/ld-linux-x86-64.so.2",
                   "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libgcc_s.so.1"):
        if needed not in files:
            problems.append(f"{needed} is missing")
    mib = size / 2**20
    if mib > BUDGET_MIB[name]:
        problems.append(f"{mib:.1f} MiB compressed is over the {BUDGET_MIB[name]} MiB budget")
    return desc["digest"], mib, problems


def main():
    out, registry, version, *names = sys.argv[1:]
    failed = False
    for name in names:
        digest, mib, problems = check(f"{out}/{name}.tar", name, version)
        print(f"{registry}/{name}:{version}  {digest}  {mib:.1f} MiB (budget {BUDGET_MIB[name]} MiB)")
        for p in problems:
            print(f"  FAIL {p}")
        failed |= bool(problems)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
