#!/usr/bin/env python3
"""Medians of bench/sfu.sh's runs: the table for BENCHMARKS.md and the CPU plot.

usage: sfu_report.py results.jsonl OUTDIR
"""
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def per_run(r):
    load = r.get("load", {})
    fm = load.get("firstMediaSeconds", {}) or {}
    sec = r["seconds"] or 1
    fwd = r["forwardedPackets"]
    cpu = r["serverCpuSeconds"]
    recv_pps = (load.get("received") or {}).get("packetsPerSecond")
    tracks = load.get("tracks") or {}
    return {
        "cpu_per_mpkt": cpu / fwd * 1e6 if fwd > 0 else None,
        "pkts_per_cpu": fwd / cpu if cpu > 0 else None,
        "cores": cpu / sec,
        "fwd_pps": fwd / sec,
        "recv_pps": recv_pps,
        "hwm_mib": r["vmHwmKiB"] / 1024,
        "p50_ms": fm["p50"] * 1e3 if fm.get("p50") is not None else None,
        "p99_ms": fm["p99"] * 1e3 if fm.get("p99") is not None else None,
        "load_cores": r["loadCpuSeconds"] / sec,
        "tracks": f'{tracks.get("received", "?")}/{tracks.get("expected", "?")}',
        "loss": load.get("lossRatio"),
    }


def main():
    path, out = sys.argv[1], sys.argv[2]
    groups = defaultdict(list)
    order = []
    for line in open(path):
        r = json.loads(line)
        key = (r["topology"], r["media"])
        if key not in order:
            order.append(key)
        groups[key + (r["server"],)].append((r, per_run(r)))

    def med(key, field):
        return median([m[field] for _, m in groups.get(key, [])])

    lines = []
    lines.append(
        "| topology | media | server | runs | CPU-s per 1M forwarded | forwarded pkt/s (server) | received pkt/s (clients) "
        "| server cores | load generator cores | VmHWM MiB | join → first media p50 / p99 ms | tracks | loss |"
    )
    lines.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    ratios = []
    for topo, media in order:
        for server in ("switchyard", "livekit"):
            key = (topo, media, server)
            if key not in groups:
                continue
            runs = groups[key]
            loss = median([m["loss"] for _, m in runs])
            lines.append(
                f"| {topo} | {media} | {'media-node' if server == 'switchyard' else 'LiveKit'} | {len(runs)} "
                f"| {fmt(med(key, 'cpu_per_mpkt'), 2)} | {fmt(med(key, 'fwd_pps'))} | {fmt(med(key, 'recv_pps'))} "
                f"| {fmt(med(key, 'cores'), 2)} | {fmt(med(key, 'load_cores'), 2)} | {fmt(med(key, 'hwm_mib'), 1)} "
                f"| {fmt(med(key, 'p50_ms'))} / {fmt(med(key, 'p99_ms'))} | {' '.join(m['tracks'] for _, m in runs)} "
                f"| {fmt(loss * 100 if loss is not None else None, 2)} % |"
            )
        sy, lk = (topo, media, "switchyard"), (topo, media, "livekit")
        ratios.append(
            (
                topo,
                media,
                ratio(med(sy, "pkts_per_cpu"), med(lk, "pkts_per_cpu")),
                ratio(med(sy, "hwm_mib"), med(lk, "hwm_mib")),
                ratio(med(sy, "p50_ms"), med(lk, "p50_ms")),
                ratio(med(sy, "p99_ms"), med(lk, "p99_ms")),
            )
        )
    lines.append("")
    lines.append(
        "| topology | media | forwarded packets per CPU-second, media-node / LiveKit | VmHWM media-node / LiveKit "
        "| join p50 media-node / LiveKit | join p99 media-node / LiveKit |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for topo, media, fwd, hwm, p50, p99 in ratios:
        lines.append(f"| {topo} | {media} | **{fmt(fwd, 2)}** | {fmt(hwm, 2)} | {fmt(p50, 2)} | {fmt(p99, 2)} |")
    table = "\n".join(lines) + "\n"
    open(os.path.join(out, "table.md"), "w").write(table)
    print(table)

    # CPU vs subscribers (one publisher, plain media).
    points = defaultdict(dict)
    for (topo, media, server), runs in groups.items():
        if topo.startswith("1to") and media == "plain":
            points[server][int(topo[3:])] = median([m["cores"] for _, m in runs])
    if not points:
        return
    dat = os.path.join(out, "cpu-vs-subscribers.dat")
    with open(dat, "w") as f:
        f.write("# subscribers media-node-cores livekit-cores\n")
        for n in sorted(set().union(*[p.keys() for p in points.values()])):
            f.write(f"{n} {points['switchyard'].get(n, 'NaN')} {points['livekit'].get(n, 'NaN')}\n")
    png = os.path.join(out, "cpu-vs-subscribers.png")
    script = f"""
set terminal pngcairo size 800,500
set output '{png}'
set title 'Server CPU, one publisher (VP8 2 Mbit/s + Opus) to N subscribers'
set xlabel 'subscribers'
set ylabel 'server CPU (cores)'
set key left top
set grid
set yrange [0:*]
plot '{dat}' using 1:2 with linespoints lw 2 title 'media-node', \\
     '{dat}' using 1:3 with linespoints lw 2 title 'LiveKit v1.9.11'
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"plot: {png}")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no plot (gnuplot: {e}); data in {dat}", file=sys.stderr)


if __name__ == "__main__":
    main()
