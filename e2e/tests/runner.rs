//! pod-runner, seen from inside its pods: `e2e-probe` (image `…/e2e-probe`) answers what
//! it sees: files at their mount paths, its environment, hostname, and who the apiserver
//! thinks it is.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchyard_e2e::{Env, TestNamespace, http_get, pod_ip, wait_for};

const PROBE_IMAGE: &str = "registry.invalid/switchyard/e2e-probe:test";
const PORT: u16 = 8080;

/// A probe pod on `node`; `spec` is merged into the pod spec, `container` into its container.
fn probe_pod(name: &str, node: &str, spec: Value, container: Value) -> Result<Pod> {
    let mut c = json!({
        "name": "probe",
        "image": PROBE_IMAGE,
        "args": ["--listen", "0.0.0.0:8080", "--name=$(POD_NAME)"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    });
    merge(&mut c, container);
    let mut s = json!({"nodeName": node, "containers": [c]});
    merge(&mut s, spec);
    Ok(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "probe", "zone": "a"}}, "spec": s}))?)
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Wait until pod `name` has an IP and its probe answers.
async fn probe_up(client: &Client, env: &Env, ns: &str, name: &str) -> Result<IpAddr> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("probe {ns}/{name} answering on its pod IP");
    let got = wait_for(&what, Duration::from_secs(60), || async {
        let Some(ip) = pods.get_opt(name).await?.as_ref().and_then(pod_ip) else { return Ok(None) };
        Ok((http_get(ip, PORT, "/healthz").await?.status == 200).then_some(ip))
    })
    .await;
    got.map_err(|e| anyhow::anyhow!("{e}\npod log:\n{}", env.pod_log(ns, name)))
}

/// Wait (briefly) until the runner's log of pod `name` contains `text`.
async fn log_says(env: &Env, ns: &str, name: &str, text: &str) -> Result<()> {
    let what = format!("{text:?} in the log of {ns}/{name}");
    wait_for(&what, Duration::from_secs(10), || async { Ok(env.pod_log(ns, name).contains(text).then_some(())) })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", env.pod_log(ns, name)))
}

/// GET `path` on the probe; 200 expected.
async fn get(ip: IpAddr, path: &str) -> Result<String> {
    let r = http_get(ip, PORT, path).await?;
    if r.status != 200 {
        bail!("GET {path} on {ip}: {} {}", r.status, r.body);
    }
    Ok(r.body)
}

