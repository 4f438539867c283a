use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_api::media_cluster::{IngressSpec, SecretRef, TurnListener, TurnProtocol};

use super::*;

pub(crate) fn cluster(spec: serde_json::Value) -> MediaCluster {
    let mut mc = MediaCluster::new("edge", serde_json::from_value(spec).unwrap());
    mc.metadata.namespace = Some("media".into());
    mc.metadata.uid = Some("6f1c9a52-0000-4000-8000-000000000001".into());
    mc.metadata.generation = Some(1);
    mc
}

pub(crate) fn material() -> SecretMaterial {
    SecretMaterial {
        api_key: Some(("APIgolden0001".into(), "golden-api-secret".into())),
        turn_secret: "golden-turn-secret".into(),
    }
}

fn render_with(mc: &MediaCluster, monitors: bool) -> Vec<Object> {
    let images = Images { media_node: "media-node:test".into(), turn_node: "turn-node:test".into() };
    let secrets = material();
    let ips = ["10.244.1.7".to_owned(), "10.244.0.5".to_owned()];
    let uris = super::config::turn_uris(mc, "turn.example.com");
    let inputs = Inputs {
        secrets: &secrets,
        sfu_replicas: 2,
        turn_replicas: 1,
        sfu_pod_ips: &ips,
        turn_uris: Some(&uris),
        service_monitor_crd: monitors,
        images: &images,
    };
    render(mc, &inputs).unwrap()
}

fn gateway() -> MediaCluster {
    cluster(serde_json::json!({}))
}

fn direct_full() -> MediaCluster {
    let mut mc = cluster(serde_json::json!({
        "media": { "mode": "Direct", "advertisedAddresses": ["203.0.113.7"] },
        "sfu": {
            "replicas": { "min": 2, "max": 10 },
            "capacity": { "rooms": 50, "participants": 400, "bandwidth": "800M" },
            "resources": { "requests": { "cpu": "2", "memory": "1Gi" }, "limits": { "memory": "2Gi" } },
            "drainGracePeriodSeconds": 600,
            "resumeWindowSeconds": 30,
        },
        "turn": {
            "replicas": { "min": 1, "max": 8 },
            "service": { "type": "NodePort", "annotations": { "example.com/lb": "x" } },
            "peers": { "deny": ["10.96.0.0/12"] },
            "quotas": { "bandwidthPerAllocation": "10M" },
        },
        "auth": { "keysSecretRef": { "name": "my-keys" } },
        "signaling": { "serviceType": "LoadBalancer" },
    }));
    mc.spec.turn.listeners.push(TurnListener {
        name: "tls".into(),
        protocol: TurnProtocol::TLS,
        port: 443,
        tls_secret_ref: Some(SecretRef { name: "turn-cert".into() }),
    });
    mc.spec.signaling.ingress = Some(IngressSpec {
        host: "rtc.example.com".into(),
        class_name: Some("nginx".into()),
        tls_secret_ref: Some(SecretRef { name: "rtc-cert".into() }),
        annotations: Default::default(),
    });
    mc
}

