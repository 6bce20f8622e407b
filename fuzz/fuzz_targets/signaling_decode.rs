//! Signaling text frames as the server reads them: `ClientMsg::decode` (the one check of size,
//! JSON shape, message type and offer m-lines that `ws.rs` applies to every frame), then the
//! name rule a `join` applies to `display_name` and the participant ids of moderator commands.
//! Frames from the server are decoded as the native client does (`ServerMsg`).
//!
//! Invariants: nothing panics; a refused frame gets one of the decode codes and a non-empty
//! message no longer than the frame plus a bound (an error reply does not amplify); whatever
//! decodes encodes, and decodes again to the same message with the same encoding; an accepted
//! offer has at most `MAX_OFFER_M_LINES` m-lines; a name that passes the rule passes it again
//! unchanged, is 1 to `MAX_NAME_CHARS` characters with no forbidden character and no
//! surrounding white space.
#![no_main]

use klausur_proto::text::{check_name, check_title, forbidden};
use klausur_proto::{
    count_m_lines, ClientMsg, ErrorCode, ServerMsg, MAX_MESSAGE_BYTES, MAX_NAME_CHARS,
    MAX_OFFER_M_LINES,
};
use klausur_server::meeting::{parse_participant_id, participant_id};
use libfuzzer_sys::fuzz_target;

/// Longest error text beyond an echo of the frame (the type and field names serde lists).
const ERROR_SLACK: usize = 1024;

fn check_name_rule(name: &str) {
    if let Ok(n) = check_name(name) {
        assert_eq!(check_name(&n).as_deref(), Ok(n.as_str()), "not idempotent");
        let chars = n.chars().count();
        assert!((1..=MAX_NAME_CHARS).contains(&chars), "{chars} characters");
        assert!(!n.chars().any(forbidden), "forbidden character in {n:?}");
        assert_eq!(n.trim(), n, "white space around {n:?}");
    }
    if let Ok(t) = check_title(name) {
        assert_eq!(
            check_title(&t).as_deref(),
            Ok(t.as_str()),
            "title not idempotent"
        );
    }
}

fn check_participant_id(id: &str) {
    if let Some(peer) = parse_participant_id(id) {
        assert_eq!(parse_participant_id(&participant_id(peer)), Some(peer));
    }
}

fn client_frame(text: &str) {
    match ClientMsg::decode(text) {
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::Malformed
                        | ErrorCode::UnknownType
                        | ErrorCode::TooLarge
                        | ErrorCode::InvalidField
                ),
                "unexpected code {:?}",
                e.code
            );
            assert!(!e.message.is_empty());
            assert!(
                e.message.len() <= text.len() + ERROR_SLACK,
                "error of {} bytes for a frame of {}",
                e.message.len(),
                text.len()
            );
            if text.len() > MAX_MESSAGE_BYTES {
                assert_eq!(e.code, ErrorCode::TooLarge);
            }
        }
        Ok(msg) => {
            assert!(text.len() <= MAX_MESSAGE_BYTES);
            let encoded = serde_json::to_string(&msg).expect("a decoded message encodes");
            let again = ClientMsg::decode(&encoded).expect("an encoded message decodes");
            assert_eq!(again, msg, "round trip changed the message");
            assert_eq!(
                serde_json::to_string(&again).expect("encodes"),
                encoded,
                "encoding not stable"
            );
            let value: serde_json::Value = serde_json::from_str(text).expect("was JSON");
            assert_eq!(value["type"].as_str(), Some(msg.type_name()));
            match &msg {
                ClientMsg::Offer { sdp, .. } => {
                    assert!(count_m_lines(sdp) <= MAX_OFFER_M_LINES);
                }
                ClientMsg::Join {
                    display_name: Some(name),
                    ..
                } => check_name_rule(name),
                ClientMsg::Admit { participant_id }
                | ClientMsg::Deny { participant_id }
                | ClientMsg::Remove { participant_id }
                | ClientMsg::Mute { participant_id, .. }
                | ClientMsg::SetModerator { participant_id, .. }
                | ClientMsg::LowerHand { participant_id } => check_participant_id(participant_id),
                ClientMsg::MlsCommit { welcome_for, .. } => {
                    welcome_for.iter().for_each(|p| check_participant_id(p));
                }
                _ => {}
            }
        }
    }
}

fn server_frame(text: &str) {
    if let Ok(msg) = serde_json::from_str::<ServerMsg>(text) {
        let encoded = msg.encode();
        let again: ServerMsg = serde_json::from_str(&encoded).expect("an encoded message decodes");
        assert_eq!(again, msg, "round trip changed the server message");
    }
}

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 (the WebSocket layer refuses anything else); arbitrary bytes are
    // read as the nearest text so that every input says something.
    let text = match std::str::from_utf8(data) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(data),
    };
    client_frame(&text);
    server_frame(&text);
    check_name_rule(&text);
});
