//! The Helm chart (`charts/switchyard`), its alert rules and dashboards, held against the
//! code:
//!
//! - every `switchyard_*` series the alert rules and dashboards query is one the
//!   components really export: names come from the real registries (the operator's
//!   `Metrics::new()`, turn-node's `Metrics::new()`, and a running media-node's
//!   `/metrics`), plus, for labelled families no traffic here reaches, from reading the
//!   `register` calls in their source (checked against those real expositions); so
//!   renaming a metric fails here;
//! - the operator's RBAC (`files/operator-rules.yaml`, `files/operator-cluster-rules.yaml`)
//!   covers every object it renders, prunes and reads, and every permission of the
//!   media-node Role it grants (Kubernetes refuses to let a subject grant more than it
//!   holds);
//! - the alert rules are complete (severity, summary, description, runbook) and
//!   `deploy/prometheus/` ships the same file; the dashboards are well-formed.
//!
//! Rendering and linting with helm, and `promtool` checks and unit tests of the rules,
//! are in `scripts/check-chart` (CI runs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{Value, json};
use switchyard_api::MediaCluster;
use switchyard_operator::render::{self, Images, Inputs, Names, SecretMaterial};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Metric names

/// The series names an exposition offers, from its `# TYPE` lines: counters are sampled
/// as `<name>_total`, histograms as `<name>_bucket`, `_sum` and `_count`.
fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => {
                out.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    out.insert(format!("{name}_{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// GET `path` over plain HTTP/1.1: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Ask for a signaling WebSocket by hand: the response head, and the connection.
async fn ws_upgrade(addr: std::net::SocketAddr, query: &str) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /rtc{query} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), s)
}

/// Open a signaling WebSocket and send one frame that is not JSON, so the node answers
/// with a protocol error (and counts it).
async fn send_garbage_over_signaling(addr: std::net::SocketAddr) {
    use switchyard_api::token::{Claims, Grants, mint};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims::new("chartkey", "probe", now, 600).with_grants(Grants::join("chart"));
    let token = mint(&claims, "chart-secret").unwrap();
    let (head, mut s) = ws_upgrade(addr, &format!("?access_token={token}")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "WebSocket upgrade: {head}");
    // One masked text frame (clients must mask).
    let payload = b"this is not json";
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | u8::try_from(payload.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    // The error reply.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(n > 0, "the node answered the garbage frame");
}

/// Every series the three components export, by component. prometheus-client leaves a
/// labelled family out of the exposition until it has a child, so each family is used
/// once first.
async fn exported_series() -> BTreeMap<&'static str, BTreeSet<String>> {
    let operator = switchyard_operator::metrics::Metrics::new();
    {
        let _timer = operator.reconcile_timer("room");
    }
    operator.reconciled("room", "ok");
    operator.set_rooms(&[("Pending", 0)]);
    operator.placed(true, Some(0.1));
    operator.fleet("media", "edge", "turn", switchyard_operator::metrics::FleetGauges::default());
    operator.turn_bandwidth("media", "edge", 0);
    operator.set_leader(false);
    let operator = series_names(&operator.encode());

    // turn-node creates every label combination up front.
    let turn = series_names(&switchyard_turn_node::metrics::Metrics::new().encode());

    let node = switchyard_media_node::Node::start(switchyard_media_node::Config::local("chartkey", "chart-secret"))
        .await
        .expect("media-node starts");
    let (head, _) = ws_upgrade(node.http_addr, "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "a join without a token is refused: {head}");
    send_garbage_over_signaling(node.http_addr).await;
    let mut media = BTreeSet::new();
    for _ in 0..50 {
        media = series_names(&http_get(node.admin_addr, "/metrics").await.1);
        // RTP counters appear after the first stats tick.
        if ["rtp_packets_total", "signal_connections_total", "signal_errors_total"]
            .iter()
            .all(|n| media.contains(&format!("switchyard_media_{n}")))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    node.shutdown().await;
    BTreeMap::from([("operator", operator), ("turn-node", turn), ("media-node", media)])
}

/// The series a crate's metrics module registers, read from its source: the
/// `Registry::with_prefix("…")`, every `registry.register("name", "help", x.clone())`,
/// and the type of `x` where it is declared (`x: Family<…, Counter>`,
/// `let x = Histogram::new(…)`). The exposition only lists families that have children;
/// this also finds those no test traffic reaches. Checked against the real expositions.
fn series_in_source(path: &Path) -> BTreeSet<String> {
    let text = read(path);
    let literal = |s: &str| -> Option<(String, usize)> {
        let s_trim = s.trim_start();
        let skipped = s.len() - s_trim.len();
        let body = s_trim.strip_prefix('"')?;
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => return Some((out, skipped + 1 + i + 1)),
                c => out.push(c),
            }
        }
        None
    };
    let prefix_at = text.find("Registry::with_prefix(").unwrap_or_else(|| panic!("{}: no prefix", path.display()));
    let (prefix, _) = literal(&text[prefix_at + "Registry::with_prefix(".len()..]).unwrap();
    let kind_of = |ident: &str| -> Option<&'static str> {
        for (i, _) in text.match_indices(ident) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + ident.len()..];
            let declared = rest.starts_with(": ") || (rest.starts_with(" = ") && text[..i].ends_with("let "));
            if !declared {
                continue;
            }
            let line = rest.lines().next().unwrap_or_default();
            for kind in ["Histogram", "Counter", "Gauge"] {
                if line.contains(kind) {
                    return Some(kind);
                }
            }
        }
        None
    };
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices(".register(") {
        let rest = &text[at + ".register(".len()..];
        let Some((name, used)) = literal(rest) else { continue };
        let rest = rest[used..].trim_start().trim_start_matches(',');
        let (_help, used) = literal(rest).unwrap_or_else(|| panic!("{}: register({name:?}) help", path.display()));
        let rest = rest[used..].trim_start().trim_start_matches(',').trim_start();
        let expr =
            &rest[..rest.find(".clone()").unwrap_or_else(|| panic!("{}: register({name:?}) value", path.display()))];
        let ident = expr.rsplit('.').next().unwrap().trim();
        let kind = kind_of(ident).unwrap_or_else(|| panic!("{}: the type of {ident} ({name})", path.display()));
        let base = format!("{prefix}_{name}");
        match kind {
            "Counter" => {
                out.insert(format!("{base}_total"));
            }
            "Histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    out.insert(format!("{base}_{suffix}"));
                }
            }
            _ => {
                out.insert(base);
            }
        }
    }
    out
}

