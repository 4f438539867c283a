//! Fuzz what media-node reads off the network before any authentication: the signaling
//! frame parser and the STUN `USERNAME` peek that routes a first datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_api::signal::{ClientMessage, MAX_MESSAGE_BYTES};
use switchyard_media_node::engine::stun::local_ufrag;

fuzz_target!(|data: &[u8]| {
    if let Some(ufrag) = local_ufrag(data) {
        // A ufrag is a prefix of the datagram's bytes and never empty.
        assert!(!ufrag.is_empty() && ufrag.len() <= data.len());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match ClientMessage::parse(text) {
            Ok(msg) => {
                // What parses re-serializes to something that parses the same.
                let again = serde_json::to_string(&msg).expect("serializes");
                assert_eq!(ClientMessage::parse(&again).expect("round trip"), msg);
            }
            Err(e) => assert!(text.len() <= MAX_MESSAGE_BYTES || e.code.as_str() == "message_too_large"),
        }
    }
});
