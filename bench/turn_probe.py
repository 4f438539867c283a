#!/usr/bin/env python3
"""A tiny TURN client for bench/turn.sh (loopback only).

  turn_probe.py ping  SERVER_PORT PEER_PORT SECRET COUNT SIZE
      One allocation + channel to the echo peer; COUNT sequential ChannelData
      round trips; prints "p50_us=… p99_us=… lost=…".
  turn_probe.py hold  SERVER_PORT PEER_PORT SECRET COUNT
      COUNT allocations (one UDP socket each), each with a permission for the
      peer; prints "ready N" and holds them until stdin closes.

Credentials are TURN REST API ones, so the same probe works against
turn-node and coturn (--use-auth-secret).
"""
import base64
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

MAGIC = 0x2112A442
HOST = "127.0.0.1"  # never anything but loopback


def attr(t, v):
    return struct.pack("!HH", t, len(v)) + v + b"\0" * ((4 - len(v) % 4) % 4)


def xor_addr(ip, port):
    ip_int = struct.unpack("!I", socket.inet_aton(ip))[0]
    return struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), ip_int ^ MAGIC)


def message(typ, attrs, key=None):
    tid = os.urandom(12)
    body = b"".join(attrs)
    if key is not None:
        hdr = struct.pack("!HHI", typ, len(body) + 24, MAGIC) + tid
        body += attr(0x0008, hmac.new(key, hdr + body, hashlib.sha1).digest())
    return struct.pack("!HHI", typ, len(body), MAGIC) + tid + body


def parse(data):
    typ, length, _ = struct.unpack("!HHI", data[:8])
    attrs, pos = {}, 20
    while pos + 4 <= 20 + length:
        t, l = struct.unpack("!HH", data[pos:pos + 4])
        attrs.setdefault(t, data[pos + 4:pos + 4 + l])
        pos += 4 + l + (4 - l % 4) % 4
    return typ, attrs


class Client:
    def __init__(self, server_port, secret, user):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2.0)
        self.server = (HOST, server_port)
        self.username = ("%d:%s" % (int(time.time()) + 3600, user)).encode()
        self.password = base64.b64encode(
            hmac.new(secret.encode(), self.username, hashlib.sha1).digest())
        self.key = None
        self.realm = self.nonce = b""

    def request(self, typ, attrs):
        for _ in range(3):
            extra = []
            if self.key is not None:
                extra = [attr(0x0006, self.username), attr(0x0014, self.realm),
                         attr(0x0015, self.nonce)]
            self.sock.sendto(message(typ, attrs + extra, self.key), self.server)
            rtyp, rattrs = parse(self.sock.recv(4096))
            if rtyp & 0x0110 == 0x0110:
                code = rattrs.get(0x0009, b"\0\0\0\0")
                code = (code[2] & 7) * 100 + code[3]
                if code in (401, 438) and 0x0015 in rattrs:
                    self.realm, self.nonce = rattrs[0x0014], rattrs[0x0015]
                    self.key = hashlib.md5(self.username + b":" + self.realm + b":" +
                                           self.password).digest()
                    continue
                raise RuntimeError("TURN error %d for 0x%04x" % (code, typ))
            return rattrs
        raise RuntimeError("authentication did not converge")

    def allocate(self):
        return self.request(0x0003, [attr(0x0019, struct.pack("!I", 17 << 24))])

    def permit(self, peer_port):
        self.request(0x0008, [attr(0x0012, xor_addr(HOST, peer_port))])

    def bind(self, channel, peer_port):
        self.request(0x0009, [attr(0x000C, struct.pack("!HH", channel, 0)),
                              attr(0x0012, xor_addr(HOST, peer_port))])


def ping(server_port, peer_port, secret, count, size):
    c = Client(server_port, secret, "probe")
    c.allocate()
    c.bind(0x4000, peer_port)
    c.sock.settimeout(1.0)
    rtts, lost = [], 0
    pad = b"x" * max(0, size - 8)
    for i in range(count):
        payload = struct.pack("!Q", i) + pad
        frame = struct.pack("!HH", 0x4000, len(payload)) + payload
        t0 = time.perf_counter_ns()
        c.sock.sendto(frame, c.server)
        try:
            while True:
                data = c.sock.recv(65536)
                if data[:2] == b"\x40\x00" and data[4:12] == payload[:8]:
                    break
            rtts.append((time.perf_counter_ns() - t0) / 1000.0)
        except socket.timeout:
            lost += 1
    rtts.sort()
    q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))] if rtts else float("nan")
    print("p50_us=%.0f p99_us=%.0f lost=%d" % (q(0.50), q(0.99), lost), flush=True)


def hold(server_port, peer_port, secret, count):
    clients = []
    for i in range(count):
        c = Client(server_port, secret, "hold%d" % (i % 50))
        c.allocate()
        c.permit(peer_port)
        clients.append(c)
    print("ready %d" % len(clients), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    mode, args = sys.argv[1], [int(a) if a.isdigit() else a for a in sys.argv[2:]]
    {"ping": ping, "hold": hold}[mode](*args)
