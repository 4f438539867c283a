//! Fuzz what an app's webhook receiver reads off the network: the `Authorization` header
//! and the body, through `api::webhook::verify`. Whatever arrives, it answers with an
//! error or an event, never a panic; a forged request never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_api::webhook::{WebhookEvent, sign, verify};

const KEY: &str = "APIfuzz";
const SECRET: &str = "fuzz-secret";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    // First line: the header; the rest: the body.
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let secrets = |k: &str| (k == KEY).then(|| SECRET.to_owned());
    if let Ok(header) = std::str::from_utf8(header) {
        // A header not made with the secret never verifies (the fuzzer cannot forge
        // HMAC-SHA256); it must be refused cleanly.
        assert!(verify(body, header, secrets, NOW).is_err());
    }
    // A genuine signature over an arbitrary body: verifies exactly when the body is an
    // event, and yields that event.
    let auth = sign(body, KEY, SECRET, NOW);
    let parsed = serde_json::from_slice::<WebhookEvent>(body).ok();
    assert_eq!(verify(body, &auth, secrets, NOW).ok(), parsed);
});
