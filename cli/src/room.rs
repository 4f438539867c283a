//! `switchyard room`: the Room service from the command line, against `switchyard dev`
//! or a cluster's signaling URL. Each call mints a short-lived token with the Room
//! service grants from the API key and secret (or uses `--token`).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use switchyard_api::room::Codec;
use switchyard_api::room_service::{ApiError, BASE_PATH, path_segment as seg};
use switchyard_api::signal::{ParticipantInfo, RoomInfo};
use switchyard_api::token::{Claims, Grants, mint};

#[derive(Debug, clap::Args)]
pub(crate) struct RoomArgs {
    /// The signaling URL of `switchyard dev` or of a cluster (http(s):// or ws(s)://).
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:7880", global = true)]
    url: String,
    /// API key that signs the request's token.
    #[arg(long, env = "SWITCHYARD_API_KEY", global = true)]
    api_key: Option<String>,
    /// API secret that signs the request's token.
    #[arg(long, env = "SWITCHYARD_API_SECRET", hide_env_values = true, global = true)]
    api_secret: Option<String>,
    /// Send this access token instead of minting one.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: RoomCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum RoomCommand {
    /// Open a room before anyone joins it.
    Create {
        /// The room's name.
        name: String,
        /// How long it stays open while empty: seconds, or a number with s, m, h.
        #[arg(long, value_parser = crate::token::parse_duration)]
        empty_timeout: Option<u64>,
        /// Participant limit (0: none).
        #[arg(long)]
        max_participants: Option<u32>,
        /// Only these codecs (Opus, VP8, VP9, H264, AV1); repeatable.
        #[arg(long = "codec", value_parser = parse_codec)]
        codecs: Vec<Codec>,
        /// Application data for participants.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// List the open rooms (only NAMES, if given).
    List {
        /// Room names.
        names: Vec<String>,
    },
    /// Show one room.
    Get {
        /// The room.
        name: String,
    },
    /// Close a room: everyone leaves.
    Delete {
        /// The room.
        name: String,
    },
    /// List a room's participants, or show one.
    Participants {
        /// The room.
        room: String,
        /// One participant.
        identity: Option<String>,
    },
    /// Remove a participant from a room.
    Remove {
        /// The room.
        room: String,
        /// The participant.
        identity: String,
    },
    /// Mute (or, with --unmute, unmute) a published track.
    Mute {
        /// The room.
        room: String,
        /// The publisher.
        identity: String,
        /// The track's sid.
        track: String,
        /// Unmute instead.
        #[arg(long)]
        unmute: bool,
    },
    /// Update a room's metadata, or (with IDENTITY) a participant's name, metadata, permissions.
    Update {
        /// The room.
        room: String,
        /// The participant.
        identity: Option<String>,
        /// New metadata.
        #[arg(long)]
        metadata: Option<String>,
        /// New display name (participants only).
        #[arg(long)]
        name: Option<String>,
        /// Allow or forbid publishing media (participants only).
        #[arg(long)]
        can_publish: Option<bool>,
        /// Allow or forbid subscribing (participants only).
        #[arg(long)]
        can_subscribe: Option<bool>,
        /// Allow or forbid sending data (participants only).
        #[arg(long)]
        can_publish_data: Option<bool>,
    },
    /// Send a data message (UTF-8 text) to a room, or to some identities in it.
    Send {
        /// The room.
        room: String,
        /// The message.
        message: String,
        /// Only to this identity; repeatable.
        #[arg(long = "to")]
        to: Vec<String>,
        /// A topic.
        #[arg(long)]
        topic: Option<String>,
        /// Lossy delivery instead of reliable.
        #[arg(long)]
        lossy: bool,
    },
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::ALL
        .into_iter()
        .find(|c| {
            serde_json::to_value(c).ok().and_then(|v| v.as_str().map(|n| n.eq_ignore_ascii_case(s))) == Some(true)
        })
        .ok_or_else(|| format!("{s:?} is not one of Opus, VP8, VP9, H264, AV1"))
}

/// The request a command makes: method, path below [`BASE_PATH`], body.
fn request(cmd: &RoomCommand) -> anyhow::Result<(&'static str, String, Option<Value>)> {
    Ok(match cmd {
        RoomCommand::Create { name, empty_timeout, max_participants, codecs, metadata } => {
            let mut body = json!({ "name": name });
            if let Some(t) = empty_timeout {
                body["emptyTimeoutSeconds"] = json!(t);
            }
            if let Some(m) = max_participants {
                body["maxParticipants"] = json!(m);
            }
            if !codecs.is_empty() {
                body["allowedCodecs"] = json!(codecs);
            }
            if let Some(m) = metadata {
                body["metadata"] = json!(m);
            }
            ("POST", "/rooms".into(), Some(body))
        }
        RoomCommand::List { names } if names.is_empty() => ("GET", "/rooms".into(), None),
        RoomCommand::List { names } => {
            ("GET", format!("/rooms?names={}", names.iter().map(|n| seg(n)).collect::<Vec<_>>().join(",")), None)
        }
        RoomCommand::Get { name } => ("GET", format!("/rooms/{}", seg(name)), None),
        RoomCommand::Delete { name } => ("DELETE", format!("/rooms/{}", seg(name)), None),
        RoomCommand::Participants { room, identity: None } => {
            ("GET", format!("/rooms/{}/participants", seg(room)), None)
        }
        RoomCommand::Participants { room, identity: Some(id) } => {
            ("GET", format!("/rooms/{}/participants/{}", seg(room), seg(id)), None)
        }
        RoomCommand::Remove { room, identity } => {
            ("DELETE", format!("/rooms/{}/participants/{}", seg(room), seg(identity)), None)
        }
        RoomCommand::Mute { room, identity, track, unmute } => (
            "POST",
            format!("/rooms/{}/participants/{}/tracks/{}/mute", seg(room), seg(identity), seg(track)),
            Some(json!({ "muted": !unmute })),
        ),
        RoomCommand::Update { room, identity: None, metadata, name, can_publish, can_subscribe, can_publish_data } => {
            if name.is_some() || can_publish.is_some() || can_subscribe.is_some() || can_publish_data.is_some() {
                bail!("--name and --can-* apply to a participant: give its IDENTITY after the room");
            }
            let Some(metadata) = metadata else { bail!("nothing to update: give --metadata") };
            ("PATCH", format!("/rooms/{}", seg(room)), Some(json!({ "metadata": metadata })))
        }
        RoomCommand::Update {
            room,
            identity: Some(id),
            metadata,
            name,
            can_publish,
            can_subscribe,
            can_publish_data,
        } => {
            let mut body = json!({});
            if let Some(m) = metadata {
                body["metadata"] = json!(m);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let mut permission = serde_json::Map::new();
            for (key, v) in
                [("canPublish", can_publish), ("canSubscribe", can_subscribe), ("canPublishData", can_publish_data)]
            {
                if let Some(v) = v {
                    permission.insert(key.into(), json!(v));
                }
            }
            if !permission.is_empty() {
                body["permission"] = Value::Object(permission);
            }
            ("PATCH", format!("/rooms/{}/participants/{}", seg(room), seg(id)), Some(body))
        }
        RoomCommand::Send { room, message, to, topic, lossy } => {
            let mut body = json!({
                "payload": base64::engine::general_purpose::STANDARD.encode(message),
                "kind": if *lossy { "lossy" } else { "reliable" },
            });
            if !to.is_empty() {
                body["destinationIdentities"] = json!(to);
            }
            if let Some(t) = topic {
                body["topic"] = json!(t);
            }
            ("POST", format!("/rooms/{}/data", seg(room)), Some(body))
        }
    })
}

/// The HTTP base of `url`: ws(s):// becomes http(s)://, a trailing `/` or `/rtc` goes.
fn base_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/').trim_end_matches("/rtc");
    let url = if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        url.to_owned()
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--url {url:?} must start with http://, https://, ws:// or wss://");
    }
    Ok(url)
}

