// The network of one matrix row, built from network namespaces (needs root):
//
//   …-srv 203.0.113.1/24 ── 203.0.113.254 …-rtr 192.168.1.1 ── 192.168.1.2/24 …-c1 (alice)
//   (switchyard dev)                          192.168.2.1 ── 192.168.2.2/24 …-c2 (bob)
//
// The server's side is a documentation range (RFC 5737) standing in for the public
// internet: Chromium then treats the server as public, as a deployed one is, and its Local
// Network Access checks stay on.
// The router forwards between the server's network and each client's; nftables on the
// router does each client's NAT and firewall, and tc on both ends of a client's link
// impairs it (netem: loss, delay and jitter; tbf: a rate cap). Nothing leaves these
// namespaces: none of them has a link to the host's network.

import { execFileSync } from "node:child_process";

export const SERVER_IP = "203.0.113.1";
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

/** tc commands (qdisc arguments) for one direction of an impaired link. */
export function impairment(imp) {
  if (!imp) return null;
  if (imp.loss) return ["netem", "loss", `${imp.loss}%`];
  if (imp.delayMs) return ["netem", "delay", `${imp.delayMs}ms`, `${imp.jitterMs || 0}ms`, "distribution", "normal"];
  if (imp.rateKbit) return ["tbf", "rate", `${imp.rateKbit}kbit`, "burst", "16kb", "latency", "300ms"];
  throw new Error(`unknown impairment ${JSON.stringify(imp)}`);
}

/** Every namespace set that is up: torn down when the process exits, however it exits. */
const live = new Set();
process.on("exit", () => {
  for (const n of [...live]) n.down();
});

export class Net {
  constructor(prefix, row) {
    this.row = row;
    this.srv = `${prefix}-srv`;
    this.rtr = `${prefix}-rtr`;
    this.clients = row.clients.map((_, i) => `${prefix}-c${i + 1}`);
    this.all = [this.srv, this.rtr, ...this.clients];
  }

  up() {
    live.add(this);
    for (const ns of this.all) {
      ip("netns", "add", ns);
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
      ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", dev, "netns", this.rtr);
      inNs(ns, "ip", "addr", "add", `192.168.${i + 1}.2/24`, "dev", "eth0");
      inNs(ns, "ip", "link", "set", "eth0", "up");
      inNs(ns, "ip", "route", "add", "default", "via", `192.168.${i + 1}.1`);
      inNs(this.rtr, "ip", "addr", "add", `192.168.${i + 1}.1/24`, "dev", dev);
      inNs(this.rtr, "ip", "link", "set", dev, "up");
      const imp = impairment(this.row.clients[i].impair);
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
    }
  }
}
