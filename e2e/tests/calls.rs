//! Calls on the e2e cluster: real webrtc-rs peers, real media-node and turn-node
//! processes (the pod runner starts them for the pods the operator rendered), a real
//! apiserver. Scenarios 4, 5, 7 and 9 of the e2e suite, and the Room service on the
//! cluster; run by `e2e/run.sh`.

#[path = "../../media-node/tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{ConnectError, Peer};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use switchyard_api::room::RoomPhase;
use switchyard_api::signal::{ErrorCode, LeaveReason, ServerMessage, TrackKind};
use switchyard_api::token::{Claims, Grants, mint};
use switchyard_api::webhook::{EventKind, WebhookEvent};
use switchyard_api::{MediaCluster, Room};
use switchyard_e2e::support::{
    Env, Patience, TestNamespace, describe_fleets, http_get, merge, pod_ips, running_ips, secret_data, wait_for,
    wait_pods,
};

const CLUSTER: &str = "edge";
const SIGNALING_PORT: u16 = 7880;
const ADMIN_PORT: u16 = 9090;
const AV: &[TrackKind] = &[TrackKind::Audio, TrackKind::Video];

/// One Gateway-mode MediaCluster in its own namespace.
struct Fixture {
    env: Env,
    client: Client,
    ns: TestNamespace,
    key: String,
    secret: String,
    sfu: Vec<(String, IpAddr)>,
    turn: (String, IpAddr),
}

fn selector(fleet: &str) -> String {
    format!("switchyard.dev/cluster={CLUSTER},app.kubernetes.io/component={fleet}")
}

impl Fixture {
    /// `sfu` media-nodes and one turn-node in Gateway mode (clients relay through TURN).
    /// Services have no endpoints on a loopback cluster, so the turn pod's IP is what
    /// clients are told to dial (`turn.service.externalAddresses`).
    async fn gateway(prefix: &str, sfu: usize, extra: serde_json::Value) -> Result<Fixture> {
        common::init_crypto();
        let env = Env::from_env()?;
        let client = env.client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let mut spec = json!({
            "media": { "mode": "Gateway" },
            "sfu": { "replicas": { "min": sfu, "max": sfu }, "drainGracePeriodSeconds": 2 },
            "turn": {
                "replicas": { "min": 1, "max": 1 },
                "service": { "type": "ClusterIP" },
                "drainGracePeriodSeconds": 2
            },
            "autoscaling": { "pollIntervalSeconds": 2 }
        });
        merge(&mut spec, extra);
        let mc = json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster",
            "metadata": { "name": CLUSTER }, "spec": spec
        });
        let api: Api<MediaCluster> = Api::namespaced(client.clone(), &ns.name);
        api.patch(CLUSTER, &PatchParams::apply("e2e").force(), &Patch::Apply(&mc)).await?;

        let n = &ns.name;
        let fleets = || describe_fleets(&client, n);
        let turn = wait_pods(
            &client,
            n,
            &selector("turn"),
            "the turn pod",
            Patience::PODS,
            |p| running_ips(p).into_iter().next(),
            fleets,
        )
        .await?;
        let patch = json!({ "spec": { "turn": { "service": { "externalAddresses": [turn.1.to_string()] } } } });
        api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let what = format!("{sfu} sfu pods");
        let pods = wait_pods(
            &client,
            n,
            &selector("sfu"),
            &what,
            Patience::PODS,
            |p| {
                let p = running_ips(p);
                (p.len() == sfu).then_some(p)
            },
            fleets,
        )
        .await?;
        for (name, ip) in pods.iter().chain([&turn]) {
            wait_for(&format!("{name} ready on {ip}"), Duration::from_secs(60), || async {
                Ok((http_get(*ip, ADMIN_PORT, "/readyz").await?.status == 200).then_some(()))
            })
            .await
            .with_context(|| env.pod_logs_tail(n, 30))?;
        }
        let keys = secret_data(&client, n, &format!("{CLUSTER}-keys")).await?;
        let (key, secret) = keys.into_iter().next().context("the operator generated no API key")?;
        let f = Fixture { env, client, ns, key, secret: String::from_utf8(secret)?, sfu: pods, turn };
        // The nodes hand out the turn pod's address once the edited config reaches them.
        let want = format!("turn:{}:", f.turn.1);
        for (name, ip) in &f.sfu {
            wait_for(&format!("{name} to hand out {want}"), Duration::from_secs(60), || async {
                Ok(f.probe_ice_servers(*ip).await?.iter().any(|u| u.starts_with(&want)).then_some(()))
            })
            .await?;
        }
        Ok(f)
    }

    fn token(&self, identity: &str, room: &str) -> String {
        let claims = Claims::new(self.key.clone(), identity, common::now(), 600).with_grants(Grants::join(room));
        mint(&claims, &self.secret).expect("minting a token")
    }

    fn url(&self, ip: IpAddr, identity: &str, room: &str) -> String {
        format!("ws://{ip}:{SIGNALING_PORT}/rtc?access_token={}", self.token(identity, room))
    }

    /// Join a throwaway room through one node and read the TURN URIs of its `joined`.
    async fn probe_ice_servers(&self, ip: IpAddr) -> Result<Vec<String>> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = self.url(ip, "probe", &format!("probe-{}", ip.to_string().replace('.', "-")));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        ws.send(Message::text(r#"{"type":"join","protocolVersion":1}"#)).await?;
        let first = tokio::time::timeout(Duration::from_secs(15), ws.next()).await?.context("closed")??;
        let _ = ws.close(None).await;
        match serde_json::from_str::<ServerMessage>(first.to_text()?)? {
            ServerMessage::Joined(j) => Ok(j.ice_servers.into_iter().flat_map(|s| s.urls).collect()),
            other => bail!("expected joined, got {other:?}"),
        }
    }

    fn rooms(&self) -> Api<Room> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// The pod logs of this test's namespace (for a failure's context).
    fn logs(&self) -> String {
        self.env.pod_logs_tail(&self.ns.name, 40)
    }

    async fn finish(self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => self.ns.delete().await,
            Err(e) => Err(e.context(self.logs())),
        }
    }
}

