//! The CRDs' CEL rules on the real apiserver: each invalid spec is rejected with its
//! message, and nothing is stored.

use std::time::Duration;

use anyhow::{Result, bail};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchyard_api::{MediaCluster, Room};
use switchyard_e2e::{Env, TestNamespace, wait_for};

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("a valid object")
}

fn media_cluster(name: &str, spec: Value) -> DynamicObject {
    object(
        json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster", "metadata": {"name": name}, "spec": spec}),
    )
}

/// Create `obj`; it must be refused with `message` in the apiserver's answer.
async fn rejected(api: &Api<DynamicObject>, what: &str, obj: DynamicObject, message: &str) -> Result<()> {
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => bail!("the apiserver accepted {what}"),
        Err(e) => {
            let text = format!("{e}");
            if !text.contains(message) {
                bail!("{what} was rejected, but without {message:?}: {text}");
            }
            println!("rejected {what}: {message}");
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_crds_reject_invalid_specs() -> Result<()> {
    let env = Env::from_env()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "crds").await?;
    let mcs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<MediaCluster>(&()));
    let rooms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<Room>(&()));

    // the kind's REST mapping can lag the CRD's Established condition
    wait_for("the MediaCluster API", Duration::from_secs(30), || async {
        Ok(mcs.list(&Default::default()).await.ok().map(|_| ()))
    })
    .await?;

    mcs.create(&PostParams::default(), &media_cluster("ok", json!({}))).await?;
    let ok = mcs.get("ok").await?;
    assert_eq!(ok.data["spec"]["sfu"]["replicas"], json!({"min": 1, "max": 1}), "defaults applied");

    let cases = [
        (
            "sfu.replicas {min: 5, max: 2}",
            json!({"sfu": {"replicas": {"min": 5, "max": 2}}}),
            "replicas.min must be less than or equal to replicas.max",
        ),
        (
            "a TLS listener without a cert Secret",
            json!({"turn": {"listeners": [{"name": "tls", "protocol": "TLS", "port": 443}]}}),
            "a TLS listener needs tlsSecretRef",
        ),
        (
            "a zero targetBandwidthPerPod",
            json!({"turn": {"targetBandwidthPerPod": "0"}}),
            "turn.targetBandwidthPerPod must be a positive quantity",
        ),
        (
            "a peer allow entry that is not a CIDR",
            json!({"turn": {"peers": {"allow": ["not-a-cidr"]}}}),
            "peers.allow entries must be CIDRs",
        ),
        (
            "the same UDP and TCP media port",
            json!({"media": {"udpPort": 7881, "tcpPort": 7881}}),
            "media.udpPort and media.tcpPort must differ",
        ),
        (
            "a relay port range min > max",
            json!({"turn": {"relayPortRange": {"min": 60000, "max": 50000}}}),
            "relayPortRange.min must be less than or equal to relayPortRange.max",
        ),
        (
            "Gateway mode without TURN",
            json!({"media": {"mode": "Gateway"}, "turn": {"replicas": {"min": 0, "max": 0}}}),
            "turn.replicas.min must be at least 1",
        ),
        // Issue 18: what the operator could not render, or nodes could not run.
        (
            "Gateway mode that may scale TURN to zero",
            json!({"turn": {"replicas": {"min": 0, "max": 3}}}),
            "turn.replicas.min must be at least 1",
        ),
        (
            "SFU autoscaling from zero media-nodes",
            json!({"sfu": {"replicas": {"min": 0, "max": 4}}}),
            "sfu.replicas.min must be at least 1 unless sfu.replicas.max is 0",
        ),
        (
            "a webhook URL without host",
            json!({"webhooks": [{"url": "http://"}]}),
            "webhook url must be an http(s) URL with a host",
        ),
        (
            "two TURN listeners with one name",
            json!({"turn": {"listeners": [{"name": "udp", "protocol": "UDP", "port": 3478},
                                          {"name": "udp", "protocol": "TCP", "port": 3478}]}}),
            "turn.listeners names must be unique: each names a Service port",
        ),
        (
            "signaling.port equal to media.tcpPort",
            json!({"signaling": {"port": 7881}}),
            "signaling.port and media.tcpPort must differ",
        ),
        (
            "a TURN listener on the admin port",
            json!({"turn": {"listeners": [{"name": "tcp", "protocol": "TCP", "port": 9090}]}}),
            "must not use port 9090, turn-node's admin port",
        ),
        ("an empty sfu.image", json!({"sfu": {"image": ""}}), "spec.sfu.image"),
        (
            "externalAddresses that are not hosts",
            json!({"turn": {"service": {"externalAddresses": ["turn.example.com", "not a host!", "10.0.0.0/8", "999.1.1.1", "host/path?x=1"]}}}),
            "without ports or paths; not: not a host!, 10.0.0.0/8, …",
        ),
        (
            "an advertised address that is no IP, named",
            json!({"media": {"advertisedAddresses": ["203.0.113.7", "example.com"]}}),
            "media.advertisedAddresses must be IP addresses; not: example.com",
        ),
        (
            "peers.allow lifting the built-in denies",
            json!({"turn": {"peers": {"allow": ["10.0.0.0/8", "0.0.0.0/0"]}}}),
            "set peers.unsafeLiftBuiltInDenies: true to mean that; overlapping: 0.0.0.0/0",
        ),
    ];
    for (i, (what, spec, message)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        rejected(&mcs, what, media_cluster(&name, spec), message).await?;
        assert!(mcs.get_opt(&name).await?.is_none(), "{what}: the invalid MediaCluster exists");
    }

    // Names that cannot prefix the cluster's Service and StatefulSet names.
    for name in ["edge.v2".to_owned(), "a".repeat(64)] {
        rejected(
            &mcs,
            &format!("the name {name}"),
            media_cluster(&name, json!({})),
            "metadata.name must be at most 48",
        )
        .await?;
    }
    // The loud field says it is meant.
    let lifted = json!({"turn": {"peers": {"allow": ["0.0.0.0/0"], "unsafeLiftBuiltInDenies": true}}});
    mcs.create(&PostParams::default(), &media_cluster("lifted", lifted)).await?;

    // Room metadata is limited in bytes: 40,000 two-byte characters are 80,000 bytes.
    let heavy = object(json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Room", "metadata": {"name": "heavy"},
        "spec": {"clusterRef": "ok", "metadata": "é".repeat(40_000)}}));
    rejected(&rooms, "80,000 bytes of metadata", heavy, "metadata must be at most 64 KiB: 65536 bytes of UTF-8")
        .await?;

    let room = object(json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Room", "metadata": {"name": "standup"},
        "spec": {"clusterRef": "ok", "allowedCodecs": ["VP9", "Opus"]}}));
    rooms.create(&PostParams::default(), &room).await?;
    // a patch, not a replace: the operator may update the Room in between
    let moved = Patch::Merge(json!({"spec": {"clusterRef": "elsewhere"}}));
    match rooms.patch("standup", &PatchParams::default(), &moved).await {
        Ok(_) => bail!("the apiserver let a Room move to another cluster"),
        Err(e) => assert!(format!("{e}").contains("clusterRef is immutable"), "{e}"),
    }
    ns.delete().await
}
