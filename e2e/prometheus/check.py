#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every alert expression of the chart against
the e2e run's Prometheus, over the window in which the scenarios ran.

  check.py <prometheus URL> <window start, unix s> <window end, unix s> <chart dir>

- Each panel with queries must return data (a sample of any of its queries at any time
  in the window), unless it is listed in FAILURE_ONLY with the reason it stays empty on a
  healthy cluster; such panels are reported, not failed.
- No alert may fire in the window, and no alert expression may be true anywhere in it,
  unless TRANSIENT lists the alert with the reason it is briefly true on a healthy
  cluster; then it must stay true for less than the rule's `for`. The cluster the
  scenarios ran on was healthy. The window starts when the operator was first scraped
  (before that, `absent(switchyard_operator_leader)` is trivially true).
- Prometheus must have scraped the operator, media-node and turn-node pods.

Exit code 1 on any failure, with one line per problem.
"""

import json
import pathlib
import re
import sys
import urllib.parse
import urllib.request

# (dashboard uid, panel title) -> why the panel has no data on a healthy cluster.
FAILURE_ONLY = {
    ("switchyard-overview", "Dropped and unrouted packets"):
        "TURN drops (quota, bandwidth cap, denied peer) and datagrams no participant owns do not happen in healthy calls",
    ("switchyard-turn", "Dropped packets by reason"):
        "TURN drops only happen over quota, at the bandwidth cap or for denied peers",
    ("switchyard-turn", "Drop ratio"):
        "the ratio's numerator is the drop counters, which stay absent until a packet is dropped",
    ("switchyard-operator", "Reconcile errors"):
        "only failed reconciles have a series with result != ok",
}

# alert -> why its expression is briefly true during the scenarios, which break things on
# purpose (a thousand Rooms for too little capacity, a node that never starts, the
# leader and the apiserver killed mid-call, TURN loaded to its maximum). Each must stay
# true for less than its `for`, so none fires.
TRANSIENT = {
    "SwitchyardFleetAtMaxReplicas":
        "the autoscale scenario loads TURN beyond its replicas.max on purpose",
    "SwitchyardScaleUpStalled":
        "desired is ahead of the Deployment's replicas for one poll while the autoscaler scales up",
    "SwitchyardNodeDrainingTooLong":
        "true while any node drains (scale-down, deleted pods); its `for` is the 90 minutes",
    "SwitchyardOperatorNoLeader":
        "the restarts scenario force-deletes the leader; the standby takes the Lease",
    "SwitchyardRoomsUnschedulable":
        "scenarios take capacity away on purpose: the failover scenario kills the hosting "
        "node, the scale scenario creates 100 Rooms beyond capacity",
    "SwitchyardRoomsPending":
        "the Rooms of those scenarios wait for capacity",
    "SwitchyardPlacementSlow":
        "Rooms waiting for capacity in those scenarios are placed late; with few "
        "placements the p99 is the slowest one",
    "SwitchyardJoinRoutingSlow":
        "joins that wait for a Room's placement or ride out the apiserver restart; with a "
        "handful of joins the p99 is the slowest one",
    "SwitchyardReconcileErrors":
        "reconciles of MediaClusters whose test namespace is being deleted fail (the "
        "apiserver refuses new objects there) until the MediaCluster is gone",
    "SwitchyardReconcileSlow":
        "one MediaCluster reconcile over 5 s while the autoscale scenario's fleet starts; "
        "with few reconciles the p99 is the slowest one",
}

STEP = 5


def get(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def substitute(expr):
    """Grafana's variables, as with every option selected."""
    expr = expr.replace("${cluster:regex}", ".*").replace("$__rate_interval", "1m")
    expr = expr.replace("$__interval", "15s").replace("$__range", "10m")
    return re.sub(r"\$\{?(namespace|cluster)\}?", ".*", expr)


def has_data(result):
    return any(
        any(v[1] not in ("NaN", "+Inf", "-Inf") for v in s.get("values", [])) for s in result
    )


def longest_run(values):
    """The longest stretch, in seconds, of consecutive samples (STEP apart)."""
    longest, run, prev = 0, 0, None
    for t, _ in values:
        t = float(t)
        run = run + STEP if prev is not None and t - prev <= STEP + 0.001 else STEP
        longest, prev = max(longest, run), t
    return longest


def query_range(base, expr, start, end):
    return get(base, "/api/v1/query_range", query=expr, start=start, end=end, step=STEP)["result"]


