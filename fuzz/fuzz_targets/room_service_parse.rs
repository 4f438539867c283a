//! Fuzz what the Room service reads off the network: a request body, parsed as each
//! operation's request type and validated. Whatever arrives, it is accepted or refused
//! with a message, never a panic; what is accepted survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_api::room_service::{
    ApiError, CreateRoomRequest, MuteTrackRequest, SendDataRequest, UpdateParticipantRequest, UpdateRoomRequest,
};

fn check<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    data: &[u8],
    validate: impl Fn(&T) -> Result<(), ApiError>,
) {
    let Ok(request) = serde_json::from_slice::<T>(data) else { return };
    match validate(&request) {
        Ok(()) => {
            let again: T = serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
            assert_eq!(again, request);
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    check::<CreateRoomRequest>(data, CreateRoomRequest::validate);
    check::<UpdateRoomRequest>(data, UpdateRoomRequest::validate);
    check::<UpdateParticipantRequest>(data, UpdateParticipantRequest::validate);
    check::<SendDataRequest>(data, SendDataRequest::validate);
    check::<MuteTrackRequest>(data, |_| Ok(()));
});