/// The value of the sample `name{labels}` in a Prometheus text page (0 when absent).
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Join, retrying while the server says a retry may succeed (placement in progress).
async fn join(url: &str, id: u8) -> Result<Peer> {
    let mut last = String::new();
    for _ in 0..5 {
        match Peer::try_join_url(url, id, AV).await {
            Ok(p) => return Ok(p),
            Err(ConnectError::Refused(e)) if e.retry_after_ms.is_some() => {
                tokio::time::sleep(Duration::from_millis(e.retry_after_ms.unwrap_or(500))).await;
                last = format!("{e:?}");
            }
            Err(e) => bail!("join through {url} failed: {e:?}"),
        }
    }
    bail!("join kept being refused: {last}")
}

/// Both peers receive valid audio and video from each other within `within`.
async fn media_flows(a: &Peer, b: &Peer, within: Duration) -> bool {
    let (ia, ib) = (a.id, b.id);
    common::eventually(within, || {
        a.valid_from(TrackKind::Audio, ib) > 20
            && a.valid_from(TrackKind::Video, ib) > 10
            && b.valid_from(TrackKind::Audio, ia) > 20
            && b.valid_from(TrackKind::Video, ia) > 10
    })
    .await
}

/// Scenarios 4 and 5: a Room is placed on a node; two clients dial different nodes (one
/// is proxied to the host), relay through turn-node only (Gateway mode), and exchange
/// audio and video; the host reports them in `Room.status`.
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_call_routed_to_the_hosting_node_through_turn() -> Result<()> {
    let f = Fixture::gateway("e2e-call", 2, json!({})).await?;
    let result = routed_call(&f).await;
    f.finish(result).await
}

