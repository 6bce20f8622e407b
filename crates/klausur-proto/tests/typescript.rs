//! The web client's protocol types are generated from this crate. This test regenerates them
//! and fails when `web/src/signaling/protocol.ts` differs; run it with `KLAUSUR_WRITE_TS=1`
//! to write the file instead.
#![cfg(feature = "ts")]

use klausur_proto::*;
use ts_rs::{Config, TS};

fn generate() -> String {
    let cfg = Config::default();
    let mut out = String::from(
        "// Generated from crates/klausur-proto by `make proto-ts`. Do not edit by hand.\n\n",
    );
    let decls = [
        ParticipantKind::decl(&cfg),
        PhoneLeg::decl(&cfg),
        JoinMethod::decl(&cfg),
        Role::decl(&cfg),
        Source::decl(&cfg),
        Participant::decl(&cfg),
        LobbyReason::decl(&cfg),
        LobbyEntry::decl(&cfg),
        SecurityProfile::decl(&cfg),
        MeetingInfo::decl(&cfg),
        IceServer::decl(&cfg),
        TrackAssignment::decl(&cfg),
        SendSource::decl(&cfg),
        VideoTile::decl(&cfg),
        LeaveReason::decl(&cfg),
        EndReason::decl(&cfg),
        ErrorCode::decl(&cfg),
        MlsContinuity::decl(&cfg),
        MlsJoiner::decl(&cfg),
        MlsPolicy::decl(&cfg),
        ClientMsg::decl(&cfg),
        ServerMsg::decl(&cfg),
    ];
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "export const PROTOCOL_VERSION = {PROTOCOL_VERSION};\nexport const MAX_MESSAGE_BYTES = {MAX_MESSAGE_BYTES};\nexport const MAX_CHAT_CHARS = {MAX_CHAT_CHARS};\nexport const MAX_NAME_CHARS = {MAX_NAME_CHARS};\n"
    ));
    out
}

#[test]
fn typescript_types_match() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../web/src/signaling/protocol.ts"
    );
    let generated = generate();
    if std::env::var_os("KLAUSUR_WRITE_TS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("parent"))
            .expect("mkdir");
        std::fs::write(path, &generated).expect("write protocol.ts");
        return;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == generated,
        "web/src/signaling/protocol.ts is out of date; run `make proto-ts`"
    );
}
