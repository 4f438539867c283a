//! A container's environment and argv, resolved from the pod the way the kubelet does
//! (`kubelet_pods.go: makeEnvironmentVariables`): `envFrom` first, then `env` in order,
//! each `value` expanded with the variables defined before it; then the service
//! variables the pod did not set. `args` are expanded with the final environment.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Error;
use super::expand::expand;

/// ConfigMaps and Secrets by namespace and name, with their data as bytes.
pub trait Objects {
    /// A ConfigMap's `data` and `binaryData`.
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// A Secret's `data` (decoded) and `stringData`.
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// Objects held in maps (tests, and a snapshot of the stores).
#[derive(Clone, Debug, Default)]
pub struct MapObjects {
    /// `(namespace, name)` → data.
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// `(namespace, name)` → data.
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Objects for MapObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.config_maps.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}

/// An ordered environment where a later `set` of a name replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    /// Set `name`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value.into(),
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value.into()));
            }
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    /// In definition order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What resolution needs besides the pod: the runner's own variables (applied first, the
/// pod overrides them), the service variables (`KUBERNETES_SERVICE_HOST` …, applied last
/// unless the pod set them) and the node's allocatable resources (the default limits).
#[derive(Clone, Debug, Default)]
pub struct EnvContext {
    /// PATH, HOME, RUST_LOG … as the runner passes them.
    pub base: Vec<(String, String)>,
    /// Variables the kubelet derives from Services.
    pub service: Vec<(String, String)>,
    /// The node's `status.allocatable`.
    pub node_allocatable: BTreeMap<String, Quantity>,
}

/// The container's environment.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    objects: &dyn Objects,
    ctx: &EnvContext,
) -> Result<EnvList, Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut pod_env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, optional, data) = if let Some(r) = &from.config_map_ref {
            ("ConfigMap", &r.name, r.optional == Some(true), objects.config_map(ns, &r.name))
        } else if let Some(r) = &from.secret_ref {
            ("Secret", &r.name, r.optional == Some(true), objects.secret(ns, &r.name))
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    // the kubelet skips keys that are not valid variable names
                    if !k.is_empty() && !k.contains('=') {
                        pod_env.set(format!("{prefix}{k}"), String::from_utf8_lossy(&v));
                    }
                }
            }
            None if optional => {}
            None => return Err(Error::Spec(format!("envFrom: {kind} {ns}/{name} not found"))),
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => {
                let lookup = |n: &str| pod_env.get(n).or_else(|| lookup_in(&ctx.service, n)).map(str::to_owned);
                Some(expand(v, lookup))
            }
            (_, Some(from)) => value_from(pod, container, from, objects, ctx)
                .map_err(|e| Error::Spec(format!("env {}: {e}", var.name)))?,
            _ => Some(String::new()),
        };
        if let Some(value) = value {
            pod_env.set(var.name.clone(), value);
        }
    }

    let mut env = EnvList::default();
    for (k, v) in &ctx.base {
        env.set(k.clone(), v.clone());
    }
    for (k, v) in pod_env.iter() {
        env.set(k, v);
    }
    for (k, v) in &ctx.service {
        if pod_env.get(k).is_none() {
            env.set(k.clone(), v.clone());
        }
    }
    Ok(env)
}

fn lookup_in<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The argv after the binary: `args` expanded with the final environment. A `command`
/// would replace the image's entrypoint, which is the binary itself here: refused.
pub fn resolve_args(container: &Container, env: &EnvList) -> Result<Vec<String>, Error> {
    if let Some(cmd) = container.command.as_ref().filter(|c| !c.is_empty()) {
        return Err(Error::Spec(format!(
            "container {} sets command {cmd:?}: the runner plays the image's entrypoint with its binary and \
             cannot run another command",
            container.name
        )));
    }
    Ok(container.args.iter().flatten().map(|a| expand(a, |n| env.get(n).map(str::to_owned))).collect())
}

/// One `valueFrom`; `Ok(None)` for an optional reference that is absent (the variable is
/// then not set, as with the kubelet).
fn value_from(
    pod: &Pod,
    container: &Container,
    from: &EnvVarSource,
    objects: &dyn Objects,
    ctx: &EnvContext,
) -> Result<Option<String>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(f) = &from.field_ref {
        return field_value(pod, f).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(pod, container, r, &ctx.node_allocatable).map(Some);
    }
    let (kind, name, key, optional, data) = if let Some(r) = &from.config_map_key_ref {
        ("ConfigMap", &r.name, &r.key, r.optional == Some(true), objects.config_map(ns, &r.name))
    } else if let Some(r) = &from.secret_key_ref {
        ("Secret", &r.name, &r.key, r.optional == Some(true), objects.secret(ns, &r.name))
    } else {
        return Err("valueFrom: only fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef are supported".into());
    };
    match data.as_ref().map(|d| d.get(key)) {
        Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        _ if optional => Ok(None),
        None => Err(format!("{kind} {ns}/{name} not found")),
        Some(None) => Err(format!("{kind} {ns}/{name} has no key {key:?}")),
    }
}

