#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every alert expression of the chart against
the e2e run's Prometheus, over the window in which the scenarios ran.

  check.py <prometheus URL> <window start, unix s> <window end, unix s> <chart dir>

- Each panel with queries must return data (a sample of any of its queries at any time
  in the window), unless it is listed in FAILURE_ONLY with the reason it stays empty on a
  healthy cluster; such panels are reported, not failed.
- No alert expression may return a sample anywhere in the window, and no alert may be
  pending or firing at the end: the cluster the scenarios ran on was healthy.
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

STEP = 15


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


def query_range(base, expr, start, end):
    return get(base, "/api/v1/query_range", query=expr, start=start, end=end, step=STEP)["result"]


def main():
    base, start, end, chart = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), pathlib.Path(sys.argv[4])
    problems, notes = [], []

    # What was scraped at all.
    up = query_range(base, "max by (job, container) (max_over_time(up[1h]))", start, end)
    scraped = {s["metric"].get("container", "?") for s in up}
    print(f"prometheus: scraped containers: {', '.join(sorted(scraped)) or 'none'}")
    for container in ("switchyard-operator", "media-node", "turn-node"):
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
    for name, rule in sorted(loaded.items()):
        alerts += 1
        result = query_range(base, rule["query"], start, end)
        if has_data(result):
            labels = [s["metric"] for s in result][:3]
            problems.append(f"alert {name}: its expression is true on the healthy cluster: {labels}")
        if rule.get("state") in ("pending", "firing"):
            problems.append(f"alert {name}: {rule['state']} at the end of the run")
        if rule.get("health") not in (None, "ok", "unknown"):
            problems.append(f"alert {name}: rule health {rule.get('health')}: {rule.get('lastError')}")

    for n in notes:
        print(f"prometheus: {n}")
    print(f"prometheus: {panels} panels, {alerts} alerts evaluated over {end - start:.0f} s; {len(problems)} problems")
    for p in problems:
        print(f"prometheus: FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
