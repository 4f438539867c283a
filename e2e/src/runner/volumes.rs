//! Pod volumes as directories under the pod's state dir.
//!
//! ConfigMap, Secret, downwardAPI and projected volumes are written the way the kubelet's
//! `AtomicWriter` does it, so a reader never sees half an update:
//!
//! ```text
//! volumes/config/
//!   ..2025_01_01_00_00_00.000000001/config.yaml   the payload, written first
//!   ..data -> ..2025_01_01_00_00_00.000000001     swapped with one rename(2)
//!   config.yaml -> ..data/config.yaml             what the binary opens
//! ```
//!
//! Which files a volume holds is a pure function of the pod, the ConfigMaps/Secrets and
//! the service-account tokens ([`volume_content`]); writing it is [`write_atomic`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Error;
use super::env::{Objects, field_value, resource_value};

/// One file of a volume: contents and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, File>;

/// A bound service-account token a projected volume asks for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    /// The service account (the pod's).
    pub service_account: String,
    /// `audience`; empty means the apiserver's default.
    pub audience: String,
    /// `expirationSeconds`.
    pub expiration_seconds: i64,
}

/// What a volume is on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Files kept in sync with the API (ConfigMap, Secret, downwardAPI, projected).
    Files(Payload),
    /// An empty directory the pod owns; `memory: true` becomes a tmpfs.
    EmptyDir {
        /// `medium: Memory`.
        memory: bool,
    },
    /// A directory or file of the host.
    HostPath(PathBuf),
}

const DEFAULT_MODE: i32 = 0o644;

/// The service-account tokens the pod's volumes need.
pub fn tokens_needed(pod: &Pod) -> Vec<TokenKey> {
    let sa = service_account(pod);
    let mut keys: Vec<TokenKey> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| TokenKey {
            service_account: sa.clone(),
            audience: t.audience.clone().unwrap_or_default(),
            expiration_seconds: t.expiration_seconds.unwrap_or(3600),
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The pod's service account (`default` when unset).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The content of one volume. `tokens` holds the tokens of [`tokens_needed`].
pub fn volume_content(
    pod: &Pod,
    volume: &Volume,
    objects: &dyn Objects,
    tokens: &BTreeMap<TokenKey, String>,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Content, Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let err = |msg: String| Error::Spec(format!("volume {}: {msg}", volume.name));
    if let Some(e) = &volume.empty_dir {
        return Ok(Content::EmptyDir { memory: e.medium.as_deref() == Some("Memory") });
    }
    if let Some(h) = &volume.host_path {
        return Ok(Content::HostPath(PathBuf::from(&h.path)));
    }
    let mut payload = Payload::new();
    if let Some(c) = &volume.config_map {
        let data = objects.config_map(ns, &c.name);
        add_keys(
            &mut payload,
            "ConfigMap",
            ns,
            &c.name,
            data,
            c.items.as_deref(),
            c.optional == Some(true),
            c.default_mode.unwrap_or(DEFAULT_MODE),
        )
        .map_err(err)?;
        return Ok(Content::Files(payload));
    }
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = objects.secret(ns, &name);
        add_keys(
            &mut payload,
            "Secret",
            ns,
            &name,
            data,
            s.items.as_deref(),
            s.optional == Some(true),
            s.default_mode.unwrap_or(DEFAULT_MODE),
        )
        .map_err(err)?;
        return Ok(Content::Files(payload));
    }
    if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        add_downward(&mut payload, pod, d.items.as_deref().unwrap_or_default(), mode, node_allocatable).map_err(err)?;
        return Ok(Content::Files(payload));
    }
    if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                let data = objects.config_map(ns, &c.name);
                add_keys(
                    &mut payload,
                    "ConfigMap",
                    ns,
                    &c.name,
                    data,
                    c.items.as_deref(),
                    c.optional == Some(true),
                    mode,
                )
                .map_err(err)?;
            } else if let Some(s) = &source.secret {
                let data = objects.secret(ns, &s.name);
                add_keys(&mut payload, "Secret", ns, &s.name, data, s.items.as_deref(), s.optional == Some(true), mode)
                    .map_err(err)?;
            } else if let Some(d) = &source.downward_api {
                add_downward(&mut payload, pod, d.items.as_deref().unwrap_or_default(), mode, node_allocatable)
                    .map_err(err)?;
            } else if let Some(t) = &source.service_account_token {
                let key = TokenKey {
                    service_account: service_account(pod),
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                };
                let token = tokens
                    .get(&key)
                    .ok_or_else(|| err(format!("no token yet for service account {}", key.service_account)))?;
                // the kubelet writes tokens 0600 unless the volume says otherwise
                let mode = p.default_mode.unwrap_or(0o600);
                payload.insert(t.path.clone(), File { data: token.clone().into_bytes(), mode: mode as u32 });
            } else {
                return Err(err(
                    "projected: only configMap, secret, downwardAPI and serviceAccountToken sources are supported"
                        .into(),
                ));
            }
        }
        return Ok(Content::Files(payload));
    }
    Err(err("only configMap, secret, emptyDir, projected, downwardAPI and hostPath volumes are supported".into()))
}

#[allow(clippy::too_many_arguments)]
fn add_keys(
    payload: &mut Payload,
    kind: &str,
    ns: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: i32,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional { Ok(()) } else { Err(format!("{kind} {ns}/{name} not found")) };
    };
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        payload.insert(
                            item.path.clone(),
                            File { data: v.clone(), mode: item.mode.unwrap_or(mode) as u32 },
                        );
                    }
                    None if optional => {}
                    None => return Err(format!("{kind} {ns}/{name} has no key {:?}", item.key)),
                }
            }
        }
        _ => {
            for (k, v) in data {
                payload.insert(k, File { data: v, mode: mode as u32 });
            }
        }
    }
    Ok(())
}

