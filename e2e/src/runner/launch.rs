//! How a container process is started: its mounts and the argv that sets them up.
//!
//! ```text
//! setpriv --pdeathsig KILL --                      dies with the runner
//!   nsenter --net=/run/netns/<pod> --              the pod's network namespace
//!     unshare --mount --uts --propagation private -- its own mounts and hostname
//!       sh -c '<mounts>; hostname <pod>; exec env -- "$0" "$@"' <binary> <args…>
//! ```
//!
//! Every tool execs the next, so the pid the runner spawned is the binary's pid. The
//! script opens the pod's state dir as fd 3 before mounting anything and mounts from
//! `/proc/self/fd/3/…`, so a mount over `/tmp` (an emptyDir) cannot hide the sources of
//! the mounts after it even when the state dir is under `/tmp`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::Error;
use super::env::EnvList;
use super::expand::expand;
use super::volumes::Content;

/// Where a mount comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A path relative to the pod's state dir.
    Pod(PathBuf),
    /// A host path (hostPath volumes).
    Host(PathBuf),
    /// A fresh tmpfs (emptyDir with `medium: Memory`).
    Tmpfs,
}

/// One mount in the container's mount namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: Source,
    /// `mountPath`.
    pub target: PathBuf,
    /// `readOnly`.
    pub read_only: bool,
}

/// The directory of volume `name`, relative to the pod's state dir.
pub fn volume_dir(name: &str) -> PathBuf {
    Path::new("volumes").join(name)
}

/// The container's `volumeMounts` as mounts, parents before children.
pub fn mount_plan(
    container: &Container,
    volumes: &BTreeMap<String, Content>,
    env: &EnvList,
) -> Result<Vec<Mount>, Error> {
    let mut mounts = vec![];
    for vm in container.volume_mounts.iter().flatten() {
        let err = |msg: &str| Error::Spec(format!("volumeMount {} at {}: {msg}", vm.name, vm.mount_path));
        let content = volumes.get(&vm.name).ok_or_else(|| err("no such volume"))?;
        let target = PathBuf::from(&vm.mount_path);
        if !target.is_absolute() {
            return Err(err("mountPath must be absolute"));
        }
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, |n| env.get(n).map(str::to_owned))),
            _ => None,
        };
        if let Some(s) = &sub
            && Path::new(s).components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(err("subPath must be a relative path without `..`"));
        }
        let with_sub = |base: PathBuf| match &sub {
            Some(s) => base.join(s),
            None => base,
        };
        let source = match content {
            Content::Files(_) | Content::EmptyDir { memory: false } => Source::Pod(with_sub(volume_dir(&vm.name))),
            Content::EmptyDir { memory: true } if sub.is_none() => Source::Tmpfs,
            Content::EmptyDir { memory: true } => return Err(err("subPath of a memory emptyDir is not supported")),
            Content::HostPath(p) => Source::Host(with_sub(p.clone())),
        };
        mounts.push(Mount { source, target, read_only: vm.read_only == Some(true) });
    }
    mounts.sort_by_key(|m| m.target.components().count());
    Ok(mounts)
}

/// Absolute paths of the tools the runner uses (looked up once at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// `/bin/sh`.
    pub sh: PathBuf,
    /// util-linux `mount`.
    pub mount: PathBuf,
    /// coreutils `mkdir`.
    pub mkdir: PathBuf,
    /// `hostname`.
    pub hostname: PathBuf,
    /// coreutils `env`.
    pub env: PathBuf,
    /// util-linux `unshare`.
    pub unshare: PathBuf,
    /// util-linux `nsenter`.
    pub nsenter: PathBuf,
    /// util-linux `setpriv`.
    pub setpriv: PathBuf,
    /// iproute2 `ip`.
    pub ip: PathBuf,
    /// coreutils `chroot` (image containers).
    pub chroot: PathBuf,
}

