//! One participant's session in a meeting, sans-IO: the signaling state (join, lobby, the
//! participant list, the end), the offer/answer exchange with the server, a str0m [`Rtc`] in
//! frame mode for the media, and the encrypted group ([`GroupClient`]) that keys every frame.
//!
//! # Contract
//!
//! Like str0m's `Rtc` the session never does I/O and never reads a clock: every call takes
//! [`Now`] (a monotonic instant for the media stack, the wall-clock time since the Unix epoch
//! for credentials and MLS), and everything it wants done comes out of [`Session::poll_output`]:
//!
//! | caller does | call | then |
//! |---|---|---|
//! | opened the WebSocket | [`Session::start`] | drain [`Session::poll_output`] |
//! | a server message arrived | [`Session::handle_signal`] | drain |
//! | a datagram arrived on the media socket | [`Session::handle_datagram`] | drain |
//! | [`Session::poll_timeout`] passed | [`Session::handle_timeout`] | drain |
//! | [`Event::NeedCredential`] | fetches a credential for a new device key, [`Session::start_group`] | drain |
//! | [`Event::RenewCredential`] | fetches a renewed credential, [`Session::renew_credential`] | drain |
//! | has 20 ms of Opus to send | [`Session::send_audio`] | drain |
//! | the user mutes, raises a hand, leaves | [`Session::set_muted`], [`Session::raise_hand`], [`Session::leave`] | drain |
//!
//! [`Output::Signal`] goes to the WebSocket, [`Output::Transmit`] to the media socket,
//! [`Output::Event`] to the owner. `poll_output` returns `None` when there is nothing more to do
//! until the next input or [`Session::poll_timeout`].
//!
//! # No plaintext path
//!
//! Outgoing audio is encrypted with the group's SFrame key of this member's leaf before it is
//! handed to str0m; while the client is not (yet) a group member, [`Session::send_audio`] drops
//! the frame and counts it ([`Stats::dropped_no_key`]). Incoming frames that do not decrypt are
//! dropped and counted ([`Stats::decrypt_failed`]), never passed on.
//!
//! # Media
//!
//! The client publishes at most one audio source (the microphone, SFrame stream 0, Opus with no
//! clear header bytes) and receives audio on recvonly transceivers the server assigns
//! (`answer.tracks`). It always offers; on `renegotiate` it offers again with enough recvonly
//! audio transceivers (an audio-only participant is given no video by the server, see
//! `klausur-room`'s receive-video setting).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use klausur_e2ee::{Member, StreamId};
use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, MeetingInfo, Participant, ParticipantId, SendSource,
    ServerMsg, Source, TrackAssignment,
};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, IceConnectionState, Input, Rtc};

use crate::group::{GroupClient, GroupEvent, GroupOutput};
use crate::offer::OfferState;

/// Test builds only (cargo feature `test-hooks`): while set, sessions send their frames with a
/// corrupted authentication tag, as if they were encrypted under a key no member has.
#[cfg(feature = "test-hooks")]
pub static TEST_WITHHOLD_FRAME_KEY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The SFrame stream of the microphone (as the browser numbers its sources).
pub const MICROPHONE_STREAM: StreamId = StreamId(0);
/// Samples per 20 ms Opus frame at the RTP clock of 48 kHz.
const SAMPLES_PER_FRAME: u64 = 960;

/// The time of an input: a monotonic instant (for the media stack) and the wall-clock time
/// since the Unix epoch (for credentials and MLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: Duration,
}

/// How the participant identifies itself in `join`.
#[derive(Clone, PartialEq, Eq)]
pub enum JoinAs {
    /// A personal invitation's token.
    Invitation(String),
    /// The dial-in gateway for a telephone caller: the ticket of `POST /api/dialin/calls`.
    DialIn(String),
    /// A guest without invitation (waits in the lobby) under this name.
    Guest(String),
}

impl std::fmt::Debug for JoinAs {
    // Tokens and tickets are secrets: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinAs::Invitation(_) => f.write_str("Invitation(..)"),
            JoinAs::DialIn(_) => f.write_str("DialIn(..)"),
            JoinAs::Guest(name) => write!(f, "Guest({} chars)", name.chars().count()),
        }
    }
}