/// Every `switchyard_…` identifier in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("switchyard_").map(|i| i + from) {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let end = text[i..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| i + n);
        if starts_word {
            out.insert(text[i..end].to_owned());
        }
        from = end;
    }
    out
}

fn dashboard_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn alert_rules_path() -> PathBuf {
    chart().join("rules/switchyard-alerts.yaml")
}

#[test]
fn the_name_scanner_finds_whole_identifiers() {
    let text =
        r#"sum(rate(switchyard_media_rtp_packets_total{x="y"}[5m])) / my_switchyard_x + switchyard_turn_allocations"#;
    assert_eq!(
        metric_names_in(text),
        BTreeSet::from(["switchyard_media_rtp_packets_total".to_owned(), "switchyard_turn_allocations".to_owned()])
    );
    let exposition = "# HELP a_x X.\n# TYPE a_x counter\na_x_total 1\n# TYPE a_h histogram\n# TYPE a_g gauge\n";
    assert_eq!(
        series_names(exposition),
        ["a_x_total", "a_h_bucket", "a_h_sum", "a_h_count", "a_g"].into_iter().map(str::to_owned).collect()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_dashboards_use_only_metrics_the_code_exports() {
    let mut exported = exported_series().await;
    for (component, names) in &exported {
        assert!(names.len() >= 5, "{component} exports {names:?}: did its registry change shape?");
    }
    // The source reading must agree with every real exposition; then it adds the
    // families the test could not give a child (media-node's webhooks, proxying, Room
    // status reports need receivers, a second node or an apiserver).
    for (component, file) in [
        ("operator", "operator/src/metrics.rs"),
        ("turn-node", "turn-node/src/metrics.rs"),
        ("media-node", "media-node/src/metrics.rs"),
    ] {
        let from_source = series_in_source(&repo().join(file));
        let real = exported.get_mut(component).unwrap();
        let unseen: Vec<&String> = real.difference(&from_source).collect();
        assert!(unseen.is_empty(), "reading {file} missed {unseen:?} that the real exposition has");
        real.extend(from_source);
    }
    let known: BTreeSet<&String> = exported.values().flatten().collect();

    let mut sources = vec![alert_rules_path()];
    sources.extend(dashboard_files());
    let mut used_by_component: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unknown = Vec::new();
    for path in &sources {
        let names = metric_names_in(&read(path));
        assert!(!names.is_empty(), "{} queries no switchyard metric", path.display());
        for name in names {
            if !known.contains(&name) {
                unknown.push(format!("{name} (in {})", path.strip_prefix(repo()).unwrap_or(path).display()));
            }
            for (component, names) in &exported {
                if names.contains(&name) {
                    *used_by_component.entry(component).or_default() += 1;
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "alert rules or dashboards query series no component exports:\n  {}\nexported:\n{exported:#?}",
        unknown.join("\n  ")
    );
    for component in exported.keys() {
        assert!(used_by_component.contains_key(component), "no alert or dashboard uses any {component} metric");
    }
}

// ---------------------------------------------------------------------------------------
// Alert rules

#[test]
fn alert_rules_are_complete_and_shipped_twice() {
    let text = read(&alert_rules_path());
    assert_eq!(
        text,
        read(&repo().join("deploy/prometheus/switchyard-alerts.yaml")),
        "deploy/prometheus/switchyard-alerts.yaml must equal charts/switchyard/rules/switchyard-alerts.yaml: copy it"
    );
    let template = read(&chart().join("templates/prometheusrule.yaml"));
    assert!(template.contains(r#".Files.Get "rules/switchyard-alerts.yaml""#), "the PrometheusRule embeds the file");

    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    let mut count = 0;
    for group in doc["groups"].as_array().expect("groups") {
        let group_name = group["name"].as_str().expect("group name");
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().unwrap_or_else(|| panic!("{group_name}: a rule without alert: {rule}"));
            assert!(names.insert(name.to_owned()), "alert {name} defined twice");
            assert!(name.starts_with("Switchyard"), "{name}: alerts are named Switchyard…");
            assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: expr");
            assert!(rule["for"].as_str().is_some(), "{name}: a `for` duration, so one bad scrape never pages");
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity:?}");
            for key in ["summary", "description", "runbook"] {
                let v = rule["annotations"][key].as_str().unwrap_or_default();
                assert!(v.trim().len() > 10, "{name}: annotation {key} is missing or empty");
            }
            count += 1;
        }
    }
    assert!(count >= 15, "{count} alerts");
    // The alerts the README promises.
    for name in [
        "SwitchyardOperatorAbsent",
        "SwitchyardOperatorNoLeader",
        "SwitchyardReconcileErrors",
        "SwitchyardRoomsUnschedulable",
        "SwitchyardScaleUpStalled",
        "SwitchyardMediaJoinFailures",
        "SwitchyardNodeDrainingTooLong",
        "SwitchyardTurnQuotaRejections",
        "SwitchyardTurnAuthFailures",
        "SwitchyardTurnBandwidthCapDrops",
    ] {
        assert!(names.contains(name), "missing alert {name}");
    }
    // Every alert has a promtool unit test that makes it fire.
    let tests = read(&repo().join("deploy/prometheus/switchyard-alerts.test.yaml"));
    for name in &names {
        let firing = tests.split("alertname: ").skip(1).any(|case| {
            case.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(|c: char| !c.is_alphanumeric()))
                && case.split("alertname:").next().unwrap().contains("exp_labels")
        });
        assert!(firing, "deploy/prometheus/switchyard-alerts.test.yaml has no case where {name} fires");
    }
}

// ---------------------------------------------------------------------------------------
// Dashboards

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

#[test]
fn dashboards_are_well_formed() {
    let files = dashboard_files();
    let mut titles = BTreeSet::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let d: Value = serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(d["schemaVersion"].as_i64().unwrap_or(0) >= 39, "{name}: schemaVersion");
        assert!(d["uid"].as_str().is_some_and(|u| u.starts_with("switchyard-") && u.len() <= 40), "{name}: uid");
        titles.insert(d["title"].as_str().unwrap_or_default().to_owned());

        let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
            .as_array()
            .expect("templating.list")
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        assert_eq!(vars["datasource"]["type"], "datasource", "{name}: a datasource variable");
        assert_eq!(vars["datasource"]["query"], "prometheus");
        for v in ["namespace", "cluster"] {
            assert_eq!(vars[v]["datasource"]["uid"], "${datasource}", "{name}: variable {v}");
        }

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(ids.insert(p["id"].as_i64().expect("panel id")), "{name}: panel id {} twice", p["id"]);
            assert!(p["gridPos"]["w"].as_i64().is_some(), "{name}/{title}: gridPos");
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}/{title}: panels use the datasource variable");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{name}/{title}: targets"));
            assert!(!targets.is_empty(), "{name}/{title}: no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(expr.contains("switchyard_"), "{name}/{title}: {expr}");
                assert_eq!(
                    expr.matches('(').count(),
                    expr.matches(')').count(),
                    "{name}/{title}: parentheses in {expr}"
                );
                assert_eq!(expr.matches('{').count(), expr.matches('}').count(), "{name}/{title}: braces in {expr}");
            }
        }
    }
    assert_eq!(
        titles,
        BTreeSet::from([
            "Switchyard / Operator".to_owned(),
            "Switchyard / Overview".to_owned(),
            "Switchyard / Rooms & SFU".to_owned(),
            "Switchyard / TURN".to_owned()
        ]),
        "the dashboards the README promises"
    );
}

