//! `switchyard doctor`: what a user's network lets through, checked against a real
//! deployment with the user's own token.
//!
//! ```text
//!  signaling  WebSocket upgrade → join → joined (token accepted; ICE servers)   latency
//!  each TURN URI of the join (turn:…udp, turn:…tcp, turns:…):
//!             connect → Allocate (401, then with the join's credentials) → relayed address
//!             → Refresh (the allocation is kept alive) → Refresh(0) (released)
//!  verdict    the best path a browser on this network gets, in plain words
//! ```
//!
//! It does not yet carry media through the SFU (an ICE/DTLS session of its own) nor test
//! the SFU's direct UDP/ICE-TCP ports; the verdict says what the TURN checks imply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::load::client::{Client, Credentials, Event};

/// Every step's deadline: a blocked path shows as a timeout, not a hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// The signaling URL, as the app gives it to the SDK: ws://host:port.
    #[arg(long)]
    url: String,
    /// An access token for a room (the check joins it, then leaves).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: String,
    /// Also trust this PEM certificate (or CA) for `turns:` servers, e.g. `switchyard dev`'s
    /// self-signed one; the system's roots are trusted either way.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Print the results as JSON instead of sentences.
    #[arg(long)]
    json: bool,
}

/// One `turn:`/`turns:` URI, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TurnUri {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `udp` or `tcp` (`turns:` is always over TCP).
    pub(crate) transport: &'static str,
}

impl TurnUri {
    /// `udp`, `tcp` or `tls`: what the client's side of the path is.
    pub(crate) fn kind(&self) -> &'static str {
        if self.tls { "tls" } else { self.transport }
    }
}

/// Parse `turn:host[:port][?transport=udp|tcp]` and `turns:…` (RFC 7065); `stun:` is `None`.
pub(crate) fn parse_turn_uri(uri: &str) -> anyhow::Result<Option<TurnUri>> {
    let (tls, rest) = if let Some(r) = uri.strip_prefix("turns:") {
        (true, r)
    } else if let Some(r) = uri.strip_prefix("turn:") {
        (false, r)
    } else if uri.starts_with("stun:") {
        return Ok(None);
    } else {
        anyhow::bail!("{uri:?} is not a stun:, turn: or turns: URI");
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = match query.strip_prefix("transport=") {
        None if query.is_empty() => {
            if tls {
                "tcp"
            } else {
                "udp"
            }
        }
        Some("udp") if !tls => "udp",
        Some("tcp") => "tcp",
        _ => anyhow::bail!("{uri:?}: the query must be transport=udp or transport=tcp (turns: is TCP only)"),
    };
    let default_port = if tls { 5349 } else { 3478 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']').with_context(|| format!("{uri:?}: unclosed [ in the host"))?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    anyhow::ensure!(!host.is_empty(), "{uri:?}: no host");
    let port = match port {
        Some(p) => p.parse().with_context(|| format!("{uri:?}: {p:?} is not a port"))?,
        None => default_port,
    };
    Ok(Some(TurnUri { tls, host, port, transport }))
}

/// How one TURN server did.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TurnCheck {
    pub(crate) uri: String,
    pub(crate) kind: &'static str,
    pub(crate) relayed: Option<SocketAddr>,
    pub(crate) refreshed: bool,
    pub(crate) ms: u128,
    pub(crate) error: Option<String>,
}

/// The best path a browser gets, from what allocated: UDP beats TCP beats TLS.
pub(crate) fn verdict(checks: &[TurnCheck]) -> (&'static str, String) {
    let ok = |k: &str| checks.iter().any(|c| c.kind == k && c.relayed.is_some() && c.refreshed);
    let had = |k: &str| checks.iter().any(|c| c.kind == k);
    let (best, mut text) = if ok("udp") {
        ("udp", "UDP gets through: calls run over UDP (directly or relayed), the best case.".to_owned())
    } else if ok("tcp") {
        ("tcp", "UDP is blocked here, but TCP to the TURN port gets through: calls work, relayed over TCP (more latency under loss).".to_owned())
    } else if ok("tls") {
        (
            "tls",
            "Only TLS gets through (as on networks that allow only HTTPS on 443): calls work, relayed over TURN/TLS."
                .to_owned(),
        )
    } else {
        ("none", "No TURN server could be reached: a browser on this network can call only if it reaches the SFU's own ports directly.".to_owned())
    };
    if !had("tls") {
        text.push_str(" The deployment offers no turns: server, so a network that allows only TCP 443 cannot call.");
    } else if !ok("tls") {
        text.push_str(" Its turns: server did not work from here, so a network that allows only TCP 443 cannot call.");
    } else if best != "tls" {
        text.push_str(" A network that allows only TCP 443 still can, over its turns: server.");
    }
    (best, text)
}

