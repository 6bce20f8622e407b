//! One call: the decision on an incoming INVITE ([`IncomingCall`]) and the established call
//! ([`ActiveCall`]), each backed by a task that owns ezk's INVITE acceptor and session.
//!
//! The task ends when the call ends: the caller's BYE or CANCEL, our BYE ([`ActiveCall::hangup`],
//! dropping the [`ActiveCall`], the call-duration limit, endpoint shutdown), or an INVITE nobody
//! decided on in time (480). Nothing of a call outlives its task.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ezk_sip_core::{Endpoint, IncomingRequest, MayTake};
use ezk_sip_types::{Method, Name, StatusCode};
use ezk_sip_ua::dialog::{register_usage, DialogKey, Usage};
use ezk_sip_ua::invite::acceptor::InviteAcceptor;
use ezk_sip_ua::invite::session::{InviteSession, InviteSessionEvent, ReInviteReceived};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::inspect::{check_sdp_body, ALLOW};
use super::sdp::{parse_remote_sdp, LocalMedia, LocalSdp, MediaFormat, RemoteSdp};
use super::state::{CallSlot, DialogTrack, EndpointState};

/// How long to wait for a BYE to be answered.
const BYE_TIMEOUT: Duration = Duration::from_secs(35);
/// How long [`IncomingCall::accept`] waits for the ACK (ezk gives up after about 9 s).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(40);

/// Errors of call handling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the caller cancelled the call")]
    Cancelled,
    #[error("the call is no longer there (timed out or the endpoint shut down)")]
    Gone,
    #[error("no ACK came for our answer")]
    NoAck,
    #[error("the local media does not fit the offer: {0}")]
    InvalidLocalMedia(String),
    #[error("the caller's SDP answer is not usable: {0}")]
    BadRemoteAnswer(String),
    #[error("{0} is not a final failure status (300-699)")]
    InvalidStatus(u16),
    #[error("SIP: {0}")]
    Sip(String),
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller hung up (BYE).
    RemoteHangup,
    /// We hung up ([`ActiveCall::hangup`]).
    LocalHangup,
    /// The configured maximum call duration was reached; we sent BYE.
    DurationLimit,
    /// The session timer ran out or the session broke down (transaction timeout).
    Timeout,
    /// The endpoint shut down; we sent BYE.
    Shutdown,
}

/// What happened to an established call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A re-INVITE or UPDATE changed the remote media (new address, hold, resume). Already
    /// answered with our same media; send RTP to the new address from now on.
    RemoteMediaChanged(RemoteSdp),
    /// The call is over.
    Ended(EndReason),
}

/// Facts about a call, shared by [`IncomingCall`] and [`ActiveCall`].
#[derive(Clone)]
pub struct CallInfo {
    /// A number for logs, unique per endpoint.
    pub id: u64,
    caller: Option<String>,
    called: Option<String>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: &'static str,
}

impl CallInfo {
    pub(crate) fn new(
        id: u64,
        caller: Option<String>,
        called: Option<String>,
        source: SocketAddr,
        transport: &'static str,
    ) -> CallInfo {
        CallInfo {
            id,
            caller,
            called,
            source,
            transport,
        }
    }

    /// The caller's number as the trunk gave it (the From user part), if any. Personal data:
    /// never log it, not even in part; [`CallInfo::caller_suffix`] is what the participant list may show.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The number that was dialled (the Request-URI user part), if any.
    pub fn called(&self) -> Option<&str> {
        self.called.as_deref()
    }

    /// The last four digits of the caller's number (for display and logs).
    pub fn caller_suffix(&self) -> Option<String> {
        let digits: Vec<char> = self
            .caller
            .as_deref()?
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let start = digits.len().saturating_sub(4);
        let suffix: String = digits.get(start..)?.iter().collect();
        (!suffix.is_empty()).then_some(suffix)
    }
}

impl std::fmt::Debug for CallInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallInfo")
            .field("id", &self.id)
            .field("caller_suffix", &self.caller_suffix())
            .field("source", &self.source)
            .field("transport", &self.transport)
            .finish()
    }
}

pub(crate) enum Decision {
    Accept(LocalMedia, oneshot::Sender<Result<ActiveCall, CallError>>),
    Reject(u16, oneshot::Sender<Result<(), CallError>>),
}

