//! The harness itself: the apiserver runs the version build.sh built, kwok plays only the
//! annotated Nodes, and a Deployment's pod runs on a kwok Node with an IP from its podCIDR.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use switchyard_e2e::{Env, TestNamespace, pod_ips, wait_for};

/// Whether `ip` is inside the IPv4 CIDR `cidr`.
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').expect("a CIDR");
    let (IpAddr::V4(ip), Ok(IpAddr::V4(net)), Ok(bits)) = (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(ip) & mask == u32::from(net) & mask
}

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_control_plane_and_kwok() -> Result<()> {
    let env = Env::from_env()?;
    let client = env.client().await?;

    let version = client.apiserver_version().await?;
    if let Some(want) = &env.k8s_version {
        assert_eq!(&version.git_version, want, "the apiserver runs the version build.sh built");
    }
    println!("apiserver {}", version.git_version);

    // kwok manages only Nodes with its annotation
    let nodes: Api<Node> = Api::all(client.clone());
    let plain: Node = serde_json::from_value(json!({"metadata": {"name": "not-kwok"}}))?;
    nodes.create(&PostParams::default(), &plain).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = nodes.get("not-kwok").await?;
    let ready = got.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
    assert!(ready.is_none(), "kwok set Ready on a node without the annotation: {ready:?}");
    nodes.delete("not-kwok", &DeleteParams::default()).await?;

    // a Deployment's pod runs on kwok-node-0 with an IP from its podCIDR (image never pulled;
    // the runner ignores it)
    let ns = TestNamespace::create(&client, "kwok").await?;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": "kwok-node-0"},
                    "containers": [{"name": "hello", "image": "registry.invalid/switchyard/never-pulled:0"}]
                }
            }
        }
    }))?;
    deps.create(&PostParams::default(), &dep).await?;
    let (pod, ip) = wait_for("pod hello Running with an IP", Duration::from_secs(60), || async {
        Ok(pod_ips(&client, &ns.name, "app=hello").await?.into_iter().next())
    })
    .await?;
    let cidr = nodes.get("kwok-node-0").await?.spec.and_then(|s| s.pod_cidr).context("kwok-node-0 has no podCIDR")?;
    println!("pod {pod} on kwok-node-0 with {ip} (podCIDR {cidr})");
    if !in_cidr(ip, &cidr) {
        bail!("pod IP {ip} is not in kwok-node-0's podCIDR {cidr}");
    }

    deps.patch("hello", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for("pod hello deleted after scaling to 0", Duration::from_secs(60), || async {
        Ok(pods.list(&ListParams::default().labels("app=hello")).await?.items.is_empty().then_some(()))
    })
    .await?;
    ns.delete().await
}

#[test]
fn cidr_membership() {
    assert!(in_cidr("127.1.0.5".parse().unwrap(), "127.1.0.0/24"));
    assert!(!in_cidr("127.1.1.5".parse().unwrap(), "127.1.0.0/24"));
    assert!(in_cidr("10.0.0.1".parse().unwrap(), "0.0.0.0/0"));
}