pub(crate) fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let url = crate::load::sfu::rtc_url(&args.url, &args.token)?;
        let signal = signaling(&url).await;
        let (joined, signal_ms) = match signal {
            Ok(v) => v,
            Err(e) => {
                let report = json!({ "signaling": { "ok": false, "error": format!("{e:#}") }, "verdict": "none",
                    "summary": "Signaling failed: no call can start. Check the URL and the token." });
                print_report(&args, &report, &[]);
                std::process::exit(1);
            }
        };
        let roots = tls_roots(args.ca_file.as_deref())?;
        // Every TURN URI at once: a blocked path costs its timeout once, not once per URI.
        let mut pending = Vec::new();
        for server in joined["iceServers"].as_array().into_iter().flatten() {
            let username = server["username"].as_str().unwrap_or_default().to_owned();
            let password = server["credential"].as_str().unwrap_or_default().to_owned();
            for uri in server["urls"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let Some(turn) = parse_turn_uri(uri)? else { continue };
                let creds = Credentials {
                    username: username.clone(),
                    password: password.clone(),
                    realm: None,
                    on_401: "the join's TURN credentials were refused",
                };
                pending.push(timed_check(uri.to_owned(), turn, creds, roots.clone()));
            }
        }
        let checks = futures_util::future::join_all(pending).await;
        let (best, summary) = verdict(&checks);
        let report = json!({
            "signaling": { "ok": true, "joinMs": signal_ms, "node": joined["node"], "room": joined["room"]["name"] },
            "turn": checks.iter().map(|c| json!({ "uri": c.uri, "transport": c.kind, "ok": c.relayed.is_some() && c.refreshed,
                "relayed": c.relayed.map(|a| a.to_string()), "refreshed": c.refreshed, "ms": c.ms, "error": c.error })).collect::<Vec<_>>(),
            "verdict": best,
            "summary": summary,
            "seconds": started.elapsed().as_secs_f64(),
        });
        print_report(&args, &report, &checks);
        if best == "none" {
            std::process::exit(1);
        }
        anyhow::Ok(())
    })
}

fn print_report(args: &DoctorArgs, report: &Value, checks: &[TurnCheck]) {
    if args.json {
        println!("{report}");
        return;
    }
    let s = &report["signaling"];
    if s["ok"] == true {
        println!("signaling  ok: token accepted, joined {} on {} in {} ms", s["room"], s["node"], s["joinMs"]);
    } else {
        println!("signaling  FAILED: {}", s["error"].as_str().unwrap_or_default());
    }
    for c in checks {
        match (&c.relayed, &c.error) {
            (Some(r), _) => println!(
                "TURN {:<4} ok: {} allocated {r}{} in {} ms",
                c.kind,
                c.uri,
                if c.refreshed { ", refreshed" } else { ", NOT refreshed" },
                c.ms
            ),
            (None, e) => println!("TURN {:<4} FAILED: {}: {}", c.kind, c.uri, e.as_deref().unwrap_or("?")),
        }
    }
    println!("verdict    {}", report["summary"].as_str().unwrap_or_default());
}