/// An INVITE waiting for a decision: [`IncomingCall::accept`] or [`IncomingCall::reject`].
/// Dropping it rejects the call with 480 Temporarily Unavailable; so does not deciding within
/// the endpoint's `decision_timeout`.
pub struct IncomingCall {
    info: CallInfo,
    offer: Option<RemoteSdp>,
    decision: oneshot::Sender<Decision>,
    cancelled: watch::Receiver<bool>,
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCall")
            .field("info", &self.info)
            .field("offer", &self.offer)
            .finish_non_exhaustive()
    }
}

impl IncomingCall {
    /// Who calls, from where.
    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// The SDP offer of the INVITE, or `None` for a late offer (then [`IncomingCall::accept`]
    /// sends our offer and the answer comes with the ACK).
    pub fn offer(&self) -> Option<&RemoteSdp> {
        self.offer.as_ref()
    }

    /// Resolves when the caller gave up (CANCEL) before a decision.
    pub async fn cancelled(&mut self) {
        until_true(&mut self.cancelled).await;
    }

    /// Answers 200 OK with `local` and waits for the ACK.
    ///
    /// With an offer, `local` is the answer: every format must be one of the offer's (same
    /// payload type and encoding), typically the chosen codec plus telephone-event. Without an
    /// offer, `local` is our offer (several formats) and the ACK's answer is parsed into
    /// [`ActiveCall::remote`].
    pub async fn accept(self, local: LocalMedia) -> Result<ActiveCall, CallError> {
        let (tx, rx) = oneshot::channel();
        let cancelled = self.cancelled.clone();
        if self.decision.send(Decision::Accept(local, tx)).is_err() {
            return Err(gone(&cancelled));
        }
        match timeout(ACCEPT_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(gone(&cancelled)),
        }
    }

    /// Rejects the call with a final status (300-699, e.g. 486 Busy Here, 480, 603 Decline).
    pub async fn reject(self, status: u16) -> Result<(), CallError> {
        if !(300..=699).contains(&status) {
            return Err(CallError::InvalidStatus(status));
        }
        let (tx, rx) = oneshot::channel();
        let cancelled = self.cancelled.clone();
        if self.decision.send(Decision::Reject(status, tx)).is_err() {
            return Err(gone(&cancelled));
        }
        match timeout(BYE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(gone(&cancelled)),
        }
    }
}

/// Resolves once the flag is true (never if its sender is gone while false).
pub(crate) async fn until_true(flag: &mut watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn gone(cancelled: &watch::Receiver<bool>) -> CallError {
    if *cancelled.borrow() {
        CallError::Cancelled
    } else {
        CallError::Gone
    }
}

/// State of an established call, published by its task.
#[derive(Debug, Clone)]
struct CallState {
    remote: RemoteSdp,
    version: u64,
    ended: Option<EndReason>,
}

enum Command {
    Hangup(oneshot::Sender<Result<(), CallError>>),
}

/// An established call (the ACK came). Dropping it hangs up (BYE) in the background.
pub struct ActiveCall {
    info: CallInfo,
    local: LocalMedia,
    codec: MediaFormat,
    telephone_event: Option<MediaFormat>,
    state: watch::Receiver<CallState>,
    seen_version: u64,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for ActiveCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveCall")
            .field("info", &self.info)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl ActiveCall {
    /// Who calls, from where.
    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// The remote media as last negotiated (the offer, the ACK's answer, or a re-INVITE).
    pub fn remote(&self) -> RemoteSdp {
        self.state.borrow().remote.clone()
    }

    /// Our media (as answered or offered).
    pub fn local(&self) -> &LocalMedia {
        &self.local
    }

    /// The negotiated codec (payload type as used on the wire).
    pub fn codec(&self) -> &MediaFormat {
        &self.codec
    }

    /// The negotiated telephone-event format, if both sides have it.
    pub fn telephone_event(&self) -> Option<&MediaFormat> {
        self.telephone_event.as_ref()
    }

    /// The next event. After [`CallEvent::Ended`] it returns `Ended` again.
    pub async fn next_event(&mut self) -> CallEvent {
        loop {
            {
                let state = self.state.borrow_and_update();
                if let Some(reason) = state.ended {
                    return CallEvent::Ended(reason);
                }
                if state.version != self.seen_version {
                    self.seen_version = state.version;
                    return CallEvent::RemoteMediaChanged(state.remote.clone());
                }
            }
            if self.state.changed().await.is_err() {
                let ended = self.state.borrow().ended;
                return CallEvent::Ended(ended.unwrap_or(EndReason::Shutdown));
            }
        }
    }

    /// Hangs up: sends BYE and waits (bounded) for the answer. A call that already ended
    /// returns `Ok`.
    pub async fn hangup(self) -> Result<(), CallError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Hangup(tx)).await.is_err() {
            return Ok(());
        }
        match timeout(BYE_TIMEOUT + Duration::from_secs(5), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(CallError::Sip("BYE not answered".into())),
        }
    }
}