impl Tools {
    /// Find every tool on `path` (a `PATH` value).
    pub fn find(path: &str) -> Result<Self, Error> {
        let find = |name: &str| {
            path.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file()).ok_or_else(|| {
                Error::Setup(format!("{name} not found on PATH (needs util-linux, coreutils, iproute2)"))
            })
        };
        Ok(Self {
            sh: PathBuf::from("/bin/sh"),
            mount: find("mount")?,
            mkdir: find("mkdir")?,
            hostname: find("hostname")?,
            env: find("env")?,
            unshare: find("unshare")?,
            nsenter: find("nsenter")?,
            setpriv: find("setpriv")?,
            ip: find("ip")?,
            chroot: find("chroot")?,
        })
    }

    /// Fixed paths, for tests.
    pub fn fixed() -> Self {
        let p = |s: &str| PathBuf::from(s);
        Self {
            sh: p("/bin/sh"),
            mount: p("/usr/bin/mount"),
            mkdir: p("/usr/bin/mkdir"),
            hostname: p("/usr/bin/hostname"),
            env: p("/usr/bin/env"),
            unshare: p("/usr/bin/unshare"),
            nsenter: p("/usr/bin/nsenter"),
            setpriv: p("/usr/bin/setpriv"),
            ip: p("/usr/sbin/ip"),
            chroot: p("/usr/sbin/chroot"),
        }
    }
}

/// Single-quote `s` for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// Whether sh keeps variable `name` in the environment it passes on.
fn shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The sh script that mounts `mounts`, sets the hostname and execs `"$0" "$@"` with
/// exactly `env`: sh drops variables whose names are not shell identifiers (Kubernetes
/// allows `CFG_config.txt`) and adds `PWD`, so the last exec goes through `env(1)`.
pub fn mount_script(pod_dir: &Path, mounts: &[Mount], hostname: &str, tools: &Tools, env: &EnvList) -> String {
    let (mkdir, mount) = (q(&tools.mkdir), q(&tools.mount));
    let mut s = format!("set -e\nexec 3<{}\n", q(pod_dir));
    for m in mounts {
        let target = q(&m.target);
        let ro = if m.read_only { " -o ro" } else { "" };
        let src = match &m.source {
            Source::Pod(rel) => q(&Path::new("/proc/self/fd/3").join(rel)),
            Source::Host(p) => q(p),
            Source::Tmpfs => {
                s.push_str(&format!("{mkdir} -p {target}\n{mount} -t tmpfs{ro} -o mode=1777 tmpfs {target}\n"));
                continue;
            }
        };
        let parent = q(m.target.parent().unwrap_or(Path::new("/")));
        // a file (subPath of a key) is mounted over a file, a directory over a directory
        s.push_str(&format!(
            "if [ -d {src} ]; then {mkdir} -p {target}; else {mkdir} -p {parent}; [ -e {target} ] || : > {target}; fi\n\
             {mount} --bind{ro} {src} {target}\n"
        ));
    }
    s.push_str(&format!("{} {}\nexec 3<&-\n", q(&tools.hostname), quote(hostname)));
    let mut exec = format!("exec {}", q(&tools.env));
    if env.get("PWD").is_none() {
        exec.push_str(" -u PWD");
    }
    exec.push_str(" --");
    for (k, v) in env.iter().filter(|(k, _)| !shell_name(k) || *k == "PWD") {
        exec.push(' ');
        exec.push_str(&quote(&format!("{k}={v}")));
    }
    s.push_str(&exec);
    s.push_str(" \"$0\" \"$@\"\n");
    s
}

/// The devices an image container sees in its `/dev` (a tmpfs), as a runtime gives them.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The directory, under the pod's state dir, of an image container's root: `root/` (the
/// overlay it runs in), `upper/` and `work/` (the overlay's writable layer, fresh on
/// every start).
pub const ROOT_DIR: &str = "rootfs";

