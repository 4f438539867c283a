//! `switchyard dev`: the SFU with signaling and the demo call page on this machine.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use switchyard_api::token::{Claims, Grants, mint};
use switchyard_media_node::{Config, Node};

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Address to listen on; 127.0.0.1 keeps everything on this machine. Any other
    /// address needs --allow-lan-tokens.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Listen on a non-loopback --bind although the demo page's `/dev/token` hands a join
    /// token (and with it TURN credentials) to anyone who reaches the port.
    #[arg(long)]
    allow_lan_tokens: bool,
    /// HTTP port (signaling and the demo page).
    #[arg(long, default_value_t = 7880)]
    port: u16,
    /// Media UDP port (ICE-TCP uses the port below it).
    #[arg(long, default_value_t = 7882)]
    udp_port: u16,
    /// Address other machines reach this one at (advertised as the ICE host candidate).
    #[arg(long)]
    advertise_ip: Option<IpAddr>,
    /// TURN port (UDP and TCP) of the embedded TURN server; 0 disables it.
    #[arg(long, default_value_t = 3478)]
    turn_port: u16,
    /// TURN-over-TLS port of the embedded TURN server (443 gets through networks that allow
    /// only HTTPS); the join's ICE servers then include `turns:…?transport=tcp`. 0: off.
    #[arg(long, default_value_t = 0)]
    turn_tls_port: u16,
    /// Certificate chain (PEM) for --turn-tls-port. Without it a self-signed certificate for
    /// the advertised address is generated; browsers must be told to trust it.
    #[arg(long, requires = "turn_tls_key")]
    turn_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --turn-tls-cert.
    #[arg(long, requires = "turn_tls_cert")]
    turn_tls_key: Option<PathBuf>,
    /// The host name in the `turns:` URI (and in a generated certificate); it must resolve
    /// to the advertised address. Firefox refuses TURN over TLS to a bare IP address.
    #[arg(long, requires = "turn_tls_port")]
    turn_tls_host: Option<String>,
    /// Clients relay all media through the embedded TURN server, as in Gateway mode.
    #[arg(long)]
    relay_only: bool,
    /// Advertise only the ICE-TCP candidate (try a network where UDP is blocked).
    #[arg(long)]
    ice_tcp_only: bool,
    /// The room the printed token is for.
    #[arg(long, default_value = "demo")]
    room: String,
    /// API key for tokens.
    #[arg(long, default_value = "devkey")]
    api_key: String,
    /// API secret for tokens (random when absent).
    #[arg(long)]
    api_secret: Option<String>,
    /// POST every room event to this URL, signed with the API key (repeatable).
    #[arg(long = "webhook", value_name = "URL")]
    webhooks: Vec<String>,
    /// Admin HTTP address (`/metrics`, `/internal/status`, `/drain`); port 0 picks a free
    /// one. The banner prints the address either way.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_addr: SocketAddr,
    /// Seconds a participant whose signaling socket dropped is kept for `resume`; 0: off.
    #[arg(long, default_value_t = 15)]
    resume_window_seconds: u64,
}

/// Refuse a non-loopback bind unless it was asked for; then say loudly what it exposes.
fn check_bind(args: &DevArgs) -> anyhow::Result<()> {
    if args.bind.is_loopback() {
        return Ok(());
    }
    anyhow::ensure!(
        args.allow_lan_tokens,
        "--bind {} is reachable from other machines, and the demo page's /dev/token endpoint gives \
         anyone who reaches port {} a join token and TURN credentials; pass --allow-lan-tokens to \
         accept that (on a network you trust), or keep the default --bind 127.0.0.1",
        args.bind,
        args.port
    );
    eprintln!();
    eprintln!("  WARNING: listening on {} with the open /dev/token endpoint:", args.bind);
    eprintln!("  anyone who can reach port {} can join any room and use the TURN server.", args.port);
    eprintln!("  Use this only on a network you trust; switchyard dev is not a production server.");
    eprintln!();
    Ok(())
}

