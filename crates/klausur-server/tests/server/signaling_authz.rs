//! The signaling authorization matrix (issue 19, section 2): every client message of the
//! protocol, sent by every kind of sender to a running server, against a table of what each
//! sender may do.
//!
//! # The messages
//!
//! They come from the protocol itself, not from a list kept here: serde names every
//! `ClientMsg` variant in its error for an unknown `type` ([`protocol_types`]). [`SPEC`] must
//! have exactly one row per name: a message added to the protocol without a row, or a row for a
//! message that is gone, fails `the_table_names_every_client_message_and_no_other`, and the
//! matrix test runs whatever the protocol lists (a message without a row is a failing row).
//!
//! # The senders (columns)
//!
//! Meeting A ("Hauptausschuss", profile `internal`) is organised by Olga. She is the observer
//! of every cell, never a sender. Each sender is a real WebSocket client:
//!
//! - **anonymous**: connected, never joined.
//! - **lobby guest**: joined without invitation; waits in the lobby.
//! - **invited guest**: joined with a personal invitation; a plain participant.
//! - **staff**: a staff account; joins directly (the `internal` profile), a plain participant.
//! - **moderator**: an invited guest whom Olga made moderator (`set_moderator`).
//! - **admin**: an administrator account, a plain participant of A (not its organiser).
//! - **removed**: an invited guest whom Olga removed. By the server's rules the removal ends his
//!   connection: `ended` (reason `removed`), then the server closes it. Checked while setting
//!   up, with a `lock` sent on it right after `ended` that must change nothing; nothing can be
//!   sent on it after that. His invitation brings him back only into the lobby (reason
//!   `removed`, checked too). His cells are sent on that new connection, the only one he can
//!   still get.
//! - **other meeting**: Bea, the organiser of meeting B, joined in B. She moderates B, so only
//!   the meeting boundary stands between her and A: every message that names a participant names
//!   one of A (ids that B does not have).
//!
//! # The outcomes (cells)
//!
//! The table is the specification, what a city expects: only moderators moderate, only the
//! organiser grants moderation, lobby guests and outsiders do nothing but wait, leave and ping,
//! and nothing sent in meeting B touches meeting A. Error codes are those docs/protocol.md gives
//! (`not_joined` for anyone not admitted, `forbidden` for a role that may not, `not_found` for a
//! participant who is not in the sender's meeting, `invalid_state` for a second `join`).
//!
//! - **permitted**: the effect shows. In A: Olga sees it (the lock, the mute, the raised hand,
//!   the joiner in `mls_pending`, the relayed commit or chat), or the sender gets its answer
//!   where there is nothing else to see (`pong`, `answer`; `mls_commit_rejected` is accepted
//!   silently, without an error). For the other meeting's sender: the effect shows in B, to her.
//! - **refused with a code**: the sender gets `error` with exactly that code, the connection
//!   stays open, and there is no effect: not for Olga, not for the participant the message
//!   names, not for the sender, not in meeting B.
//!
//! Every refused cell is a security check; its negative control is a permitted cell of the same
//! row. `set_moderator` is the one row no sender may use (only the organiser, the observer, can):
//! its control is Olga's own `set_moderator`, run after the row.
//!
//! The MLS messages are sent with payloads the server would accept from a permitted sender
//! (real key packages, claims and commits of real `klausur_e2ee` members holding credentials
//! from the server's CA; opaque chat), so a refusal code is the authorization's and not a
//! validation error, which has other codes (`invalid_field`, `invalid_state`, `too_large`).
//!
//! # Proving absence without waiting
//!
//! The server handles one connection's messages in order, and one meeting's commands in order.
//! So after a cell's message the sender sends `ping`: when its `pong` arrives, every effect of
//! the message is queued to whoever sees it. Olga (and the named participant, and Bea) then
//! each send `ping` too: whatever they receive before their `pong` is all there is. Only the
//! lobby list is sent to moderators at most every 500 ms; cells whose effect is a lobby change
//! wait for it (positive proof only), and each scenario waits for the lobby list to settle
//! before the next cell.
//!
//! # Running
//!
//! One server per message type (a fresh meeting A and B, fresh senders), all run concurrently
//! in one test, a few at a time; a panic or a failure in one message shows as that row and hides
//! no other. The matrix (observed outcome per cell, `✗` where it differs from the table) is
//! printed to stderr, then the test fails once with every mismatch.
//!
//! Sessions are made directly in the store (the login's argon2 is not under test here and would
//! cost most of the run time); everything else goes through the server's HTTP and WebSocket
//! interfaces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use klausur_e2ee::Member;
use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, LeaveReason, LobbyReason, Role as PRole, SecurityProfile,
    ServerMsg, Source, VideoTile,
};
use klausur_store::Role;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::mls::{claim, device, now};
use crate::common::ws::Client;
use crate::common::TestServer;

/// Who sends a cell's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    Anonymous,
    LobbyGuest,
    InvitedGuest,
    Staff,
    Moderator,
    Admin,
    Removed,
    OtherMeeting,
}

/// The columns of [`SPEC`], in order.
const ACTORS: [Actor; 8] = [
    Actor::Anonymous,
    Actor::LobbyGuest,
    Actor::InvitedGuest,
    Actor::Staff,
    Actor::Moderator,
    Actor::Admin,
    Actor::Removed,
    Actor::OtherMeeting,
];

/// The senders who are participants of meeting A (and members of its MLS group in the MLS rows).
const MEMBERS: [Actor; 4] = [
    Actor::InvitedGuest,
    Actor::Staff,
    Actor::Moderator,
    Actor::Admin,
];

impl Actor {
    fn label(self) -> &'static str {
        match self {
            Actor::Anonymous => "anonymous",
            Actor::LobbyGuest => "lobby guest",
            Actor::InvitedGuest => "invited guest",
            Actor::Staff => "staff",
            Actor::Moderator => "moderator",
            Actor::Admin => "admin",
            Actor::Removed => "removed",
            Actor::OtherMeeting => "other meeting",
        }
    }

    fn column(self) -> usize {
        ACTORS.iter().position(|a| *a == self).unwrap_or(0)
    }
}

/// What a cell expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The message takes effect (in meeting B for the other meeting's sender).
    Permitted,
    /// Refused with this code, without any effect.
    Refused(ErrorCode),
}

impl Expect {
    fn label(self) -> &'static str {
        match self {
            Expect::Permitted => "permit",
            Expect::Refused(code) => code.as_str(),
        }
    }
}

const P: Expect = Expect::Permitted;
const NJ: Expect = Expect::Refused(ErrorCode::NotJoined);
const FB: Expect = Expect::Refused(ErrorCode::Forbidden);
const NF: Expect = Expect::Refused(ErrorCode::NotFound);
const IS: Expect = Expect::Refused(ErrorCode::InvalidState);