/// The sh script for a container of an image: an overlay of the image's `rootfs` (shared,
/// never written) at `<pod>/rootfs/root`; the mount points of its volumes, `/dev` and
/// `/proc` made in it; then, with `readOnlyRootFilesystem`, the root bound read-only over
/// itself before anything is mounted on it, so the volumes keep their own flags; a tmpfs
/// `/dev` with the usual devices and `/dev/shm`, `/proc`, the volumes; the hostname; and
/// last `chroot --userspec` into it as the container's user (`setpriv --no-new-privs`
/// first when privilege escalation is off) with exactly `env`. The change from root to a
/// non-root uid clears every capability, as `drop: [ALL]` asks.
pub fn image_script(
    pod_dir: &Path,
    rootfs: &Path,
    security: &super::oci::Security,
    mounts: &[Mount],
    hostname: &str,
    tools: &Tools,
    env: &EnvList,
) -> String {
    let (mkdir, mount) = (q(&tools.mkdir), q(&tools.mount));
    let dir = pod_dir.join(ROOT_DIR);
    let root = dir.join("root");
    let r = q(&root);
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut s = format!("set -e\nexec 3<{}\n", q(pod_dir));
    s.push_str(&format!(
        "{mount} -t overlay overlay -o {} {r}\n",
        quote(&format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        ))
    ));
    s.push_str(&format!("{mkdir} -p {} {}\n", q(&inside(Path::new("/dev"))), q(&inside(Path::new("/proc")))));
    let source = |m: &Mount| match &m.source {
        Source::Pod(rel) => Some(q(&Path::new("/proc/self/fd/3").join(rel))),
        Source::Host(p) => Some(q(p)),
        Source::Tmpfs => None,
    };
    for m in mounts {
        let target = q(&inside(&m.target));
        match source(m) {
            None => s.push_str(&format!("{mkdir} -p {target}\n")),
            Some(src) => {
                let parent = q(&inside(m.target.parent().unwrap_or(Path::new("/"))));
                s.push_str(&format!(
                    "if [ -d {src} ]; then {mkdir} -p {target}; else {mkdir} -p {parent}; [ -e {target} ] || : > {target}; fi\n"
                ));
            }
        }
    }
    if security.read_only_root {
        s.push_str(&format!("{mount} --bind {r} {r}\n{mount} -o remount,bind,ro {r}\n"));
    }
    let dev = q(&inside(Path::new("/dev")));
    s.push_str(&format!("{mount} -t tmpfs -o mode=755,nosuid tmpfs {dev}\n"));
    for d in DEVICES {
        let target = q(&inside(&Path::new("/dev").join(d)));
        s.push_str(&format!(": > {target}\n{mount} --bind {} {target}\n", quote(&format!("/dev/{d}"))));
    }
    let shm = q(&inside(Path::new("/dev/shm")));
    s.push_str(&format!("{mkdir} -p {shm}\n{mount} -t tmpfs -o mode=1777,nosuid,nodev tmpfs {shm}\n"));
    s.push_str(&format!("{mount} -t proc -o nosuid,nodev,noexec proc {}\n", q(&inside(Path::new("/proc")))));
    for m in mounts {
        let target = q(&inside(&m.target));
        let ro = if m.read_only { " -o ro" } else { "" };
        match source(m) {
            None => s.push_str(&format!("{mount} -t tmpfs{ro} -o mode=1777 tmpfs {target}\n")),
            Some(src) => s.push_str(&format!("{mount} --bind{ro} {src} {target}\n")),
        }
    }
    s.push_str(&format!("{} {}\nexec 3<&-\n", q(&tools.hostname), quote(hostname)));
    let mut exec = format!("exec {} -i --", q(&tools.env));
    for (k, v) in env.iter() {
        exec.push(' ');
        exec.push_str(&quote(&format!("{k}={v}")));
    }
    if security.no_new_privs {
        exec.push_str(&format!(" {} --no-new-privs --", q(&tools.setpriv)));
    }
    let groups: Vec<String> = security.groups.iter().map(u32::to_string).collect();
    exec.push_str(&format!(
        " {} --userspec={}:{} --groups={} {r} \"$0\" \"$@\"\n",
        q(&tools.chroot),
        security.uid,
        security.gid,
        groups.join(",")
    ));
    s.push_str(&exec);
    s
}

/// The full argv the runner spawns (see the module docs).
pub fn wrapper_argv(tools: &Tools, netns: &str, script: String, binary: &Path, args: &[String]) -> Vec<String> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut argv = vec![
        s(&tools.setpriv),
        "--pdeathsig".into(),
        "KILL".into(),
        "--".into(),
        s(&tools.nsenter),
        format!("--net=/run/netns/{netns}"),
        "--".into(),
        s(&tools.unshare),
        "--mount".into(),
        "--uts".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        s(&tools.sh),
        "-c".into(),
        script,
        s(binary),
    ];
    argv.extend(args.iter().cloned());
    argv
}

