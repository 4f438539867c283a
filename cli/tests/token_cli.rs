//! `switchyard token` mints what the verifier accepts.

use std::process::Command;

use switchyard_api::token::Verifier;

#[test]
fn minted_token_verifies_with_the_grants_asked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--api-key", "devkey", "--api-secret", "devsecret", "--identity", "alice"])
        .args(["--room", "standup", "--ttl", "15m", "--source", "camera", "--name", "Alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let verifier = Verifier::new([("devkey".to_owned(), "devsecret".to_owned())], 0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = verifier.verify(token.trim(), now).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.name.as_deref(), Some("Alice"));
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(claims.authorize_join("standup").is_ok());
    assert!(claims.authorize_publish(switchyard_api::signal::TrackSource::Microphone).is_err());
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--api-key", "k", "--api-secret", "s", "--identity", "a", "--ttl", "3w"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit must be s, m, h or d"));
}

#[test]
fn a_room_service_token_for_one_room_need_not_join_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--api-key", "devkey", "--api-secret", "devsecret", "--identity", "ops"])
        .args(["--room", "standup", "--admin", "--no-join", "--metadata", "m1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verifier = Verifier::new([("devkey".to_owned(), "devsecret".to_owned())], 0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = verifier.verify(String::from_utf8(out.stdout).unwrap().trim(), now).unwrap();
    assert!(claims.authorize_admin("standup").is_ok());
    assert!(claims.authorize_admin("retro").is_err(), "scoped to its room");
    assert!(claims.authorize_join("standup").is_err(), "--no-join");
    assert_eq!(claims.metadata.as_deref(), Some("m1"));
}