/// Where incoming calls go: the application's channel, closed at shutdown.
pub(crate) struct Inbox {
    tx: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<IncomingCall>>>,
}

impl Inbox {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<IncomingCall>) -> Inbox {
        Inbox {
            tx: std::sync::Mutex::new(Some(tx)),
        }
    }

    /// No more calls for the application.
    pub(crate) fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// Hands an incoming call to the application; `Err(status)` if it cannot take it.
    fn deliver(&self, call: IncomingCall, state: &EndpointState) -> Result<(), u16> {
        let Ok(tx) = self.tx.lock() else {
            return Err(503);
        };
        let Some(tx) = tx.as_ref() else {
            return Err(503);
        };
        match tx.try_send(call) {
            Ok(()) => {
                state.stats.calls_offered.inc();
                Ok(())
            }
            Err(_) => {
                state.stats.busy.inc();
                Err(503)
            }
        }
    }
}

/// Everything a call task needs, created by the call layer.
pub(crate) struct NewCall {
    pub(crate) endpoint: Endpoint,
    pub(crate) state: Arc<EndpointState>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) info: CallInfo,
    pub(crate) offer: Option<RemoteSdp>,
    pub(crate) acceptor: InviteAcceptor,
    pub(crate) dialog_key: DialogKey,
    pub(crate) slot: CallSlot,
    pub(crate) track: DialogTrack,
}

/// Hands the call to the application and runs it. Returns when the call is over.
pub(crate) async fn run_call(call: NewCall) {
    let NewCall {
        endpoint,
        state,
        inbox,
        info,
        offer,
        mut acceptor,
        dialog_key,
        slot,
        track,
    } = call;
    // In the dialog from the start: a request the caller sends right after its ACK (a REFER, say)
    // can reach the dialog before `respond_success` has returned, and without a usage of ours
    // ezk answers it 404.
    let established = Arc::new(OnceLock::new());
    let usage = register_usage(
        endpoint.clone(),
        dialog_key,
        CallUsage {
            shared: established.clone(),
        },
    );
    let (decision_tx, decision_rx) = oneshot::channel();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let incoming = IncomingCall {
        info: info.clone(),
        offer: offer.clone(),
        decision: decision_tx,
        cancelled: cancel_rx,
    };
    if let Err(status) = inbox.deliver(incoming, &state) {
        let _ = acceptor_respond(acceptor, status).await;
        return;
    }
    tracing::info!(
        call = info.id,
        source = %info.source,
        "incoming call"
    );

    let mut shutdown = state.shutdown_signal();
    let decision = tokio::select! {
        d = decision_rx => d.ok(),
        _ = acceptor.cancelled() => {
            let _ = cancel_tx.send(true);
            tracing::info!(call = info.id, "caller cancelled");
            return;
        }
        _ = sleep(state.decision_timeout()) => None,
        _ = until_true(&mut shutdown) => None,
    };
    let (local, reply) = match decision {
        None => {
            let _ = acceptor_respond(acceptor, 480).await;
            return;
        }
        Some(Decision::Reject(status, reply)) => {
            let result = acceptor_respond(acceptor, status).await;
            let _ = reply.send(result);
            return;
        }
        Some(Decision::Accept(local, reply)) => (local, reply),
    };

    // Early offer: our media must answer it. Late offer: ours is an offer.
    let mut local_sdp = LocalSdp::new(local.clone());
    if let Some(offer) = &offer {
        if let Err(e) = check_answer(offer, &local) {
            let _ = acceptor_respond(acceptor, 488).await;
            let _ = reply.send(Err(e));
            return;
        }
        local_sdp.set_direction(offer.direction.answer());
        local_sdp.version = 1;
    }
    let mut response = match acceptor.create_response(StatusCode::OK, None).await {
        Ok(r) => r,
        Err(_) => {
            let _ = reply.send(Err(gone(&cancel_tx.subscribe())));
            return;
        }
    };
    response
        .msg
        .headers
        .insert(Name::CONTENT_TYPE, "application/sdp");
    response.msg.body = Bytes::from(local_sdp.render());
    let (mut session, ack) = match acceptor.respond_success(response).await {
        Ok(ok) => ok,
        Err(e) => {
            let err = match e {
                ezk_sip_ua::invite::acceptor::Error::RequestTerminated => CallError::Cancelled,
                ezk_sip_ua::invite::acceptor::Error::Core(ezk_sip_core::Error::RequestTimedOut) => {
                    CallError::NoAck
                }
                other => CallError::Sip(other.to_string()),
            };
            tracing::info!(call = info.id, error = %err, "answer failed");
            let _ = reply.send(Err(err));
            return;
        }
    };

    // The negotiated media.
    let negotiated = match &offer {
        Some(offer) => Ok((offer.clone(), pick(&local.formats, &local.formats))),
        None => match parse_answer(&ack) {
            Ok(remote) => {
                let agreed = pick(&remote.formats, &local.formats);
                Ok((remote, agreed))
            }
            Err(e) => Err(e),
        },
    };
    let (remote, (codec, telephone_event)) = match negotiated {
        Ok((remote, (Some(codec), te))) => (remote, (codec, te)),
        Ok((_, (None, _))) => {
            let _ = timeout(BYE_TIMEOUT, session.terminate()).await;
            let _ = reply.send(Err(CallError::BadRemoteAnswer("no common codec".into())));
            return;
        }
        Err(e) => {
            let _ = timeout(BYE_TIMEOUT, session.terminate()).await;
            let _ = reply.send(Err(e));
            return;
        }
    };
    if offer.is_none() {
        local_sdp.set_direction(remote.direction.answer());
    }

    let (state_tx, state_rx) = watch::channel(CallState {
        remote,
        version: 0,
        ended: None,
    });
    let shared = Arc::new(CallShared {
        local: Mutex::new(local_sdp),
        state: state_tx,
        codec: codec.clone(),
    });
    let _ = established.set(shared.clone());
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let active = ActiveCall {
        info: info.clone(),
        local,
        codec,
        telephone_event,
        state: state_rx,
        seen_version: 0,
        commands: cmd_tx,
    };
    if reply.send(Ok(active)).is_err() {
        // Nobody waits for the call any more: hang up.
        let _ = timeout(BYE_TIMEOUT, session.terminate()).await;
        return;
    }
    state.stats.calls_answered.inc();
    tracing::info!(call = info.id, "call established");
    let reason = drive_session(&mut session, &shared, cmd_rx, &state, &track, info.id).await;
    shared.end(reason);
    tracing::info!(call = info.id, reason = ?reason, "call ended");
    drop(usage);
    drop(session);
    drop(track);
    drop(slot);
}