/// Compare with `tests/golden/<name>.yaml`; `UPDATE_GOLDEN=1` rewrites the file.
fn golden(name: &str, objects: &[Object]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.yaml"));
    let got = to_yaml(objects).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{} is stale (first difference at line {}):\n  got:  {:?}\n  want: {:?}\nrun with UPDATE_GOLDEN=1 to accept",
            path.display(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn golden_gateway_defaults() {
    golden("gateway-defaults", &render_with(&gateway(), true));
}

#[test]
fn golden_direct_full() {
    golden("direct-full", &render_with(&direct_full(), false));
}

fn kinds(objects: &[Object]) -> Vec<(&str, &str)> {
    objects.iter().map(|o| (o.kind, o.name.as_str())).collect()
}

#[test]
fn gateway_renders_the_expected_set() {
    assert_eq!(
        kinds(&render_with(&gateway(), true)),
        vec![
            ("Secret", "edge-keys"),
            ("Secret", "edge-turn-secret"),
            ("ConfigMap", "edge-sfu-config"),
            ("ServiceAccount", "edge-media-node"),
            ("Role", "edge-media-node"),
            ("RoleBinding", "edge-media-node"),
            ("Service", "edge-sfu"),
            ("Service", "edge-signaling"),
            ("StatefulSet", "edge-sfu"),
            ("PodDisruptionBudget", "edge-sfu"),
            ("ServiceMonitor", "edge-sfu"),
            ("ConfigMap", "edge-turn-config"),
            ("Service", "edge-turn"),
            ("Service", "edge-turn-admin"),
            ("Deployment", "edge-turn"),
            ("PodDisruptionBudget", "edge-turn"),
            ("NetworkPolicy", "edge-turn-egress"),
            ("ServiceMonitor", "edge-turn"),
        ]
    );
}

#[test]
fn direct_mode_with_own_keys_and_ingress() {
    let objects = render_with(&direct_full(), true);
    let k = kinds(&objects);
    assert!(!k.contains(&("Secret", "edge-keys")), "the user's keys Secret is used instead");
    assert!(!k.iter().any(|(kind, _)| *kind == "NetworkPolicy"), "Direct mode lets TURN reach host ports");
    assert!(k.contains(&("Ingress", "edge-signaling")));
    let sts = typed::<StatefulSet>(find(&objects, "StatefulSet", "edge-sfu"));
    let pod = sts.spec.template.spec.unwrap();
    let ports = pod.containers[0].ports.clone().unwrap();
    let host_ports: Vec<_> = ports.iter().filter_map(|p| p.host_port.map(|h| (p.name.clone().unwrap(), h))).collect();
    assert_eq!(host_ports, vec![("media-udp".into(), 7882), ("media-tcp".into(), 7881)]);
    assert_eq!(pod.termination_grace_period_seconds, Some(630));
    let keys = pod.volumes.unwrap().into_iter().find(|v| v.name == "keys").unwrap();
    assert_eq!(keys.secret.unwrap().secret_name.as_deref(), Some("my-keys"));
    // TURN on 443 without root: the unprivileged-port sysctl, not a capability.
    let dep = typed::<Deployment>(find(&objects, "Deployment", "edge-turn"));
    let tpod = dep.spec.template.spec.unwrap();
    let sysctls = tpod.security_context.unwrap().sysctls.unwrap();
    assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
    let svc = typed::<Service>(find(&objects, "Service", "edge-turn")).spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("NodePort"));
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(svc.session_affinity.as_deref(), Some("ClientIP"));
    let ports: Vec<_> =
        svc.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.protocol.unwrap(), p.port)).collect();
    assert_eq!(
        ports,
        vec![("udp".into(), "UDP".into(), 3478), ("tcp".into(), "TCP".into(), 3478), ("tls".into(), "TCP".into(), 443)]
    );
}

#[test]
fn every_object_is_owned_by_the_cluster() {
    for o in render_with(&direct_full(), true).iter().chain(render_with(&gateway(), true).iter()) {
        let refs = &o.body["metadata"]["ownerReferences"];
        assert_eq!(refs.as_array().map(Vec::len), Some(1), "{} {}", o.kind, o.name);
        assert_eq!(refs[0]["kind"], "MediaCluster");
        assert_eq!(refs[0]["name"], "edge");
        assert_eq!(refs[0]["uid"], "6f1c9a52-0000-4000-8000-000000000001");
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(o.body["metadata"]["namespace"], "media");
    }
}

#[test]
fn pods_are_hardened_and_probed() {
    let objects = render_with(&gateway(), true);
    let sts = typed::<StatefulSet>(find(&objects, "StatefulSet", "edge-sfu")).spec.template.spec.unwrap();
    let dep = typed::<Deployment>(find(&objects, "Deployment", "edge-turn")).spec.template.spec.unwrap();
    for pod in [sts, dep] {
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_owned()]));
        let path =
            |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(c.args, Some(vec!["--config".to_owned(), "/etc/switchyard/config/config.yaml".to_owned()]));
        assert!(
            c.ports.as_ref().unwrap().iter().any(|p| p.name.as_deref() == Some("admin") && p.container_port == 9090)
        );
        // The node's own drain deadline plus a margin to close sockets.
        let drain = if c.name == "media-node" {
            gateway().spec.sfu.drain_grace_period_seconds
        } else {
            gateway().spec.turn.drain_grace_period_seconds
        };
        assert_eq!(pod.termination_grace_period_seconds, Some(drain + 30));
        let env: Vec<_> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        for want in ["POD_NAME", "POD_NAMESPACE", "POD_IP", "HOST_IP", "NODE_NAME", "SWITCHYARD_CLUSTER"] {
            assert!(env.contains(&want), "{want} missing from {env:?}");
        }
        // Gateway mode: no host ports anywhere.
        assert!(c.ports.as_ref().unwrap().iter().all(|p| p.host_port.is_none()));
    }
}

