#!/usr/bin/python3
"""A slow cable between two interfaces: every Ethernet frame that arrives on one leaves on
the other after a delay drawn from a normal distribution (mean --delay-ms, deviation
--jitter-ms), in order (a frame never overtakes the one before it, as on a real path whose
queueing delay varies). Stands in for `tc netem delay`, which this kernel lacks.

    ip netns exec <ns> python3 wire.py --a a --b b --delay-ms 100 --jitter-ms 30 --seed 1

Both interfaces must have checksum and segmentation offloads off (ethtool -K … tx off tso off
gso off), so that what is read is a finished frame no larger than the MTU.
"""

import argparse
import heapq
import random
import select
import socket
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.delay_ms < 0 or args.jitter_ms < 0:
        p.error("--delay-ms and --jitter-ms must not be negative")
    rng = random.Random(args.seed)
    socks = {}
    for name in (args.a, args.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        socks[name] = s
    other = {socks[args.a].fileno(): socks[args.b], socks[args.b].fileno(): socks[args.a]}
    queue = []  # (departure, seq, out socket, frame)
    last = {args.a: 0.0, args.b: 0.0}  # last departure per outgoing interface: FIFO
    seq = 0
    poller = select.poll()
    for s in socks.values():
        poller.register(s, select.POLLIN)
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                pass  # a full queue drops the frame, as a real link would
        timeout = None if not queue else max(0, int((queue[0][0] - now) * 1000))
        for fd, _ in poller.poll(timeout):
            out = other[fd]
            src = socks[args.b] if out is socks[args.a] else socks[args.a]
            while True:
                try:
                    frame, addr = src.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own transmission on this interface
                outname = out.getsockname()[0]
                delay = max(0.0, rng.gauss(args.delay_ms, args.jitter_ms)) / 1000
                depart = max(time.monotonic() + delay, last[outname])
                last[outname] = depart
                seq += 1
                heapq.heappush(queue, (depart, seq, out, frame))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