async fn routed_call(f: &Fixture) -> Result<()> {
    let room = "standup";
    let obj: Room = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "Room",
        "metadata": { "name": room }, "spec": { "clusterRef": CLUSTER }
    }))?;
    f.rooms().create(&PostParams::default(), &obj).await?;
    let host = wait_for("the Room to be placed", Duration::from_secs(30), || async {
        Ok(f.rooms().get(room).await?.status.and_then(|s| s.node))
    })
    .await?;
    ensure!(f.sfu.iter().any(|(n, _)| *n == host), "placed on {host}, not one of {:?}", f.sfu);
    println!("room {room} placed on {host}");

    // One client dials each node, so one of them lands where the room is not.
    let a = join(&f.url(f.sfu[0].1, "alice", room), 1).await?;
    let b = join(&f.url(f.sfu[1].1, "bob", room), 2).await?;
    let (ma, mb) = (a.start_media(Duration::from_secs(8)), b.start_media(Duration::from_secs(8)));
    ensure!(media_flows(&a, &b, Duration::from_secs(20)).await, "media did not flow both ways through TURN");
    ensure!((a.invalid(), b.invalid()) == (0, 0), "corrupted payloads");

    let other = f.sfu.iter().find(|(n, _)| *n != host).context("a second node")?;
    let page = http_get(other.1, ADMIN_PORT, "/metrics").await?.body;
    let proxied = metric(&page, "switchyard_media_proxied_sessions_total{result=\"ok\"}");
    ensure!(proxied >= 1.0, "{} proxied no session:\n{page}", other.0);
    let status: serde_json::Value =
        serde_json::from_str(&http_get(f.turn.1, ADMIN_PORT, "/internal/status").await?.body)?;
    ensure!(status["allocations"].as_u64().unwrap_or(0) >= 2, "both clients relay through turn-node: {status}");
    wait_for("Room.status: 2 participants, Active", Duration::from_secs(15), || async {
        let s = f.rooms().get(room).await?.status.unwrap_or_default();
        Ok((s.participants == 2 && s.phase == RoomPhase::Active && s.started_at.is_some()).then_some(()))
    })
    .await?;
    let _ = (ma.await, mb.await);
    a.close().await;
    b.close().await;
    Ok(())
}

/// A join to a room that does not exist creates the Room (autoCreate), waits for its
/// placement and is served; the room's limits hold across nodes (room_full).
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_join_creates_the_room_and_waits_for_placement() -> Result<()> {
    let f = Fixture::gateway("e2e-create", 2, json!({ "roomDefaults": { "maxParticipants": 1 } })).await?;
    let result = async {
        let a = join(&f.url(f.sfu[1].1, "alice", "fresh"), 1).await?;
        let room = f.rooms().get("fresh").await.context("the join created no Room")?;
        ensure!(room.labels().get("switchyard.dev/auto-created").map(String::as_str) == Some("true"));
        match Peer::try_join_url(&f.url(f.sfu[0].1, "bob", "fresh"), 2, AV).await {
            Err(ConnectError::Refused(e)) => ensure!(e.code == ErrorCode::RoomFull, "{e:?}"),
            Err(e) => bail!("expected room_full, got {e:?}"),
            Ok(_) => bail!("a second participant joined a room of one"),
        }
        a.close().await;
        Ok(())
    }
    .await;
    f.finish(result).await
}

/// A webhook receiver on loopback: every request verified with the cluster's API keys.
struct Receiver {
    url: String,
    keys: Arc<Mutex<Vec<(String, String)>>>,
    /// Each request's Authorization header and body, verified when looked at (the API key
    /// exists only once the operator has generated it).
    requests: Arc<Mutex<Vec<Request>>>,
}

/// A webhook request: its Authorization header and body.
type Request = (String, Vec<u8>);

impl Receiver {
    async fn start() -> Result<Receiver> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let r = Receiver { url, keys: Arc::default(), requests: Arc::default() };
        let requests = r.requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some((auth, body)) = request(&buf) {
                            requests.lock().unwrap().push((auth, body.to_vec()));
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                            let _ = s.write_all(ok).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(r)
    }

    /// Every request verified with the cluster's keys: the events, and the failures.
    fn verified(&self) -> (Vec<WebhookEvent>, Vec<String>) {
        let keys = self.keys.lock().unwrap().clone();
        let lookup = |k: &str| keys.iter().find(|(x, _)| x == k).map(|(_, s)| s.clone());
        let (mut ok, mut bad) = (vec![], vec![]);
        for (auth, body) in self.requests.lock().unwrap().iter() {
            match switchyard_api::webhook::verify(body, auth, lookup, common::now()) {
                Ok(e) => ok.push(e),
                Err(e) => bad.push(e.to_string()),
            }
        }
        (ok, bad)
    }

    fn has(&self, kind: EventKind, room: &str) -> bool {
        self.verified().0.iter().any(|e| e.event == kind && e.room.name == room)
    }
}

/// A complete HTTP request in `buf`: its Authorization header and body.
fn request(buf: &[u8]) -> Option<(String, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = buf.get(end..end + len)?;
    Some((header("authorization").unwrap_or_default(), body))
}