#[test]
fn gateway_turn_reaches_only_sfu_pods() {
    let objects = render_with(&gateway(), true);
    let np = typed::<NetworkPolicy>(find(&objects, "NetworkPolicy", "edge-turn-egress")).spec.unwrap();
    assert_eq!(np.policy_types, Some(vec!["Egress".to_owned()]));
    let egress = np.egress.unwrap();
    assert_eq!(egress.len(), 1);
    let to = egress[0].to.as_ref().unwrap()[0].pod_selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(to, selector_labels("edge", Fleet::Sfu));
    let cfg = typed::<ConfigMap>(find(&objects, "ConfigMap", "edge-turn-config")).data.unwrap();
    let text = &cfg["config.yaml"];
    assert!(text.contains("  allow:\n  - 10.244.0.5/32\n  - 10.244.1.7/32\n"), "{text}");
    assert!(text.contains("- 0.0.0.0/0"), "{text}");
}

/// The config documents in the rendered ConfigMaps (the golden files) are what the nodes
/// parse: text → `api::node_config` types (which refuse unknown fields) gives back exactly
/// what the operator rendered, and rendering that again gives the same text.
#[test]
fn config_maps_round_trip_through_the_node_documents() {
    use std::path::Path;

    use switchyard_api::node_config::{self, MediaNodeConfig, TurnNodeConfig};
    let ips = ["10.244.1.7".to_owned(), "10.244.0.5".to_owned()];
    for mc in [gateway(), direct_full()] {
        let objects = render_with(&mc, false);
        let text =
            |name: &str| typed::<ConfigMap>(find(&objects, "ConfigMap", name)).data.unwrap()["config.yaml"].clone();

        let media = text("edge-sfu-config");
        let parsed = MediaNodeConfig::from_yaml(&media, Path::new("sfu/config.yaml")).unwrap();
        let uris = super::config::turn_uris(&mc, "turn.example.com");
        assert_eq!(parsed, super::config::media_node(&mc, "edge", uris).unwrap());
        assert_eq!(node_config::to_yaml(&parsed).unwrap(), media);

        let turn = text("edge-turn-config");
        let parsed = TurnNodeConfig::from_yaml(&turn, Path::new("turn/config.yaml")).unwrap();
        assert_eq!(parsed, super::config::turn_node(&mc, &ips).unwrap());
        assert_eq!(node_config::to_yaml(&parsed).unwrap(), turn);
    }
}

#[test]
fn a_spec_value_the_node_cannot_take_is_a_render_error() {
    let mut mc = direct_full();
    mc.spec.media.advertised_addresses = vec!["example.com".into()];
    let err = super::config::media_node(&mc, "edge", vec![]).unwrap_err().to_string();
    assert!(err.contains("media.advertisedAddresses") && err.contains("example.com"), "{err}");
    let mut mc = direct_full();
    mc.spec.media.udp_port = 70_000;
    assert!(super::config::media_node(&mc, "edge", vec![]).unwrap_err().to_string().contains("media.udpPort"));
    let mut mc = direct_full();
    mc.spec.turn.peers.deny = vec!["10.96.0.0/33".into()];
    let err = super::config::turn_node(&mc, &[]).unwrap_err().to_string();
    assert!(err.contains("turn.peers.deny") && err.contains("10.96.0.0/33"), "{err}");
}

