//! Container images: an OCI archive unpacked into a root filesystem, the image config a
//! container starts from, and the security context it runs under.
//!
//! ```text
//!  <images>/<name>.tar ──tar──► layout/ (index.json → manifest → config, layers)
//!                                 │ every layer extracted in order (owners and modes kept)
//!                                 ▼
//!                              rootfs/  (shared, never written: each container gets an
//!                                        overlay on top of it, see launch.rs)
//! ```
//!
//! What a kubelet and its runtime decide from the pod spec and the image config (argv,
//! environment, user, read-only root, privilege escalation) is decided here by pure
//! functions, tested without an image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};
use serde::Deserialize;

use super::Error;

/// The parts of an OCI image config (`config` of application/vnd.oci.image.config.v1+json)
/// a container starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `USER`: `uid`, `uid:gid`, or a name.
    #[serde(default)]
    pub user: String,
    /// `ENV`, as `NAME=value`.
    #[serde(default)]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `WORKDIR`.
    #[serde(default)]
    pub working_dir: String,
}

/// An unpacked image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The image's name (`media-node`), as [`super::image::image_name`] gives it.
    pub name: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// Its config.
    pub config: ImageConfig,
    /// The extracted root filesystem.
    pub rootfs: PathBuf,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: ImageConfig,
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, Error> {
    match digest.split_once(':') {
        Some((algo, hex)) if !algo.contains('/') && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(layout.join("blobs").join(algo).join(hex))
        }
        _ => Err(Error::Setup(format!("image layout {}: bad digest {digest:?}", layout.display()))),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { what: format!("read {}", path.display()), source: e })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Setup(format!("{}: {e}", path.display())))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Io { what: what.to_owned(), source: e })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!("{what}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Unpack the OCI archive `archive` (one image) into `dest` (`layout/`, `rootfs/`).
/// Layers are extracted in order with their owners and modes; a layer with a whiteout
/// (a file deleted by a later layer) is refused, since no image of ours has one.
pub fn unpack(name: &str, archive: &Path, dest: &Path) -> Result<Image, Error> {
    let layout = dest.join("layout");
    let rootfs = dest.join("rootfs");
    let _ = std::fs::remove_dir_all(dest);
    for d in [&layout, &rootfs] {
        std::fs::create_dir_all(d).map_err(|e| Error::Io { what: format!("mkdir {}", d.display()), source: e })?;
    }
    run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout), &format!("untar {}", archive.display()))?;
    let index: Index = read_json(&layout.join("index.json"))?;
    let [manifest] = index.manifests.as_slice() else {
        return Err(Error::Setup(format!(
            "{}: expected one image, found {}",
            archive.display(),
            index.manifests.len()
        )));
    };
    let digest = manifest.digest.clone();
    let manifest: Manifest = read_json(&blob_path(&layout, &digest)?)?;
    let config: ConfigBlob = read_json(&blob_path(&layout, &manifest.config.digest)?)?;
    for layer in &manifest.layers {
        let blob = blob_path(&layout, &layer.digest)?;
        let listing = Command::new("tar")
            .arg("-tf")
            .arg(&blob)
            .output()
            .map_err(|e| Error::Io { what: "list layer".into(), source: e })?;
        if String::from_utf8_lossy(&listing.stdout)
            .lines()
            .any(|l| l.rsplit('/').next().is_some_and(|f| f.starts_with(".wh.")))
        {
            return Err(Error::Setup(format!(
                "{}: layer {} has whiteouts (not supported)",
                archive.display(),
                layer.digest
            )));
        }
        run(
            Command::new("tar").args(["--same-owner", "--same-permissions", "-xf"]).arg(&blob).arg("-C").arg(&rootfs),
            &format!("extract layer {}", layer.digest),
        )?;
    }
    Ok(Image { name: name.to_owned(), digest, config: config.config, rootfs })
}

/// Every `<name>.tar` in `dir`, unpacked under `work/<name>`.
pub fn unpack_dir(dir: &Path, work: &Path) -> Result<BTreeMap<String, Image>, Error> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::Io { what: format!("images {}", dir.display()), source: e })?;
    let mut images = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".tar")) else {
            continue;
        };
        let image = unpack(name, &path, &work.join(name))?;
        images.insert(name.to_owned(), image);
    }
    Ok(images)
}