/// What a session is set up with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub meeting_id: String,
    pub join: JoinAs,
    /// The local address of the media socket (announced as the host candidate).
    pub local_addr: SocketAddr,
    /// Publish a microphone track.
    pub publish_audio: bool,
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// `join` sent, no answer yet.
    Joining,
    /// Waiting in the lobby.
    Lobby,
    /// In the meeting.
    Joined,
    /// Over: removed, denied, ended, refused, or left.
    Ended,
}

/// What the owner hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server put this participant in the lobby.
    Lobby,
    /// In the meeting as `self_id`.
    Joined { self_id: ParticipantId },
    /// The session needs a device key and a credential for it to join the encrypted group:
    /// call [`Session::start_group`] with a [`Member`] built from them.
    NeedCredential,
    /// A renewed credential for this device key is due: call [`Session::renew_credential`].
    RenewCredential { device_key: [u8; 32] },
    /// This client is a member of the meeting's encrypted group.
    InGroup,
    /// A member removed this client from the encrypted group (it has no keys any more).
    RemovedFromGroup,
    /// The media server lost this client's media connection (`media_lost`): leave and join
    /// again with a new one.
    MediaLost,
    /// The server is being taken out of service (`maintenance`): the meeting is interrupted
    /// there at the latest in `in_ms` milliseconds (it ends with `server_shutdown`; join again).
    Maintenance { in_ms: u64 },
    /// The group's security code changed (every join and leave).
    SecurityCode(String),
    /// A warning from the encrypted group (a refused joiner, a commit that did not verify).
    Warning(String),
    /// The media connection is up.
    MediaConnected,
    /// The media connection failed or was closed.
    MediaDisconnected,
    /// The participant list changed: the list now, as the server describes it.
    Participants(Vec<Participant>),
    /// The encrypted group's roster changed: its members now, with their verified credentials.
    Roster(Vec<klausur_e2ee::RosterEntry>),
    /// A moderator muted (true) this participant at the server, or lifted it (false).
    MutedByModerator(bool),
    /// A moderator lowered this participant's raised hand.
    HandLowered,
    /// A decrypted audio frame (Opus) of another participant.
    Audio {
        participant_id: ParticipantId,
        /// RTP time (48 kHz) of the frame.
        rtp_time: u64,
        /// When the frame's first packet arrived.
        arrived: Instant,
        opus: Vec<u8>,
    },
    /// The server refused a message. `ended`: it was the `join` (the meeting or the ticket is
    /// not valid), and the session is over; otherwise the session goes on.
    Refused {
        code: ErrorCode,
        message: String,
        ended: bool,
    },
    /// The meeting is over for this participant (`reason` as the server said; `None` after
    /// [`Session::leave`]).
    Ended {
        reason: Option<EndReason>,
        by: Option<String>,
    },
}

/// What to do.
#[derive(Debug)]
pub enum Output {
    /// Send this message on the WebSocket.
    Signal(ClientMsg),
    /// Send this datagram on the media socket.
    Transmit(Transmit),
    /// Tell the owner.
    Event(Event),
}

/// Counters of the media path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Own frames encrypted and written.
    pub sent: u64,
    /// Own frames dropped because the client was not in the group (no key).
    pub dropped_no_key: u64,
    /// Own frames dropped while muted.
    pub dropped_muted: u64,
    /// Frames of others decrypted.
    pub received: u64,
    /// Frames of others that did not decrypt (dropped).
    pub decrypt_failed: u64,
    /// Frames on a transceiver the server assigned to nobody (dropped).
    pub unassigned: u64,
}

/// Errors of the caller's making (peer input never yields one: it is dropped, counted or
/// reported as an [`Event`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("media stack: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("invalid use: {0}")]
    Misuse(&'static str),
}

/// A participant's session (see the module docs).
pub struct Session {
    cfg: SessionConfig,
    rtc: Rtc,
    rtc_timeout: Instant,
    last: Now,
    phase: Phase,
    self_id: Option<ParticipantId>,
    meeting: Option<MeetingInfo>,
    participants: BTreeMap<ParticipantId, Participant>,
    offer: OfferState,
    /// Receive-only audio transceivers wanted (the server's last `renegotiate`).
    want_audio: u32,
    recv_audio: Vec<Mid>,
    tracks: HashMap<Mid, (ParticipantId, Source)>,
    send_mid: Option<Mid>,
    send_added: bool,
    opus_pt: Option<Pt>,
    rtp_time: u64,
    group: Option<GroupClient>,
    need_credential_sent: bool,
    muted: bool,
    muted_by_moderator: bool,
    hand_raised: bool,
    media_connected: bool,
    out: VecDeque<Output>,
    stats: Stats,
    /// Which participants' audio to decrypt and deliver (all when unset).
    receive_filter: Option<ReceiveFilter>,
}