/// Answers the INVITE with a final failure status.
async fn acceptor_respond(acceptor: InviteAcceptor, status: u16) -> Result<(), CallError> {
    let response = acceptor
        .create_response(StatusCode::from(status), None)
        .await
        .map_err(|_| CallError::Cancelled)?;
    acceptor
        .respond_failure(response)
        .await
        .map_err(|e| match e {
            ezk_sip_ua::invite::acceptor::Error::RequestTerminated => CallError::Cancelled,
            other => CallError::Sip(other.to_string()),
        })
}

/// Every format of an answer must be one of the offer's.
fn check_answer(offer: &RemoteSdp, local: &LocalMedia) -> Result<(), CallError> {
    if local.formats.is_empty() {
        return Err(CallError::InvalidLocalMedia("no formats".into()));
    }
    for f in &local.formats {
        let offered = offer
            .formats
            .iter()
            .any(|o| o.payload_type == f.payload_type && o.same_encoding(f));
        if !offered {
            return Err(CallError::InvalidLocalMedia(format!("{f} was not offered")));
        }
    }
    if local.formats.iter().all(MediaFormat::is_telephone_event) {
        return Err(CallError::InvalidLocalMedia("no codec".into()));
    }
    Ok(())
}

/// The first codec and telephone-event of `preferred` that `allowed` also has (by payload type
/// and encoding).
fn pick(
    preferred: &[MediaFormat],
    allowed: &[MediaFormat],
) -> (Option<MediaFormat>, Option<MediaFormat>) {
    let common = |f: &&MediaFormat| {
        allowed
            .iter()
            .any(|a| a.payload_type == f.payload_type && a.same_encoding(f))
    };
    let codec = preferred
        .iter()
        .filter(common)
        .find(|f| !f.is_telephone_event())
        .cloned();
    let te = preferred
        .iter()
        .filter(common)
        .find(|f| f.is_telephone_event())
        .cloned();
    (codec, te)
}