/// The pod's hostname: `spec.hostname`, else the pod name, cut to 63 characters.
pub fn hostname(pod_name: &str, spec_hostname: Option<&str>) -> String {
    let h = spec_hostname.filter(|h| !h.is_empty()).unwrap_or(pod_name);
    h.chars().take(63).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::volumes::Payload;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(json!({
            "name": "media-node",
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "config", "mountPath": "/etc/switchyard/config", "readOnly": true},
                {"name": "config", "mountPath": "/etc/app.yaml", "subPath": "config.yaml"},
                {"name": "shm", "mountPath": "/dev/shm"},
                {"name": "host", "mountPath": "/host/$(POD_NAME)", "subPathExpr": "$(POD_NAME)"}
            ]
        }))
        .unwrap()
    }

    fn volumes() -> BTreeMap<String, Content> {
        [
            ("tmp".to_owned(), Content::EmptyDir { memory: false }),
            ("shm".to_owned(), Content::EmptyDir { memory: true }),
            ("config".to_owned(), Content::Files(Payload::new())),
            ("host".to_owned(), Content::HostPath("/var/log".into())),
        ]
        .into()
    }

    #[test]
    fn plan_orders_parents_first_and_resolves_sources() {
        let mut env = EnvList::default();
        env.set("POD_NAME", "p-0");
        let plan = mount_plan(&container(), &volumes(), &env).unwrap();
        let got: Vec<(String, Source, bool)> =
            plan.iter().map(|m| (m.target.display().to_string(), m.source.clone(), m.read_only)).collect();
        assert_eq!(
            got,
            [
                ("/tmp".into(), Source::Pod("volumes/tmp".into()), false),
                ("/etc/app.yaml".into(), Source::Pod("volumes/config/config.yaml".into()), false),
                ("/dev/shm".into(), Source::Tmpfs, false),
                ("/host/$(POD_NAME)".into(), Source::Host("/var/log/p-0".into()), false),
                ("/etc/switchyard/config".into(), Source::Pod("volumes/config".into()), true),
            ]
        );
    }

    #[test]
    fn plan_refuses_what_it_cannot_do() {
        let mut c = container();
        c.volume_mounts = Some(vec![serde_json::from_value(json!({"name": "nope", "mountPath": "/x"})).unwrap()]);
        assert!(mount_plan(&c, &volumes(), &EnvList::default()).unwrap_err().to_string().contains("no such volume"));
        c.volume_mounts =
            Some(vec![serde_json::from_value(json!({"name": "tmp", "mountPath": "/x", "subPath": "../etc"})).unwrap()]);
        assert!(mount_plan(&c, &volumes(), &EnvList::default()).is_err());
        c.volume_mounts = Some(vec![serde_json::from_value(json!({"name": "tmp", "mountPath": "rel"})).unwrap()]);
        assert!(mount_plan(&c, &volumes(), &EnvList::default()).is_err());
    }

    #[test]
    fn script_and_argv() {
        let mounts = vec![
            Mount { source: Source::Pod("volumes/tmp".into()), target: "/tmp".into(), read_only: false },
            Mount { source: Source::Tmpfs, target: "/dev/shm".into(), read_only: false },
            Mount {
                source: Source::Pod("volumes/config".into()),
                target: "/etc/switchyard/config".into(),
                read_only: true,
            },
        ];
        let tools = Tools::fixed();
        let mut env = EnvList::default();
        env.set("PATH", "/bin");
        env.set("CFG_config.txt", "a b");
        let script = mount_script(Path::new("/state/pods/ns_p_u"), &mounts, "it's", &tools, &env);
        assert_eq!(
            script,
            "set -e\n\
             exec 3<'/state/pods/ns_p_u'\n\
             if [ -d '/proc/self/fd/3/volumes/tmp' ]; then '/usr/bin/mkdir' -p '/tmp'; else '/usr/bin/mkdir' -p '/'; [ -e '/tmp' ] || : > '/tmp'; fi\n\
             '/usr/bin/mount' --bind '/proc/self/fd/3/volumes/tmp' '/tmp'\n\
             '/usr/bin/mkdir' -p '/dev/shm'\n\
             '/usr/bin/mount' -t tmpfs -o mode=1777 tmpfs '/dev/shm'\n\
             if [ -d '/proc/self/fd/3/volumes/config' ]; then '/usr/bin/mkdir' -p '/etc/switchyard/config'; else '/usr/bin/mkdir' -p '/etc/switchyard'; [ -e '/etc/switchyard/config' ] || : > '/etc/switchyard/config'; fi\n\
             '/usr/bin/mount' --bind -o ro '/proc/self/fd/3/volumes/config' '/etc/switchyard/config'\n\
             '/usr/bin/hostname' 'it'\\''s'\n\
             exec 3<&-\n\
             exec '/usr/bin/env' -u PWD -- 'CFG_config.txt=a b' \"$0\" \"$@\"\n"
        );
        assert!(shell_name("_A1") && !shell_name("1A") && !shell_name("a.b") && !shell_name(""));
        let argv = wrapper_argv(&tools, "sy-0123", "S".into(), Path::new("/bin/media-node"), &["--config".into()]);
        assert_eq!(
            argv,
            [
                "/usr/bin/setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "/usr/bin/nsenter",
                "--net=/run/netns/sy-0123",
                "--",
                "/usr/bin/unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                "S",
                "/bin/media-node",
                "--config"
            ]
        );
    }

    #[test]
    fn image_script_mounts_the_root_first_and_enters_it_last_as_the_user() {
        let mounts = vec![
            Mount { source: Source::Pod("volumes/tmp".into()), target: "/tmp".into(), read_only: false },
            Mount {
                source: Source::Pod("volumes/config".into()),
                target: "/etc/switchyard/config".into(),
                read_only: true,
            },
        ];
        let sec = crate::runner::oci::Security {
            uid: 65532,
            gid: 65532,
            groups: vec![65532, 7],
            read_only_root: true,
            no_new_privs: true,
        };
        let mut env = EnvList::default();
        env.set("PATH", "/usr/local/bin");
        env.set("CFG_config.txt", "a b");
        let tools = Tools::fixed();
        let script = image_script(Path::new("/s/p"), Path::new("/img/rootfs"), &sec, &mounts, "h", &tools, &env);
        let lines: Vec<&str> = script.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in\n{script}"))
        };
        assert_eq!(
            lines[2],
            "'/usr/bin/mount' -t overlay overlay -o 'lowerdir=/img/rootfs,upperdir=/s/p/rootfs/upper,workdir=/s/p/rootfs/work' '/s/p/rootfs/root'"
        );
        // mount points exist before the root turns read-only; mounts come after it
        let ro = at("remount,bind,ro '/s/p/rootfs/root'");
        assert!(at("-p '/s/p/rootfs/root/etc/switchyard/config'") < ro);
        assert!(at("-p '/s/p/rootfs/root/tmp'") < ro);
        assert!(ro < at("tmpfs -o mode=755,nosuid tmpfs '/s/p/rootfs/root/dev'"));
        assert!(ro < at("--bind '/dev/urandom' '/s/p/rootfs/root/dev/urandom'"));
        assert!(ro < at("-t proc"));
        assert!(ro < at("--bind -o ro '/proc/self/fd/3/volumes/config' '/s/p/rootfs/root/etc/switchyard/config'"));
        assert_eq!(
            *lines.last().unwrap(),
            "exec '/usr/bin/env' -i -- 'PATH=/usr/local/bin' 'CFG_config.txt=a b' '/usr/bin/setpriv' --no-new-privs -- \
             '/usr/sbin/chroot' --userspec=65532:65532 --groups=65532,7 '/s/p/rootfs/root' \"$0\" \"$@\""
        );

        let writable = crate::runner::oci::Security { read_only_root: false, no_new_privs: false, ..sec };
        let script = image_script(Path::new("/s/p"), Path::new("/img/rootfs"), &writable, &mounts, "h", &tools, &env);
        assert!(!script.contains("remount") && !script.contains("setpriv"));
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname("edge-sfu-0", None), "edge-sfu-0");
        assert_eq!(hostname("p", Some("custom")), "custom");
        assert_eq!(hostname(&"x".repeat(80), None).len(), 63);
    }
}