/// The argv of a container from `image`: `command` replaces the entrypoint and `args`
/// replace the image's `CMD`, as Kubernetes defines it (`args` given here are already
/// expanded). Returns the program and its arguments.
pub fn container_argv(container: &Container, image: &ImageConfig, args: &[String]) -> Result<Vec<String>, Error> {
    let command = container.command.clone().filter(|c| !c.is_empty());
    let mut argv = match command {
        Some(c) => c,
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    if container.args.as_ref().is_some_and(|a| !a.is_empty()) {
        argv.extend(args.iter().cloned());
    } else if container.command.as_ref().is_none_or(Vec::is_empty) {
        argv.extend(image.cmd.clone().unwrap_or_default());
    }
    if argv.is_empty() {
        return Err(Error::Spec("the image has no entrypoint and the container no command".into()));
    }
    Ok(argv)
}

/// The image's `ENV`, as pairs.
pub fn image_env(image: &ImageConfig) -> Vec<(String, String)> {
    image.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// How a container runs, from the pod's and the container's securityContext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    /// The user it runs as.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Supplementary groups (`fsGroup`, `supplementalGroups`).
    pub groups: Vec<u32>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `no_new_privs` (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
}

/// The image user's uid and gid: numeric `uid` or `uid:gid`; a bare uid takes its group
/// from the image's `/etc/passwd` (`passwd`), else 0, as runc does.
fn image_user(user: &str, passwd: &str) -> Result<(Option<u32>, Option<u32>), Error> {
    if user.is_empty() {
        return Ok((None, None));
    }
    let bad = || Error::Spec(format!("image user {user:?}: only numeric users (uid or uid:gid) are supported"));
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid = match g {
        Some(g) => Some(g.parse().map_err(|_| bad())?),
        None => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == uid.to_string())
            .and_then(|f| f[3].parse().ok()),
    };
    Ok((Some(uid), gid))
}

/// Decide user, groups and restrictions as the kubelet does, refusing what it refuses
/// (`runAsNonRoot` with a root user) and what this runner cannot honour (a root user:
/// capabilities are only dropped by the change to a non-root uid).
pub fn security(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    image: &ImageConfig,
    passwd: &str,
) -> Result<Security, Error> {
    let (image_uid, image_gid) = image_user(&image.user, passwd)?;
    let uid = container
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user))
        .map(|u| u32::try_from(u).map_err(|_| Error::Spec(format!("runAsUser {u} is out of range"))))
        .transpose()?
        .or(image_uid)
        .unwrap_or(0);
    let gid = container
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group))
        .map(|g| u32::try_from(g).map_err(|_| Error::Spec(format!("runAsGroup {g} is out of range"))))
        .transpose()?
        .or(image_gid)
        .unwrap_or(0);
    let non_root = container.and_then(|c| c.run_as_non_root).or_else(|| pod.and_then(|p| p.run_as_non_root));
    if uid == 0 {
        if non_root == Some(true) {
            return Err(Error::Spec("container has runAsNonRoot and image will run as root".into()));
        }
        return Err(Error::Spec("the runner runs image containers as a non-root user only".into()));
    }
    let mut groups = vec![gid];
    for g in pod
        .and_then(|p| p.fs_group)
        .into_iter()
        .chain(pod.and_then(|p| p.supplemental_groups.clone()).into_iter().flatten())
    {
        let g = u32::try_from(g).map_err(|_| Error::Spec(format!("group {g} is out of range")))?;
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(Security {
        uid,
        gid,
        groups,
        read_only_root: container.and_then(|c| c.read_only_root_filesystem) == Some(true),
        no_new_privs: container.and_then(|c| c.allow_privilege_escalation) == Some(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> ImageConfig {
        serde_json::from_value(json!({
            "User": "65532:65532",
            "Env": ["PATH=/usr/local/bin:/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "Entrypoint": ["/usr/local/bin/media-node"],
            "Cmd": ["--help"],
            "WorkingDir": "/"
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn argv_follows_kubernetes_command_and_args_rules() {
        let img = image();
        let none = container(json!({"name": "c"}));
        assert_eq!(container_argv(&none, &img, &[]).unwrap(), ["/usr/local/bin/media-node", "--help"]);
        let args = container(json!({"name": "c", "args": ["--config", "/x"]}));
        assert_eq!(
            container_argv(&args, &img, &["--config".into(), "/x".into()]).unwrap(),
            ["/usr/local/bin/media-node", "--config", "/x"]
        );
        let command = container(json!({"name": "c", "command": ["/bin/other"]}));
        assert_eq!(container_argv(&command, &img, &[]).unwrap(), ["/bin/other"], "command drops CMD too");
        let both = container(json!({"name": "c", "command": ["/bin/other"], "args": ["a"]}));
        assert_eq!(container_argv(&both, &img, &["a".into()]).unwrap(), ["/bin/other", "a"]);
        let empty = ImageConfig::default();
        assert!(container_argv(&none, &empty, &[]).unwrap_err().to_string().contains("no entrypoint"));
    }

    #[test]
    fn image_env_splits_at_the_first_equals() {
        let mut img = image();
        img.env.push("A=b=c".into());
        img.env.push("broken".into());
        let env = image_env(&img);
        assert_eq!(env[1], ("SSL_CERT_FILE".into(), "/etc/ssl/certs/ca-certificates.crt".into()));
        assert_eq!(env.last().unwrap(), &("A".to_owned(), "b=c".to_owned()));
        assert_eq!(env.len(), 3);
    }

    fn pod_sc(v: serde_json::Value) -> PodSecurityContext {
        serde_json::from_value(v).unwrap()
    }

    fn sc(v: serde_json::Value) -> SecurityContext {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn security_context_as_the_chart_and_operator_render_it() {
        let pod = pod_sc(json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532}));
        let c = sc(
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}),
        );
        let s = security(Some(&pod), Some(&c), &image(), "").unwrap();
        assert_eq!(
            s,
            Security { uid: 65532, gid: 65532, groups: vec![65532], read_only_root: true, no_new_privs: true }
        );
    }

    #[test]
    fn container_fields_win_and_the_image_user_is_the_default() {
        let pod = pod_sc(json!({"runAsUser": 1000, "supplementalGroups": [5, 6]}));
        let c = sc(json!({"runAsUser": 2000, "runAsGroup": 3000}));
        let s = security(Some(&pod), Some(&c), &image(), "").unwrap();
        assert_eq!((s.uid, s.gid, s.groups.clone()), (2000, 3000, vec![3000, 5, 6]));
        assert!(!s.read_only_root && !s.no_new_privs, "both default to off");
        let s = security(None, None, &image(), "").unwrap();
        assert_eq!((s.uid, s.gid), (65532, 65532));
        let mut bare = image();
        bare.user = "65532".into();
        let passwd = "root:x:0:0::/:/sbin/nologin\nnonroot:x:65532:65533::/home/nonroot:/sbin/nologin\n";
        assert_eq!(security(None, None, &bare, passwd).unwrap().gid, 65533, "primary group from /etc/passwd");
        assert_eq!(security(None, None, &bare, "").unwrap().gid, 0);
    }

    #[test]
    fn root_is_refused_with_the_kubelet_message_or_as_unsupported() {
        let mut root = image();
        root.user = String::new();
        let pod = pod_sc(json!({"runAsNonRoot": true}));
        let err = security(Some(&pod), None, &root, "").unwrap_err().to_string();
        assert_eq!(err, "container has runAsNonRoot and image will run as root");
        let err = security(None, Some(&sc(json!({"runAsUser": 0}))), &image(), "").unwrap_err().to_string();
        assert!(err.contains("non-root user only"), "{err}");
        let mut named = image();
        named.user = "nonroot".into();
        assert!(security(None, None, &named, "").unwrap_err().to_string().contains("only numeric users"));
    }

    #[test]
    fn digests_must_be_plain() {
        assert!(blob_path(Path::new("/l"), "sha256:abcdef").unwrap().ends_with("blobs/sha256/abcdef"));
        for bad in ["sha256:../../etc", "nocolon", "a/b:00"] {
            assert!(blob_path(Path::new("/l"), bad).is_err(), "{bad}");
        }
    }
}