/// WebSocket upgrade and join: the `joined` message and how long it took.
async fn signaling(url: &str) -> anyhow::Result<(Value, u128)> {
    let t0 = Instant::now();
    let (mut ws, _) = match tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
        Err(_) => anyhow::bail!("no WebSocket upgrade within {} s", STEP_TIMEOUT.as_secs()),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            anyhow::bail!("the server refused the WebSocket: HTTP {} {body}", resp.status())
        }
        Ok(r) => r.context("opening the WebSocket")?,
    };
    let join = json!({ "type": "join", "protocolVersion": 1, "sdk": { "name": "switchyard-doctor", "version": env!("CARGO_PKG_VERSION") } });
    ws.send(Message::text(join.to_string())).await?;
    let joined = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(msg) = ws.next().await {
            let Message::Text(text) = msg? else { continue };
            let v: Value = serde_json::from_str(&text)?;
            match v["type"].as_str() {
                Some("joined") => return anyhow::Ok(v),
                Some("error") => anyhow::bail!("the server refused the join: {} {}", v["code"], v["message"]),
                _ => {}
            }
        }
        anyhow::bail!("the server closed the socket before joining")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no joined within {} s", STEP_TIMEOUT.as_secs()))??;
    let ms = t0.elapsed().as_millis();
    let _ = ws.send(Message::text(json!({ "type": "leave" }).to_string())).await;
    let _ = ws.close(None).await;
    Ok((joined, ms))
}

fn tls_roots(ca_file: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("--ca-file {}", path.display()))? {
            roots.add(cert.with_context(|| format!("--ca-file {}", path.display()))?)?;
        }
    }
    Ok(Arc::new(roots))
}

async fn timed_check(uri: String, turn: TurnUri, creds: Credentials, roots: Arc<rustls::RootCertStore>) -> TurnCheck {
    let t0 = Instant::now();
    let limit = STEP_TIMEOUT * 2;
    let r = tokio::time::timeout(limit, check_turn(&turn, creds, roots)).await;
    let r = r.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {} s", limit.as_secs())));
    let (relayed, refreshed, error) = match r {
        Ok((relayed, refreshed)) => (Some(relayed), refreshed, None),
        Err(e) => (None, false, Some(format!("{e:#}"))),
    };
    TurnCheck { uri, kind: turn.kind(), relayed, refreshed, ms: t0.elapsed().as_millis(), error }
}

