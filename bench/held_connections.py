#!/usr/bin/env python3
"""Hold many half-sent HTTP requests on a media-node's signaling port, then close them,
printing the node's RSS and open fds before, while held, and after (loopback only).

  bench/held_connections.py --pid PID --port 7880 --count 10000 --hold 20

Run the node with --max-connections-per-ip 0 --max-connections 20000 and a
--header-timeout-seconds longer than --hold to measure the held state; with the
defaults, the per-address cap and the header timeout are what you see instead."""
import argparse
import os
import socket
import time


def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, default=7880)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--hold", type=float, default=20)
    p.add_argument("--settle", type=float, default=5)
    a = p.parse_args()
    print("before  rss %.1f MiB  fds %d" % sample(a.pid))
    socks, refused = [], 0
    for _ in range(a.count):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", a.port))
            s.sendall(b"GET /rtc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    time.sleep(1)
    print("held    rss %.1f MiB  fds %d  (%d opened, %d failed)" % (*sample(a.pid), len(socks), refused))
    time.sleep(a.hold)
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("after %.0f s  rss %.1f MiB  fds %d  (%d still open)" % (a.hold, *sample(a.pid), alive))
    for s in socks:
        s.close()
    time.sleep(a.settle)
    print("closed  rss %.1f MiB  fds %d" % sample(a.pid))


if __name__ == "__main__":
    main()
