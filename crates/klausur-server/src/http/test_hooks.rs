//! Test-only hooks, compiled in only with the cargo feature `test-hooks` (never in a release
//! build that users run): they let the browser tests play a malicious server.
//!
//! `POST /api/test/meetings/{id}/inject-ghost` makes the running meeting do what a compromised
//! server would try in order to listen in unseen, all at once:
//!
//! 1. announce a participant ("Geist") who is not in the MLS group;
//! 2. send the members a commit that adds a ghost, made by the server in a group of its own with
//!    the meeting's group id and a credential from the server's real identity CA (it holds the
//!    CA key, but no group secret; with a remote CA, from a throwaway CA);
//! 3. put a joiner in the pending list whose key package claims the organiser's user id but
//!    carries a credential signed by another CA.
//!
//! Every client must reject the commit and the joiner and flag the ghost participant.
//!
//! With `KLAUSUR_TEST_RECORD_RTP=FILE` in the environment, every RTP packet a room forwards is
//! appended to FILE as one JSON line (`peer`, `ssrc`, `seq`, `ts`, `pt`, `marker`, `codec`,
//! `payload` in base64): what the server sees of the media, for the "no plaintext reaches the
//! server" test.
//!
//! `POST /api/test/dialin/withhold-frame-key` with `{"on": true}` makes the dial-in gateway's
//! clients send frames no member can decrypt (as if the gateway's frame key were withheld from
//! the group): the negative control of the browser test that hears a telephone caller.
//!
//! `POST /api/test/meetings/{id}/panic-media` makes the meeting's media core panic on its next
//! call, as a bug in the room core or str0m would: the test checks that only that meeting's
//! media is affected and that it comes back. `POST /api/test/meetings/{id}/panic-media-worker`
//! makes the media worker the meeting is placed on panic outside any room, as a bug in the
//! worker loop would: the worker is restarted and the meetings on it connect again.
//!
//! `POST /api/test/meetings/{id}/hide/{participant}` tells everyone else that the participant
//! left, while it stays connected and keeps receiving media: the members' clients remove it from
//! the group, and the test checks it cannot decrypt what follows (forward secrecy on leave).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use klausur_e2ee::{CaVerifier, IdentityCa, Member, MemberConfig, ParticipantKind, SigningKey};
use rand::RngCore as _;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use crate::http::http_error::HookFailed;
use crate::http::http_error::{ApiError, Refusal};
use crate::meeting::{Forgery, MeetingCmd};
use crate::state::AppState;

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/test/meetings/{id}/inject-ghost", post(inject_ghost))
        .route("/api/test/meetings/{id}/hide/{participant}", post(hide))
        .route(
            "/api/test/meetings/{id}/drop-media/{participant}",
            post(drop_media),
        )
        .route("/api/test/meetings/{id}/panic-media", post(panic_media))
        .route(
            "/api/test/meetings/{id}/panic-media-worker",
            post(panic_media_worker),
        )
        .route(
            "/api/test/dialin/withhold-frame-key",
            post(withhold_frame_key),
        )
}

async fn withhold_frame_key(Json(body): Json<Value>) -> Json<Value> {
    let on = body["on"].as_bool().unwrap_or(false);
    klausur_client::session::TEST_WITHHOLD_FRAME_KEY
        .store(on, std::sync::atomic::Ordering::Relaxed);
    Json(json!({ "withhold": on }))
}