async fn config_map(api: &Api<ConfigMap>, name: &str, text: &str) -> Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}, "data": {"config.txt": text}}))?;
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(cm)).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_runner_pods_get_their_own_volumes_network_and_identity() -> Result<()> {
    let env = Env::from_env()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "runner").await?;
    let n = ns.name.as_str();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    config_map(&cms, "probe-a", "I am A").await?;
    config_map(&cms, "probe-b", "I am B").await?;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "probe"}, "stringData": {"token": "s3cret"}}))?;
    Api::<Secret>::namespaced(client.clone(), n).create(&PostParams::default(), &secret).await?;

    // two pods on the same node, the same port, the same mount path, different ConfigMaps
    let pods: Api<Pod> = Api::namespaced(client.clone(), n);
    for (name, cm, automount) in [("probe-a", "probe-a", true), ("probe-b", "probe-b", false)] {
        let pod = probe_pod(
            name,
            "kwok-node-0",
            json!({
                "automountServiceAccountToken": automount,
                "volumes": [
                    {"name": "cfg", "configMap": {"name": cm}},
                    {"name": "sec", "secret": {"secretName": "probe"}},
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
                ]
            }),
            json!({
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "GREETING", "value": "hello from $(POD_IP), not $$(POD_IP)"},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "probe", "key": "token"}}},
                    {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['zone']"}}}
                ],
                "envFrom": [{"configMapRef": {"name": cm}, "prefix": "CFG_"}],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/probe", "readOnly": true},
                    {"name": "sec", "mountPath": "/etc/probe-secret", "readOnly": true},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo"}
                ]
            }),
        )?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let a = probe_up(&client, &env, n, "probe-a").await?;
    let b = probe_up(&client, &env, n, "probe-b").await?;
    assert_ne!(a, b);

    // each sees its own ConfigMap at the same path
    assert_eq!(get(a, "/file/etc/probe/config.txt").await?, "I am A");
    assert_eq!(get(b, "/file/etc/probe/config.txt").await?, "I am B");
    assert_eq!(get(a, "/file/etc/probe-secret/token").await?, "s3cret");
    assert_eq!(get(a, "/file/etc/podinfo/labels").await?, "app=\"probe\"\nzone=\"a\"\n");
    assert_eq!(get(a, "/hostname").await?, "probe-a");
    assert_eq!(get(b, "/hostname").await?, "probe-b");

    let env_a = get(a, "/env").await?;
    for want in [
        format!("GREETING=hello from {a}, not $(POD_IP)"),
        format!("POD_IP={a}"),
        "POD_NAME=probe-a".into(),
        "SECRET=s3cret".into(),
        "ZONE=a".into(),
        "CFG_config.txt=I am A".into(),
        "KUBERNETES_SERVICE_HOST=127.0.0.1".into(),
        "HOSTNAME=probe-a".into(),
    ] {
        assert!(env_a.lines().any(|l| l == want), "probe-a's environment lacks {want:?}:\n{env_a}");
    }
    assert!(!env_a.contains("KUBECONFIG"), "the runner's KUBECONFIG leaked:\n{env_a}");

    // the pod's own service-account token, through the in-cluster config
    assert_eq!(get(a, "/whoami").await?, format!("system:serviceaccount:{n}:default"));
    assert_eq!(get(a, "/file/var/run/secrets/kubernetes.io/serviceaccount/namespace").await?, n);
    let no_token = http_get(b, PORT, "/file/var/run/secrets/kubernetes.io/serviceaccount/token").await?;
    assert_eq!(no_token.status, 404, "automountServiceAccountToken: false still got a token");

    // the log header names the exact argv and the pod IP
    let log = env.pod_log(n, "probe-a");
    assert!(log.contains("--name=probe-a'") && log.contains(&format!("ip {a} ")), "{log}");

    // a ConfigMap change reaches the mounted file of that pod only, within ~2 s
    let t0 = Instant::now();
    config_map(&cms, "probe-a", "I am A, v2").await?;
    wait_for("probe-a's mounted config.txt to change", Duration::from_secs(5), || async {
        Ok((get(a, "/file/etc/probe/config.txt").await? == "I am A, v2").then_some(()))
    })
    .await?;
    println!("ConfigMap update visible in the pod after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(get(b, "/file/etc/probe/config.txt").await?, "I am B");

    ns.delete().await
}

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_runner_restarts_and_terminates_like_a_kubelet() -> Result<()> {
    let env = Env::from_env()?;
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "lifecycle").await?;
    let n = ns.name.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), n);
    // probes that ignore SIGTERM, so only SIGKILL ends them
    let stubborn = json!({"env": [{"name": "PROBE_IGNORE_SIGTERM", "value": "1"}]});
    pods.create(
        &PostParams::default(),
        &probe_pod("graceful", "kwok-node-1", json!({"terminationGracePeriodSeconds": 2}), stubborn.clone())?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &probe_pod("forced", "kwok-node-1", json!({"terminationGracePeriodSeconds": 30}), stubborn)?,
    )
    .await?;
    let mut with_command = probe_pod("command", "kwok-node-0", json!({}), json!({}))?;
    with_command.spec.as_mut().expect("spec").containers[0].command = Some(vec!["/bin/sh".into()]);
    pods.create(&PostParams::default(), &with_command).await?;
    let mut foreign = probe_pod("foreign", "kwok-node-0", json!({}), json!({}))?;
    foreign.spec.as_mut().expect("spec").containers[0].image = Some("docker.io/library/nginx:1.27".into());
    pods.create(&PostParams::default(), &foreign).await?;

    let g = probe_up(&client, &env, n, "graceful").await?;
    let f = probe_up(&client, &env, n, "forced").await?;

    // a process that exits is restarted (restartPolicy Always)
    let _ = http_get(g, PORT, "/exit/3").await;
    log_says(&env, n, "graceful", "start #2").await?;
    probe_up(&client, &env, n, "graceful").await?;
    log_says(&env, n, "graceful", "runner: exited: exit code 3").await?;

    // a graceful delete: SIGTERM (ignored), SIGKILL after terminationGracePeriodSeconds
    let t0 = Instant::now();
    pods.delete("graceful", &DeleteParams::default()).await?;
    wait_for("graceful's probe to stop answering", Duration::from_secs(10), || async {
        Ok(http_get(g, PORT, "/healthz").await.is_err().then_some(()))
    })
    .await?;
    let took = t0.elapsed();
    println!("graceful delete (grace 2 s): gone after {took:?}");
    assert!(took >= Duration::from_millis(1500), "killed before its grace period: {took:?}");
    log_says(&env, n, "graceful", "runner: stopped: signal 9 (SIGKILL)").await?;

    // --grace-period=0 --force: SIGKILL at once, although the pod's grace is 30 s
    let t0 = Instant::now();
    pods.delete("forced", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
    wait_for("forced's probe to stop answering", Duration::from_secs(10), || async {
        Ok(http_get(f, PORT, "/healthz").await.is_err().then_some(()))
    })
    .await?;
    let took = t0.elapsed();
    println!("force delete (grace 30 s): gone after {took:?}");
    assert!(took < Duration::from_secs(3), "force delete took {took:?}");
    log_says(&env, n, "forced", "runner: stopped: signal 9 (SIGKILL)").await?;

    // a pod that sets `command` is refused, with the reason in its log; a foreign image is left alone
    log_says(&env, n, "command", "sets command").await?;
    assert!(env.pod_log(n, "foreign").starts_with("(no pod log"), "{}", env.pod_log(n, "foreign"));

    ns.delete().await
}