/// Allocate on one TURN server, refresh the allocation, release it.
async fn check_turn(
    uri: &TurnUri,
    creds: Credentials,
    roots: Arc<rustls::RootCertStore>,
) -> anyhow::Result<(SocketAddr, bool)> {
    let addr = tokio::net::lookup_host((uri.host.as_str(), uri.port))
        .await
        .with_context(|| format!("resolving {}", uri.host))?
        .next()
        .with_context(|| format!("{} has no address", uri.host))?;
    match (uri.transport, uri.tls) {
        ("udp", _) => {
            let sock = tokio::net::UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
            sock.connect(addr).await?;
            drive(Transport::Udp(sock), creds, false).await
        }
        (_, false) => {
            let tcp = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("TCP connect to {addr} timed out (blocked?)"))??;
            drive(Transport::Stream(Box::new(tcp)), creds, true).await
        }
        (_, true) => {
            let tcp = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("TCP connect to {addr} timed out (blocked?)"))??;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(uri.host.clone())
                .with_context(|| format!("{} is not a TLS server name", uri.host))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {} (is its certificate trusted? --ca-file)", uri.host))?;
            drive(Transport::Stream(Box::new(tls)), creds, true).await
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Transport {
    Udp(tokio::net::UdpSocket),
    Stream(Box<dyn Stream>),
}

impl Transport {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp(s) => s.send(b).await.map(drop),
            Transport::Stream(s) => s.write_all(b).await,
        }
    }

    /// One STUN message (streams carry them back to back, RFC 8489 §6.2.2).
    async fn recv(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
        match self {
            Transport::Udp(s) => {
                let mut b = vec![0; 2048];
                let n = s.recv(&mut b).await?;
                b.truncate(n);
                Ok(b)
            }
            Transport::Stream(s) => loop {
                if let Some(len) = switchyard_turn_node::stun::stream_frame_len(buf)
                    && buf.len() >= len
                {
                    return Ok(buf.drain(..len).collect());
                }
                let mut chunk = [0; 2048];
                let n = s.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "the server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

async fn drive(mut t: Transport, creds: Credentials, reliable: bool) -> anyhow::Result<(SocketAddr, bool)> {
    let start = Instant::now();
    let mut client = Client::allocate_only(start, creds, reliable);
    let mut buf = Vec::new();
    let mut refreshed_at_start = None;
    loop {
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::Ready { .. } if refreshed_at_start.is_none() => {
                    // Refresh now, not at half the lifetime: the clock is the client's own.
                    refreshed_at_start = Some(client.refreshes());
                    client.refresh_now(Instant::now());
                }
                Event::Failed(f) => match client.relayed() {
                    Some(relayed) => anyhow::bail!("allocated {relayed}, then {}", f.message),
                    None => anyhow::bail!("{}", f.message),
                },
                _ => {}
            }
        }
        // After the events: handling them may have queued a request.
        while let Some(out) = client.poll_transmit() {
            t.send(&out).await?;
        }
        if let Some(n) = refreshed_at_start
            && client.refreshes() > n
        {
            let relayed = client.relayed().expect("ready after allocating");
            client.close(Instant::now());
            while let Some(out) = client.poll_transmit() {
                let _ = t.send(&out).await;
            }
            return Ok((relayed, true));
        }
        let deadline = client.poll_timeout().unwrap_or_else(|| Instant::now() + STEP_TIMEOUT);
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            r = t.recv(&mut buf) => client.handle_input(Instant::now(), &r?),
            () = tokio::time::sleep(wait) => client.handle_timeout(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_uris() {
        let u = parse_turn_uri("turn:192.0.2.1:3478?transport=udp").unwrap().unwrap();
        assert_eq!((u.kind(), u.host.as_str(), u.port), ("udp", "192.0.2.1", 3478));
        let u = parse_turn_uri("turn:turn.example.test?transport=tcp").unwrap().unwrap();
        assert_eq!((u.kind(), u.port), ("tcp", 3478));
        let u = parse_turn_uri("turns:turn.example.test:443?transport=tcp").unwrap().unwrap();
        assert_eq!((u.kind(), u.host.as_str(), u.port), ("tls", "turn.example.test", 443));
        assert_eq!(parse_turn_uri("turns:t.example.test").unwrap().unwrap().port, 5349);
        let u = parse_turn_uri("turn:[2001:db8::1]:3478").unwrap().unwrap();
        assert_eq!((u.host.as_str(), u.kind()), ("2001:db8::1", "udp"));
        assert_eq!(parse_turn_uri("stun:stun.example.test").unwrap(), None);
        assert!(parse_turn_uri("turns:t.example.test?transport=udp").is_err(), "TURN over TLS is TCP");
        assert!(parse_turn_uri("http://x").is_err());
        assert!(parse_turn_uri("turn::3478").is_err());
        assert!(parse_turn_uri("turn:h:port").is_err());
    }

    fn check(kind: &'static str, ok: bool) -> TurnCheck {
        let relayed = ok.then(|| "192.0.2.1:50000".parse().unwrap());
        TurnCheck { uri: String::new(), kind, relayed, refreshed: ok, ms: 1, error: None }
    }

    #[test]
    fn the_verdict_names_the_best_path_and_the_443_case() {
        let (best, text) = verdict(&[check("udp", true), check("tcp", true), check("tls", true)]);
        assert_eq!(best, "udp");
        assert!(text.contains("only TCP 443 still can"), "{text}");
        let (best, text) = verdict(&[check("udp", false), check("tcp", true), check("tls", true)]);
        assert_eq!(best, "tcp");
        assert!(text.contains("UDP is blocked"), "{text}");
        let (best, text) = verdict(&[check("udp", false), check("tcp", false), check("tls", true)]);
        assert_eq!(best, "tls");
        assert!(text.contains("Only TLS gets through"), "{text}");
        let (best, text) = verdict(&[check("udp", true), check("tcp", true)]);
        assert_eq!(best, "udp");
        assert!(text.contains("offers no turns: server"), "{text}");
        let (best, _) = verdict(&[check("udp", false), check("tcp", false), check("tls", false)]);
        assert_eq!(best, "none");
        // Allocated but not refreshed does not count.
        let mut half = check("udp", true);
        half.refreshed = false;
        assert_eq!(verdict(&[half]).0, "none");
    }
}
