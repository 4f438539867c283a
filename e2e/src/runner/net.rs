//! Each pod gets its own network namespace holding its pod IP, like a pod sandbox.
//!
//! Our binaries bind `0.0.0.0:9090` and friends, as they should in a pod: two pods on one
//! host network would collide. So each pod gets a network namespace, joined to the host
//! by a veth pair:
//!
//! ```text
//!  host netns                                   pod netns (sy-<uid>)
//!  lo 127.0.0.1/8 (apiserver, etcd, tests)      lo up, 127.0.0.1 removed
//!  sy-<uid> ─────────── veth ────────────────── eth0 127.1.0.5/32, default dev eth0
//!  route: local table 127.1.0.5/32 dev sy-<uid>
//!  route_localnet, forwarding, proxy_arp on sy-<uid>
//! ```
//!
//! 127/8 is normally never routed off `lo`; `route_localnet` allows it on these two
//! interfaces only. The /32 in the host's `local` table beats the `127.0.0.0/8` local
//! route, so the host (tests, a local operator) reaches the pod IP over the veth. Inside
//! the pod 127.0.0.1 is not local, so it leaves by the default route and reaches the
//! host's 127.0.0.1: `KUBERNETES_SERVICE_HOST=127.0.0.1` is the real apiserver. Pods
//! reach each other through the host (`forwarding` + `proxy_arp` on the host ends).
//! Deleting the namespace deletes the veth pair and with it the host route.

use std::net::Ipv4Addr;
use std::path::Path;

use tokio::process::Command;

use super::Error;

/// A pod's network sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Network namespace name (`ip netns`), also the host-side veth name.
    pub name: String,
    /// The pod IP.
    pub ip: Ipv4Addr,
}

impl Sandbox {
    /// The sandbox of pod `uid` with `ip`. The name fits an interface name (15 bytes).
    pub fn new(uid: &str, ip: Ipv4Addr) -> Self {
        let hex: String = uid.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
        Self { name: format!("sy-{hex}"), ip }
    }

    /// The host-side commands (`ip` arguments), in order; the sysctls are written in
    /// between (see [`create`]).
    pub fn host_commands(&self) -> [Vec<String>; 3] {
        let n = &self.name;
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        [
            v(&["netns", "add", n]),
            v(&["link", "add", n, "type", "veth", "peer", "name", "eth0", "netns", n]),
            v(&["link", "set", n, "up"]),
        ]
    }

    /// The host route to the pod IP.
    pub fn route_command(&self) -> Vec<String> {
        let ip = format!("{}/32", self.ip);
        ["route", "replace", &ip, "dev", &self.name, "src", "127.0.0.1", "table", "local"]
            .iter()
            .map(|x| (*x).to_owned())
            .collect()
    }

    /// The script run inside the pod's namespace.
    pub fn inside_script(&self, ip_tool: &Path) -> String {
        let ip = ip_tool.display();
        format!(
            "set -e\n\
             {ip} link set lo up\n\
             {ip} addr del 127.0.0.1/8 dev lo\n\
             {ip} addr add {pod}/32 dev eth0\n\
             echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet\n\
             {ip} link set eth0 up\n\
             {ip} route add default dev eth0\n",
            pod = self.ip
        )
    }
}

async fn run(program: &Path, args: &[String]) -> Result<(), Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Setup(format!("{} {}: {e}", program.display(), args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{} {}: {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Create the namespace, the veth pair, the routes. Replaces a stale sandbox of the same
/// name.
pub async fn create(sb: &Sandbox, ip: &Path, nsenter: &Path) -> Result<(), Error> {
    delete(sb, ip).await;
    let [add_ns, add_link, link_up] = sb.host_commands();
    run(ip, &add_ns).await?;
    run(ip, &add_link).await?;
    for knob in ["route_localnet", "forwarding", "proxy_arp"] {
        let path = format!("/proc/sys/net/ipv4/conf/{}/{knob}", sb.name);
        std::fs::write(&path, "1").map_err(|e| Error::Setup(format!("{path}: {e}")))?;
    }
    run(ip, &link_up).await?;
    let inside =
        vec![format!("--net=/run/netns/{}", sb.name), "--".into(), "/bin/sh".into(), "-c".into(), sb.inside_script(ip)];
    run(nsenter, &inside).await?;
    run(ip, &sb.route_command()).await?;
    Ok(())
}

/// Delete the namespace (its veth pair and route go with it once no process is left in
/// it). Errors are ignored: it may not exist.
pub async fn delete(sb: &Sandbox, ip: &Path) {
    let _ = run(ip, &["netns".into(), "delete".into(), sb.name.clone()]).await;
    let _ = run(ip, &["link".into(), "delete".into(), sb.name.clone()]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_commands() {
        let sb = Sandbox::new("6f1c9a52-0000-4000-8000-000000000001", "127.1.0.5".parse().unwrap());
        assert_eq!(sb.name, "sy-6f1c9a520000");
        assert!(sb.name.len() <= 15);
        assert_eq!(
            sb.host_commands()[1].join(" "),
            "link add sy-6f1c9a520000 type veth peer name eth0 netns sy-6f1c9a520000"
        );
        assert_eq!(
            sb.route_command().join(" "),
            "route replace 127.1.0.5/32 dev sy-6f1c9a520000 src 127.0.0.1 table local"
        );
        let script = sb.inside_script(Path::new("/sbin/ip"));
        assert!(script.contains("/sbin/ip addr add 127.1.0.5/32 dev eth0\n"), "{script}");
        assert!(script.contains("/sbin/ip addr del 127.0.0.1/8 dev lo\n"), "{script}");
    }
}
