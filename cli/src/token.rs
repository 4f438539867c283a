//! `switchyard token`: mint an access token, as an app backend would.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use switchyard_api::signal::TrackSource;
use switchyard_api::token::{Claims, Grants, mint};

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// API key (the token's `kid`/`iss`).
    #[arg(long, env = "SWITCHYARD_API_KEY")]
    api_key: String,
    /// API secret that signs the token.
    #[arg(long, env = "SWITCHYARD_API_SECRET", hide_env_values = true)]
    api_secret: String,
    /// The participant's identity.
    #[arg(long)]
    identity: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// The room to join (and the room the other room grants apply to).
    #[arg(long)]
    room: Option<String>,
    /// No roomJoin grant even with --room (a token for the Room service only).
    #[arg(long)]
    no_join: bool,
    /// Application data handed to other participants.
    #[arg(long)]
    metadata: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    ttl: u64,
    /// Also allow creating rooms.
    #[arg(long)]
    create: bool,
    /// Also allow listing rooms.
    #[arg(long)]
    list: bool,
    /// Also allow administering the room (or every room, without --room).
    #[arg(long)]
    admin: bool,
    /// Subscribe-only: no publishing of media or data.
    #[arg(long)]
    viewer: bool,
    /// Only these sources may be published (camera, microphone, screen_share, screen_share_audio).
    #[arg(long = "source", value_parser = parse_source)]
    sources: Vec<TrackSource>,
    /// Invisible to other participants.
    #[arg(long)]
    hidden: bool,
    /// Print the decoded claims as JSON on stderr as well.
    #[arg(long)]
    verbose: bool,
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock is before 1970")?.as_secs();
    let grants = Grants {
        room_join: args.room.is_some() && !args.no_join,
        room: args.room,
        room_create: args.create,
        room_list: args.list,
        room_admin: args.admin,
        can_publish: !args.viewer,
        can_publish_data: !args.viewer,
        can_subscribe: true,
        can_publish_sources: args.sources,
        hidden: args.hidden,
    };
    let mut claims = Claims::new(args.api_key, args.identity, now, args.ttl).with_grants(grants);
    claims.name = args.name;
    claims.metadata = args.metadata;
    if args.verbose {
        eprintln!("{}", serde_json::to_string_pretty(&claims)?);
    }
    println!("{}", mint(&claims, &args.api_secret)?);
    Ok(())
}

pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 90, 15m, 6h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(scale).filter(|&v| v > 0).ok_or_else(|| format!("{s:?} must be positive and not absurdly long"))
}

fn parse_source(s: &str) -> Result<TrackSource, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?} is not one of camera, microphone, screen_share, screen_share_audio"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("6h"), Ok(21600));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("6w").unwrap_err().contains("unit"));
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(parse_source("screen_share"), Ok(TrackSource::ScreenShare));
        assert!(parse_source("webcam").is_err());
    }
}