/// Decides per participant id whether its audio is decrypted and delivered.
pub type ReceiveFilter = Box<dyn Fn(&str) -> bool + Send>;

impl Session {
    /// A session that will join as `cfg.join`; nothing happens until [`Session::start`].
    pub fn new(cfg: SessionConfig, now: Now) -> Result<Session, SessionError> {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(now.instant);
        rtc.add_local_candidate(
            Candidate::host(cfg.local_addr, "udp")
                .map_err(|_| SessionError::Misuse("the media socket's address is not usable"))?,
        );
        Ok(Session {
            cfg,
            rtc,
            rtc_timeout: now.instant,
            last: now,
            phase: Phase::Joining,
            self_id: None,
            meeting: None,
            participants: BTreeMap::new(),
            offer: OfferState::default(),
            want_audio: 0,
            recv_audio: Vec::new(),
            tracks: HashMap::new(),
            send_mid: None,
            send_added: false,
            opus_pt: None,
            rtp_time: 0,
            group: None,
            need_credential_sent: false,
            muted: false,
            muted_by_moderator: false,
            hand_raised: false,
            media_connected: false,
            out: VecDeque::new(),
            stats: Stats::default(),
            receive_filter: None,
        })
    }

    /// Decrypt and deliver only the audio of participants `filter` wants (for example a frame
    /// that another client of the same meeting already delivers is left alone).
    pub fn set_receive_filter(&mut self, filter: ReceiveFilter) {
        self.receive_filter = Some(filter);
    }

    /// The WebSocket is open: sends `join`.
    pub fn start(&mut self, now: Now) {
        self.last = now;
        let (invite_token, display_name, dial_in_ticket) = match &self.cfg.join {
            JoinAs::Invitation(t) => (Some(t.clone()), None, None),
            JoinAs::DialIn(t) => (None, None, Some(t.clone())),
            JoinAs::Guest(name) => (None, Some(name.clone()), None),
        };
        self.signal(ClientMsg::Join {
            meeting_id: self.cfg.meeting_id.clone(),
            invite_token,
            display_name,
            rejoin_token: None,
            dial_in_ticket,
        });
    }

    /// Where the session stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// This participant's id once joined.
    pub fn self_id(&self) -> Option<&str> {
        self.self_id.as_deref()
    }

    /// The meeting as the server last described it.
    pub fn meeting(&self) -> Option<&MeetingInfo> {
        self.meeting.as_ref()
    }