/// The embedded TURN server relays to these transport addresses only: the SFU's media UDP
/// port on every address it advertises.
fn sfu_peers(cfg: &Config, media_ip: IpAddr) -> Vec<SocketAddr> {
    let port = cfg.udp_addr.port();
    let ips = if cfg.advertise_ips.is_empty() { vec![media_ip] } else { cfg.advertise_ips.clone() };
    ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    check_bind(&args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,str0m=warn")),
        )
        .init();
    let secret = args.api_secret.clone().unwrap_or_else(random_secret);
    let mut cfg = Config::local(&args.api_key, &secret);
    cfg.http_addr = SocketAddr::new(args.bind, args.port);
    cfg.udp_addr = SocketAddr::new(args.bind, args.udp_port);
    cfg.tcp_addr = SocketAddr::new(args.bind, args.udp_port.saturating_sub(1));
    cfg.admin_addr = args.admin_addr;
    cfg.advertise_ips = args.advertise_ip.into_iter().collect();
    cfg.demo = true;
    cfg.relay_only = args.relay_only;
    cfg.ice_tcp_only = args.ice_tcp_only;
    cfg.shards = 0;
    cfg.node_name = "dev".into();
    cfg.resume_window_seconds = args.resume_window_seconds;
    cfg.webhooks = args
        .webhooks
        .iter()
        .map(|url| switchyard_api::media_cluster::WebhookSpec { url: url.clone(), events: vec![], api_key: None })
        .collect();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let media_ip = cfg.advertise_ips.first().copied().unwrap_or(if args.bind.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            args.bind
        });
        let turn = if args.turn_port > 0 {
            anyhow::ensure!(
                args.udp_port > 0,
                "--udp-port 0 with the embedded TURN server: give the media port, TURN relays to it only"
            );
            let tls = turn_tls(&args, media_ip)?;
            let turn_secret = random_secret();
            let turn = start_turn(&args, sfu_peers(&cfg, media_ip), &turn_secret, tls.as_ref()).await?;
            let a = turn.addrs();
            let tls_host = args.turn_tls_host.clone().unwrap_or_else(|| uri_host(media_ip));
            cfg.turn_uris = turn_uris(media_ip, a.udp[0].port(), a.tls.first().map(|t| (tls_host.as_str(), t.port())));
            cfg.turn_secret = Some(turn_secret);
            Some((turn, tls))
        } else {
            anyhow::ensure!(!args.relay_only, "--relay-only needs the embedded TURN server (--turn-port)");
            None
        };
        let node = Node::start(cfg).await.context("starting media-node")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims::new(&args.api_key, "you", now, 6 * 3600).with_grants(Grants::join(&args.room));
        let token = mint(&claims, &secret)?;
        let host = if args.bind.is_unspecified() || args.bind.is_loopback() {
            "localhost".to_owned()
        } else {
            args.bind.to_string()
        };
        println!();
        println!("  Switchyard dev server");
        println!("  demo call   http://{host}:{}/?room={}   (open it in two tabs)", node.http_addr.port(), args.room);
        println!("  signaling   ws://{host}:{}/rtc", node.http_addr.port());
        println!(
            "  room API    http://{host}:{}/api/v1   (switchyard room list --url http://{host}:{})",
            node.http_addr.port(),
            node.http_addr.port()
        );
        println!("  admin       http://{}   (/metrics, /internal/status, POST /drain)", node.admin_addr);
        println!("  media       udp {}  tcp {:?}", node.udp_addr, node.tcp_addr);
        if let Some((t, tls)) = &turn {
            let a = t.addrs();
            println!(
                "  TURN        udp {:?}  tcp {:?}{}",
                a.udp,
                a.tcp,
                if args.relay_only { "  (relay only)" } else { "" }
            );
            if let Some(tls) = tls {
                println!("  TURN TLS    {:?}  certificate {}", a.tls, tls.files.cert_file.display());
                if let Some(spki) = &tls.generated_spki {
                    println!("              self-signed; Chromium trusts it with --ignore-certificate-errors-spki-list={spki}");
                }
            }
        }
        for url in &args.webhooks {
            println!("  webhook     {url}   (every event, signed with {})", args.api_key);
        }
        println!("  API key     {}", args.api_key);
        println!("  API secret  {secret}");
        println!("  token       {token}");
        println!("              (identity \"you\", room \"{}\", valid 6 h)", args.room);
        println!();
        tokio::signal::ctrl_c().await?;
        node.drain();
        node.shutdown().await;
        if let Some((t, tls)) = turn {
            t.shutdown();
            if let Some(TurnTls { generated_spki: Some(_), files }) = tls {
                let _ = std::fs::remove_file(&files.cert_file);
                let _ = std::fs::remove_file(&files.key_file);
            }
        }
        anyhow::Ok(())
    })
}