fn add_downward(
    payload: &mut Payload,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<(), String> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, f)?
        } else if let Some(r) = &item.resource_field_ref {
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            let first = containers.first().ok_or("pod without containers")?;
            resource_value(pod, first, r, node_allocatable)?
        } else {
            return Err(format!("downwardAPI item {}: needs fieldRef or resourceFieldRef", item.path));
        };
        payload.insert(item.path.clone(), File { data: value.into_bytes(), mode: item.mode.unwrap_or(mode) as u32 });
    }
    Ok(())
}

/// Write `payload` into `dir` atomically (see the module docs). Replaces whatever an
/// earlier call wrote; files not in `payload` disappear.
pub fn write_atomic(dir: &Path, payload: &Payload) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = jiff::Timestamp::now().strftime("..%Y_%m_%d_%H_%M_%S.%f").to_string();
    let data_dir = dir.join(&stamp);
    std::fs::create_dir(&data_dir)?;
    for (path, file) in payload {
        let target = data_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode & 0o7777))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;

    // user-visible names: one symlink per first path component
    let top: BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name.as_str()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::env::MapObjects;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1"}},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c"}], "volumes": volumes},
            "status": {"podIP": "127.1.0.9"}
        }))
        .unwrap()
    }

    fn objects() -> MapObjects {
        let mut o = MapObjects::default();
        o.config_maps.insert(
            ("ns".into(), "cm".into()),
            [("config.yaml".to_owned(), b"a: 1\n".to_vec()), ("other".to_owned(), b"o".to_vec())].into(),
        );
        o.config_maps.insert(("ns".into(), "kube-root-ca.crt".into()), [("ca.crt".to_owned(), b"CA".to_vec())].into());
        o.secrets.insert(("ns".into(), "s".into()), [("secret".to_owned(), b"t0p".to_vec())].into());
        o
    }

    fn content(p: &Pod, i: usize, tokens: &BTreeMap<TokenKey, String>) -> Result<Content, Error> {
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[i];
        volume_content(p, v, &objects(), tokens, &BTreeMap::new())
    }

    fn files(c: Content) -> BTreeMap<String, (String, u32)> {
        match c {
            Content::Files(p) => {
                p.into_iter().map(|(k, f)| (k, (String::from_utf8(f.data).unwrap(), f.mode))).collect()
            }
            other => panic!("not files: {other:?}"),
        }
    }

    #[test]
    fn config_map_secret_items_and_modes() {
        let p = pod(json!([
            {"name": "all", "configMap": {"name": "cm"}},
            {"name": "items", "configMap": {"name": "cm", "items": [{"key": "other", "path": "sub/o.txt", "mode": 0o600}]}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0o400}},
            {"name": "missing-opt", "secret": {"secretName": "nope", "optional": true}},
            {"name": "missing", "configMap": {"name": "nope"}},
            {"name": "bad-key", "configMap": {"name": "cm", "items": [{"key": "x", "path": "x"}]}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
            {"name": "pvc", "persistentVolumeClaim": {"claimName": "c"}}
        ]));
        let none = BTreeMap::new();
        assert_eq!(
            files(content(&p, 0, &none).unwrap()),
            [("config.yaml".into(), ("a: 1\n".into(), 0o644)), ("other".into(), ("o".into(), 0o644))].into()
        );
        assert_eq!(files(content(&p, 1, &none).unwrap()), [("sub/o.txt".into(), ("o".into(), 0o600))].into());
        assert_eq!(files(content(&p, 2, &none).unwrap()), [("secret".into(), ("t0p".into(), 0o400))].into());
        assert!(files(content(&p, 3, &none).unwrap()).is_empty());
        assert!(content(&p, 4, &none).unwrap_err().to_string().contains("ConfigMap ns/nope not found"));
        assert!(content(&p, 5, &none).unwrap_err().to_string().contains("has no key \"x\""));
        assert_eq!(content(&p, 6, &none).unwrap(), Content::EmptyDir { memory: false });
        assert_eq!(content(&p, 7, &none).unwrap(), Content::EmptyDir { memory: true });
        assert!(content(&p, 8, &none).unwrap_err().to_string().contains("volume pvc"));
    }

    #[test]
    fn service_account_projection() {
        // what the ServiceAccount admission plugin injects
        let p = pod(json!([{"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}}]));
        let keys = tokens_needed(&p);
        assert_eq!(
            keys,
            [TokenKey { service_account: "sa".into(), audience: String::new(), expiration_seconds: 3607 }]
        );
        assert!(content(&p, 0, &BTreeMap::new()).unwrap_err().to_string().contains("no token yet"));
        let tokens = [(keys[0].clone(), "jwt".to_owned())].into();
        assert_eq!(
            files(content(&p, 0, &tokens).unwrap()),
            [
                ("ca.crt".into(), ("CA".into(), 0o644)),
                ("namespace".into(), ("ns".into(), 0o644)),
                ("token".into(), ("jwt".into(), 0o644)),
            ]
            .into()
        );
    }

    #[test]
    fn atomic_writes_swap_and_prune() {
        let dir = std::env::temp_dir().join(format!("e2e-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = |s: &str| File { data: s.as_bytes().to_vec(), mode: 0o644 };
        write_atomic(&dir, &[("a".into(), f("1")), ("d/b".into(), f("2"))].into()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("d/b")).unwrap(), "2");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        write_atomic(&dir, &[("a".into(), f("3"))].into()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(dir.join("d")).is_err(), "a key that went away is removed");
        let stamps = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "the previous payload directory is deleted");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