// ---------------------------------------------------------------------------------------
// RBAC

fn rules(file: &str) -> Vec<PolicyRule> {
    serde_saphyr::from_str(&read(&chart().join("files").join(file))).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    let has = |list: &Option<Vec<String>>, want: &str| list.iter().flatten().any(|v| v == want || v == "*");
    rules.iter().any(|r| {
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb || v == "*")
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), Some(n)) => names.is_empty() || names.iter().any(|x| x == n),
                (Some(names), None) => names.is_empty(),
            }
    })
}

fn cluster(spec: Value) -> MediaCluster {
    let mut mc = MediaCluster::new("edge", serde_json::from_value(spec).unwrap());
    mc.metadata.namespace = Some("media".into());
    mc.metadata.uid = Some("6f1c9a52-0000-4000-8000-00000000c4a7".into());
    mc.metadata.generation = Some(1);
    mc
}

/// Everything the operator can render, over configurations that between them produce
/// every optional object.
fn rendered_objects() -> Vec<render::Object> {
    let images = Images::default();
    let secrets = SecretMaterial { api_key: Some(("APIchart".into(), "chart-secret".into())), turn_secret: "t".into() };
    let ips = ["10.244.1.7".to_owned()];
    let uris = ["turn:203.0.113.9:3478?transport=udp".to_owned()];
    let mut out = Vec::new();
    for spec in [
        json!({}),
        json!({
            "media": { "mode": "Direct" },
            "signaling": { "ingress": { "host": "rtc.example.com", "tlsSecretRef": { "name": "rtc-cert" } } },
            "turn": { "service": { "type": "NodePort" } },
            "auth": { "keysSecretRef": { "name": "my-keys" } },
        }),
    ] {
        let inputs = Inputs {
            secrets: &secrets,
            sfu_replicas: 2,
            turn_replicas: 2,
            sfu_pod_ips: &ips,
            turn_uris: Some(&uris),
            service_monitor_crd: true,
            images: &images,
        };
        out.extend(render::render(&cluster(spec), &inputs).unwrap());
    }
    out
}