fn parse_answer(ack: &IncomingRequest) -> Result<RemoteSdp, CallError> {
    if ack.body.is_empty() {
        return Err(CallError::BadRemoteAnswer("the ACK has no SDP".into()));
    }
    check_sdp_body(&ack.headers, &ack.body)
        .map_err(|(_, reason)| CallError::BadRemoteAnswer(reason.into()))?;
    parse_remote_sdp(&ack.body).map_err(|e| CallError::BadRemoteAnswer(e.to_string()))
}

/// State shared between the call task and the in-dialog usage.
struct CallShared {
    local: Mutex<LocalSdp>,
    state: watch::Sender<CallState>,
    codec: MediaFormat,
}

impl CallShared {
    /// Takes a new remote description (if it keeps our codec): `Ok(our SDP)` to answer with.
    fn take_offer(&self, remote: RemoteSdp) -> Result<String, ()> {
        let keeps_codec = remote
            .formats
            .iter()
            .any(|f| f.payload_type == self.codec.payload_type && f.same_encoding(&self.codec));
        if !keeps_codec {
            return Err(());
        }
        let sdp = {
            let Ok(mut local) = self.local.lock() else {
                return Err(());
            };
            local.set_direction(remote.direction.answer());
            local.render()
        };
        self.update_remote(remote);
        Ok(sdp)
    }

    fn update_remote(&self, remote: RemoteSdp) {
        self.state.send_if_modified(|s| {
            if s.remote == remote {
                false
            } else {
                s.remote = remote;
                s.version += 1;
                true
            }
        });
    }

    fn local_sdp(&self) -> Option<String> {
        self.local.lock().ok().map(|l| l.render())
    }

    fn end(&self, reason: EndReason) {
        self.state.send_modify(|s| {
            if s.ended.is_none() {
                s.ended = Some(reason);
            }
        });
    }
}