async fn hide(
    State(state): State<AppState>,
    Path((id, participant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    about_participant(&state, &id, &participant, |peer, reply| MeetingCmd::Hide {
        peer,
        reply,
    })
    .await?;
    Ok(Json(json!({ "hidden": participant })))
}

/// The media server forgets a participant's media connection; signaling stays.
async fn drop_media(
    State(state): State<AppState>,
    Path((id, participant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    about_participant(&state, &id, &participant, |peer, reply| {
        MeetingCmd::DropMedia { peer, reply }
    })
    .await?;
    Ok(Json(json!({ "media_dropped": participant })))
}

/// The meeting's media core panics, as a bug in it would: the panic must stay in that room.
async fn panic_media(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    panic_meeting_media(&state, id, false).await
}

/// The media worker the meeting is placed on panics outside its rooms, as a bug in the worker
/// loop would: the worker must be restarted, the other workers carry on.
async fn panic_media_worker(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    panic_meeting_media(&state, id, true).await
}

async fn panic_meeting_media(
    state: &AppState,
    id: String,
    whole_worker: bool,
) -> Result<Json<Value>, ApiError> {
    let not_found = || Refusal::NotFound("no such meeting".into());
    let tx = state.registry.running_actor(&id).ok_or_else(not_found)?;
    let (reply, done) = oneshot::channel();
    tx.send(MeetingCmd::PanicMedia {
        whole_worker,
        reply,
    })
    .await
    .map_err(|_| not_found())?;
    done.await.map_err(|_| not_found())?;
    Ok(Json(json!({ "panicked": id })))
}

/// Sends the running meeting `id` a command about `participant` and waits for its answer
/// (whether the participant was there); 404 when the meeting or participant is not.
async fn about_participant(
    state: &AppState,
    id: &str,
    participant: &str,
    command: impl FnOnce(klausur_room::PeerId, oneshot::Sender<bool>) -> MeetingCmd,
) -> Result<(), Refusal> {
    let not_found = || Refusal::NotFound("no such participant".into());
    let tx = state.registry.running_actor(id).ok_or_else(not_found)?;
    let peer = crate::meeting::parse_participant_id(participant).ok_or_else(not_found)?;
    let (reply, done) = oneshot::channel();
    tx.send(command(peer, reply))
        .await
        .map_err(|_| not_found())?;
    if done.await.unwrap_or(false) {
        Ok(())
    } else {
        Err(not_found())
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn device(ca: &IdentityCa, user_id: &str, name: &str) -> anyhow::Result<Member> {
    let key = random_key();
    let t = now().as_secs();
    let cred = ca.issue(
        user_id,
        name,
        ParticipantKind::Staff,
        &key.verifying_key(),
        t.saturating_sub(60),
        t + 3600,
    )?;
    Ok(Member::new(
        cred,
        key,
        CaVerifier {
            ca_public_key: ca.public_key(),
        },
        MemberConfig::default(),
    )?)
}

/// A commit adding a ghost to a group the server made itself under `group_id`.
fn forged_commit(ca: &IdentityCa, group_id: &str) -> anyhow::Result<Vec<u8>> {
    let mut server = device(ca, "user:0", "Server")?;
    let ghost = device(ca, "user:0", "Geist")?;
    server.create_group(group_id.as_bytes(), now())?;
    let out = server.add(&[ghost.key_package()?], now())?;
    Ok(out.commit)
}

/// A key package claiming `user_id` with a credential from a CA nobody trusts.
fn foreign_key_package(user_id: &str) -> anyhow::Result<Vec<u8>> {
    let foreign = IdentityCa::new(random_key());
    Ok(device(&foreign, user_id, "Geist")?.key_package()?)
}

async fn inject_ghost(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_running = || Refusal::NotFound("meeting not running".into());
    let tx = state.registry.running_actor(&id).ok_or_else(not_running)?;
    let organiser = state
        .store
        .meeting(&id)
        .await?
        .map(|m| format!("user:{}", m.organiser_id))
        .ok_or_else(not_running)?;
    let st = state.clone();
    let key_package = foreign_key_package(&organiser).map_err(HookFailed)?;
    let (reply, done) = oneshot::channel();
    let forgery = Forgery {
        commit: Box::new(move |group_id: &str| match st.identity.local_ca() {
            Some(ca) => forged_commit(ca, group_id).ok(),
            // With a remote CA the server holds no CA key: any CA does for the forgery.
            None => forged_commit(&IdentityCa::new(random_key()), group_id).ok(),
        }),
        key_package,
        reply,
    };
    tx.send(MeetingCmd::InjectGhost(forgery))
        .await
        .map_err(|_| not_running())?;
    let report = done.await.map_err(|_| not_running())?;
    Ok(Json(json!(report)))
}
