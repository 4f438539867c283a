//! `switchyard dev`: the SFU with signaling and the demo call page on this machine.

use std::net::{IpAddr, SocketAddr};
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
            let turn_secret = random_secret();
            let turn = start_turn(&args, sfu_peers(&cfg, media_ip), &turn_secret).await?;
            let host = media_ip;
            let port = turn.addrs().udp[0].port();
            cfg.turn_uris =
                vec![format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")];
            cfg.turn_secret = Some(turn_secret);
            Some(turn)
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
        if let Some(t) = &turn {
            let a = t.addrs();
            println!(
                "  TURN        udp {:?}  tcp {:?}{}",
                a.udp,
                a.tcp,
                if args.relay_only { "  (relay only)" } else { "" }
            );
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
        if let Some(t) = turn {
            t.shutdown();
        }
        anyhow::Ok(())
    })
}

fn random_secret() -> String {
    switchyard_api::random::token(&mut rand::rng(), 32)
}

/// The embedded TURN server: UDP and TCP on `--turn-port`, relaying only to the SFU's
/// media port (`sfu`), never to other ports of this machine or to other hosts of the LAN.
async fn start_turn(
    args: &DevArgs,
    sfu: Vec<SocketAddr>,
    secret: &str,
) -> anyhow::Result<switchyard_turn_node::TurnHandle> {
    switchyard_turn_node::TurnServer::start(turn_config(args, sfu, secret))
        .await
        .context("starting the embedded TURN server")
}

fn turn_config(args: &DevArgs, sfu: Vec<SocketAddr>, secret: &str) -> switchyard_turn_node::Config {
    use switchyard_turn_node::config::{Listener, Protocol};
    let mut c = switchyard_turn_node::Config::default();
    let listen = SocketAddr::new(args.bind, args.turn_port);
    c.listeners = vec![
        Listener { protocol: Protocol::Udp, address: listen },
        Listener { protocol: Protocol::Tcp, address: listen },
    ];
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
        let c = turn_config(&dev.args, sfu.clone(), "s");
        assert_eq!(c.only_peers, sfu);
        assert_eq!(c.peers.allow, vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(c.relay.address, Some(sfu[0].ip()));
    }
}