/// Runs an established call until it ends.
async fn drive_session(
    session: &mut InviteSession,
    shared: &Arc<CallShared>,
    mut commands: mpsc::Receiver<Command>,
    state: &Arc<EndpointState>,
    track: &DialogTrack,
    id: u64,
) -> EndReason {
    let deadline = Instant::now() + state.max_call_duration();
    let mut shutdown = state.shutdown_signal();
    enum Next {
        Continue,
        Ended(EndReason),
        Hangup(Option<oneshot::Sender<Result<(), CallError>>>),
        Deadline,
        Shutdown,
    }
    loop {
        let next = tokio::select! {
            event = session.drive() => match event {
                Ok(InviteSessionEvent::Bye(bye)) => {
                    if let Err(e) = bye.process_default().await {
                        tracing::debug!(call = id, error = %e, "answering BYE failed");
                    }
                    Next::Ended(EndReason::RemoteHangup)
                }
                Ok(InviteSessionEvent::ReInviteReceived(re)) => {
                    handle_reinvite(re, shared, id).await;
                    Next::Continue
                }
                Ok(InviteSessionEvent::RefreshNeeded(refresh)) => {
                    if let Err(e) = refresh.process_default().await {
                        tracing::info!(call = id, error = %e, "session refresh failed");
                        Next::Ended(EndReason::Timeout)
                    } else {
                        Next::Continue
                    }
                }
                Ok(InviteSessionEvent::Terminated) => Next::Ended(EndReason::Timeout),
                Err(e) => {
                    tracing::info!(call = id, error = %e, "session failed");
                    Next::Ended(EndReason::Timeout)
                }
            },
            command = commands.recv() => match command {
                Some(Command::Hangup(reply)) => Next::Hangup(Some(reply)),
                None => Next::Hangup(None),
            },
            _ = sleep_until(deadline) => Next::Deadline,
            _ = until_true(&mut shutdown) => Next::Shutdown,
            // A BYE after a CSeq gap, answered by the guard layer.
            _ = track.remote_bye.notified() => Next::Ended(EndReason::RemoteHangup),
        };
        let (reason, reply) = match next {
            Next::Continue => continue,
            Next::Ended(reason) => return reason,
            Next::Hangup(reply) => (EndReason::LocalHangup, reply),
            Next::Deadline => {
                tracing::info!(call = id, "call duration limit reached");
                (EndReason::DurationLimit, None)
            }
            Next::Shutdown => (EndReason::Shutdown, None),
        };
        // Tell the application before the BYE round trip.
        shared.end(reason);
        let result = match timeout(BYE_TIMEOUT, session.terminate()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(CallError::Sip(e.to_string())),
            Err(_) => Err(CallError::Sip("BYE not answered".into())),
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        return reason;
    }
}

async fn handle_reinvite(re: ReInviteReceived<'_>, shared: &CallShared, id: u64) {
    let has_body = !re.invite.body.is_empty();
    let answer = if has_body {
        check_sdp_body(&re.invite.headers, &re.invite.body)
            .map_err(|(status, _)| status)
            .and_then(|()| parse_remote_sdp(&re.invite.body).map_err(|_| 488))
            .and_then(|remote| shared.take_offer(remote).map_err(|()| 488))
    } else {
        // An offer-less re-INVITE: we offer our media; the answer comes with the ACK.
        shared.local_sdp().ok_or(500)
    };
    match answer {
        Ok(sdp) => {
            let mut response =
                match re
                    .session
                    .dialog
                    .create_response(&re.invite, StatusCode::OK, None)
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(call = id, error = %e, "re-INVITE response failed");
                        return;
                    }
                };
            response
                .msg
                .headers
                .insert(Name::CONTENT_TYPE, "application/sdp");
            response.msg.body = Bytes::from(sdp);
            match re.respond_success(response).await {
                Ok(ack) if !has_body => {
                    if let Ok(remote) = parse_answer(&ack) {
                        if shared.take_offer(remote).is_err() {
                            tracing::info!(call = id, "re-INVITE answer dropped our codec");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::info!(call = id, error = %e, "re-INVITE not acknowledged"),
            }
        }
        Err(status) => {
            if let Ok(response) =
                re.session
                    .dialog
                    .create_response(&re.invite, StatusCode::from(status), None)
            {
                if let Err(e) = re.transaction.respond_failure(response).await {
                    tracing::debug!(call = id, error = %e, "re-INVITE rejection failed");
                }
            }
        }
    }
}

/// Answers in-dialog UPDATE (a new offer, RFC 3311), INFO and OPTIONS of a call, and refuses
/// the methods it does not support. Registered before the call is established; an offer that
/// comes before then gets 491 (Request Pending: the INVITE's own offer and answer are not done).
struct CallUsage {
    shared: Arc<OnceLock<Arc<CallShared>>>,
}

#[async_trait::async_trait]
impl Usage for CallUsage {
    fn name(&self) -> &'static str {
        "klausur-call"
    }

    async fn receive(&self, endpoint: &Endpoint, request: MayTake<'_, IncomingRequest>) {
        let method = request.line.method.clone();
        if method == Method::INVITE
            || method == Method::ACK
            || method == Method::BYE
            || method == Method::CANCEL
        {
            return;
        }
        let mut request = request.take();
        if method != Method::UPDATE && method != Method::INFO && method != Method::OPTIONS {
            // REFER (no transfers), PRACK (we send no reliable provisional responses) and
            // anything else.
            let known = [
                Method::REFER,
                Method::PRACK,
                Method::NOTIFY,
                Method::SUBSCRIBE,
                Method::MESSAGE,
                Method::REGISTER,
                Method::PUBLISH,
            ];
            let status = if known.contains(&method) { 405 } else { 501 };
            let mut response = endpoint.create_response(&request, StatusCode::from(status), None);
            response.msg.headers.insert(Name::ALLOW, ALLOW);
            let tsx = endpoint.create_server_tsx(&mut request);
            if let Err(e) = tsx.respond(response).await {
                tracing::debug!(error = %e, "in-dialog response failed");
            }
            return;
        }
        let (status, body) = if method == Method::UPDATE && !request.body.is_empty() {
            match check_sdp_body(&request.headers, &request.body)
                .map_err(|(status, _)| status)
                .and_then(|()| parse_remote_sdp(&request.body).map_err(|_| 488))
                .and_then(|remote| match self.shared.get() {
                    Some(shared) => shared.take_offer(remote).map_err(|()| 488),
                    None => Err(491),
                }) {
                Ok(sdp) => (200, Some(sdp)),
                Err(status) => (status, None),
            }
        } else {
            (200, None)
        };
        let mut response = endpoint.create_response(&request, StatusCode::from(status), None);
        if let Some(sdp) = body {
            response
                .msg
                .headers
                .insert(Name::CONTENT_TYPE, "application/sdp");
            response.msg.body = Bytes::from(sdp);
        }
        let tsx = endpoint.create_server_tsx(&mut request);
        if let Err(e) = tsx.respond(response).await {
            tracing::debug!(error = %e, "in-dialog response failed");
        }
    }
}