/// The pod- and container-level securityContext the chart and the operator render.
fn hardened(image: &str, extra: Value) -> (Value, Value) {
    let spec = json!({"securityContext": {
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532
    }, "terminationGracePeriodSeconds": 1});
    let mut container = json!({
        "image": image,
        "args": ["--listen", "0.0.0.0:8080"],
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}
        }
    });
    merge(&mut container, extra);
    (spec, container)
}

/// A condition over the test namespace's pods.
type PodCheck = Box<dyn Fn(&[std::sync::Arc<Pod>]) -> bool + Send>;

/// Ready condition and container restarts of pod `name`.
fn pod_state(pods: &[std::sync::Arc<Pod>], name: &str) -> Option<(bool, i32)> {
    let p = pods.iter().find(|p| p.metadata.name.as_deref() == Some(name))?;
    let st = p.status.as_ref()?;
    let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts = st.container_statuses.iter().flatten().next().map_or(0, |c| c.restart_count);
    Some((ready, restarts))
}

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_runner_images_fail_as_a_real_install_would() -> Result<()> {
    let env = Env::from_env()?;
    if std::env::var("E2E_IMAGES").as_deref() != Ok("1") {
        println!("skipped: pods run binaries, not images (E2E_IMAGES=0)");
        return Ok(());
    }
    let client = env.client().await?;
    let ns = TestNamespace::create(&client, "images").await?;
    let n = ns.name.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), n);
    let image = |name: &str| format!("e2e.switchyard.dev/{name}:test");
    let tmp = json!({"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]});
    let volumes = json!({"volumes": [{"name": "tmp", "emptyDir": {}}]});
    let ready_probe = json!({"readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}});
    let cases = [
        ("wrong-entrypoint", image("e2e-wrong-entrypoint"), json!({})),
        ("missing-library", image("e2e-missing-library"), json!({})),
        ("probe", image("e2e-probe-image"), {
            let mut c = tmp.clone();
            merge(&mut c, ready_probe.clone());
            c
        }),
        (
            "wrong-readiness-port",
            image("e2e-probe-image"),
            json!({"readinessProbe": {"httpGet": {"path": "/healthz", "port": 8081}, "periodSeconds": 1, "failureThreshold": 1}}),
        ),
        (
            "wrong-liveness-port",
            image("e2e-probe-image"),
            json!({"livenessProbe": {"tcpSocket": {"port": 8082}, "periodSeconds": 1, "failureThreshold": 2}}),
        ),
    ];
    for (name, img, extra) in &cases {
        let (mut spec, container) = hardened(img, extra.clone());
        merge(&mut spec, volumes.clone());
        pods.create(&PostParams::default(), &probe_pod(name, "kwok-node-0", spec, container)?).await?;
    }
    let wait = |what: &'static str, check: PodCheck| {
        let client = client.clone();
        async move {
            switchyard_e2e::wait_pods(
                &client,
                n,
                "app=probe",
                what,
                switchyard_e2e::Patience::PODS,
                |p| check(p).then_some(()),
                || async { String::new() },
            )
            .await
        }
    };

    // The image runs as the chart asks: user 65532, no capabilities, no new privileges,
    // a read-only root with writable volumes; its readiness probe makes it Ready.
    let ip = probe_up(&client, &env, n, "probe").await?;
    let status = get(ip, "/file/proc/self/status").await?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or_default().to_owned();
    assert!(field("Uid:").split_whitespace().all(|u| u == "65532"), "Uid: {}", field("Uid:"));
    assert!(field("Gid:").split_whitespace().all(|g| g == "65532"), "Gid: {}", field("Gid:"));
    assert_eq!(field("Groups:"), "65532");
    // (the bounding set stays full: see e2e/README.md; with no_new_privs nothing regains
    // a capability through it)
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
    let root = http_get(ip, PORT, "/write/etc/written").await?;
    assert_eq!(root.status, 500, "a write to the root filesystem must fail: {}", root.body);
    assert!(root.body.contains("Read-only file system"), "{}", root.body);
    assert_eq!(get(ip, "/write/tmp/written").await?, "/tmp/written: written", "the emptyDir is writable");
    wait("probe Ready (readiness probe passes)", Box::new(|p| pod_state(p, "probe").is_some_and(|s| s.0))).await?;

    // A wrong entrypoint and a missing library: the container exits at once, again and
    // again; the pod never becomes Ready and its restarts are counted.
    for (name, says) in [("wrong-entrypoint", "/usr/local/bin/turn-nod"), ("missing-library", "libgcc_s.so.1")] {
        log_says(&env, n, name, says).await?;
        log_says(&env, n, name, "runner: exited: exit code 127").await?;
    }
    wait(
        "the broken images restarting, not Ready",
        Box::new(|p| {
            ["wrong-entrypoint", "missing-library"].iter().all(|n| pod_state(p, n).is_some_and(|(r, c)| !r && c >= 1))
        }),
    )
    .await?;

    // A readiness probe on the wrong port keeps the pod out of Ready although it runs; a
    // liveness probe on the wrong port restarts it.
    let wrong = probe_up(&client, &env, n, "wrong-readiness-port").await?;
    log_says(&env, n, "wrong-readiness-port", "Readiness probe failed").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now: Vec<_> = pods.list(&Default::default()).await?.items.into_iter().map(std::sync::Arc::new).collect();
    assert_eq!(pod_state(&now, "wrong-readiness-port"), Some((false, 0)), "runs ({wrong} answers) but not Ready");
    log_says(&env, n, "wrong-liveness-port", "liveness probe failed 2 times: killing the container").await?;
    wait(
        "wrong-liveness-port restarted by its liveness probe",
        Box::new(|p| pod_state(p, "wrong-liveness-port").is_some_and(|(_, c)| c >= 1)),
    )
    .await?;
    ns.delete().await
}