#[test]
fn the_operator_rbac_covers_what_it_renders_and_grants() {
    let namespaced = rules("operator-rules.yaml");
    let cluster_scoped = rules("operator-cluster-rules.yaml");
    let mut missing = BTreeSet::new();
    let mut need = |rules: &[PolicyRule], group: &str, resource: &str, verb: &str, name: Option<&str>, why: &str| {
        if !allows(rules, group, resource, verb, name) {
            let group = if group.is_empty() { String::new() } else { format!(".{group}") };
            let name = name.map(|n| format!(" ({n})")).unwrap_or_default();
            missing.insert(format!("{verb} {resource}{group}{name}: {why}"));
        }
    };

    let objects = rendered_objects();
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o.kind).collect();
    for kind in ["StatefulSet", "Deployment", "Ingress", "NetworkPolicy", "ServiceMonitor", "Role", "Secret"] {
        assert!(kinds.contains(kind), "the test clusters render no {kind}: widen rendered_objects()");
    }
    // Server-side apply creates an object that is missing and patches one that exists.
    for o in &objects {
        for verb in ["create", "patch"] {
            need(&namespaced, o.group(), o.plural, verb, None, "the operator applies it");
        }
    }
    // Privilege escalation prevention: the media-node Role the operator creates may only
    // hold permissions the operator holds.
    for o in objects.iter().filter(|o| o.kind == "Role") {
        let granted: Vec<PolicyRule> = serde_json::from_value(o.body["rules"].clone()).unwrap();
        for r in &granted {
            for (group, resource, verb) in r.api_groups.iter().flatten().flat_map(|g| {
                r.resources.iter().flatten().flat_map(move |res| r.verbs.iter().map(move |v| (g, res, v)))
            }) {
                need(&namespaced, group, resource, verb, None, "the operator grants it to media-node");
            }
        }
    }
    // Objects that stop being rendered are looked up and deleted.
    for stub in render::optional_objects(&Names::new("edge")) {
        for verb in ["get", "delete"] {
            need(&namespaced, stub.group(), stub.plural, verb, None, "pruned when no longer rendered");
        }
    }
    // What the controllers do besides applying (controller/*.rs, run.rs).
    for (group, resource, verbs, why) in [
        ("switchyard.dev", "mediaclusters", &["get", "list", "watch"][..], "the MediaCluster controller"),
        ("switchyard.dev", "mediaclusters/status", &["patch"], "status"),
        ("switchyard.dev", "rooms", &["get", "list", "watch", "patch", "delete"], "Room controller, finalizer, expiry"),
        ("switchyard.dev", "rooms/status", &["patch"], "placement"),
        ("apps", "statefulsets", &["get", "list", "watch"], "owned, read for replicas"),
        ("apps", "deployments", &["get", "list", "watch"], "owned, read for replicas"),
        ("", "services", &["get", "list", "watch"], "owned, read for load balancer addresses"),
        ("", "configmaps", &["list", "watch"], "owned"),
        ("", "secrets", &["get"], "generated secrets are read back"),
        ("", "pods", &["list", "patch", "delete"], "fleet pods, drain victim, replacement"),
        ("events.k8s.io", "events", &["create", "patch"], "events"),
    ] {
        for verb in verbs {
            need(&namespaced, group, resource, verb, None, why);
        }
    }
    need(
        &cluster_scoped,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "get",
        Some("servicemonitors.monitoring.coreos.com"),
        "ServiceMonitor CRD detection",
    );

    // A tripwire for new API calls: every typed `Api<K>` the operator builds must map to a
    // resource its rules allow at least `get` on.
    let typed: BTreeMap<&str, (&str, &str, bool)> = BTreeMap::from([
        ("MediaCluster", ("switchyard.dev", "mediaclusters", false)),
        ("Room", ("switchyard.dev", "rooms", false)),
        ("StatefulSet", ("apps", "statefulsets", false)),
        ("Deployment", ("apps", "deployments", false)),
        ("Service", ("", "services", false)),
        ("ConfigMap", ("", "configmaps", false)),
        ("Secret", ("", "secrets", false)),
        ("Pod", ("", "pods", false)),
        ("Node", ("", "nodes", true)),
        ("CustomResourceDefinition", ("apiextensions.k8s.io", "customresourcedefinitions", true)),
    ]);
    let mut unmapped = Vec::new();
    for kind in api_types_used_by_the_operator() {
        if kind == "DynamicObject" {
            continue; // the rendered objects above
        }
        let Some((group, resource, cluster_wide)) = typed.get(kind.as_str()) else {
            unmapped.push(format!("the operator now uses Api<{kind}>: add its RBAC rule and map it in this test"));
            continue;
        };
        let name = (*resource == "customresourcedefinitions").then_some("servicemonitors.monitoring.coreos.com");
        let rules = if *cluster_wide { &cluster_scoped } else { &namespaced };
        need(rules, group, resource, "get", name, "the operator reads it");
    }

    missing.extend(unmapped);
    let missing: Vec<String> = missing.into_iter().collect();
    assert!(missing.is_empty(), "charts/switchyard/files/operator-*rules.yaml lack:\n  {}", missing.join("\n  "));
}

/// `K` of every `Api<K>` / `Api::<K>` in the operator's non-test sources.
fn api_types_used_by_the_operator() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("operator/src"), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy();
        if stem == "tests" || stem == "testing" {
            continue;
        }
        let text = read(&f);
        for marker in ["Api<", "Api::<"] {
            for (i, _) in text.match_indices(marker) {
                let before = text[..i].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // e.g. `NodeApi<`
                }
                let rest = &text[i + marker.len()..];
                let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                if end > 0 {
                    out.insert(rest[..end].to_owned());
                }
            }
        }
    }
    assert!(out.contains("Pod") && out.contains("MediaCluster"), "the scan found {out:?}");
    out
}