/// A `fieldRef` (env and downwardAPI volumes).
pub fn field_value(pod: &Pod, f: &ObjectFieldSelector) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let path = f.field_path.as_str();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_owned)
    };
    let v = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                m.labels.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                m.annotations.as_ref().and_then(|a| a.get(&k)).cloned().unwrap_or_default()
            } else {
                return Err(format!("fieldRef {path:?} is not supported"));
            }
        }
    };
    Ok(v)
}

/// Labels or annotations as a downwardAPI file: sorted `key="value"` lines.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// A `resourceFieldRef`: the container's limit or request divided by the divisor,
/// rounded up. An absent limit is the node's allocatable; an absent request is the limit
/// if one is set, else 0.
pub fn resource_value(
    pod: &Pod,
    current: &Container,
    r: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, String> {
    let container = match r.container_name.as_deref() {
        None | Some("") => current,
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| c.name == name)
            .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?,
    };
    let (kind, resource) =
        r.resource.split_once('.').ok_or_else(|| format!("resourceFieldRef {:?} is not supported", r.resource))?;
    let res = container.resources.as_ref();
    let limit = res.and_then(|x| x.limits.as_ref()).and_then(|l| l.get(resource));
    let request = res.and_then(|x| x.requests.as_ref()).and_then(|l| l.get(resource));
    let q = match kind {
        "limits" => limit.or_else(|| node_allocatable.get(resource)).map(|q| q.0.clone()),
        "requests" => request.or(limit).map(|q| q.0.clone()),
        _ => None,
    }
    .unwrap_or_else(|| "0".to_owned());
    if !matches!(resource, "cpu" | "memory" | "ephemeral-storage") {
        return Err(format!("resourceFieldRef {:?} is not supported", r.resource));
    }
    let divisor = r.divisor.as_ref().map_or("1", |d| d.0.as_str());
    let value = parse_quantity(&q).ok_or_else(|| format!("quantity {q:?}"))?;
    let div = parse_quantity(divisor).filter(|d| *d > 0.0).ok_or_else(|| format!("divisor {divisor:?}"))?;
    let v = if resource == "cpu" {
        // the kubelet divides milli-values
        ((value * 1000.0).ceil() / (div * 1000.0).ceil()).ceil()
    } else {
        (value.ceil() / div.ceil()).ceil()
    };
    Ok(format!("{v}"))
}

