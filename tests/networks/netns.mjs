// The network of one matrix row, built from network namespaces (needs root):
//
//   …-srv 203.0.113.1/24 ── 203.0.113.254 …-rtr 192.168.1.1 ── 192.168.1.2/24 …-c1 (alice)
//   (switchyard dev)                          192.168.2.1 ── 192.168.2.2/24 …-c2 (bob)
//
// The server's side is a documentation range (RFC 5737) standing in for the public
// internet: Chromium then treats the server as public, as a deployed one is, and its Local
// Network Access checks stay on.
// The router forwards between the server's network and each client's; nftables on the
// router does each client's NAT and firewall. An impaired client link is impaired in both
// directions: loss by nftables on the router (numgen random), a rate cap by tc tbf on both
// ends, delay and jitter by wire.py on a namespace spliced into the link (this kernel has
// no netem). Nothing leaves these namespaces: none of them has a link to the host's network.

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const WIRE = join(dirname(fileURLToPath(import.meta.url)), "wire.py");

export const SERVER_IP = "203.0.113.1";
/** The TURN/TLS host name: Firefox will not do TURN over TLS to a bare IP address. The
 * clients' namespaces resolve it from their own /etc/hosts (ip netns exec mounts
 * /etc/netns/<ns>/hosts there); `.test` is reserved for this (RFC 6761). */
export const TURN_HOST = "turn.switchyard.test";
const ROUTER_SERVER_SIDE = "203.0.113.254";

function run(cmd, args, input) {
  try {
    return execFileSync(cmd, args, { input, stdio: [input ? "pipe" : "ignore", "pipe", "pipe"] }).toString();
  } catch (e) {
    throw new Error(`${cmd} ${args.join(" ")}: ${e.stderr?.toString().trim() || e.message}`);
  }
}
const ip = (...args) => run("ip", args);
const inNs = (ns, cmd, ...args) => run("ip", ["netns", "exec", ns, cmd, ...args]);

/** nftables rules for the router: NAT per client and the clients' outbound filter. */
export function routerRules(row) {
  const lines = ["table ip sy_nat {", "  chain post {", "    type nat hook postrouting priority srcnat; policy accept;"];
  for (const [i, c] of row.clients.entries()) {
    const subnet = `192.168.${i + 1}.0/24`;
    if (c.nat === "eim") lines.push(`    oifname "srv" ip saddr ${subnet} masquerade`);
    else if (c.nat === "symmetric") lines.push(`    oifname "srv" ip saddr ${subnet} masquerade random,fully-random`);
    else if (c.nat !== "none") throw new Error(`unknown NAT ${c.nat}`);
  }
  lines.push("  }", "}");
  lines.push("table inet sy_filter {", "  chain forward_clients {", "    type filter hook forward priority filter; policy accept;");
  for (const [i, c] of row.clients.entries()) {
    // Random loss on the client's link, both ways (before conntrack lets a flow through).
    if (c.impair?.loss) {
      const permille = Math.round(c.impair.loss * 10);
      lines.push(`    iifname "c${i + 1}" numgen random mod 1000 < ${permille} drop`);
      lines.push(`    oifname "c${i + 1}" numgen random mod 1000 < ${permille} drop`);
    }
  }
  lines.push("    ct state established,related accept");
  for (const [i, c] of row.clients.entries()) {
    const dev = `c${i + 1}`;
    if (row.filter === "no-udp") lines.push(`    iifname "${dev}" meta l4proto udp drop`);
    else if (row.filter === "tcp-443") {
      // The app's own origin (signaling, the page) stands in for its HTTPS site on 443.
      lines.push(`    iifname "${dev}" tcp dport { 443, ${row.signalingPort} } accept`);
      lines.push(`    iifname "${dev}" drop`);
    } else if (row.filter !== "none") throw new Error(`unknown filter ${row.filter}`);
  }
  lines.push("  }", "}");
  return lines.join("\n") + "\n";
}

/** The tc qdisc for one direction of a rate-capped link. */
export function rateCap(imp) {
  return imp?.rateKbit ? ["tbf", "rate", `${imp.rateKbit}kbit`, "burst", "16kb", "latency", "300ms"] : null;
}

function checkImpairment(imp) {
  const known = ["loss", "delayMs", "jitterMs", "rateKbit"];
  const bad = Object.keys(imp || {}).filter((k) => !known.includes(k));
  if (bad.length) throw new Error(`unknown impairment ${bad.join(", ")} (known: ${known.join(", ")})`);
}

/** Every namespace set that is up: torn down when the process exits, however it exits. */
const live = new Set();
process.on("exit", () => {
  for (const n of [...live]) n.down();
});