fn token(args: &RoomArgs) -> anyhow::Result<String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    let (Some(key), Some(secret)) = (&args.api_key, &args.api_secret) else {
        bail!("give --api-key and --api-secret (or SWITCHYARD_API_KEY and SWITCHYARD_API_SECRET), or --token");
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock is before 1970")?.as_secs();
    let grants = Grants { room_create: true, room_list: true, room_admin: true, ..Grants::default() };
    Ok(mint(&Claims::new(key, "switchyard-cli", now, 300).with_grants(grants), secret)?)
}

pub(crate) fn run(args: RoomArgs) -> anyhow::Result<()> {
    let (method, path, body) = request(&args.command)?;
    let base = base_url(&args.url)?;
    let token = token(&args)?;
    let url = format!("{base}{BASE_PATH}{path}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, text) = runtime.block_on(call(method, &url, &token, body))?;
    if !(200..300).contains(&status) {
        match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => bail!("{method} {url}: HTTP {status}: {e}"),
            Err(_) => bail!("{method} {url}: HTTP {status}: {}", text.trim()),
        }
    }
    let value: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
    print!("{}", render(&args.command, args.output, &value)?);
    Ok(())
}

async fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> anyhow::Result<(u16, String)> {
    // Explicit provider: with both of rustls's providers compiled in it cannot pick one.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .context("loading the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("bad URL {url:?}"))?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
        .await
        .with_context(|| format!("{method} {url}: no answer within 30 s"))?
        .with_context(|| format!("cannot reach {url} (is `switchyard dev` running? set --url or SWITCHYARD_URL)"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.context("reading the answer")?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The answer as a table (or JSON): rooms, participants, or a one-line confirmation.
fn render(cmd: &RoomCommand, output: Output, v: &Value) -> anyhow::Result<String> {
    if output == Output::Json {
        return Ok(if v.is_null() { String::new() } else { format!("{}\n", serde_json::to_string_pretty(v)?) });
    }
    Ok(match cmd {
        RoomCommand::List { .. } => {
            rooms_table(&serde_json::from_value::<Vec<RoomInfo>>(v["rooms"].clone()).context("rooms")?)
        }
        RoomCommand::Create { .. } | RoomCommand::Get { .. } | RoomCommand::Update { identity: None, .. } => {
            rooms_table(&[serde_json::from_value::<RoomInfo>(v.clone()).context("room")?])
        }
        RoomCommand::Participants { identity: None, .. } => participants_table(
            &serde_json::from_value::<Vec<ParticipantInfo>>(v["participants"].clone()).context("participants")?,
        ),
        RoomCommand::Participants { identity: Some(_), .. } | RoomCommand::Update { identity: Some(_), .. } => {
            participants_table(&[serde_json::from_value::<ParticipantInfo>(v.clone()).context("participant")?])
        }
        RoomCommand::Delete { name } => format!("room {name} deleted\n"),
        RoomCommand::Remove { room, identity } => format!("{identity} removed from {room}\n"),
        RoomCommand::Mute { track, .. } => {
            let muted = v["track"]["muted"].as_bool().unwrap_or_default();
            format!("track {track} {}\n", if muted { "muted" } else { "unmuted" })
        }
        RoomCommand::Send { .. } => format!("sent to {} participant(s)\n", v["recipients"]),
    })
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn rooms_table(rooms: &[RoomInfo]) -> String {
    let rows = rooms
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.sid.clone(),
                r.num_participants.to_string(),
                if r.max_participants == 0 { "-".into() } else { r.max_participants.to_string() },
                format!("{}s", r.empty_timeout_seconds),
                r.metadata.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "SID", "PARTICIPANTS", "MAX", "EMPTY-TIMEOUT", "METADATA"], rows)
}

fn participants_table(participants: &[ParticipantInfo]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows = participants
        .iter()
        .map(|p| {
            let tracks: Vec<String> =
                p.tracks.iter().map(|t| format!("{}{}", t.sid, if t.muted { " (muted)" } else { "" })).collect();
            vec![
                p.identity.clone(),
                p.sid.clone(),
                format!("{:?}", p.state).to_lowercase(),
                yes(p.permission.can_publish),
                yes(p.permission.can_subscribe),
                yes(p.permission.can_publish_data),
                if tracks.is_empty() { "-".into() } else { tracks.join(",") },
                p.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["IDENTITY", "SID", "STATE", "PUBLISH", "SUBSCRIBE", "DATA", "TRACKS", "NAME"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_the_http_base() {
        assert_eq!(base_url("ws://localhost:7880/rtc").unwrap(), "http://localhost:7880");
        assert_eq!(base_url("wss://sfu.example.com/").unwrap(), "https://sfu.example.com");
        assert_eq!(base_url("http://127.0.0.1:7880").unwrap(), "http://127.0.0.1:7880");
        assert!(base_url("127.0.0.1:7880").unwrap_err().to_string().contains("must start with"));
    }

    #[test]
    fn commands_map_to_requests() {
        let (m, p, b) =
            request(&RoomCommand::Mute { room: "r".into(), identity: "a".into(), track: "TR_1".into(), unmute: true })
                .unwrap();
        assert_eq!(
            (m, p.as_str(), b),
            ("POST", "/rooms/r/participants/a/tracks/TR_1/mute", Some(json!({"muted": false})))
        );
        let (_, p, _) = request(&RoomCommand::List { names: vec!["a".into(), "b".into()] }).unwrap();
        assert_eq!(p, "/rooms?names=a,b");
        let (_, p, _) = request(&RoomCommand::Remove { room: "r".into(), identity: "alice smith".into() }).unwrap();
        assert_eq!(p, "/rooms/r/participants/alice%20smith");
        let update = RoomCommand::Update {
            room: "r".into(),
            identity: None,
            metadata: None,
            name: Some("x".into()),
            can_publish: None,
            can_subscribe: None,
            can_publish_data: None,
        };
        assert!(request(&update).unwrap_err().to_string().contains("IDENTITY"));
        assert_eq!(parse_codec("vp9"), Ok(Codec::VP9));
        assert!(parse_codec("mp3").is_err());
    }

    #[test]
    fn tables_pad_their_columns() {
        let t = table(&["A", "BB"], vec![vec!["long-cell".into(), "x".into()]]);
        assert_eq!(t, "A          BB\nlong-cell  x\n");
    }
}