/// Scenario 9: deleting a Room closes it on its node (the participant is told) and fires
/// `room_finished`.
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_deleting_a_room_closes_it_and_fires_room_finished() -> Result<()> {
    let receiver = Receiver::start().await?;
    let f = Fixture::gateway("e2e-delete", 1, json!({ "webhooks": [{ "url": receiver.url }] })).await?;
    receiver.keys.lock().unwrap().push((f.key.clone(), f.secret.clone()));
    let result = async {
        let mut a = join(&f.url(f.sfu[0].1, "alice", "retro"), 1).await?;
        wait_for("room_started and participant_joined webhooks", Duration::from_secs(15), || async {
            Ok((receiver.has(EventKind::RoomStarted, "retro") && receiver.has(EventKind::ParticipantJoined, "retro"))
                .then_some(()))
        })
        .await?;
        f.rooms().delete("retro", &DeleteParams::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let leave = loop {
            match tokio::time::timeout_at(deadline.into(), a.events.recv()).await {
                Ok(Some(ServerMessage::Leave(l))) => break l,
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the socket closed without a leave"),
                Err(_) => bail!("no leave within 20 s of deleting the Room"),
            }
        };
        ensure!(leave.reason == LeaveReason::RoomClosed, "{leave:?}");
        wait_for("the room_finished webhook", Duration::from_secs(20), || async {
            Ok(receiver.has(EventKind::RoomFinished, "retro").then_some(()))
        })
        .await?;
        wait_for("the Room to go (finalizer done)", Duration::from_secs(20), || async {
            Ok(f.rooms().get_opt("retro").await?.is_none().then_some(()))
        })
        .await?;
        let (events, rejected) = receiver.verified();
        ensure!(rejected.is_empty(), "webhooks that failed verification: {rejected:?}");
        let finished = events.iter().filter(|e| e.event == EventKind::RoomFinished && e.room.name == "retro").count();
        ensure!(finished == 1, "room_finished {finished} times");
        Ok(())
    }
    .await;
    f.finish(result).await
}

/// The Room service on the cluster, through `switchyard room`: a room created through
/// one node is a placed Room object; the other node lists it from its reflector with the
/// same sid and refuses a second create; a participant on the host is listed, updated
/// (live) and the room deleted through the node that does not host it (forwarded); a
/// token without the grant is refused with 403 and the grant's name.
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_room_service_creates_lists_forwards_and_deletes() -> Result<()> {
    let f = Fixture::gateway("e2e-roomapi", 2, json!({})).await?;
    let result = room_service(&f).await;
    f.finish(result).await
}

impl Fixture {
    /// `switchyard room <args>` against the node at `ip`, with this cluster's API key:
    /// (succeeded, stdout, stderr). The binary sits next to the test binary's `deps/`
    /// directory (`e2e/run.sh` builds it).
    async fn room_cli(&self, ip: IpAddr, args: &[&str]) -> Result<(bool, String, String)> {
        let exe = std::env::current_exe()?;
        let bin = exe.parent().and_then(|d| d.parent()).context("the test binary's directory")?.join("switchyard");
        ensure!(bin.is_file(), "{} is not built (e2e/run.sh builds it)", bin.display());
        let out = tokio::process::Command::new(&bin)
            .arg("room")
            .args(args)
            .env("SWITCHYARD_URL", format!("http://{ip}:{SIGNALING_PORT}"))
            .env("SWITCHYARD_API_KEY", &self.key)
            .env("SWITCHYARD_API_SECRET", &self.secret)
            .output()
            .await?;
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Ok((out.status.success(), text(out.stdout), text(out.stderr)))
    }

    /// `room_cli` that must succeed, its stdout as JSON.
    async fn room_json(&self, ip: IpAddr, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (ok, out, err) = self.room_cli(ip, &all).await?;
        ensure!(ok, "switchyard room {}: {err}", args.join(" "));
        Ok(serde_json::from_str(&out)?)
    }
}

async fn room_service(f: &Fixture) -> Result<()> {
    let room = "townhall";
    let started = Instant::now();
    let created = f.room_json(f.sfu[0].1, &["create", room, "--max-participants", "8", "--metadata", "m0"]).await?;
    // Includes the CLI's start, the Room object's creation and the operator's placement.
    println!("switchyard room create answered in {} ms", started.elapsed().as_millis());
    ensure!(created["name"] == room && created["maxParticipants"] == 8, "{created}");
    let sid = created["sid"].as_str().context("a sid")?.to_owned();
    let obj = f.rooms().get(room).await.context("create made no Room object")?;
    ensure!(obj.spec.max_participants == Some(8) && obj.spec.metadata.as_deref() == Some("m0"), "{:?}", obj.spec);
    let host = obj.status.as_ref().and_then(|s| s.node.clone()).context("create answered before placement")?;
    let (host_ip, other_ip) = match f.sfu.iter().position(|(name, _)| *name == host) {
        Some(0) => (f.sfu[0].1, f.sfu[1].1),
        Some(_) => (f.sfu[1].1, f.sfu[0].1),
        None => bail!("placed on {host}, not one of {:?}", f.sfu),
    };

    // Every node answers the same list, from its Room reflector.
    for ip in [f.sfu[0].1, f.sfu[1].1] {
        wait_for(&format!("{ip} to list {room}"), Duration::from_secs(20), || async {
            let list = f.room_json(ip, &["list"]).await?;
            let rooms = list["rooms"].as_array().cloned().unwrap_or_default();
            Ok(rooms.iter().any(|r| r["name"] == room && r["sid"] == sid.as_str()).then_some(()))
        })
        .await?;
    }
    let (ok, _, err) = f.room_cli(other_ip, &["create", room]).await?;
    ensure!(!ok && err.contains("HTTP 409") && err.contains("room_exists"), "{err}");

    // A participant on the host, managed through the other node.
    let mut alice = join(&f.url(host_ip, "alice", room), 1).await?;
    let listed = f.room_json(other_ip, &["participants", room]).await?;
    let ids: Vec<&str> =
        listed["participants"].as_array().into_iter().flatten().filter_map(|p| p["identity"].as_str()).collect();
    ensure!(ids == ["alice"], "participants through the other node: {listed}");
    let updated = f.room_json(other_ip, &["update", room, "alice", "--can-publish-data", "false"]).await?;
    ensure!(updated["permission"]["canPublishData"] == false, "{updated}");
    let seen = alice
        .wait_for(Duration::from_secs(10), |m| match m {
            ServerMessage::ParticipantUpdated(u) if u.participant.identity == "alice" => {
                Some(u.participant.permission.can_publish_data)
            }
            _ => None,
        })
        .await;
    ensure!(seen == Some(false), "alice was not told her new permission: {seen:?}");

    let (ok, _, err) = f.room_cli(other_ip, &["list", "--token", &f.token("alice", room)]).await?;
    ensure!(!ok && err.contains("HTTP 403") && err.contains("roomList"), "{err}");

    let (ok, _, err) = f.room_cli(other_ip, &["delete", room]).await?;
    ensure!(ok, "delete: {err}");
    let left = alice
        .wait_for(Duration::from_secs(20), |m| match m {
            ServerMessage::Leave(l) => Some(l.reason),
            _ => None,
        })
        .await;
    ensure!(left == Some(LeaveReason::RoomClosed), "alice got {left:?}");
    wait_for("the Room object to go", Duration::from_secs(20), || async {
        Ok(f.rooms().get_opt(room).await?.is_none().then_some(()))
    })
    .await?;
    let (ok, _, err) = f.room_cli(host_ip, &["get", room]).await?;
    ensure!(!ok && err.contains("HTTP 404"), "{err}");
    alice.close().await;
    Ok(())
}

/// Scenario 7: the media-node pod hosting a room is deleted (grace 0, like a crash). The
/// clients reconnect through a node still up; the room is served again (by the
/// replacement pod or elsewhere) and media flows again within a bound measured here.
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_losing_the_hosting_pod_reschedules_the_room() -> Result<()> {
    let f = Fixture::gateway("e2e-failover", 2, json!({})).await?;
    let result = failover(&f).await;
    f.finish(result).await
}

async fn failover(f: &Fixture) -> Result<()> {
    let room = "ward";
    let a = join(&f.url(f.sfu[0].1, "alice", room), 1).await?;
    let b = join(&f.url(f.sfu[1].1, "bob", room), 2).await?;
    let (ma, mb) = (a.start_media(Duration::from_secs(4)), b.start_media(Duration::from_secs(4)));
    ensure!(media_flows(&a, &b, Duration::from_secs(20)).await, "no call before the failure");
    let _ = (ma.await, mb.await);
    let host = f.rooms().get(room).await?.status.and_then(|s| s.node).context("placed")?;
    let survivor = f.sfu.iter().find(|(n, _)| *n != host).context("a second node")?.clone();

    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &f.ns.name);
    let killed = Instant::now();
    pods.delete(&host, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
    drop((a, b));
    // The clients come back through a surviving node (a real client dials the signaling
    // Service and lands on any ready pod), and join again if ICE does not connect: a
    // replacement pod's IP reaches TURN's allow list only with the next reconcile and
    // config reload.
    let bound = Duration::from_secs(90);
    let mut attempts = 0;
    let (a, b, ma, mb) = loop {
        attempts += 1;
        let id = 2 * attempts;
        let a = rejoin(&f.url(survivor.1, "alice", room), id + 1, killed, bound).await?;
        let b = rejoin(&f.url(survivor.1, "bob", room), id + 2, killed, bound).await?;
        let (ma, mb) = (a.start_media(Duration::from_secs(15)), b.start_media(Duration::from_secs(15)));
        if media_flows(&a, &b, Duration::from_secs(10)).await {
            break (a, b, ma, mb);
        }
        ensure!(killed.elapsed() < bound, "no call within {bound:?} of the failure ({attempts} attempts)");
        ma.abort();
        mb.abort();
        a.close().await;
        b.close().await;
    };
    let recovered = killed.elapsed();
    let node = f.rooms().get(room).await?.status.and_then(|s| s.node).unwrap_or_default();
    println!(
        "e2e failover: {host} deleted; both clients back in the call after {recovered:.1?} \
         ({attempts} join attempts; room on {node})"
    );
    ensure!(recovered < bound, "took {recovered:?}");
    let _ = (ma.await, mb.await);
    a.close().await;
    b.close().await;
    Ok(())
}

async fn rejoin(url: &str, id: u8, since: Instant, within: Duration) -> Result<Peer> {
    loop {
        match Peer::try_join_url(url, id, AV).await {
            Ok(p) => return Ok(p),
            Err(e) if since.elapsed() < within => {
                tracing::debug!(?e, "rejoin refused; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("no rejoin within {within:?}: {e:?}"),
        }
    }
}

/// Scenario 8: during a call, the leading operator replica is deleted (the standby takes
/// the Lease) and the kube-apiserver is restarted. Media never stops (the data plane does
/// not depend on the control plane), and the control plane works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_call_survives_operator_and_apiserver_restarts() -> Result<()> {
    let f = Fixture::gateway("e2e-restarts", 2, json!({})).await?;
    let result = restarts(&f).await;
    f.finish(result).await
}

/// The packets each peer has received from the other, summed.
fn received(a: &Peer, b: &Peer) -> u64 {
    [TrackKind::Audio, TrackKind::Video].iter().map(|&k| a.valid_from(k, b.id) + b.valid_from(k, a.id)).sum()
}

async fn restarts(f: &Fixture) -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let room = "allhands";
    let a = join(&f.url(f.sfu[0].1, "alice", room), 1).await?;
    let b = join(&f.url(f.sfu[1].1, "bob", room), 2).await?;
    let (ma, mb) = (a.start_media(Duration::from_secs(90)), b.start_media(Duration::from_secs(90)));
    ensure!(media_flows(&a, &b, Duration::from_secs(20)).await, "no call before the restarts");

    // Watch the media in the background: the longest stretch without a new packet.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let sampler = {
        let (stop, longest) = (stop.clone(), longest.clone());
        let (ra, rb, ida, idb) = (a.received.clone(), b.received.clone(), a.id, b.id);
        tokio::spawn(async move {
            let count = || {
                let (ra, rb) = (ra.lock().unwrap(), rb.lock().unwrap());
                ra.valid.iter().filter(|((_, s), _)| *s == idb).map(|(_, n)| n).sum::<u64>()
                    + rb.valid.iter().filter(|((_, s), _)| *s == ida).map(|(_, n)| n).sum::<u64>()
            };
            // The longest time between two samples that saw new packets (50 ms resolution).
            let (mut last, mut since) = (count(), Instant::now());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = count();
                if now > last {
                    let mut l = longest.lock().unwrap();
                    *l = (*l).max(since.elapsed());
                    last = now;
                    since = Instant::now();
                }
            }
            let mut l = longest.lock().unwrap();
            *l = (*l).max(since.elapsed());
        })
    };

    // 1. The leading operator replica goes away at once; the standby must take over.
    let ns = &f.env.operator_namespace;
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), ns);
    let holder = || async {
        Ok::<_, anyhow::Error>(
            leases
                .get_opt("switchyard-operator")
                .await?
                .and_then(|l| l.spec?.holder_identity)
                .filter(|h| !h.is_empty()),
        )
    };
    let leader = wait_for("the operator Lease's holder", Duration::from_secs(30), holder).await?;
    let before = received(&a, &b);
    let t0 = Instant::now();
    if f.env.operator_mode == switchyard_e2e::support::OperatorMode::Helm {
        let pods: Api<Pod> = Api::namespaced(f.client.clone(), ns);
        pods.delete(&leader, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
        let next = wait_for("another replica to take the Lease", Duration::from_secs(60), || async {
            Ok(holder().await?.filter(|h| *h != leader))
        })
        .await?;
        println!("e2e restarts: leader {leader} deleted; {next} leads after {:.1?}", t0.elapsed());
    }

    // 2. The apiserver restarts (same flags, same etcd).
    let cluster_sh = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.sh");
    let t1 = Instant::now();
    // Async: a blocking wait here would stall the peers running on this runtime.
    let status = tokio::process::Command::new("bash")
        .args([cluster_sh, "restart", "kube-apiserver"])
        .env("SWITCHYARD_E2E_DIR", &f.env.state_dir)
        .status()
        .await?;
    ensure!(status.success(), "cluster.sh restart kube-apiserver: {status}");
    wait_for("the apiserver to serve again", Duration::from_secs(60), || async {
        Ok(f.rooms().get_opt(room).await.ok().map(|_| ()))
    })
    .await?;
    println!("e2e restarts: kube-apiserver back after {:.1?}", t1.elapsed());

    // 3. The control plane works again: a change to the MediaCluster is reconciled (the
    // operator's MediaCluster controller watches it and four kinds of children; after a
    // restart every one of those watches fails once, and those failures must not queue
    // up behind one another's backoff), a new Room is placed, and the hosting node's
    // status reports still land.
    let t2 = Instant::now();
    let clusters: Api<MediaCluster> = Api::namespaced(f.client.clone(), &f.ns.name);
    let bump = json!({ "spec": { "turn": { "replicas": { "max": 2 } } } });
    let generation = clusters.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&bump)).await?.metadata.generation;
    wait_for("the operator to reconcile a MediaCluster change after the restart", Duration::from_secs(30), || async {
        let mc = clusters.get(CLUSTER).await?;
        Ok((mc.status.and_then(|s| s.observed_generation) >= generation).then_some(()))
    })
    .await?;
    println!("e2e restarts: a MediaCluster change reconciled {:.1?} after it was made", t2.elapsed());
    let obj: Room = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "Room",
        "metadata": { "name": "after-restarts" }, "spec": { "clusterRef": CLUSTER }
    }))?;
    f.rooms().create(&PostParams::default(), &obj).await?;
    wait_for("a Room created after the restarts to be placed", Duration::from_secs(60), || async {
        Ok(f.rooms().get("after-restarts").await?.status.and_then(|s| s.node))
    })
    .await?;
    // The whole control plane is back (controller-manager, scheduler and kwok re-watch
    // with backoff): a new Deployment gets a running pod. Later tests need this.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(f.client.clone(), &f.ns.name);
    let probe = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "after-restarts" },
        "spec": {
            "selector": { "matchLabels": { "app": "after-restarts" } },
            "template": {
                "metadata": { "labels": { "app": "after-restarts" } },
                "spec": { "containers": [{ "name": "pause", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    }))?;
    deployments.create(&PostParams::default(), &probe).await?;
    wait_for("a new Deployment's pod to run after the restart", Duration::from_secs(180), || async {
        Ok(pod_ips(&f.client, &f.ns.name, "app=after-restarts").await?.into_iter().next())
    })
    .await?;
    println!(
        "e2e restarts: controllers, scheduler and kwok serve again {:.1?} after the apiserver restart",
        t1.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.await?;
    let gap = *longest.lock().unwrap();
    let during = received(&a, &b) - before;
    println!(
        "e2e restarts: {during} packets received during the restarts; longest gap between packets {gap:.2?} \
         (sampled every 50 ms)"
    );
    // Audio alone is 50 packets a second each way: a gap beyond a second is an outage.
    ensure!(gap < Duration::from_secs(1), "media stopped for {gap:?} during the restarts");
    ma.abort();
    mb.abort();
    a.close().await;
    b.close().await;
    Ok(())
}
