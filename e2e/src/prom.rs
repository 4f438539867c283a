//! Prometheus scrape targets from ServiceMonitors, for the e2e cluster's Prometheus.
//!
//! ```text
//!  ServiceMonitor ──selector──► Services ──spec.selector──► Ready pods (their IPs)
//!   endpoints[].port (a Service port name) ──targetPort──► the pod's container port
//!                                                          ▼
//!            file_sd groups: {targets: [ip:port], labels: namespace, pod, service,
//!                             job (the Service), endpoint, container, __metrics_path__}
//! ```
//!
//! The Prometheus Operator reads Endpoints for this; on a loopback cluster Services get
//! none (the apiserver refuses loopback endpoint addresses), so the targets are resolved
//! the way the endpoints controller would: the Service's selector over the Ready pods.
//! [`targets`] is pure; `prom-targets` feeds it from the apiserver.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::Value;

/// One file_sd group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// `ip:port`.
    pub targets: Vec<String>,
    /// Target labels.
    pub labels: BTreeMap<String, String>,
}

/// Targets split by `honorLabels` (two scrape jobs: Prometheus sets honor_labels per job).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Endpoints without `honorLabels`.
    pub plain: Vec<Group>,
    /// Endpoints with `honorLabels: true`.
    pub honor: Vec<Group>,
}