    /// The participants as the server last described them.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values()
    }

    /// The encrypted group, once started.
    pub fn group(&self) -> Option<&GroupClient> {
        self.group.as_ref()
    }

    /// Counters of the media path.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the microphone is muted by this participant.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// Whether a moderator muted this participant.
    pub fn muted_by_moderator(&self) -> bool {
        self.muted_by_moderator
    }

    /// Whether this participant's hand is up.
    pub fn hand_raised(&self) -> bool {
        self.hand_raised
    }

    /// The security code of the group's current epoch.
    pub fn security_code(&self) -> Option<String> {
        self.group.as_ref().and_then(|g| g.security_code())
    }

    /// Joins the encrypted group with `member` (a device key and its credential), after
    /// [`Event::NeedCredential`]. `requested_at` is the wall-clock time at which the credential
    /// was asked for (the group learns the identity CA's clock from it).
    pub fn start_group(&mut self, member: Member, requested_at: Duration, now: Now) {
        self.last = now;
        if self.group.is_some() || self.phase != Phase::Joined {
            return;
        }
        let Some(self_id) = self.self_id.clone() else {
            return;
        };
        let mut group = GroupClient::new(member);
        let participants: Vec<Participant> = self.participants.values().cloned().collect();
        group.set_participants(&self_id, &participants, now.wall);
        group.start(requested_at, now.wall);
        self.group = Some(group);
        self.drain_group();
    }

    /// A renewed credential arrived (after [`Event::RenewCredential`]).
    pub fn renew_credential(&mut self, credential: klausur_e2ee::SignedCredential, now: Now) {
        self.last = now;
        if let Some(g) = self.group.as_mut() {
            g.set_renewed_credential(credential, now.wall);
        }
        self.drain_group();
    }

    /// One message from the server.
    pub fn handle_signal(&mut self, msg: ServerMsg, now: Now) {
        self.last = now;
        if self.phase == Phase::Ended {
            return;
        }
        let mut participants_changed = false;
        match &msg {
            ServerMsg::LobbyWait { .. } => {
                self.phase = Phase::Lobby;
                self.event(Event::Lobby);
            }
            ServerMsg::Joined {
                self_id,
                meeting,
                participants,
                ..
            } => {
                self.phase = Phase::Joined;
                self.self_id = Some(self_id.clone());
                self.meeting = Some(meeting.clone());
                self.participants = participants
                    .iter()
                    .map(|p| (p.id.clone(), p.clone()))
                    .collect();
                let me = self.participants.get(self_id);
                let muted = me.is_some_and(|p| p.muted_by_moderator);
                self.event(Event::Joined {
                    self_id: self_id.clone(),
                });
                participants_changed = true;
                if muted {
                    self.muted_by_moderator = true;
                    self.event(Event::MutedByModerator(true));
                }
                if !self.need_credential_sent {
                    self.need_credential_sent = true;
                    self.event(Event::NeedCredential);
                }
                self.negotiate();
                self.send_media_state();
            }
            ServerMsg::ParticipantJoined { participant }
            | ServerMsg::ParticipantUpdated { participant } => {
                if Some(&participant.id) == self.self_id.as_ref() {
                    self.own_update(participant);
                }
                self.participants
                    .insert(participant.id.clone(), participant.clone());
                participants_changed = true;
            }
            ServerMsg::ParticipantLeft { participant_id, .. } => {
                self.participants.remove(participant_id);
                participants_changed = true;
            }
            ServerMsg::MeetingChanged { meeting } => self.meeting = Some(meeting.clone()),
            ServerMsg::Answer { sdp, tracks } => self.on_answer(sdp, tracks),
            ServerMsg::Renegotiate { audio, .. } => {
                self.want_audio = self.want_audio.max(*audio);
                self.negotiate();
            }
            ServerMsg::Ended { reason, by } => {
                self.phase = Phase::Ended;
                self.rtc.disconnect();
                self.event(Event::Ended {
                    reason: Some(*reason),
                    by: by.clone(),
                });
                return;
            }
            ServerMsg::MediaLost => self.event(Event::MediaLost),
            ServerMsg::Maintenance { in_ms } => self.event(Event::Maintenance { in_ms: *in_ms }),
            ServerMsg::Error { code, message } => {
                let ended = self.phase == Phase::Joining;
                if ended {
                    self.phase = Phase::Ended;
                }
                if message.starts_with("offer") || *code == ErrorCode::InvalidField {
                    self.offer.rejected();
                }
                self.event(Event::Refused {
                    code: *code,
                    message: message.clone(),
                    ended,
                });
            }
            _ => {}
        }
        if participants_changed {
            let list = self.participants.values().cloned().collect();
            self.event(Event::Participants(list));
            if let (Some(g), Some(self_id)) = (self.group.as_mut(), self.self_id.as_ref()) {
                let list: Vec<Participant> = self.participants.values().cloned().collect();
                g.set_participants(self_id, &list, now.wall);
            }
        }
        if let Some(g) = self.group.as_mut() {
            g.handle_server(&msg, now.wall);
        }
        self.drain_group();
    }

    fn own_update(&mut self, p: &Participant) {
        if p.muted_by_moderator != self.muted_by_moderator {
            self.muted_by_moderator = p.muted_by_moderator;
            self.event(Event::MutedByModerator(p.muted_by_moderator));
        }
        if self.hand_raised && p.hand_raised_at.is_none() {
            self.hand_raised = false;
            self.event(Event::HandLowered);
        }
    }

    /// A datagram arrived on the media socket. Returns false if it was not for this session.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
        now: Now,
    ) -> bool {
        self.last = now;
        let Ok(contents) = bytes.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now.instant,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        );
        if !self.rtc.accepts(&input) {
            return false;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("media input dropped: {e}");
        }
        true
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last = now;
        if now.instant >= self.rtc_timeout {
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now.instant)) {
                tracing::debug!("media timeout: {e}");
            }
        }
        if let Some(g) = self.group.as_mut() {
            g.handle_timeout(now.wall);
        }
        self.drain_group();
    }

    /// When [`Session::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.rtc_timeout;
        if let Some(due) = self.group.as_ref().and_then(|g| g.poll_timeout()) {
            let wait = due.saturating_sub(self.last.wall);
            t = t.min(self.last.instant + wait);
        }
        t
    }

    /// Sends 20 ms of Opus (48 kHz) as this participant's microphone, encrypted. `level` is
    /// the RFC 6464 audio level (0 loudest .. 127 silence) for the server's speaker detection.
    pub fn send_audio(&mut self, opus: &[u8], level: u8, now: Now) {
        self.last = now;
        let rtp_time = self.rtp_time;
        self.rtp_time = self.rtp_time.wrapping_add(SAMPLES_PER_FRAME);
        if self.muted || self.muted_by_moderator {
            self.stats.dropped_muted += 1;
            return;
        }
        let (Some(mid), Some(pt)) = (self.send_mid, self.opus_pt) else {
            return;
        };
        if !self.media_connected {
            return;
        }
        let Some(group) = self.group.as_mut().filter(|g| g.in_group()) else {
            self.stats.dropped_no_key += 1;
            return;
        };
        #[allow(unused_mut)]
        let mut frame = match group.encrypt_frame(MICROPHONE_STREAM, &[], opus) {
            Ok(f) => f,
            Err(_) => {
                self.stats.dropped_no_key += 1;
                return;
            }
        };
        #[cfg(feature = "test-hooks")]
        if TEST_WITHHOLD_FRAME_KEY.load(std::sync::atomic::Ordering::Relaxed) {
            // The byte before the trailing clear-header length is the tag's last.
            let n = frame.len();
            if let Some(b) = n.checked_sub(2).and_then(|i| frame.get_mut(i)) {
                *b ^= 0xFF;
            }
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let level = -(i8::try_from(level.min(127)).unwrap_or(127));
        match writer.audio_level(level, level > -127).write(
            pt,
            now.instant,
            MediaTime::new(rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ),
            frame,
        ) {
            Ok(()) => self.stats.sent += 1,
            Err(e) => tracing::debug!("audio frame not written: {e}"),
        }
    }

    /// Mutes or unmutes the own microphone (refused while a moderator muted this participant:
    /// returns false then).
    pub fn set_muted(&mut self, muted: bool, now: Now) -> bool {
        self.last = now;
        if !muted && self.muted_by_moderator {
            return false;
        }
        if self.muted != muted {
            self.muted = muted;
            self.send_media_state();
        }
        true
    }

    /// Raises or lowers the own hand.
    pub fn raise_hand(&mut self, raised: bool, now: Now) {
        self.last = now;
        if self.phase == Phase::Joined && self.hand_raised != raised {
            self.hand_raised = raised;
            self.signal(ClientMsg::RaiseHand { raised });
        }
    }

    /// Leaves the meeting.
    pub fn leave(&mut self, now: Now) {
        self.last = now;
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.signal(ClientMsg::Leave);
        self.rtc.disconnect();
        self.event(Event::Ended {
            reason: None,
            by: None,
        });
    }

    /// The next thing to do (see the module docs).
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            match self.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return None;
                }
                Ok(str0m::Output::Transmit(t)) => return Some(Output::Transmit(t)),
                Ok(str0m::Output::Event(e)) => self.on_rtc_event(e),
                Err(e) => {
                    tracing::debug!("media stack: {e}");
                    self.rtc_timeout = self.last.instant + Duration::from_millis(100);
                    return None;
                }
            }
        }
    }

    // ---- internals --------------------------------------------------------------------

    fn signal(&mut self, msg: ClientMsg) {
        self.out.push_back(Output::Signal(msg));
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn send_media_state(&mut self) {
        if self.phase != Phase::Joined {
            return;
        }
        self.signal(ClientMsg::MediaState {
            audio_muted: self.muted || self.muted_by_moderator,
            video_muted: true,
            screen_sharing: false,
        });
    }

    fn drain_group(&mut self) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let mut outs = Vec::new();
        while let Some(o) = g.poll_output() {
            outs.push(o);
        }
        for o in outs {
            match o {
                GroupOutput::Send(msg) => self.signal(msg),
                GroupOutput::Event(e) => match e {
                    GroupEvent::Joined { security_code, .. } => {
                        self.event(Event::InGroup);
                        self.event(Event::SecurityCode(security_code));
                    }
                    GroupEvent::EpochChanged { security_code, .. } => {
                        self.event(Event::SecurityCode(security_code))
                    }
                    GroupEvent::Removed { .. } => self.event(Event::RemovedFromGroup),
                    GroupEvent::RenewCredential { device_key } => {
                        self.event(Event::RenewCredential { device_key })
                    }
                    GroupEvent::Warning(w) => {
                        self.event(Event::Warning(format!("{:?}: {}", w.code, w.detail)))
                    }
                    GroupEvent::Refused {
                        participant_id,
                        reason,
                        ..
                    } => self.event(Event::Warning(format!(
                        "joiner {participant_id} not added: {reason:?}"
                    ))),
                    GroupEvent::RosterChanged => {
                        let roster = self
                            .group
                            .as_ref()
                            .map(|g| g.roster().to_vec())
                            .unwrap_or_default();
                        self.event(Event::Roster(roster));
                    }
                },
            }
        }
    }

    /// Sends an offer if one may go out: the microphone (once) and enough recvonly audio.
    fn negotiate(&mut self) {
        if self.phase != Phase::Joined || !self.offer.may_offer() {
            return;
        }
        let mut api = self.rtc.sdp_api();
        let mut new_send = None;
        if self.cfg.publish_audio && !self.send_added {
            new_send = Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        }
        let mut recv_audio = self.recv_audio.clone();
        while (recv_audio.len() as u32) < self.want_audio {
            recv_audio.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        let applied = api.apply();
        if applied.is_some() {
            self.recv_audio = recv_audio;
            if let Some(mid) = new_send {
                self.send_mid = Some(mid);
                self.send_added = true;
            }
        }
        if let Some(sdp) = self.offer.offer_to_send(applied) {
            let sources = self
                .send_mid
                .map(|mid| SendSource {
                    mid: mid.to_string(),
                    source: Source::Microphone,
                })
                .into_iter()
                .collect();
            self.signal(ClientMsg::Offer { sdp, sources });
        }
    }

    fn on_answer(&mut self, sdp: &str, tracks: &[TrackAssignment]) {
        self.tracks = tracks
            .iter()
            .filter_map(|t| {
                let mid = self.recv_audio.iter().find(|m| m.to_string() == t.mid)?;
                Some((*mid, (t.participant_id.clone(), t.source)))
            })
            .collect();
        if let Some(again) = self.offer.answer_to_repeat() {
            if again {
                self.negotiate();
            }
            return;
        }
        let Some(pending) = self.offer.pending.take() else {
            return;
        };
        match SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => {
                if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
                    self.event(Event::Warning(format!(
                        "the server's answer is unusable: {e}"
                    )));
                    return;
                }
            }
            Err(e) => {
                self.event(Event::Warning(format!(
                    "the server's answer is unusable: {e}"
                )));
                return;
            }
        }
        if self.opus_pt.is_none() {
            self.opus_pt = self
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
        }
        if self.offer.again || (self.recv_audio.len() as u32) < self.want_audio {
            self.negotiate();
        }
    }

    fn on_rtc_event(&mut self, e: str0m::Event) {
        match e {
            str0m::Event::Connected => {
                self.media_connected = true;
                self.event(Event::MediaConnected);
            }
            str0m::Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                if self.media_connected =>
            {
                self.media_connected = false;
                self.event(Event::MediaDisconnected);
            }
            str0m::Event::MediaData(data) => {
                let Some((pid, source)) = self.tracks.get(&data.mid).cloned() else {
                    self.stats.unassigned += 1;
                    return;
                };
                if source != Source::Microphone {
                    return;
                }
                if self.receive_filter.as_ref().is_some_and(|f| !f(&pid)) {
                    return;
                }
                let Some(group) = self.group.as_mut().filter(|g| g.in_group()) else {
                    self.stats.decrypt_failed += 1;
                    return;
                };
                match group.decrypt_frame(&data.data, self.last.wall) {
                    Ok(frame) if frame.stream == MICROPHONE_STREAM => {
                        self.stats.received += 1;
                        self.event(Event::Audio {
                            participant_id: pid,
                            rtp_time: data.time.numer(),
                            arrived: data.network_time,
                            opus: frame.payload,
                        });
                    }
                    _ => self.stats.decrypt_failed += 1,
                }
            }
            _ => {}
        }
    }
}