/// The specification: per client message type, the outcome per sender, in the order of
/// [`ACTORS`].
#[rustfmt::skip]
const SPEC: &[(&str, [Expect; 8])] = &[
    //                      anon lobby invited staff mod admin removed other
    // Anonymous joins (to the lobby); for everyone else it is a second join. Until admitted
    // only `leave` and `ping` count, so the lobby answers `not_joined`.
    ("join",                [P,  NJ,  IS,  IS,  IS,  IS,  NJ,  IS]),
    ("offer",               [NJ, NJ,  P,   P,   P,   P,   NJ,  P]),
    ("media_state",         [NJ, NJ,  P,   P,   P,   P,   NJ,  P]),
    // Which videos the sender shows: only for the meeting room, and it changes only what the
    // sender is sent (no reply, no broadcast).
    ("video_tiles",         [NJ, NJ,  P,   P,   P,   P,   NJ,  P]),
    // Moderator actions: only moderators; the other meeting's organiser names people of A,
    // who are not in her meeting.
    ("admit",               [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    ("deny",                [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    ("remove",              [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    ("lock",                [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  P]),
    ("mute",                [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    ("spotlight",           [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    // Only the organiser grants moderation: no sender may (control: Olga herself).
    ("set_moderator",       [NJ, NJ,  FB,  FB,  FB,  FB,  NJ,  NF]),
    ("raise_hand",          [NJ, NJ,  P,   P,   P,   P,   NJ,  P]),
    ("lower_hand",          [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  NF]),
    ("end_meeting",         [NJ, NJ,  FB,  FB,  P,   FB,  NJ,  P]),
    // The first message must be `join`: leaving before it is `not_joined`.
    ("leave",               [NJ, P,   P,   P,   P,   P,   P,   P]),
    ("ping",                [P,  P,   P,   P,   P,   P,   P,   P]),
    // End-to-end encryption: participants of the meeting room only; the group's operations
    // only for its members. Meeting B has no group: Bea's key package asks her to create one,
    // her claim is of no group (`invalid_state`), the rest is for members only.
    ("mls_key_package",     [NJ, NJ,  P,   P,   P,   P,   NJ,  P]),
    ("mls_member",          [NJ, NJ,  P,   P,   P,   P,   NJ,  IS]),
    ("mls_commit",          [NJ, NJ,  P,   P,   P,   P,   NJ,  FB]),
    ("mls_commit_rejected", [NJ, NJ,  P,   P,   P,   P,   NJ,  FB]),
    ("mls_chat",            [NJ, NJ,  P,   P,   P,   P,   NJ,  FB]),
];

/// Rows that no sender may use; each has a control cell (the organiser, see [`control`]).
const ORGANISER_ONLY: &[&str] = &["set_moderator"];

/// How many message scenarios (each its own server) run at once.
const CONCURRENT: usize = 5;
/// The longest wait for anything that should come; only reached when something is wrong.
const WAIT: Duration = Duration::from_secs(10);
/// How long a permitted cell waits for an effect that comes with the lobby list (sent to
/// moderators at most every 500 ms).
const LOBBY_WAIT: Duration = Duration::from_secs(3);
/// The longest a whole message scenario may take before it counts as failed.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// Every client message type, as serde lists them in its error for an unknown `type`:
/// "unknown variant `?`, expected one of `join`, `offer`, ...".
fn protocol_types() -> Vec<String> {
    let err = match serde_json::from_str::<ClientMsg>(r#"{"type":"?"}"#) {
        Ok(m) => panic!("a message of type \"?\" was accepted: {m:?}"),
        Err(e) => e.to_string(),
    };
    let Some((_, list)) = err.split_once("expected one of ") else {
        panic!("serde's error no longer lists the message types: {err}");
    };
    let types: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(
        !types.is_empty() && types.iter().any(|t| t == "join"),
        "could not read the message types from serde's error: {err}"
    );
    types
}

// ---------------------------------------------------------------------------------------------
// Connections

/// One sender's (or the observer's, or a target's) connection.
struct Conn {
    c: Client,
    /// The participant id in its meeting (in the lobby: as moderators see it); empty for the
    /// anonymous connection.
    pid: String,
    /// False once the server closed it.
    open: bool,
}

/// What one connection received up to its `pong`(s).
#[derive(Default)]
struct Heard {
    msgs: Vec<ServerMsg>,
    pongs: usize,
    closed: bool,
    timed_out: bool,
}

fn short(m: &ServerMsg) -> String {
    let mut s = m.encode();
    if s.len() > 140 {
        let mut cut = 140;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

async fn send(conn: &mut Conn, msg: &ClientMsg) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| format!("encode: {e}"))?;
    conn.c
        .ws
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| {
            conn.open = false;
            format!("send: {e}")
        })
}

/// The next server message within `deadline`: `Ok(None)` when the connection closed.
async fn next(conn: &mut Conn, deadline: Instant) -> Result<Option<ServerMsg>, String> {
    loop {
        match tokio::time::timeout_at(deadline, conn.c.ws.next()).await {
            Err(_) => return Err("nothing arrived in time".into()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| format!("not a server message ({e}): {t}"));
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                conn.open = false;
                return Ok(None);
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads until a message matching `pred`, dropping others.
async fn until(
    conn: &mut Conn,
    what: &str,
    pred: impl Fn(&ServerMsg) -> bool,
) -> Result<ServerMsg, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match next(conn, deadline).await {
            Ok(Some(m)) if pred(&m) => return Ok(m),
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("{what}: the connection closed")),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Sends `ping` and reads until `pongs` pongs arrived (or the connection closed, or [`WAIT`]).
async fn fence(conn: &mut Conn, pongs: usize) -> Heard {
    let mut h = Heard::default();
    if !conn.open {
        h.closed = true;
        return h;
    }
    // A connection the server is closing may refuse the ping; what it sent before still counts.
    let _ = send(conn, &ClientMsg::Ping).await;
    let deadline = Instant::now() + WAIT;
    while h.pongs < pongs {
        match next(conn, deadline).await {
            Ok(Some(ServerMsg::Pong)) => h.pongs += 1,
            Ok(Some(m)) => h.msgs.push(m),
            Ok(None) => {
                h.closed = true;
                break;
            }
            Err(e) if e.starts_with("nothing") => {
                h.timed_out = true;
                break;
            }
            Err(e) => h
                .msgs
                .push(ServerMsg::error(ErrorCode::Internal, format!("test: {e}"))),
        }
    }
    h
}

async fn connect(srv: &TestServer, cookie: Option<&str>) -> Conn {
    Conn {
        c: Client::connect(srv, cookie).await,
        pid: String::new(),
        open: true,
    }
}

fn join_msg(meeting: &str, token: Option<&str>, name: Option<&str>) -> ClientMsg {
    ClientMsg::Join {
        meeting_id: meeting.into(),
        invite_token: token.map(str::to_string),
        display_name: name.map(str::to_string),
        rejoin_token: None,
        dial_in_ticket: None,
    }
}

/// Connects and joins `meeting` straight into it; the connection with its participant id.
async fn joined_conn(
    srv: &TestServer,
    meeting: &str,
    cookie: Option<&str>,
    token: Option<&str>,
) -> Result<Conn, String> {
    let mut conn = connect(srv, cookie).await;
    send(&mut conn, &join_msg(meeting, token, None)).await?;
    match until(&mut conn, "joined", |_| true).await? {
        ServerMsg::Joined { self_id, .. } => {
            conn.pid = self_id;
            Ok(conn)
        }
        other => Err(format!("expected joined, got {}", short(&other))),
    }
}

/// Connects and joins `meeting` into its lobby (with `token` or as a guest named `name`).
async fn waiting(
    srv: &TestServer,
    meeting: &str,
    token: Option<&str>,
    name: Option<&str>,
) -> Result<Conn, String> {
    let mut conn = connect(srv, None).await;
    send(&mut conn, &join_msg(meeting, token, name)).await?;
    match until(&mut conn, "lobby_wait", |_| true).await? {
        ServerMsg::LobbyWait { .. } => Ok(conn),
        other => Err(format!("expected lobby_wait, got {}", short(&other))),
    }
}

/// A staff or admin account with a session, made directly in the store (see the module docs).
struct Account {
    id: i64,
    cookie: String,
    csrf: String,
}

async fn account(srv: &TestServer, username: &str, role: Role) -> Result<Account, String> {
    let user = srv
        .store
        .create_user(username, &format!("{username} Name"), "!", role, false)
        .await
        .map_err(|e| format!("create user {username}: {e}"))?;
    let (cookie, csrf) = srv.session(user.id).await;
    Ok(Account {
        id: user.id,
        cookie,
        csrf,
    })
}

/// A browser-like SDP offer (str0m's) that only receives: accepted by the media server, and
/// it publishes nothing, so nobody else is asked to renegotiate.
fn receive_only_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    match api.apply() {
        Some((offer, _)) => offer.to_sdp_string(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The world of one message scenario

/// What a message names: nobody, someone waiting in A's lobby, or a participant of A (with a
/// raised hand for `lower_hand`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    None,
    Lobby,
    Participant,
    RaisedHand,
}

fn target_kind(msg: &str) -> TargetKind {
    match msg {
        "admit" | "deny" => TargetKind::Lobby,
        "remove" | "mute" | "spotlight" | "set_moderator" => TargetKind::Participant,
        "lower_hand" => TargetKind::RaisedHand,
        _ => TargetKind::None,
    }
}

/// How much of meeting A's MLS group a scenario needs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MlsLevel {
    None,
    /// Olga created the group and holds leaf 0; the member senders have devices (credentials
    /// from the server's CA) but are not in the group.
    Devices,
    /// Olga added the member senders; they joined from the Welcome (no leaf claims yet).
    Added,
    /// And each member sender claimed its leaf.
    Claimed,
}

fn mls_level(msg: &str) -> MlsLevel {
    match msg {
        "mls_key_package" => MlsLevel::Devices,
        "mls_member" | "mls_commit_rejected" | "mls_chat" => MlsLevel::Added,
        "mls_commit" => MlsLevel::Claimed,
        _ => MlsLevel::None,
    }
}

struct Mls {
    olga: Member,
    devices: BTreeMap<Actor, Member>,
    next_chat: u32,
}

struct World {
    msg: String,
    srv: TestServer,
    a: String,
    b: String,
    olga_user: i64,
    olga: Conn,
    senders: BTreeMap<Actor, Conn>,
    /// The participant the current cell's message names, if any; a fresh one after every cell
    /// that had an effect on it.
    target: Option<Conn>,
    targets_made: u32,
    accounts: BTreeMap<Actor, Account>,
    olga_account: Account,
    tokens: BTreeMap<Actor, String>,
    mls: Option<Mls>,
}

/// Meeting A with Olga and every sender in place, meeting B with Bea.
async fn world(msg: &str) -> Result<World, String> {
    let srv = TestServer::start_with(|c| c.max_websockets_per_address = 1000).await;
    let olga_account = account(&srv, "olga", Role::Staff).await?;
    let sam = account(&srv, "sam", Role::Staff).await?;
    let root = account(&srv, "root", Role::Admin).await?;
    let bea = account(&srv, "bea", Role::Staff).await?;
    let a = srv
        .store
        .create_meeting(
            "meeting-a",
            "Hauptausschuss",
            None,
            olga_account.id,
            SecurityProfile::Internal,
        )
        .await
        .map_err(|e| format!("meeting A: {e}"))?
        .id;
    let b = srv
        .store
        .create_meeting(
            "meeting-b",
            "Bauausschuss",
            None,
            bea.id,
            SecurityProfile::Internal,
        )
        .await
        .map_err(|e| format!("meeting B: {e}"))?
        .id;
    let hour = chrono::Duration::hours(1);
    let (_, gina_token) = srv
        .guest_invitation(&a, "Gina Gast", olga_account.id, hour)
        .await;
    let (_, mara_token) = srv
        .guest_invitation(&a, "Mara Moderat", olga_account.id, hour)
        .await;
    let (_, rex_token) = srv
        .guest_invitation(&a, "Rex Raus", olga_account.id, hour)
        .await;

    // Olga first (p1), then the participants.
    let mut olga = joined_conn(&srv, &a, Some(&olga_account.cookie), None).await?;
    let gina = joined_conn(&srv, &a, None, Some(&gina_token)).await?;
    let sam_conn = joined_conn(&srv, &a, Some(&sam.cookie), None).await?;
    let root_conn = joined_conn(&srv, &a, Some(&root.cookie), None).await?;
    let mara = joined_conn(&srv, &a, None, Some(&mara_token)).await?;
    send(
        &mut olga,
        &ClientMsg::SetModerator {
            participant_id: mara.pid.clone(),
            moderator: true,
        },
    )
    .await?;
    until(&mut olga, "Mara made moderator", |m| {
        matches!(m, ServerMsg::ParticipantUpdated { participant }
            if participant.id == mara.pid && participant.role == PRole::Moderator)
    })
    .await?;

    // Rex is removed: the server ends his connection and closes it.
    let mut rex_before = joined_conn(&srv, &a, None, Some(&rex_token)).await?;
    send(
        &mut olga,
        &ClientMsg::Remove {
            participant_id: rex_before.pid.clone(),
        },
    )
    .await?;
    until(&mut rex_before, "Rex's removal", |m| {
        matches!(
            m,
            ServerMsg::Ended {
                reason: EndReason::Removed,
                ..
            }
        )
    })
    .await?;
    // Whatever he still manages to send on it before the close arrives is lost: a lock would
    // show as `meeting_changed` to Olga before her pong.
    let _ = send(&mut rex_before, &ClientMsg::Lock { locked: true }).await;
    match next(&mut rex_before, Instant::now() + WAIT).await {
        Ok(None) => {}
        Ok(Some(m)) => {
            return Err(format!(
                "the removed connection got more after `ended`: {}",
                short(&m)
            ))
        }
        Err(e) => return Err(format!("the removed connection stays open: {e}")),
    }
    let olga_heard = fence(&mut olga, 1).await;
    if let Some(m) = olga_heard
        .msgs
        .iter()
        .find(|m| matches!(m, ServerMsg::MeetingChanged { .. }))
    {
        return Err(format!(
            "a removed participant's old connection still locked: {}",
            short(m)
        ));
    }
    // With his link he comes back only into the lobby, as removed.
    let rex = waiting(&srv, &a, Some(&rex_token), None)
        .await
        .map_err(|e| format!("the removed guest's link: {e}"))?;
    let luise = waiting(&srv, &a, None, Some("Luise Lobby")).await?;
    let lobby = match until(&mut olga, "the lobby with Luise and Rex", |m| {
        matches!(m, ServerMsg::LobbyChanged { lobby, .. }
            if lobby.iter().any(|e| e.display_name == "Luise Lobby")
                && lobby.iter().any(|e| e.display_name == "Rex Raus"))
    })
    .await?
    {
        ServerMsg::LobbyChanged { lobby, .. } => lobby,
        _ => Vec::new(),
    };
    let entry = |name: &str| lobby.iter().find(|e| e.display_name == name).cloned();
    let (Some(luise_entry), Some(rex_entry)) = (entry("Luise Lobby"), entry("Rex Raus")) else {
        return Err("lobby entries missing".into());
    };
    if rex_entry.reason != LobbyReason::Removed {
        return Err(format!(
            "the removed guest waits as {:?}, not as removed",
            rex_entry.reason
        ));
    }
    let anonymous = connect(&srv, None).await;
    let bea_conn = joined_conn(&srv, &b, Some(&bea.cookie), None).await?;

    let mut senders = BTreeMap::new();
    senders.insert(Actor::Anonymous, anonymous);
    senders.insert(
        Actor::LobbyGuest,
        Conn {
            pid: luise_entry.id,
            ..luise
        },
    );
    senders.insert(Actor::InvitedGuest, gina);
    senders.insert(Actor::Staff, sam_conn);
    senders.insert(Actor::Moderator, mara);
    senders.insert(Actor::Admin, root_conn);
    senders.insert(
        Actor::Removed,
        Conn {
            pid: rex_entry.id,
            ..rex
        },
    );
    senders.insert(Actor::OtherMeeting, bea_conn);
    let mut accounts = BTreeMap::new();
    accounts.insert(Actor::Staff, sam);
    accounts.insert(Actor::Admin, root);
    accounts.insert(Actor::OtherMeeting, bea);
    let mut tokens = BTreeMap::new();
    tokens.insert(Actor::InvitedGuest, gina_token);
    tokens.insert(Actor::Moderator, mara_token);
    tokens.insert(Actor::Removed, rex_token);
    Ok(World {
        msg: msg.to_string(),
        olga_user: olga_account.id,
        srv,
        a,
        b,
        olga,
        senders,
        target: None,
        targets_made: 0,
        accounts,
        olga_account,
        tokens,
        mls: None,
    })
}

/// A member sender's MLS device, with a credential from the server's CA: for the holder of
/// the invitation `token`, or for the account with session `cookie` and `csrf`.
async fn sender_device(
    srv: &TestServer,
    token: Option<String>,
    session: Option<(String, String)>,
) -> Result<Member, String> {
    match (token, session) {
        (Some(token), _) => Ok(device(
            srv,
            &srv.anonymous(),
            None,
            json!({ "invite_token": token }),
        )
        .await),
        (None, Some((cookie, csrf))) => Ok(device(
            srv,
            &TestServer::client_with_cookie(&cookie),
            Some(&csrf),
            json!({}),
        )
        .await),
        (None, None) => Err("neither an invitation nor an account".into()),
    }
}

fn kp_msg(m: &Member) -> Result<ClientMsg, String> {
    Ok(ClientMsg::MlsKeyPackage {
        key_package: B64.encode(m.key_package().map_err(|e| format!("key package: {e}"))?),
        continuity: None,
    })
}

/// Builds meeting A's MLS group up to `level`.
async fn mls_setup(w: &mut World, level: MlsLevel) -> Result<(), String> {
    if level == MlsLevel::None {
        return Ok(());
    }
    let mut olga_dev = device(
        &w.srv,
        &TestServer::client_with_cookie(&w.olga_account.cookie),
        Some(&w.olga_account.csrf),
        json!({}),
    )
    .await;
    send(&mut w.olga, &kp_msg(&olga_dev)?).await?;
    let ServerMsg::MlsCreateGroup { group_id } = until(&mut w.olga, "mls_create_group", |m| {
        matches!(m, ServerMsg::MlsCreateGroup { .. })
    })
    .await?
    else {
        return Err("no group id".into());
    };
    olga_dev
        .create_group(group_id.as_bytes(), now())
        .map_err(|e| format!("create group: {e}"))?;
    let olga_pid = w.olga.pid.clone();
    send(&mut w.olga, &claim(&olga_dev, &olga_pid, true)).await?;
    until(&mut w.olga, "Olga's leaf", |m| {
        matches!(m, ServerMsg::ParticipantUpdated { participant }
            if participant.id == olga_pid && participant.leaf == Some(0))
    })
    .await?;
    let mut devices = BTreeMap::new();
    for actor in MEMBERS {
        let token = w.tokens.get(&actor).cloned();
        let session = w
            .accounts
            .get(&actor)
            .map(|a| (a.cookie.clone(), a.csrf.clone()));
        devices.insert(actor, sender_device(&w.srv, token, session).await?);
    }
    if level >= MlsLevel::Added {
        // (Messages are made before sending: a device is not shared across an await.)
        let kps: Vec<(Actor, ClientMsg)> = devices
            .iter()
            .map(|(a, d)| kp_msg(d).map(|m| (*a, m)))
            .collect::<Result<_, _>>()?;
        let mut pids = Vec::new();
        for (actor, kp) in &kps {
            let conn = w.senders.get_mut(actor).ok_or("sender missing")?;
            send(conn, kp).await?;
            pids.push(conn.pid.clone());
        }
        let pending = until(&mut w.olga, "all four pending", |m| {
            matches!(m, ServerMsg::MlsPending { joiners, .. }
                if pids.iter().all(|p| joiners.iter().any(|j| &j.participant_id == p)))
        })
        .await?;
        let ServerMsg::MlsPending { joiners, .. } = pending else {
            return Err("no pending list".into());
        };
        let mut kps = Vec::new();
        for p in &pids {
            let j = joiners
                .iter()
                .find(|j| &j.participant_id == p)
                .ok_or("joiner missing")?;
            kps.push(B64.decode(&j.key_package).map_err(|e| e.to_string())?);
        }
        let out = olga_dev.add(&kps, now()).map_err(|e| format!("add: {e}"))?;
        send(
            &mut w.olga,
            &ClientMsg::MlsCommit {
                epoch: 0,
                commit: B64.encode(&out.commit),
                welcome: out.welcome.as_ref().map(|x| B64.encode(x)),
                welcome_for: pids.clone(),
            },
        )
        .await?;
        let result = until(&mut w.olga, "the add's result", |m| {
            matches!(m, ServerMsg::MlsCommitResult { .. })
        })
        .await?;
        if !matches!(
            result,
            ServerMsg::MlsCommitResult {
                epoch: 0,
                accepted: true
            }
        ) {
            return Err(format!("Olga's add was not accepted: {}", short(&result)));
        }
        olga_dev
            .merge_pending_commit(now())
            .map_err(|e| format!("merge: {e}"))?;
        for (actor, dev) in devices.iter_mut() {
            let conn = w.senders.get_mut(actor).ok_or("sender missing")?;
            let ServerMsg::MlsWelcome { welcome, .. } = until(conn, "welcome", |m| {
                matches!(m, ServerMsg::MlsWelcome { .. })
            })
            .await?
            else {
                return Err("no welcome".into());
            };
            dev.join_from_welcome(&B64.decode(welcome).map_err(|e| e.to_string())?, now())
                .map_err(|e| format!("join from welcome: {e}"))?;
        }
    }
    if level >= MlsLevel::Claimed {
        for actor in MEMBERS {
            let conn = w.senders.get_mut(&actor).ok_or("sender missing")?;
            let pid = conn.pid.clone();
            let msg = claim(devices.get(&actor).ok_or("device missing")?, &pid, false);
            send(conn, &msg).await?;
            until(&mut w.olga, "a member's leaf", |m| {
                matches!(m, ServerMsg::ParticipantUpdated { participant }
                    if participant.id == pid && participant.leaf.is_some())
            })
            .await?;
        }
    }
    w.mls = Some(Mls {
        olga: olga_dev,
        devices,
        next_chat: 1,
    });
    Ok(())
}

/// Makes the participant the current message names, if it names one and none is there.
async fn ensure_target(w: &mut World) -> Result<(), String> {
    let kind = target_kind(&w.msg);
    if kind == TargetKind::None || w.target.as_ref().is_some_and(|t| t.open) {
        return Ok(());
    }
    w.targets_made += 1;
    let n = w.targets_made;
    let conn = match kind {
        TargetKind::Lobby => {
            let name = format!("Wanda Wartend {n}");
            let conn = waiting(&w.srv, &w.a, None, Some(&name)).await?;
            let ServerMsg::LobbyChanged { lobby, .. } =
                until(&mut w.olga, "the target in the lobby", |m| {
                    matches!(m, ServerMsg::LobbyChanged { lobby, .. }
                        if lobby.iter().any(|e| e.display_name == name))
                })
                .await?
            else {
                return Err("no lobby".into());
            };
            let pid = lobby
                .iter()
                .find(|e| e.display_name == name)
                .map(|e| e.id.clone())
                .unwrap_or_default();
            Conn { pid, ..conn }
        }
        _ => {
            let (_, token) = w
                .srv
                .guest_invitation(
                    &w.a,
                    &format!("Tom Ziel {n}"),
                    w.olga_user,
                    chrono::Duration::hours(1),
                )
                .await;
            let mut conn = joined_conn(&w.srv, &w.a, None, Some(&token)).await?;
            let pid = conn.pid.clone();
            until(&mut w.olga, "the target joined", |m| {
                matches!(m, ServerMsg::ParticipantJoined { participant } if participant.id == pid)
            })
            .await?;
            if kind == TargetKind::RaisedHand {
                send(&mut conn, &ClientMsg::RaiseHand { raised: true }).await?;
                until(&mut w.olga, "the target's hand", |m| {
                    matches!(m, ServerMsg::ParticipantUpdated { participant }
                        if participant.id == pid && participant.hand_raised_at.is_some())
                })
                .await?;
            }
            conn
        }
    };
    w.target = Some(conn);
    Ok(())
}

/// The current epoch of meeting A's group (0 without one).
fn epoch(w: &World) -> u64 {
    w.mls
        .as_ref()
        .and_then(|m| m.olga.epoch().ok())
        .unwrap_or(0)
}

/// The message `actor` sends in this cell.
fn build(w: &mut World, actor: Actor) -> Result<ClientMsg, String> {
    let tpid = w.target.as_ref().map(|t| t.pid.clone()).unwrap_or_default();
    let xpid = w
        .senders
        .get(&actor)
        .map(|c| c.pid.clone())
        .unwrap_or_default();
    let epoch = epoch(w);
    let mls = w.mls.as_mut();
    Ok(match w.msg.as_str() {
        "join" => join_msg(&w.a, None, Some("Anna Anonym")),
        "offer" => ClientMsg::Offer {
            sdp: receive_only_offer(),
            sources: vec![],
        },
        "media_state" => ClientMsg::MediaState {
            audio_muted: true,
            video_muted: true,
            screen_sharing: true,
        },
        "video_tiles" => ClientMsg::VideoTiles {
            tiles: vec![VideoTile {
                participant_id: tpid,
                source: Source::Camera,
                width: 640,
                height: 360,
            }],
        },
        "admit" => ClientMsg::Admit {
            participant_id: tpid,
        },
        "deny" => ClientMsg::Deny {
            participant_id: tpid,
        },
        "remove" => ClientMsg::Remove {
            participant_id: tpid,
        },
        "lock" => ClientMsg::Lock { locked: true },
        "spotlight" => ClientMsg::Spotlight {
            participant_id: Some(tpid),
        },
        "mute" => ClientMsg::Mute {
            participant_id: tpid,
            muted: true,
        },
        "set_moderator" => ClientMsg::SetModerator {
            participant_id: tpid,
            moderator: true,
        },
        "raise_hand" => ClientMsg::RaiseHand { raised: true },
        "lower_hand" => ClientMsg::LowerHand {
            participant_id: tpid,
        },
        "end_meeting" => ClientMsg::EndMeeting,
        "leave" => ClientMsg::Leave,
        "ping" => ClientMsg::Ping,
        "mls_key_package" => {
            let mls = mls.ok_or("no group")?;
            // A member sender's own; anyone else sends one of Olga's (equally valid).
            kp_msg(mls.devices.get(&actor).unwrap_or(&mls.olga))?
        }
        "mls_member" => {
            let mls = mls.ok_or("no group")?;
            match mls.devices.get(&actor) {
                Some(dev) => claim(dev, &xpid, false),
                // A claim of Olga's leaf: well-formed; only its signature is not hers.
                None => ClientMsg::MlsMember {
                    leaf: 0,
                    epoch,
                    signature: B64.encode([7u8; 64]),
                    group_info: None,
                },
            }
        }
        "mls_commit" => {
            let mls = mls.ok_or("no group")?;
            let commit = match mls.devices.get_mut(&actor) {
                Some(dev) => {
                    dev.update_own_leaf()
                        .map_err(|e| format!("update: {e}"))?
                        .commit
                }
                None => {
                    // A real commit for the current epoch, by Olga's device (not kept).
                    let out = mls
                        .olga
                        .update_own_leaf()
                        .map_err(|e| format!("update: {e}"))?;
                    mls.olga
                        .discard_pending_commit()
                        .map_err(|e| format!("discard: {e}"))?;
                    out.commit
                }
            };
            ClientMsg::MlsCommit {
                epoch,
                commit: B64.encode(commit),
                welcome: None,
                welcome_for: vec![],
            }
        }
        // A report about the commit that made the current epoch.
        "mls_commit_rejected" => ClientMsg::MlsCommitRejected {
            epoch: epoch.saturating_sub(1),
        },
        "mls_chat" => {
            let mls = mls.ok_or("no group")?;
            mls.next_chat += 1;
            ClientMsg::MlsChat {
                id: mls.next_chat,
                epoch,
                message: B64.encode(b"an opaque MLS application message"),
            }
        }
        other => return Err(format!("no scenario for message type `{other}`")),
    })
}

// ---------------------------------------------------------------------------------------------
// Effects

struct Seen {
    x: Heard,
    olga: Heard,
    target: Option<Heard>,
    bea: Option<Heard>,
}

struct Ctx<'a> {
    msg: &'a str,
    actor: Actor,
    xpid: &'a str,
    tpid: &'a str,
    b: &'a str,
}

#[derive(Default)]
struct Effects {
    /// In meeting A: what Olga or the named participant saw.
    a: Vec<String>,
    /// What the sender saw that only an accepted message causes.
    own: Vec<String>,
    /// In meeting B (for senders of A): anything Bea received.
    b: Vec<String>,
}

fn found(msgs: &[ServerMsg], pred: impl Fn(&ServerMsg) -> bool) -> Option<String> {
    msgs.iter().find(|m| pred(m)).map(short)
}

fn has(msgs: &[ServerMsg], pred: impl Fn(&ServerMsg) -> bool) -> bool {
    msgs.iter().any(pred)
}

/// Anything this kind of message could cause, wherever it shows.
fn effects(c: &Ctx, s: &Seen) -> Effects {
    use ServerMsg as S;
    let olga = s.olga.msgs.as_slice();
    let x = s.x.msgs.as_slice();
    let t = s.target.as_ref().map_or(&[][..], |h| h.msgs.as_slice());
    let t_closed = s.target.as_ref().is_some_and(|h| h.closed);
    let mut e = Effects::default();
    let mut a = |who: &str, f: Option<String>| {
        if let Some(f) = f {
            e.a.push(format!("{who} got {f}"));
        }
    };
    let updated = |m: &S| matches!(m, S::ParticipantUpdated { .. });
    match c.msg {
        "join" => a(
            "Olga",
            found(olga, |m| {
                matches!(m, S::LobbyChanged { .. } | S::ParticipantJoined { .. })
            }),
        ),
        "media_state" | "raise_hand" | "mute" | "lower_hand" | "mls_member" => {
            a("Olga", found(olga, updated))
        }
        "set_moderator" => {
            a("Olga", found(olga, updated));
            a(
                "the named participant",
                found(t, |m| matches!(m, S::LobbyChanged { .. })),
            );
        }
        "admit" => {
            a(
                "Olga",
                found(olga, |m| {
                    matches!(m, S::ParticipantJoined { .. } | S::LobbyChanged { .. })
                }),
            );
            a(
                "the named guest",
                found(t, |m| matches!(m, S::Joined { .. })),
            );
        }
        "deny" | "remove" => {
            a(
                "Olga",
                found(olga, |m| {
                    matches!(m, S::LobbyChanged { .. } | S::ParticipantLeft { .. })
                }),
            );
            a(
                "the named participant",
                found(t, |m| matches!(m, S::Ended { .. })),
            );
            if t_closed {
                a("the named participant", Some("a closed connection".into()));
            }
        }
        "lock" | "spotlight" => a(
            "Olga",
            found(olga, |m| matches!(m, S::MeetingChanged { .. })),
        ),
        "end_meeting" => a("Olga", found(olga, |m| matches!(m, S::Ended { .. }))),
        "leave" => a(
            "Olga",
            found(olga, |m| {
                matches!(m, S::ParticipantLeft { .. } | S::LobbyChanged { .. })
            }),
        ),
        "mls_key_package" => a("Olga", found(olga, |m| matches!(m, S::MlsPending { .. }))),
        "mls_commit" => a("Olga", found(olga, |m| matches!(m, S::MlsCommit { .. }))),
        "mls_commit_rejected" => a(
            "Olga",
            found(olga, |m| {
                matches!(m, S::MlsReset { .. } | S::MlsCommit { .. })
            }),
        ),
        "mls_chat" => a("Olga", found(olga, |m| matches!(m, S::MlsChat { .. }))),
        _ => {}
    }
    let own: Option<String> = match c.msg {
        "join" => found(x, |m| matches!(m, S::LobbyWait { .. } | S::Joined { .. })),
        "offer" => found(x, |m| matches!(m, S::Answer { .. })),
        "media_state" | "raise_hand" => found(
            x,
            |m| matches!(m, S::ParticipantUpdated { participant } if participant.id == c.xpid),
        ),
        "lock" | "spotlight" => found(x, |m| matches!(m, S::MeetingChanged { .. })),
        "end_meeting" => found(x, |m| matches!(m, S::Ended { .. })),
        "leave" => s.x.closed.then(|| "a closed connection".to_string()),
        "ping" => (s.x.pongs >= 2).then(|| "pong".to_string()),
        "mls_key_package" => found(x, |m| matches!(m, S::MlsCreateGroup { .. })),
        "mls_commit" => found(x, |m| matches!(m, S::MlsCommitResult { .. })),
        "mls_chat" => found(x, |m| matches!(m, S::MlsChatResult { .. })),
        _ => None,
    };
    e.own.extend(own.map(|o| format!("the sender got {o}")));
    if let Some(bea) = &s.bea {
        e.b.extend(bea.msgs.iter().map(|m| format!("Bea (B) got {}", short(m))));
    }
    e
}

/// Whether the whole effect of a permitted message shows (for the other meeting's sender: in
/// B, to her).
fn complete(c: &Ctx, s: &Seen) -> bool {
    use ServerMsg as S;
    let other = c.actor == Actor::OtherMeeting;
    let olga = s.olga.msgs.as_slice();
    let x = s.x.msgs.as_slice();
    let t = s.target.as_ref().map_or(&[][..], |h| h.msgs.as_slice());
    // Where a broadcast of the sender's own meeting shows.
    let mine = if other { x } else { olga };
    let lobby_without = |id: &str| {
        let id = id.to_string();
        move |m: &S| matches!(m, S::LobbyChanged { lobby, .. } if lobby.iter().all(|e| e.id != id))
    };
    match c.msg {
        "join" => {
            has(x, |m| matches!(m, S::LobbyWait { .. }))
                && has(olga, |m| {
                    matches!(m, S::LobbyChanged { lobby, .. }
                        if lobby.iter().any(|e| e.display_name == "Anna Anonym"))
                })
        }
        "offer" => has(x, |m| matches!(m, S::Answer { .. })),
        "media_state" => has(mine, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.xpid && participant.screen_sharing && participant.video_muted)
        }),
        "admit" => {
            has(
                olga,
                |m| matches!(m, S::ParticipantJoined { participant } if participant.id == c.tpid),
            ) && has(t, |m| matches!(m, S::Joined { .. }))
                && has(olga, lobby_without(c.tpid))
        }
        "deny" => {
            has(t, |m| {
                matches!(
                    m,
                    S::Ended {
                        reason: EndReason::Denied,
                        ..
                    }
                )
            }) && has(olga, lobby_without(c.tpid))
        }
        "remove" => {
            has(t, |m| {
                matches!(
                    m,
                    S::Ended {
                        reason: EndReason::Removed,
                        ..
                    }
                )
            }) && has(olga, |m| {
                matches!(m, S::ParticipantLeft { participant_id, reason: LeaveReason::Removed }
                    if participant_id == c.tpid)
            })
        }
        "lock" => has(mine, |m| {
            matches!(m, S::MeetingChanged { meeting }
                if meeting.locked && (meeting.id == c.b) == other)
        }),
        "mute" => has(olga, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.tpid && participant.muted_by_moderator)
        }),
        "spotlight" => has(olga, |m| {
            matches!(m, S::MeetingChanged { meeting }
                if meeting.spotlight.as_deref() == Some(c.tpid))
        }),
        "set_moderator" => has(olga, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.tpid && participant.role == PRole::Moderator)
        }),
        "raise_hand" => has(mine, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.xpid && participant.hand_raised_at.is_some())
        }),
        "lower_hand" => has(olga, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.tpid && participant.hand_raised_at.is_none())
        }),
        "end_meeting" => has(mine, |m| {
            matches!(
                m,
                S::Ended {
                    reason: EndReason::EndedByModerator,
                    ..
                }
            )
        }),
        "leave" => match c.actor {
            Actor::OtherMeeting => s.x.closed,
            Actor::LobbyGuest | Actor::Removed => has(olga, lobby_without(c.xpid)),
            _ => has(olga, |m| {
                matches!(m, S::ParticipantLeft { participant_id, reason: LeaveReason::Left }
                    if participant_id == c.xpid)
            }),
        },
        "ping" => s.x.pongs >= 2,
        "mls_key_package" if other => has(x, |m| matches!(m, S::MlsCreateGroup { .. })),
        "mls_key_package" => has(olga, |m| {
            matches!(m, S::MlsPending { joiners, .. }
                if joiners.iter().any(|j| j.participant_id == c.xpid))
        }),
        "mls_member" => has(olga, |m| {
            matches!(m, S::ParticipantUpdated { participant }
                if participant.id == c.xpid && participant.leaf.is_some())
        }),
        "mls_commit" => {
            has(x, |m| {
                matches!(m, S::MlsCommitResult { accepted: true, .. })
            }) && has(
                olga,
                |m| matches!(m, S::MlsCommit { from_id, .. } if from_id == c.xpid),
            )
        }
        // Accepted without a reply: the sender's pong came and no error before it.
        "mls_commit_rejected" | "video_tiles" => {
            s.x.pongs >= 1 && !has(x, |m| matches!(m, S::Error { .. }))
        }
        "mls_chat" => {
            has(x, |m| matches!(m, S::MlsChatResult { accepted: true, .. }))
                && has(
                    olga,
                    |m| matches!(m, S::MlsChat { from_id, .. } if from_id == c.xpid),
                )
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Cells

struct Cell {
    actor: Option<Actor>,
    expect: Expect,
    observed: String,
    ok: bool,
    detail: String,
}

fn broken(actor: Option<Actor>, expect: Expect, why: String) -> Cell {
    Cell {
        actor,
        expect,
        observed: "broken".into(),
        ok: false,
        detail: why,
    }
}

/// Reads everyone's queue empty before a cell.
async fn drain(w: &mut World, actor: Actor) {
    if let Some(x) = w.senders.get_mut(&actor) {
        fence(x, 1).await;
    }
    fence(&mut w.olga, 1).await;
    if let Some(t) = w.target.as_mut() {
        fence(t, 1).await;
    }
    if actor != Actor::OtherMeeting {
        if let Some(bea) = w.senders.get_mut(&Actor::OtherMeeting) {
            fence(bea, 1).await;
        }
    }
}

async fn cell(w: &mut World, actor: Actor, expect: Expect) -> Cell {
    if let Err(e) = ensure_target(w).await {
        return broken(Some(actor), expect, format!("no target: {e}"));
    }
    drain(w, actor).await;
    let msg = match build(w, actor) {
        Ok(m) => m,
        Err(e) => return broken(Some(actor), expect, e),
    };
    let pongs = if w.msg == "ping" { 2 } else { 1 };
    let Some(x) = w.senders.get_mut(&actor) else {
        return broken(Some(actor), expect, "sender missing".into());
    };
    if !x.open {
        return broken(
            Some(actor),
            expect,
            "the sender's connection is closed".into(),
        );
    }
    let xpid = x.pid.clone();
    if let Err(e) = send(x, &msg).await {
        return broken(Some(actor), expect, e);
    }
    let hx = fence(x, pongs).await;
    let mut seen = Seen {
        x: hx,
        olga: fence(&mut w.olga, 1).await,
        target: None,
        bea: None,
    };
    if let Some(t) = w.target.as_mut() {
        seen.target = Some(fence(t, 1).await);
    }
    if actor != Actor::OtherMeeting {
        if let Some(bea) = w.senders.get_mut(&Actor::OtherMeeting) {
            if bea.open {
                seen.bea = Some(fence(bea, 1).await);
            }
        }
    }
    let tpid = w.target.as_ref().map(|t| t.pid.clone()).unwrap_or_default();
    let msg_name = w.msg.clone();
    let b = w.b.clone();
    let ctx = Ctx {
        msg: &msg_name,
        actor,
        xpid: &xpid,
        tpid: &tpid,
        b: &b,
    };
    // An effect that comes with the lobby list may come up to 500 ms later.
    if expect == Expect::Permitted {
        let deadline = Instant::now() + LOBBY_WAIT;
        while !complete(&ctx, &seen) && w.olga.open {
            match next(&mut w.olga, deadline).await {
                Ok(Some(m)) => seen.olga.msgs.push(m),
                _ => break,
            }
        }
    }
    let done = complete(&ctx, &seen);
    let fx = effects(&ctx, &seen);
    let error = seen.x.msgs.iter().find_map(|m| match m {
        ServerMsg::Error { code, message } => Some((*code, message.clone())),
        _ => None,
    });
    let any_effect = done || !fx.a.is_empty() || !fx.own.is_empty() || !fx.b.is_empty();
    let observed = match (&error, done) {
        (Some((code, _)), _) if any_effect => format!("{}+effect", code.as_str()),
        (Some((code, _)), _) => code.as_str().to_string(),
        (None, true) => "permit".into(),
        (None, false) if any_effect => "effect".into(),
        (None, false) if seen.x.timed_out => "no answer".into(),
        (None, false) if seen.x.closed => "closed".into(),
        (None, false) => "silent".into(),
    };
    let ok = match expect {
        Expect::Permitted if actor == Actor::OtherMeeting => {
            error.is_none() && done && fx.a.is_empty()
        }
        Expect::Permitted => error.is_none() && done && fx.b.is_empty(),
        Expect::Refused(code) => {
            error.as_ref().map(|e| e.0) == Some(code)
                && fx.a.is_empty()
                && fx.own.is_empty()
                && fx.b.is_empty()
                && !seen.x.closed
                && !seen.x.timed_out
        }
    };
    let mut detail = Vec::new();
    if let Some((code, message)) = &error {
        detail.push(format!("error {}: {message}", code.as_str()));
    }
    detail.extend(fx.a.iter().cloned());
    detail.extend(fx.own.iter().cloned());
    detail.extend(fx.b.iter().cloned());
    if !ok {
        detail.push(format!(
            "sender heard [{}]{}{}",
            seen.x.msgs.iter().map(short).collect::<Vec<_>>().join(", "),
            if seen.x.closed { ", closed" } else { "" },
            if seen.x.timed_out { ", timed out" } else { "" },
        ));
        detail.push(format!(
            "Olga heard [{}]",
            seen.olga
                .msgs
                .iter()
                .map(short)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    after_cell(w, actor, &seen, done, any_effect, &xpid).await;
    Cell {
        actor: Some(actor),
        expect,
        observed,
        ok,
        detail: detail.join("; "),
    }
}

/// Keeps the scenario consistent for the next cell: a fresh target after any effect on it, and
/// every MLS device in the epoch a permitted commit made.
async fn after_cell(
    w: &mut World,
    actor: Actor,
    seen: &Seen,
    done: bool,
    any_effect: bool,
    xpid: &str,
) {
    if any_effect {
        if let Some(t) = w.target.take() {
            let gone = t.pid.clone();
            t.c.close().await;
            // The lobby list that follows a waiting target's going (sent up to 500 ms later):
            // wait for it, so that it does not arrive during the next cell.
            let without = |m: &ServerMsg| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if lobby.iter().all(|e| e.id != gone));
            if matches!(w.msg.as_str(), "admit" | "deny") && !has(&seen.olga.msgs, without) {
                let _ = until(&mut w.olga, "the lobby without the target", without).await;
            }
        }
    }
    if w.msg != "mls_commit" {
        return;
    }
    let Some(mls) = w.mls.as_mut() else {
        return;
    };
    let Some(dev) = mls.devices.get_mut(&actor) else {
        return;
    };
    if !done {
        let _ = dev.discard_pending_commit();
        return;
    }
    let _ = dev.merge_pending_commit(now());
    let commit_from = |m: &ServerMsg| -> Option<Vec<u8>> {
        match m {
            ServerMsg::MlsCommit {
                commit, from_id, ..
            } if from_id == xpid => B64.decode(commit).ok(),
            _ => None,
        }
    };
    if let Some(bytes) = seen.olga.msgs.iter().find_map(commit_from) {
        let _ = mls.olga.process_message(&bytes, now());
    }
    for other in MEMBERS.into_iter().filter(|a| *a != actor) {
        let (Some(conn), Some(dev)) = (w.senders.get_mut(&other), mls.devices.get_mut(&other))
        else {
            continue;
        };
        if let Ok(m) = until(conn, "the commit", |m| commit_from(m).is_some()).await {
            if let Some(bytes) = commit_from(&m) {
                let _ = dev.process_message(&bytes, now());
            }
        }
    }
}

/// The control cell of a row no sender may use: the organiser herself.
async fn control(w: &mut World) -> Option<Cell> {
    if !ORGANISER_ONLY.contains(&w.msg.as_str()) {
        return None;
    }
    if let Err(e) = ensure_target(w).await {
        return Some(broken(None, P, format!("no target: {e}")));
    }
    fence(&mut w.olga, 1).await;
    let tpid = w.target.as_ref().map(|t| t.pid.clone()).unwrap_or_default();
    let msg = match build(w, Actor::Staff) {
        Ok(m) => m,
        Err(e) => return Some(broken(None, P, e)),
    };
    if let Err(e) = send(&mut w.olga, &msg).await {
        return Some(broken(None, P, e));
    }
    let olga = fence(&mut w.olga, 1).await;
    let seen = Seen {
        x: Heard::default(),
        olga,
        target: None,
        bea: None,
    };
    let b = w.b.clone();
    let msg_name = w.msg.clone();
    let ctx = Ctx {
        msg: &msg_name,
        actor: Actor::Staff,
        xpid: "",
        tpid: &tpid,
        b: &b,
    };
    let done = complete(&ctx, &seen);
    let error = seen.olga.msgs.iter().find_map(|m| match m {
        ServerMsg::Error { code, .. } => Some(code.as_str()),
        _ => None,
    });
    Some(Cell {
        actor: None,
        expect: P,
        observed: match (error, done) {
            (Some(code), _) => code.to_string(),
            (None, true) => "permit".into(),
            (None, false) => "silent".into(),
        },
        ok: done && error.is_none(),
        detail: if done {
            String::new()
        } else {
            format!(
                "Olga heard [{}]",
                seen.olga
                    .msgs
                    .iter()
                    .map(short)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    })
}

/// Runs one message's row: refused cells first, then the other meeting's, then the permitted
/// ones of meeting A (a permitted `end_meeting` or `leave` ends what later cells need).
async fn scenario(msg: String, row: [Expect; 8]) -> Result<Vec<Cell>, String> {
    let mut w = world(&msg).await.map_err(|e| format!("setting up: {e}"))?;
    mls_setup(&mut w, mls_level(&msg))
        .await
        .map_err(|e| format!("setting up the MLS group: {e}"))?;
    let mut order: Vec<Actor> = ACTORS.to_vec();
    order.sort_by_key(|a| {
        let rank = match (row[a.column()], *a) {
            (Expect::Refused(_), _) => 0,
            (Expect::Permitted, Actor::OtherMeeting) => 1,
            (Expect::Permitted, _) => 2,
        };
        (rank, *a)
    });
    let mut cells = Vec::new();
    for actor in order {
        cells.push(cell(&mut w, actor, row[actor.column()]).await);
    }
    cells.extend(control(&mut w).await);
    Ok(cells)
}

// ---------------------------------------------------------------------------------------------
// The tests

/// The table has exactly one row per client message type of the protocol, and every row has a
/// permitted cell or a control.
#[test]
fn the_table_names_every_client_message_and_no_other() {
    let protocol = protocol_types();
    let table: Vec<&str> = SPEC.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&String> = protocol
        .iter()
        .filter(|p| !table.contains(&p.as_str()))
        .collect();
    let stale: Vec<&&str> = table
        .iter()
        .filter(|t| !protocol.iter().any(|p| p == **t))
        .collect();
    let twice: Vec<&&str> = table
        .iter()
        .enumerate()
        .filter(|(i, t)| table[..*i].contains(t))
        .map(|(_, t)| t)
        .collect();
    let no_control: Vec<&str> = SPEC
        .iter()
        .filter(|(n, row)| !row.contains(&P) && !ORGANISER_ONLY.contains(n))
        .map(|(n, _)| *n)
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty() && twice.is_empty() && no_control.is_empty(),
        "client messages without a row: {missing:?}; rows for messages the protocol does not \
         have: {stale:?}; rows given twice: {twice:?}; rows without a permitted cell or a \
         control: {no_control:?}"
    );
}

/// Every client message against every sender, as [`SPEC`] says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_message_against_every_sender() {
    let started = std::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let mut runs = Vec::new();
    for name in protocol_types() {
        let row = SPEC.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
        let gate = gate.clone();
        let msg = name.clone();
        let run = tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let Some(row) = row else {
                return Err(format!("no row in the table for `{msg}`"));
            };
            match tokio::time::timeout(SCENARIO_LIMIT, scenario(msg, row)).await {
                Ok(r) => r,
                Err(_) => Err(format!("not done within {SCENARIO_LIMIT:?}")),
            }
        });
        runs.push((name, run));
    }
    let mut rows: Vec<(String, Result<Vec<Cell>, String>)> = Vec::new();
    for (name, run) in runs {
        let result = match run.await {
            Ok(r) => r,
            Err(e) => Err(format!("the scenario panicked: {e}")),
        };
        rows.push((name, result));
    }

    // The matrix: observed outcome per cell, ✗ where it differs from the table.
    let mut table: Vec<Vec<String>> = vec![{
        let mut h = vec!["message".to_string()];
        h.extend(ACTORS.iter().map(|a| a.label().to_string()));
        h.push("organiser (control)".into());
        h
    }];
    let mut mismatches = Vec::new();
    for (name, result) in &rows {
        let mut line = vec![name.clone()];
        match result {
            Err(e) => {
                line.extend(ACTORS.iter().map(|_| "✗ broken".to_string()));
                line.push(String::new());
                mismatches.push(format!("{name}: {e}"));
            }
            Ok(cells) => {
                let mut by_column = vec![String::new(); ACTORS.len() + 1];
                for c in cells {
                    let col = c.actor.map_or(ACTORS.len(), Actor::column);
                    by_column[col] = if c.ok {
                        c.observed.clone()
                    } else {
                        format!("✗ {} (want {})", c.observed, c.expect.label())
                    };
                    if !c.ok {
                        mismatches.push(format!(
                            "{name} × {}: expected {}, observed {}: {}",
                            c.actor.map_or("organiser (control)", Actor::label),
                            c.expect.label(),
                            c.observed,
                            c.detail
                        ));
                    }
                }
                line.extend(by_column);
            }
        }
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    eprintln!(
        "\nsignaling authorization matrix: observed outcome per message and sender \
         (✗: differs from the table; {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}", w = *w))
            .collect();
        eprintln!("  {}", line.join(" │ ").trim_end());
    }
    for m in &mismatches {
        eprintln!("✗ {m}");
    }
    assert!(
        mismatches.is_empty(),
        "{} cell(s) differ from the table:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