#[test]
fn dynamic_config_does_not_roll_pods() {
    let mc = gateway();
    let hash = |ips: &[String], host: &str| {
        let images = Images::default();
        let secrets = material();
        let uris = super::config::turn_uris(&mc, host);
        let inputs = Inputs {
            secrets: &secrets,
            sfu_replicas: 1,
            turn_replicas: 1,
            sfu_pod_ips: ips,
            turn_uris: Some(&uris),
            service_monitor_crd: false,
            images: &images,
        };
        let objects = render(&mc, &inputs).unwrap();
        let h = |kind, name| {
            find(&objects, kind, name).body["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
                .clone()
        };
        (h("StatefulSet", "edge-sfu"), h("Deployment", "edge-turn"))
    };
    let a = hash(&["10.0.0.1".into()], "a.example.com");
    let b = hash(&["10.0.0.2".into(), "10.0.0.3".into()], "b.example.com");
    assert_eq!(a, b);
    assert!(a.0.as_str().is_some_and(|h| h.len() == 16));
    // A real config change does roll.
    let mut changed = mc.clone();
    changed.spec.turn.realm = "other".into();
    let images = Images::default();
    let secrets = material();
    let inputs = Inputs {
        secrets: &secrets,
        sfu_replicas: 1,
        turn_replicas: 1,
        sfu_pod_ips: &[],
        turn_uris: None,
        service_monitor_crd: false,
        images: &images,
    };
    let objects = render(&changed, &inputs).unwrap();
    assert_ne!(
        find(&objects, "Deployment", "edge-turn").body["spec"]["template"]["metadata"]["annotations"]
            [CONFIG_HASH_ANNOTATION],
        a.1
    );
}

#[test]
fn missing_uid_is_an_error_not_an_orphan() {
    let mut mc = gateway();
    mc.metadata.uid = None;
    let images = Images::default();
    let secrets = material();
    let inputs = Inputs {
        secrets: &secrets,
        sfu_replicas: 1,
        turn_replicas: 1,
        sfu_pod_ips: &[],
        turn_uris: None,
        service_monitor_crd: false,
        images: &images,
    };
    let err = render(&mc, &inputs).unwrap_err();
    assert_eq!(err.to_string(), "invalid metadata.uid: missing");
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects.iter().find(|o| o.kind == kind && o.name == name).unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

fn typed<K: DeserializeOwned>(o: &Object) -> K {
    serde_json::from_value(o.body.clone()).unwrap()
}

/// A typed round trip drops unknown fields, so equality proves every rendered field is
/// one the API knows (catches typos such as `readOnlyRootFileSystem`).
fn round_trips<K: DeserializeOwned + Serialize>(o: &Object) {
    let back = serde_json::to_value(typed::<K>(o)).unwrap();
    assert_eq!(back, o.body, "{} {} has fields the API does not know", o.kind, o.name);
}

#[test]
fn every_field_is_known_to_the_api() {
    for mc in [gateway(), direct_full()] {
        for o in &render_with(&mc, true) {
            match o.kind {
                "StatefulSet" => round_trips::<StatefulSet>(o),
                "Deployment" => round_trips::<Deployment>(o),
                "Service" => round_trips::<Service>(o),
                "ConfigMap" => round_trips::<ConfigMap>(o),
                "Secret" => round_trips::<Secret>(o),
                "ServiceAccount" => round_trips::<ServiceAccount>(o),
                "Role" => round_trips::<Role>(o),
                "RoleBinding" => round_trips::<RoleBinding>(o),
                "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(o),
                "NetworkPolicy" => round_trips::<NetworkPolicy>(o),
                "Ingress" => round_trips::<Ingress>(o),
                "ServiceMonitor" => assert_eq!(o.body["spec"]["endpoints"][0]["port"], "admin"),
                other => panic!("unexpected kind {other}"),
            }
        }
    }
}

#[test]
fn secret_material_debug_hides_values() {
    let text = format!("{:?}", material());
    assert!(!text.contains("golden-api-secret") && !text.contains("golden-turn-secret"), "{text}");
    assert!(text.contains("APIgolden0001"));
}

#[test]
fn turn_uris_cover_every_host_and_listener() {
    use switchyard_api::media_cluster::{TurnListener, TurnProtocol};
    let mut mc = gateway();
    mc.spec.turn.listeners = vec![
        TurnListener { name: "udp".into(), protocol: TurnProtocol::UDP, port: 3478, tls_secret_ref: None },
        TurnListener {
            name: "tls".into(),
            protocol: TurnProtocol::TLS,
            port: 443,
            tls_secret_ref: Some(switchyard_api::media_cluster::SecretRef { name: "t".into() }),
        },
    ];
    let hosts = ["198.51.100.4".to_owned(), "2001:db8::9".to_owned()];
    // Node ports: only the UDP listener has one here.
    let uris = super::config::turn_uris_at(&mc, &hosts, |l| (l.name == "udp").then_some(31478));
    assert_eq!(uris, vec!["turn:198.51.100.4:31478?transport=udp", "turn:[2001:db8::9]:31478?transport=udp"]);
    let uris = super::config::turn_uris(&mc, "turn.example.com");
    assert_eq!(uris, vec!["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"]);
}