/** Start wire.py in `ns` and wait until it holds both interfaces. */
function startWire(ns, args) {
  const child = spawn("ip", ["netns", "exec", ns, "/usr/bin/python3", WIRE, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.stdout.once("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`wire.py in ${ns} exited ${code}: ${err}`)));
  });
}

export class Net {
  constructor(prefix, row) {
    this.row = row;
    this.srv = `${prefix}-srv`;
    this.rtr = `${prefix}-rtr`;
    this.clients = row.clients.map((_, i) => `${prefix}-c${i + 1}`);
    // A delayed link gets a namespace in its middle, where wire.py holds the frames.
    this.wires = row.clients.map((c, i) => (c.impair?.delayMs ? `${prefix}-w${i + 1}` : null));
    this.all = [this.srv, this.rtr, ...this.clients, ...this.wires.filter(Boolean)];
  }

  async up() {
    live.add(this);
    for (const ns of this.all) {
      ip("netns", "add", ns);
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${ns}/hosts`, `127.0.0.1 localhost\n${SERVER_IP} ${TURN_HOST}\n`);
      writeFileSync(`/etc/netns/${ns}/resolv.conf`, "# no DNS server: names come from hosts\n");
      inNs(ns, "ip", "link", "set", "lo", "up");
    }
    // server ↔ router
    ip("link", "add", "eth0", "netns", this.srv, "type", "veth", "peer", "name", "srv", "netns", this.rtr);
    inNs(this.srv, "ip", "addr", "add", `${SERVER_IP}/24`, "dev", "eth0");
    inNs(this.srv, "ip", "link", "set", "eth0", "up");
    inNs(this.srv, "ip", "route", "add", "default", "via", ROUTER_SERVER_SIDE);
    inNs(this.rtr, "ip", "addr", "add", `${ROUTER_SERVER_SIDE}/24`, "dev", "srv");
    inNs(this.rtr, "ip", "link", "set", "srv", "up");
    inNs(this.rtr, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
    // router ↔ each client
    for (const [i, ns] of this.clients.entries()) {
      const dev = `c${i + 1}`;
      checkImpairment(this.row.clients[i].impair);
      const wire = this.wires[i];
      if (wire) {
        ip("link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", "wa", "netns", wire);
        ip("link", "add", "name", "wb", "netns", wire, "type", "veth", "peer", "name", dev, "netns", this.rtr);
        // wire.py reads whole frames: no checksum or segmentation offload on the path.
        for (const [n, d] of [[ns, "eth0"], [wire, "wa"], [wire, "wb"], [this.rtr, dev]]) {
          inNs(n, "ethtool", "-K", d, "tx", "off", "tso", "off", "gso", "off", "gro", "off");
        }
        for (const d of ["wa", "wb"]) inNs(wire, "ip", "link", "set", "dev", d, "up", "promisc", "on");
        const { delayMs, jitterMs = 0 } = this.row.clients[i].impair;
        await startWire(wire, ["--a", "wa", "--b", "wb", "--delay-ms", String(delayMs), "--jitter-ms", String(jitterMs)]);
      } else {
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", dev, "netns", this.rtr);
      }
      inNs(ns, "ip", "addr", "add", `192.168.${i + 1}.2/24`, "dev", "eth0");
      inNs(ns, "ip", "link", "set", "eth0", "up");
      inNs(ns, "ip", "route", "add", "default", "via", `192.168.${i + 1}.1`);
      inNs(this.rtr, "ip", "addr", "add", `192.168.${i + 1}.1/24`, "dev", dev);
      inNs(this.rtr, "ip", "link", "set", dev, "up");
      const imp = rateCap(this.row.clients[i].impair);
      if (imp) {
        inNs(this.rtr, "tc", "qdisc", "add", "dev", dev, "root", ...imp); // downlink
        inNs(ns, "tc", "qdisc", "add", "dev", "eth0", "root", ...imp); // uplink
      }
    }
    run("ip", ["netns", "exec", this.rtr, "nft", "-f", "-"], routerRules(this.row));
  }

  /** What the router's NAT did: the translated flows (source → mapped) it tracks. */
  natFlows() {
    try {
      return inNs(this.rtr, "cat", "/proc/net/nf_conntrack");
    } catch {
      return "";
    }
  }

  down() {
    live.delete(this);
    for (const ns of this.all) {
      // Whatever still runs in the namespace was started by this run (the browser, dev).
      let pids = [];
      try {
        pids = ip("netns", "pids", ns).split(/\s+/).filter(Boolean).map(Number);
      } catch {}
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      try {
        ip("netns", "del", ns);
      } catch {}
      rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    }
  }
}