fn random_secret() -> String {
    switchyard_api::random::token(&mut rand::rng(), 32)
}

/// The ICE servers a join hands out: TURN over UDP and TCP on the TURN port, and TURN over
/// TLS (`turns:`, always TCP) when the TLS listener is on.
fn turn_uris(ip: IpAddr, port: u16, tls: Option<(&str, u16)>) -> Vec<String> {
    let host = uri_host(ip);
    let mut uris = vec![format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")];
    if let Some((tls_host, tls_port)) = tls {
        uris.push(format!("turns:{tls_host}:{tls_port}?transport=tcp"));
    }
    uris
}

fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// The TLS listener's certificate: the given files, or a generated self-signed one.
struct TurnTls {
    files: switchyard_turn_node::config::TlsConfig,
    /// For a generated certificate: `base64(sha256(SubjectPublicKeyInfo))`, what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    generated_spki: Option<String>,
}

fn turn_tls(args: &DevArgs, media_ip: IpAddr) -> anyhow::Result<Option<TurnTls>> {
    use switchyard_turn_node::config::TlsConfig;
    if args.turn_tls_port == 0 {
        anyhow::ensure!(args.turn_tls_cert.is_none(), "--turn-tls-cert needs --turn-tls-port");
        return Ok(None);
    }
    anyhow::ensure!(
        args.turn_tls_port != args.turn_port,
        "--turn-tls-port {} is also --turn-port, whose TCP listener takes it: give TLS its own port (e.g. 443)",
        args.turn_tls_port
    );
    if let (Some(cert_file), Some(key_file)) = (&args.turn_tls_cert, &args.turn_tls_key) {
        let files = TlsConfig { cert_file: cert_file.clone(), key_file: key_file.clone() };
        return Ok(Some(TurnTls { files, generated_spki: None }));
    }
    let dir = std::env::temp_dir();
    let stem = format!("switchyard-dev-{}-turn", std::process::id());
    let (cert_pem, key_pem, spki) = self_signed(media_ip, args.turn_tls_host.as_deref())?;
    let files = TlsConfig { cert_file: dir.join(format!("{stem}.crt")), key_file: dir.join(format!("{stem}.key")) };
    std::fs::write(&files.cert_file, cert_pem).with_context(|| format!("writing {}", files.cert_file.display()))?;
    write_private(&files.key_file, &key_pem)?;
    Ok(Some(TurnTls { files, generated_spki: Some(spki) }))
}

/// A self-signed certificate for `ip`, `host` and `localhost`: PEM chain, PEM key, SPKI pin.
fn self_signed(ip: IpAddr, host: Option<&str>) -> anyhow::Result<(String, String, String)> {
    use base64::Engine;
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let mut names = vec![ip.to_string(), "localhost".to_owned()];
    names.extend(host.map(str::to_owned));
    let ck = rcgen::generate_simple_self_signed(names).context("generating the TURN TLS certificate")?;
    let spki = sha2::Sha256::digest(ck.signing_key.subject_public_key_info());
    let pin = base64::engine::general_purpose::STANDARD.encode(spki);
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem(), pin))
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The embedded TURN server: UDP and TCP on `--turn-port` (and TLS on `--turn-tls-port`),
/// relaying only to the SFU's media port (`sfu`), never to other ports of this machine or
/// to other hosts of the LAN.
async fn start_turn(
    args: &DevArgs,
    sfu: Vec<SocketAddr>,
    secret: &str,
    tls: Option<&TurnTls>,
) -> anyhow::Result<switchyard_turn_node::TurnHandle> {
    switchyard_turn_node::TurnServer::start(turn_config(args, sfu, secret, tls.map(|t| &t.files)))
        .await
        .context("starting the embedded TURN server")
}