fn labels_match(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's port for a Service port's `targetPort` (a number or a container port name).
fn pod_port(pod: &Pod, target: &IntOrString) -> Option<u16> {
    match target {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Every scrape target of `monitors` (ServiceMonitor objects as JSON).
pub fn targets(monitors: &[Value], services: &[Service], pods: &[Pod]) -> Targets {
    let mut out = Targets::default();
    for sm in monitors {
        let sm_ns = sm["metadata"]["namespace"].as_str().unwrap_or_default();
        let spec = &sm["spec"];
        let selector = string_map(&spec["selector"]["matchLabels"]);
        let namespaces: Vec<&str> = match spec["namespaceSelector"]["matchNames"].as_array() {
            Some(names) if !names.is_empty() => names.iter().filter_map(Value::as_str).collect(),
            _ => vec![sm_ns],
        };
        let any_ns = spec["namespaceSelector"]["any"].as_bool() == Some(true);
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            if !(any_ns || namespaces.contains(&ns)) || !labels_match(&selector, svc.metadata.labels.as_ref()) {
                continue;
            }
            let Some(svc_spec) = &svc.spec else { continue };
            let Some(svc_selector) = svc_spec.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
            let svc_name = svc.metadata.name.clone().unwrap_or_default();
            for ep in spec["endpoints"].as_array().into_iter().flatten() {
                let Some(port_name) = ep["port"].as_str() else { continue };
                let Some(sp) = svc_spec.ports.iter().flatten().find(|p| p.name.as_deref() == Some(port_name)) else {
                    continue;
                };
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                let path = ep["path"].as_str().unwrap_or("/metrics");
                let groups = if ep["honorLabels"].as_bool() == Some(true) { &mut out.honor } else { &mut out.plain };
                for pod in pods {
                    if pod.metadata.namespace.as_deref() != Some(ns)
                        || !ready(pod)
                        || !labels_match(svc_selector, pod.metadata.labels.as_ref())
                    {
                        continue;
                    }
                    let (Some(ip), Some(port)) =
                        (pod.status.as_ref().and_then(|s| s.pod_ip.clone()), pod_port(pod, &target))
                    else {
                        continue;
                    };
                    let container = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone());
                    let labels = BTreeMap::from([
                        ("namespace".to_owned(), ns.to_owned()),
                        ("pod".to_owned(), pod.metadata.name.clone().unwrap_or_default()),
                        ("service".to_owned(), svc_name.clone()),
                        ("job".to_owned(), svc_name.clone()),
                        ("endpoint".to_owned(), port_name.to_owned()),
                        ("container".to_owned(), container.unwrap_or_default()),
                        ("__metrics_path__".to_owned(), path.to_owned()),
                    ]);
                    groups.push(Group { targets: vec![format!("{ip}:{port}")], labels });
                }
            }
        }
    }
    for g in [&mut out.plain, &mut out.honor] {
        g.sort_by(|a, b| (&a.labels, &a.targets).cmp(&(&b.labels, &b.targets)));
        g.dedup();
    }
    out
}

/// Keep `<dir>/plain.json` and `<dir>/honor.json` (file_sd) current with the cluster's
/// ServiceMonitors, Services and pods until the process is stopped. Files are replaced
/// with a rename, so Prometheus never reads half of one.
pub async fn follow(client: kube::Client, dir: &std::path::Path) -> anyhow::Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::{WatchStreamExt, reflector, watcher};

    fn store<K>(api: Api<K>, dyn_type: K::DynamicType) -> reflector::Store<K>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let writer = reflector::store::Writer::new(dyn_type);
        let reader = writer.as_reader();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = futures::StreamExt::next(&mut stream).await {
                if let Err(e) = item {
                    eprintln!("prom-targets: watch: {e}");
                }
            }
        });
        reader
    }

    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "servicemonitors");
    let monitors = store(Api::<DynamicObject>::all_with(client.clone(), &ar), ar.clone());
    let services = store(Api::<Service>::all(client.clone()), ());
    let pods = store(Api::<Pod>::all(client), ());
    std::fs::create_dir_all(dir)?;
    let mut last: Option<Targets> = None;
    loop {
        let sms: Vec<Value> = monitors.state().iter().filter_map(|m| serde_json::to_value(&**m).ok()).collect();
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let ps: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
        let t = targets(&sms, &svcs, &ps);
        if last.as_ref() != Some(&t) {
            for (name, groups) in [("plain", &t.plain), ("honor", &t.honor)] {
                let tmp = dir.join(format!(".{name}.json"));
                std::fs::write(&tmp, serde_json::to_vec_pretty(groups)?)?;
                std::fs::rename(&tmp, dir.join(format!("{name}.json")))?;
            }
            let n = t.plain.len() + t.honor.len();
            println!(
                "prom-targets: {n} targets: {}",
                t.plain
                    .iter()
                    .chain(&t.honor)
                    .map(|g| format!("{}/{}", g.labels["namespace"], g.labels["pod"]))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            last = Some(t);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn monitor(ns: &str, honor: bool) -> Value {
        json!({
            "metadata": {"namespace": ns, "name": "edge-sfu"},
            "spec": {
                "selector": {"matchLabels": {"switchyard.dev/cluster": "edge", "switchyard.dev/service": "admin"}},
                "endpoints": [{"port": "admin", "path": "/metrics", "interval": "15s", "honorLabels": honor}]
            }
        })
    }

    fn service(ns: &str, name: &str, labels: Value, selector: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"selector": selector, "ports": [{"name": "admin", "port": 9090, "targetPort": "admin"}]}
        }))
        .unwrap()
    }

    fn pod(ns: &str, name: &str, ip: &str, ready: bool, labels: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "media-node", "ports": [{"name": "admin", "containerPort": 9091}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_monitor_selects_services_whose_ready_pods_become_targets() {
        let labels = json!({"switchyard.dev/cluster": "edge", "switchyard.dev/service": "admin"});
        let services = vec![
            service("media", "edge-sfu-admin", labels.clone(), json!({"app": "sfu"})),
            service("media", "other", json!({"switchyard.dev/cluster": "other"}), json!({"app": "sfu"})),
            service("elsewhere", "edge-sfu-admin", labels, json!({"app": "sfu"})),
        ];
        let pods = vec![
            pod("media", "edge-sfu-0", "127.1.0.5", true, json!({"app": "sfu"})),
            pod("media", "edge-sfu-1", "127.1.0.6", false, json!({"app": "sfu"})),
            pod("media", "edge-turn-x", "127.1.0.7", true, json!({"app": "turn"})),
            pod("elsewhere", "edge-sfu-0", "127.1.0.8", true, json!({"app": "sfu"})),
        ];
        let t = targets(&[monitor("media", false)], &services, &pods);
        assert!(t.honor.is_empty());
        assert_eq!(t.plain.len(), 1, "{t:?}");
        let g = &t.plain[0];
        assert_eq!(g.targets, ["127.1.0.5:9091"], "the named targetPort resolves to the container port");
        assert_eq!(g.labels["namespace"], "media");
        assert_eq!(g.labels["pod"], "edge-sfu-0");
        assert_eq!(g.labels["job"], "edge-sfu-admin");
        assert_eq!(g.labels["container"], "media-node");
        assert_eq!(g.labels["__metrics_path__"], "/metrics");

        let any = json!({"metadata": {"namespace": "ops"}, "spec": {
            "namespaceSelector": {"matchNames": ["elsewhere"]},
            "selector": {"matchLabels": {"switchyard.dev/cluster": "edge"}},
            "endpoints": [{"port": "admin", "honorLabels": true}]
        }});
        let t = targets(&[any], &services, &pods);
        assert!(t.plain.is_empty());
        assert_eq!(t.honor.iter().map(|g| g.targets[0].as_str()).collect::<Vec<_>>(), ["127.1.0.8:9091"]);
    }
}
