//! Fuzz what a media-node reads from another node's relay socket before the room key is
//! checked: a relay message, and the origin's check of a `hello` (version, then key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_api::relay::{RelayHello, RelayMessage, room_key};

const SECRET: &[u8] = b"fuzz-cluster-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = serde_json::from_str::<RelayMessage>(text) else { return };
    // What parses re-serializes to something that parses the same.
    let again = serde_json::to_string(&msg).expect("serializes");
    assert_eq!(serde_json::from_str::<RelayMessage>(&again).expect("round trip"), msg);
    match msg {
        RelayMessage::Hello(hello) => {
            let verdict = hello.check(SECRET, "media");
            // Only the room's own key under this secret (and this version) is accepted.
            let genuine = RelayHello { key: room_key(SECRET, "media", &hello.room), ..hello.clone() };
            assert_eq!(verdict.is_ok(), hello.key == genuine.key && genuine.check(SECRET, "media").is_ok());
        }
        other => assert!(other.into_client().is_some(), "every message but hello reaches the engine"),
    }
});