fn turn_config(
    args: &DevArgs,
    sfu: Vec<SocketAddr>,
    secret: &str,
    tls: Option<&switchyard_turn_node::config::TlsConfig>,
) -> switchyard_turn_node::Config {
    use switchyard_turn_node::config::{Listener, Protocol};
    let mut c = switchyard_turn_node::Config::default();
    let listen = SocketAddr::new(args.bind, args.turn_port);
    c.listeners = vec![
        Listener { protocol: Protocol::Udp, address: listen },
        Listener { protocol: Protocol::Tcp, address: listen },
    ];
    if let Some(tls) = tls {
        c.listeners.push(Listener { protocol: Protocol::Tls, address: SocketAddr::new(args.bind, args.turn_tls_port) });
        c.tls = Some(tls.clone());
    }
    c.relay.address = Some(sfu[0].ip());
    c.auth.secrets = vec![secret.to_owned()];
    // The SFU is on this machine: allow exactly its addresses (loopback is denied
    // otherwise), and of those only its media port. Permissions stay per IP; the port
    // rule applies to the relayed data (Send, ChannelBind, what comes back).
    c.peers.allow = sfu.iter().map(|a| ipnet::IpNet::from(a.ip())).collect();
    c.only_peers = sfu;
    c.admin_address = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0);
    c.workers = 1;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_relays_to_the_sfu_media_port_on_each_advertised_address() {
        let mut cfg = Config::local("k", "s");
        cfg.udp_addr = "0.0.0.0:7882".parse().unwrap();
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(sfu_peers(&cfg, lo), vec!["127.0.0.1:7882".parse::<SocketAddr>().unwrap()]);
        cfg.advertise_ips = vec!["192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap()];
        let peers = sfu_peers(&cfg, "192.0.2.7".parse().unwrap());
        assert_eq!(peers, vec!["192.0.2.7:7882".parse().unwrap(), "192.0.2.8:7882".parse::<SocketAddr>().unwrap()]);
    }

    #[derive(clap::Parser)]
    struct Dev {
        #[command(flatten)]
        args: DevArgs,
    }

    /// The port rule itself is turn-node's (`tests/security.rs`); here, that dev sets it.
    #[test]
    fn embedded_turn_is_limited_to_the_sfu_media_ports() {
        use clap::Parser;
        let dev = Dev::parse_from(["dev", "--turn-port", "0"]);
        let sfu: Vec<SocketAddr> = vec!["127.0.0.1:7882".parse().unwrap()];
        let c = turn_config(&dev.args, sfu.clone(), "s", None);
        assert_eq!(c.only_peers, sfu);
        assert_eq!(c.peers.allow, vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(c.relay.address, Some(sfu[0].ip()));
    }

    #[test]
    fn the_tls_listener_is_off_by_default_and_joins_hand_out_turns_when_on() {
        use clap::Parser;
        use switchyard_turn_node::config::Protocol;
        let sfu: Vec<SocketAddr> = vec!["127.0.0.1:7882".parse().unwrap()];
        let dev = Dev::parse_from(["dev"]);
        assert!(turn_tls(&dev.args, sfu[0].ip()).unwrap().is_none());
        let c = turn_config(&dev.args, sfu.clone(), "s", None);
        assert!(c.listeners.iter().all(|l| l.protocol != Protocol::Tls) && c.tls.is_none());
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            turn_uris(lo, 3478, None),
            ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
        );
        assert_eq!(turn_uris(lo, 3478, Some(("127.0.0.1", 443)))[2], "turns:127.0.0.1:443?transport=tcp");
        let v6 = turn_uris("2001:db8::1".parse().unwrap(), 3478, Some(("turn.example.test", 443)));
        assert_eq!(v6[0], "turn:[2001:db8::1]:3478?transport=udp");
        assert_eq!(v6[2], "turns:turn.example.test:443?transport=tcp");
        let no_port = Dev::try_parse_from(["dev", "--turn-tls-host", "turn.example.test"]);
        assert!(no_port.is_err(), "--turn-tls-host without --turn-tls-port");

        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let dev = Dev::parse_from(["dev", "--turn-tls-port", "5349", "--turn-tls-cert", c, "--turn-tls-key", k]);
        let tls = turn_tls(&dev.args, lo).unwrap().expect("TLS on");
        assert_eq!((tls.files.cert_file.as_path(), tls.generated_spki.as_deref()), (cert.as_path(), None));
        let c = turn_config(&dev.args, sfu, "s", Some(&tls.files));
        let l = c.listeners.iter().find(|l| l.protocol == Protocol::Tls).expect("a TLS listener");
        assert_eq!(l.address, "127.0.0.1:5349".parse::<SocketAddr>().unwrap());
        assert_eq!(c.tls.as_ref().unwrap().key_file, key);
    }

    #[test]
    fn bad_tls_flags_get_a_clear_error() {
        use clap::Parser;
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert!(Dev::try_parse_from(["dev", "--turn-tls-port", "443", "--turn-tls-cert", "c.pem"]).is_err());
        let same = Dev::parse_from(["dev", "--turn-port", "3478", "--turn-tls-port", "3478"]);
        let e = turn_tls(&same.args, lo).err().unwrap().to_string();
        assert!(e.contains("give TLS its own port"), "{e}");
        let no_port = Dev::parse_from(["dev", "--turn-tls-cert", "c.pem", "--turn-tls-key", "k.pem"]);
        let e = turn_tls(&no_port.args, lo).err().unwrap().to_string();
        assert!(e.contains("needs --turn-tls-port"), "{e}");
    }

    /// The generated certificate is one the TURN server loads and serves, for the advertised
    /// address, and the printed pin is the SHA-256 of its public key.
    #[tokio::test]
    async fn a_generated_certificate_is_served_by_the_tls_listener() {
        use base64::Engine;
        use clap::Parser;
        use rustls::pki_types::pem::PemObject;
        use sha2::Digest;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let dev =
            Dev::parse_from(["dev", "--turn-port", "0", "--turn-tls-port", "1", "--turn-tls-host", "turn.dev.test"]);
        let tls = turn_tls(&dev.args, ip).unwrap().expect("TLS on");
        let pin = tls.generated_spki.clone().expect("generated");
        let pem = std::fs::read_to_string(&tls.files.cert_file).unwrap();
        let mut c = turn_config(&dev.args, vec!["127.0.0.1:7882".parse().unwrap()], "s", Some(&tls.files));
        for l in &mut c.listeners {
            l.address.set_port(0);
        }
        let server = switchyard_turn_node::TurnServer::start(c).await.expect("TURN with the generated certificate");
        let addr = server.addrs().tls[0];
        // A TLS client that accepts exactly the certificate in the file, for the IP.
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        roots.add(der.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        // Valid for the IP and for --turn-tls-host (what Firefox needs), not for other names.
        for (name, valid) in [
            (rustls::pki_types::ServerName::IpAddress(ip.into()), true),
            (rustls::pki_types::ServerName::try_from("turn.dev.test").unwrap(), true),
            (rustls::pki_types::ServerName::try_from("other.dev.test").unwrap(), false),
        ] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let stream = connector.connect(name.clone(), tcp).await;
            assert_eq!(stream.is_ok(), valid, "{name:?}");
            if let Ok(stream) = stream {
                assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], der);
            }
        }
        // The pin is the key's: the key the handshake was signed with.
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&tls.files.key_file).unwrap()).unwrap();
        let expect =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(key.subject_public_key_info()));
        assert_eq!(pin, expect);
        server.shutdown();
        let _ = std::fs::remove_file(&tls.files.cert_file);
        let _ = std::fs::remove_file(&tls.files.key_file);
    }
}