def main():
    base, start, end, chart = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), pathlib.Path(sys.argv[4])
    problems, notes = [], []

    # The window starts at the operator's first scrape.
    leader = query_range(base, "max(switchyard_operator_leader)", start - 120, end)
    first = min((float(v[0]) for s in leader for v in s.get("values", [])), default=None)
    if first is None:
        problems.append("the operator was never scraped (no switchyard_operator_leader)")
    else:
        start = max(start, first)

    # What was scraped at all.
    up = query_range(base, "max by (job, container) (max_over_time(up[1h]))", start, end)
    scraped = {s["metric"].get("container", "?") for s in up}
    print(f"prometheus: scraped containers: {', '.join(sorted(scraped)) or 'none'}")
    for container in ("operator", "media-node", "turn-node"):
        if container not in scraped:
            problems.append(f"no {container} pod was scraped")

    # Dashboards.
    panels = 0
    for path in sorted((chart / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        uid = dash["uid"]
        for panel in dash["panels"]:
            targets = [t for t in panel.get("targets", []) if t.get("expr")]
            if not targets:
                continue
            panels += 1
            key = (uid, panel["title"])
            data = False
            for t in targets:
                expr = substitute(t["expr"])
                try:
                    if has_data(query_range(base, expr, start, end)):
                        data = True
                        break
                except Exception as e:  # noqa: BLE001 — a query error is a problem to report
                    problems.append(f"{uid} / {panel['title']}: query fails: {e}: {expr}")
            if data and key in FAILURE_ONLY:
                notes.append(f"{uid} / {panel['title']}: has data (listed as failure-only: {FAILURE_ONLY[key]})")
            elif not data and key in FAILURE_ONLY:
                notes.append(f"{uid} / {panel['title']}: no data, as expected: {FAILURE_ONLY[key]}")
            elif not data:
                problems.append(f"{uid} / {panel['title']}: no data in the window ({targets[0]['expr']})")
    stale = [k for k in FAILURE_ONLY if not any(
        json.loads(p.read_text())["uid"] == k[0] and any(x.get("title") == k[1] for x in json.loads(p.read_text())["panels"])
        for p in (chart / "dashboards").glob("*.json"))]
    for k in stale:
        problems.append(f"FAILURE_ONLY names a panel that does not exist: {k}")

    # Alerts: the expressions over the window, and the rule states at the end.
    rules_file = chart / "rules" / "switchyard-alerts.yaml"
    alerts = 0
    rules = get(base, "/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"] if r.get("type") == "alerting"}
    declared = re.findall(r"^\s*- alert: (\S+)", rules_file.read_text(), re.M)
    for name in declared:
        if name not in loaded:
            problems.append(f"alert {name}: not loaded by Prometheus")
    fired = query_range(base, 'count by (alertname) (ALERTS{alertstate="firing"})', start, end)
    for s in fired:
        problems.append(f"alert {s['metric'].get('alertname')}: fired during the run")
    for name, rule in sorted(loaded.items()):
        alerts += 1
        result = query_range(base, rule["query"], start, end)
        if has_data(result):
            longest = max(longest_run(s["values"]) for s in result)
            labels = [s["metric"] for s in result][:3]
            if name not in TRANSIENT:
                problems.append(f"alert {name}: its expression is true on the healthy cluster for up to {longest} s: {labels}")
            elif longest >= rule.get("duration", 0):
                problems.append(f"alert {name}: true for {longest} s, as long as its `for` ({rule.get('duration')} s): {labels}")
            else:
                spans = sorted({(int(float(s["values"][0][0]) - start), int(float(s["values"][-1][0]) - start)) for s in result})
                when = ", ".join(f"{a}-{b} s" for a, b in spans[:4])
                notes.append(f"alert {name}: true for up to {longest} s (< for {rule.get('duration')} s) at {when} "
                             f"into the window: {TRANSIENT[name]}")
        if rule.get("health") not in (None, "ok", "unknown"):
            problems.append(f"alert {name}: rule health {rule.get('health')}: {rule.get('lastError')}")

    for n in notes:
        print(f"prometheus: {n}")
    print(f"prometheus: {panels} panels, {alerts} alerts evaluated over {end - start:.0f} s (from {start:.0f}); "
          f"{len(problems)} problems")
    for p in problems:
        print(f"prometheus: FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