/// A Kubernetes quantity as a number of base units (`250m` → 0.25, `1Gi` → 1073741824).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "edge-sfu-0", "namespace": "media", "uid": "u-1",
                "labels": {"app": "sfu", "zone": "a"},
                "annotations": {"note": "x\"y"}
            },
            "spec": {
                "nodeName": "kwok-node-1",
                "serviceAccountName": "edge-media-node",
                "containers": [{
                    "name": "media-node",
                    "image": "ghcr.io/switchyard-dev/media-node:0.1.0",
                    "args": ["--config", "/etc/switchyard/config/config.yaml", "--advertise=$(POD_IP)", "$$(POD_IP)", "$(NOPE)"],
                    "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "250m"}},
                    "envFrom": [
                        {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                        {"secretRef": {"name": "missing", "optional": true}}
                    ],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "RELAY", "value": "$(POD_IP):3478"},
                        {"name": "LATER_FIRST", "value": "$(LATER)"},
                        {"name": "LATER", "value": "later"},
                        {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['zone']"}}},
                        {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": true}}},
                        {"name": "CM_VALUE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "level"}}},
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                        {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                        {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                        {"name": "EMPTY", "value": ""},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
                        {"name": "SVC", "value": "$(KUBERNETES_SERVICE_HOST)"},
                        {"name": "RUST_LOG", "value": "debug"}
                    ]
                }]
            },
            "status": {"podIP": "127.1.1.4", "hostIP": "127.0.0.1", "phase": "Running"}
        }))
        .unwrap()
    }

    fn objects() -> MapObjects {
        let mut o = MapObjects::default();
        o.config_maps.insert(
            ("media".into(), "cm".into()),
            [("level".to_owned(), b"info".to_vec()), ("bad=key".to_owned(), b"x".to_vec())].into(),
        );
        o.secrets.insert(("media".into(), "s".into()), [("token".to_owned(), b"s3cret".to_vec())].into());
        o
    }

    fn ctx() -> EnvContext {
        EnvContext {
            base: vec![("PATH".into(), "/usr/bin".into()), ("RUST_LOG".into(), "info".into())],
            service: vec![
                ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
                ("KUBERNETES_SERVICE_PORT".into(), "6443".into()),
            ],
            node_allocatable: [
                ("cpu".to_owned(), Quantity("32".into())),
                ("memory".to_owned(), Quantity("256Gi".into())),
            ]
            .into(),
        }
    }

    #[test]
    fn env_like_the_kubelet() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(&p, c, &objects(), &ctx()).unwrap();
        let get = |k: &str| env.get(k).map(str::to_owned);
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin"));
        assert_eq!(get("RUST_LOG").as_deref(), Some("debug"), "the pod overrides the runner's variables");
        assert_eq!(get("CM_level").as_deref(), Some("info"));
        assert_eq!(get("CM_bad=key"), None);
        assert_eq!(get("POD_NAME").as_deref(), Some("edge-sfu-0"));
        assert_eq!(get("RELAY").as_deref(), Some("127.1.1.4:3478"));
        assert_eq!(get("LATER_FIRST").as_deref(), Some("$(LATER)"), "only earlier variables expand");
        assert_eq!(get("ZONE").as_deref(), Some("a"));
        assert_eq!(get("NOTE").as_deref(), Some("x\"y"));
        assert_eq!(get("SA").as_deref(), Some("edge-media-node"));
        assert_eq!(get("NODE").as_deref(), Some("kwok-node-1"));
        assert_eq!(get("HOST_IP").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("SECRET").as_deref(), Some("s3cret"));
        assert_eq!(get("OPT"), None, "an optional absent key leaves the variable unset");
        assert_eq!(get("CM_VALUE").as_deref(), Some("info"));
        assert_eq!(get("MEM").as_deref(), Some("256"));
        assert_eq!(get("CPU_LIMIT").as_deref(), Some("32"), "no limit: the node's allocatable");
        assert_eq!(get("CPU_REQ_M").as_deref(), Some("250"));
        assert_eq!(get("CPU_REQ").as_deref(), Some("1"), "rounded up");
        assert_eq!(get("EMPTY").as_deref(), Some(""));
        assert_eq!(get("KUBERNETES_SERVICE_PORT").as_deref(), Some("1"), "the pod's value wins");
        assert_eq!(get("KUBERNETES_SERVICE_HOST").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("SVC").as_deref(), Some("127.0.0.1"), "service variables expand in values");

        let args = resolve_args(c, &env).unwrap();
        assert_eq!(
            args,
            ["--config", "/etc/switchyard/config/config.yaml", "--advertise=127.1.1.4", "$(POD_IP)", "$(NOPE)"]
        );
    }

    #[test]
    fn missing_references_fail_unless_optional() {
        let mut p = pod();
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.env = Some(vec![
            serde_json::from_value(json!(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}}
            ))
            .unwrap(),
        ]);
        let c = c.clone();
        let err = resolve_env(&p, &c, &objects(), &ctx()).unwrap_err().to_string();
        assert!(err.contains("env X") && err.contains("Secret media/s has no key \"nope\""), "{err}");

        let mut c2 = c.clone();
        c2.env = Some(vec![
            serde_json::from_value(json!(
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}
            ))
            .unwrap(),
        ]);
        let err = resolve_env(&p, &c2, &objects(), &ctx()).unwrap_err().to_string();
        assert!(err.contains("ConfigMap media/absent not found"), "{err}");

        let mut c3 = c.clone();
        c3.env = None;
        c3.env_from = Some(vec![serde_json::from_value(json!({"secretRef": {"name": "absent"}})).unwrap()]);
        assert!(resolve_env(&p, &c3, &objects(), &ctx()).is_err());
    }

    #[test]
    fn command_is_refused() {
        let mut c: Container = serde_json::from_value(json!({"name": "x", "command": ["/bin/sh"]})).unwrap();
        let err = resolve_args(&c, &EnvList::default()).unwrap_err().to_string();
        assert!(err.contains("sets command"), "{err}");
        c.command = Some(vec![]);
        assert!(resolve_args(&c, &EnvList::default()).unwrap().is_empty());
    }

    #[test]
    fn labels_file_format() {
        let p = pod();
        let f = ObjectFieldSelector { field_path: "metadata.labels".into(), api_version: None };
        assert_eq!(field_value(&p, &f).unwrap(), "app=\"sfu\"\nzone=\"a\"\n");
        let bad = ObjectFieldSelector { field_path: "spec.priority".into(), api_version: None };
        assert!(field_value(&p, &bad).is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
    }
}
