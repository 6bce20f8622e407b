//! A simulated participant: a str0m `Rtc` in RTP mode on its own UDP socket on 127.0.0.1,
//! sending synthetic audio and video and accounting for what it receives.
//!
//! Against klausur it speaks the real signaling on `/api/ws` (join with a personal
//! invitation, always the offerer, re-offers on `renegotiate`); for the peer-to-peer baseline two
//! of them are connected to each other in-process, without a server.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use klausur_client::offer::OfferState;
use klausur_proto::{ClientMsg, SendSource, Source, VideoTile};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use crate::header::{audio_len, payload, video_frame_sizes, vp8_payload, Header, Stream};
use crate::stats::{Presence, RecvStats, SendStats, Window};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const VIDEO_PERIOD: Duration = Duration::from_micros(33_333);
/// A sender that fell further behind than this skips the missed slots instead of bursting.
const MAX_LAG: Duration = Duration::from_millis(100);
const PING_EVERY: Duration = Duration::from_secs(30);

/// Largest deviation of a participant's media clock from the nominal rate (see [`clock_rate`]).
const CLOCK_SPREAD: f64 = 0.01;

/// The rate of participant `index`'s media clock relative to the nominal one, within
/// 1 +- [`CLOCK_SPREAD`]: its audio and video periods are divided by it.
///
/// Why: how much work a forwarded packet costs the server depends on how the participants'
/// send times line up. Packets that arrive together are handled in one wake-up and one
/// receive batch, and each subscriber is ticked and drained once for all of them; packets
/// spread over the period cost a wake-up and a drain each. With every clock at exactly the
/// nominal rate the phases, and with them the cost, stay where the joins put them for the
/// whole window, so trials of the same build differed by up to a quarter (meeting 10: 127k
/// to 150k packets per CPU-second in five trials, with 6,231 to 7,248 wake-ups). Real
/// devices' clocks differ (cameras run at 29.97 or 30 fps, audio clocks drift), so their
/// phases move against each other; with clocks 0 to 2 % apart most pairs' phases sweep
/// through one or more periods in a 10 s window, and a trial measures the average over
/// alignments instead of one draw. Deterministic (golden-ratio sequence), so every server
/// meets the same clocks.
pub fn clock_rate(index: u16) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let u = (f64::from(index) * GOLDEN).fract();
    1.0 + CLOCK_SPREAD * (2.0 * u - 1.0)
}

/// Shared timing of one run: every client measures against the same start.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start: Instant,
    pub window: Window,
    /// When the clients stop sending and report (after the window plus a drain period).
    pub stop_at: Instant,
}

impl Timing {
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }
}

/// How the simulated participants are built (the same for every participant of a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOptions {
    /// Offer str0m's full default codec list (as a browser offers many codecs) instead of
    /// Opus + VP8 only, which keeps offers of large meetings small.
    pub all_codecs: bool,
    /// Receive with UDP GRO (`UDP_GRO`): a run of datagrams the server sent as one GSO message
    /// is queued on the socket as one, and split again here.
    ///
    /// Why: on loopback the kernel delivers a datagram into the receiving socket (and wakes
    /// the receiver) inside the sender's `sendmmsg`, so that receive work is charged to the
    /// server's CPU time, although a receiver on another machine would cost the server
    /// nothing. Without GRO a GSO message is cut up again on the receive side and every
    /// segment is delivered (and charged) on its own; with it, one delivery per message.
    /// Datagrams that were sent one by one are delivered one by one either way.
    pub gro: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            all_codecs: false,
            gro: true,
        }
    }
}

/// Receive buffer: a whole GRO message (at most 64 KiB) or one datagram.
const RECV_BUF: usize = 65_536;

/// What a participant publishes, and how many tracks it expects to receive at first (its
/// first offer carries that many recvonly transceivers; the server asks for more when needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub audio: bool,
    pub video: bool,
    pub expect: (u32, u32),
    /// Negotiates its send tracks but sends no packets (microphone and camera off).
    pub silent: bool,
}

impl Role {
    /// Sends audio and video (a meeting participant, a webinar presenter, ...).
    pub const AV: Role = Role {
        audio: true,
        video: true,
        expect: (0, 0),
        silent: false,
    };

    /// A meeting participant with microphone and camera off: audio and video m-lines, no packets.
    pub const IDLE: Role = Role {
        silent: true,
        ..Role::AV
    };

    /// Sends nothing, receives `audio` + `video` tracks.
    pub fn listener(audio: u32, video: u32) -> Role {
        Role {
            audio: false,
            video: false,
            expect: (audio, video),
            silent: false,
        }
    }

    /// Has send tracks to negotiate (silent or not).
    pub fn publishes(&self) -> bool {
        self.audio || self.video
    }
}

/// What a participant reports at the end.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub index: u16,
    /// The meeting the participant was in (set by the trial; see `Spec::meeting_of`).
    pub meeting: u16,
    /// From sending `join` to leaving.
    pub presence: Presence,
    pub send: SendStats,
    pub recv: RecvStats,
    /// From sending `join` (or creating the peer) to ICE+DTLS connected.
    pub connect_time: Option<Duration>,
    /// Receive m-lines (audio, video) negotiated at the end.
    pub recv_slots: (u32, u32),
    pub keyframe_requests: u64,
    /// The participants whose video this one showed (`None`: all).
    pub shows: Option<Vec<u16>>,
    /// The server ended the signaling (closed the WebSocket, or sent `ended`) before the
    /// participant left.
    pub ended_by_server: bool,
    /// The WebSocket URL it joined at, after following a cluster's redirects (klausur only).
    pub joined_at_url: Option<String>,
    pub errors: Vec<String>,
}

/// The WebSocket URL of the node at base URL `base` (a cluster's `redirect`).
pub fn redirect_ws_url(base: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))?;
    Some(format!("{rest}/api/ws"))
}

/// Active (non-zero port) audio and video m-lines of an SDP.
pub fn active_m_lines(sdp: &str) -> (u32, u32) {
    let mut n = (0, 0);
    for line in sdp.lines() {
        let mut f = line.split_whitespace();
        let (kind, port) = (f.next(), f.next());
        if port.is_none_or(|p| p == "0") {
            continue;
        }
        match kind {
            Some("m=audio") => n.0 += 1,
            Some("m=video") => n.1 += 1,
            _ => {}
        }
    }
    n
}

struct Track {
    mid: Mid,
    pt: Pt,
    tag: u32,
    rtp_seq: u64,
    rtp_time: u32,
}

impl Track {
    fn new(mid: Mid, pt: Pt) -> Track {
        Track {
            mid,
            pt,
            tag: 0,
            rtp_seq: 1,
            rtp_time: 0,
        }
    }
}

/// The simulcast layers of a camera that sends them (`--simulcast`), low to high: rid, frame
/// size, and the packet sizes relative to the single-layer camera's (the same number of packets
/// per frame on every layer, so one sequence tag names the same packet on each layer and a
/// receiver's loss count survives layer switches).
pub const LAYERS: [(&str, (u16, u16), f64); 3] = [
    ("q", (320, 180), 1.0 / 6.0),
    ("h", (640, 360), 0.4),
    ("f", (1280, 720), 1.0),
];

/// Adds the sendonly audio and/or video m-lines `role` publishes; the camera as three simulcast
/// layers ([`LAYERS`]) if `simulcast`.
fn add_send_media(api: &mut SdpApi<'_>, role: Role, simulcast: bool) -> (Option<Mid>, Option<Mid>) {
    let a = role
        .audio
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let layers = simulcast.then(|| {
        let mut s = Simulcast::new();
        for (rid, _, _) in LAYERS {
            s.add_send_layer(SimulcastLayer::new(rid));
        }
        s
    });
    let v = role
        .video
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers));
    (a, v)
}

/// The size of a shown tile (the middle layer's), and the two sizes `set_tile_switch`
/// alternates between (the high and the low layer's).
const TILE_SIZE: (u32, u32) = (640, 360);
const TILE_LARGE: (u32, u32) = (1280, 720);
const TILE_SMALL: (u32, u32) = (320, 180);

/// A simulcast layer's RTP sequence number and VP8 picture ID.
#[derive(Debug, Clone, Copy)]
struct LayerTx {
    rtp_seq: u64,
    picture_id: u16,
}

/// The media a peer sends and the state of its pacing.
struct Sender {
    audio: Option<Track>,
    video: Option<Track>,
    next_audio: Option<Instant>,
    next_video: Option<Instant>,
    /// This participant's audio and video periods (see [`clock_rate`]).
    audio_period: Duration,
    video_period: Duration,
    frame: u32,
    keyframe_pending: bool,
    /// The camera's simulcast layers ([`LAYERS`]), when it sends them.
    layers: Option<[LayerTx; 3]>,
    stats: SendStats,
}

/// One participant.
pub struct Peer {
    pub index: u16,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    timing: Timing,
    /// When the kernel queued the datagram being handled on this peer's socket (see
    /// [`recv_stamped`]); packets from it count as received then.
    rx_at: Option<Instant>,
    joined_at: Instant,
    /// Leaves before the end of the run (churn).
    leave_at: Option<Instant>,
    sender: Sender,
    role: Role,
    /// The send m-lines of `role` are in the SDP (klausur signaling).
    send_added: bool,
    recv: RecvStats,
    connected_at: Option<Instant>,
    /// Receive m-lines negotiated so far (audio, video).
    recv_slots: (u32, u32),
    next_timeout: Instant,
    keyframe_requests: u64,
    errors: Vec<String>,
    /// The participants (by index) whose video this one shows (`video_tiles`); `None`: all.
    shows: Option<Vec<u16>>,
    /// Participant ids of those in `shows` seen in the meeting so far, and how many were told.
    shown_ids: std::collections::BTreeMap<u16, String>,
    told_tiles: usize,
    /// The size of the tiles it shows, as told to the server.
    tile_size: (u32, u32),
    /// Switches its tiles between large and small this often (the server then switches
    /// simulcast layers), from the next switch time on.
    tile_switch: Option<(Duration, Instant)>,
    // Signaling state (klausur only).
    sig: Option<Signaling>,
    /// Where it joined (the last WebSocket URL, after redirects).
    joined_at_url: Option<String>,
    // Offers to answer while running (the Janus subscriber side).
    offers: Option<mpsc::UnboundedReceiver<OfferRequest>>,
}

/// An SDP offer (text) to answer while the peer runs, and where to send the answer (text).
pub type OfferRequest = (String, oneshot::Sender<anyhow::Result<String>>);

struct Signaling {
    ws: Ws,
    offer: OfferState,
    want: (u32, u32),
    recv_audio: Vec<Mid>,
    recv_video: Vec<Mid>,
    next_ping: Instant,
    ended: bool,
}

enum Wake {
    Udp(std::io::Result<()>),
    Ws(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Offer(Option<OfferRequest>),
    Timer,
}

async fn next_offer(
    rx: &mut Option<mpsc::UnboundedReceiver<OfferRequest>>,
) -> Option<OfferRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_ws(
    sig: &mut Option<Signaling>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match sig {
        Some(s) if !s.ended => s.ws.next().await,
        _ => std::future::pending().await,
    }
}

fn pt_of(rtc: &Rtc, codec: Codec) -> anyhow::Result<Pt> {
    rtc.codec_config()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
        .with_context(|| format!("no payload type for {codec:?}"))
}

impl Peer {
    /// A peer with its own UDP socket on 127.0.0.1 and a host candidate for it.
    pub async fn new(index: u16, timing: Timing, options: PeerOptions) -> anyhow::Result<Peer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        Self::with_socket(index, timing, options, socket)
    }

    /// A peer on a socket bound elsewhere (e.g. inside a network namespace), with a host
    /// candidate for its local address.
    pub fn with_socket(
        index: u16,
        timing: Timing,
        options: PeerOptions,
        socket: UdpSocket,
    ) -> anyhow::Result<Peer> {
        let local = socket.local_addr()?;
        enable_receive_timestamps(&socket)?;
        if options.gro {
            setsockopt(&socket, sockopt::UdpGroSegment, &true)
                .context("cannot enable UDP GRO on the participant's socket")?;
        }
        let now = Instant::now();
        let builder = Rtc::builder().set_rtp_mode(true);
        let builder = if options.all_codecs {
            builder
        } else {
            builder
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
        };
        let mut rtc = builder.build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let rate = clock_rate(index);
        Ok(Peer {
            index,
            rtc,
            socket,
            local,
            timing,
            rx_at: None,
            joined_at: now,
            leave_at: None,
            sender: Sender {
                audio: None,
                video: None,
                next_audio: None,
                next_video: None,
                audio_period: AUDIO_PERIOD.div_f64(rate),
                video_period: VIDEO_PERIOD.div_f64(rate),
                frame: 0,
                keyframe_pending: true,
                layers: None,
                stats: SendStats::default(),
            },
            role: Role::AV,
            send_added: false,
            recv: RecvStats::default(),
            connected_at: None,
            recv_slots: (0, 0),
            next_timeout: now,
            keyframe_requests: 0,
            errors: Vec::new(),
            shows: None,
            joined_at_url: None,
            shown_ids: Default::default(),
            told_tiles: 0,
            tile_size: TILE_SIZE,
            tile_switch: None,
            sig: None,
            offers: None,
        })
    }

    /// What this peer publishes against klausur (default: audio and video).
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    /// Shows only these participants' video (klausur: `video_tiles`, sent as they join).
    pub fn set_shows(&mut self, shows: Option<Vec<u16>>) {
        self.shows = shows;
    }

    /// Sends the camera as three simulcast layers ([`LAYERS`]); before the first offer.
    pub fn set_simulcast(&mut self, on: bool) {
        self.sender.stats.video_layers = if on { LAYERS.len() as u8 } else { 1 };
        // Each layer numbers its pictures on its own (the server rewrites them).
        let index = self.index;
        self.sender.layers = on.then(|| {
            std::array::from_fn(|i| LayerTx {
                rtp_seq: 1,
                picture_id: (1000 + 7000 * i as u16 + index) & 0x7fff,
            })
        });
    }

    /// Switches the shown tiles between large and small every `every`, the first time after
    /// `first` (with `set_shows`).
    pub fn set_tile_switch(&mut self, every: Duration, first: Instant) {
        self.tile_switch = Some((every, first));
    }

    /// The next tile switch is due (the run loop checks): the other size, told to the server.
    async fn switch_tiles(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some((every, _)) = self.tile_switch else {
            return Ok(());
        };
        self.tile_switch = Some((every, now + every));
        self.tile_size = if self.tile_size == TILE_LARGE {
            TILE_SMALL
        } else {
            TILE_LARGE
        };
        self.told_tiles = 0;
        self.tell_tiles().await
    }

    /// Notes the participant ids of the participants this one shows, from a `participants`
    /// list or one `participant` (display names are `Bench <index>`, see `server.rs`).
    fn note_participants(&mut self, v: &serde_json::Value) {
        let Some(shows) = &self.shows else { return };
        let one = v.get("participant").into_iter();
        let list = v["participants"].as_array().into_iter().flatten();
        for p in one.chain(list) {
            let index = p["display_name"]
                .as_str()
                .and_then(|n| n.strip_prefix("Bench "))
                .and_then(|i| i.parse::<u16>().ok());
            if let (Some(index), Some(id)) = (index, p["id"].as_str()) {
                if shows.contains(&index) {
                    self.shown_ids.insert(index, id.to_string());
                }
            }
        }
    }

    /// Tells the server the videos shown, if more of them are known than it was told.
    async fn tell_tiles(&mut self) -> anyhow::Result<()> {
        if self.shows.is_none()
            || self.shown_ids.is_empty()
            || self.shown_ids.len() == self.told_tiles
        {
            return Ok(());
        }
        let Some(sig) = self.sig.as_mut() else {
            return Ok(());
        };
        let tiles = self
            .shown_ids
            .values()
            .map(|id| VideoTile {
                participant_id: id.clone(),
                source: Source::Camera,
                width: self.tile_size.0,
                height: self.tile_size.1,
            })
            .collect();
        let msg = ClientMsg::VideoTiles { tiles };
        sig.ws
            .send(Message::Text(serde_json::to_string(&msg)?.into()))
            .await?;
        self.told_tiles = self.shown_ids.len();
        Ok(())
    }

    /// Where TTFF and connect time are measured from (the Janus side sets its `join` time).
    pub fn set_joined_at(&mut self, t: Instant) {
        self.joined_at = t;
        self.recv.restart_first_frame();
    }

    /// Leaves at `t` instead of the end of the run (if earlier).
    pub fn set_leave_at(&mut self, t: Option<Instant>) {
        self.leave_at = t;
    }

    /// When the peer stops: the end of the run, or its departure.
    pub fn stop_at(&self) -> Instant {
        match self.leave_at {
            Some(t) => t.min(self.timing.stop_at),
            None => self.timing.stop_at,
        }
    }

    // ---- Janus (the client side of the signaling lives in `janus.rs`) -----------------------

    /// A publisher's offer: sendonly audio and/or video as the role says. Returns the SDP and
    /// the pending offer.
    pub fn publish_offer(&mut self) -> anyhow::Result<(String, SdpPendingOffer)> {
        let mut api = self.rtc.sdp_api();
        let (a, v) = add_send_media(&mut api, self.role, false);
        let (offer, pending) = api
            .apply()
            .context("no offer (the role publishes nothing)")?;
        self.set_send_tracks_opt(a, v)?;
        Ok((offer.to_sdp_string(), pending))
    }

    /// Accepts the answer to [`Peer::publish_offer`].
    pub fn accept_answer_sdp(&mut self, pending: SdpPendingOffer, sdp: &str) -> anyhow::Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp)?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    /// Offers arriving on `rx` while the peer runs are answered (the peer only receives).
    pub fn answer_offers_from(&mut self, rx: mpsc::UnboundedReceiver<OfferRequest>) {
        self.offers = Some(rx);
    }

    fn answer_offer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp)?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        // Everything Janus offers a subscriber is for receiving.
        self.recv_slots = active_m_lines(sdp);
        Ok(answer.to_sdp_string())
    }

    fn set_send_tracks(&mut self, audio: Mid, video: Mid) -> anyhow::Result<()> {
        self.set_send_tracks_opt(Some(audio), Some(video))
    }

    fn set_send_tracks_opt(
        &mut self,
        audio: Option<Mid>,
        video: Option<Mid>,
    ) -> anyhow::Result<()> {
        if let Some(audio) = audio {
            let pt = pt_of(&self.rtc, Codec::Opus)?;
            self.sender.audio.get_or_insert(Track::new(audio, pt));
        }
        if let Some(video) = video {
            let pt = pt_of(&self.rtc, Codec::Vp8)?;
            self.sender.video.get_or_insert(Track::new(video, pt));
        }
        Ok(())
    }

    // ---- klausur signaling -------------------------------------------------------------

    /// Connects to `/api/ws` and joins the meeting with a personal invitation.
    pub async fn join_klausur(
        &mut self,
        ws_url: &str,
        meeting_id: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        self.joined_at = Instant::now();
        self.recv.restart_first_frame();
        let mut url = ws_url.to_string();
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("cannot connect {url}"))?;
        let join = ClientMsg::Join {
            meeting_id: meeting_id.to_string(),
            invite_token: Some(token.to_string()),
            display_name: None,
            rejoin_token: None,
            dial_in_ticket: None,
        };
        let join = serde_json::to_string(&join)?;
        ws.send(Message::Text(join.clone().into())).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut redirects = 0;
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .context("no `joined` within 10 s")?
                .context("WebSocket closed before `joined`")??;
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str())?;
            match v["type"].as_str() {
                Some("joined") => {
                    self.note_participants(&v);
                    break;
                }
                // A node of a cluster that does not run the meeting: the same join there.
                Some("redirect") if redirects < 3 => {
                    redirects += 1;
                    let base = v["url"].as_str().context("redirect without url")?;
                    url = redirect_ws_url(base).context("redirect to a URL that is not http")?;
                    let _ = ws.close(None).await;
                    ws = tokio_tungstenite::connect_async(url.as_str())
                        .await
                        .with_context(|| format!("cannot connect {url}"))?
                        .0;
                    ws.send(Message::Text(join.clone().into())).await?;
                }
                Some("lobby_wait") => bail!("participant {} was sent to the lobby", self.index),
                Some("error") | Some("ended") | Some("redirect") => {
                    bail!("join refused: {text}")
                }
                _ => {}
            }
        }
        self.joined_at_url = Some(url);
        self.sig = Some(Signaling {
            ws,
            offer: OfferState::default(),
            want: self.role.expect,
            recv_audio: Vec::new(),
            recv_video: Vec::new(),
            next_ping: Instant::now() + PING_EVERY,
            ended: false,
        });
        self.tell_tiles().await?;
        self.offer().await
    }

    /// Sends an offer: sendonly audio + video, and recvonly transceivers as asked.
    async fn offer(&mut self) -> anyhow::Result<()> {
        let Some(mut sig) = self.sig.take() else {
            return Ok(());
        };
        let r = self.offer_with(&mut sig).await;
        self.sig = Some(sig);
        r
    }

    async fn offer_with(&mut self, sig: &mut Signaling) -> anyhow::Result<()> {
        if !sig.offer.may_offer() {
            return Ok(());
        }
        let mut api = self.rtc.sdp_api();
        let mut new_send = None;
        if !self.send_added {
            new_send = Some(add_send_media(
                &mut api,
                self.role,
                self.sender.layers.is_some(),
            ));
        }
        let mut recv_audio = sig.recv_audio.clone();
        let mut recv_video = sig.recv_video.clone();
        while (recv_audio.len() as u32) < sig.want.0 {
            recv_audio.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        while (recv_video.len() as u32) < sig.want.1 {
            recv_video.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        }
        let applied = api.apply();
        if applied.is_some() {
            sig.recv_audio = recv_audio;
            sig.recv_video = recv_video;
            if let Some((a, v)) = new_send {
                self.set_send_tracks_opt(a, v)?;
                self.send_added = true;
            }
        }
        // Without local changes this is the last offer again (see `OfferState::offer_to_send`).
        if let Some(sdp) = sig.offer.offer_to_send(applied) {
            self.send_offer(sig, sdp).await?;
        }
        Ok(())
    }

    async fn send_offer(&self, sig: &mut Signaling, sdp: String) -> anyhow::Result<()> {
        let msg = ClientMsg::Offer {
            sdp,
            sources: self.sources(),
        };
        sig.ws
            .send(Message::Text(serde_json::to_string(&msg)?.into()))
            .await?;
        Ok(())
    }

    /// What this participant publishes, by mid.
    fn sources(&self) -> Vec<SendSource> {
        let mut sources = Vec::new();
        if let Some(a) = &self.sender.audio {
            sources.push(SendSource {
                mid: a.mid.to_string(),
                source: Source::Microphone,
            });
        }
        if let Some(v) = &self.sender.video {
            sources.push(SendSource {
                mid: v.mid.to_string(),
                source: Source::Camera,
            });
        }
        sources
    }

    async fn on_ws(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> anyhow::Result<()> {
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                if let Some(s) = self.sig.as_mut() {
                    s.ended = true;
                }
                self.errors
                    .push("signaling connection closed by the server".into());
                return Ok(());
            }
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => {
                if let Some(s) = self.sig.as_mut() {
                    s.ended = true;
                }
                self.errors.push(format!("signaling error: {e}"));
                return Ok(());
            }
        };
        let v: serde_json::Value = serde_json::from_str(text.as_str())?;
        match v["type"].as_str() {
            Some("answer") => {
                if let Some(again) = self.sig.as_mut().and_then(|s| s.offer.answer_to_repeat()) {
                    if again {
                        self.offer().await?;
                    }
                    return Ok(());
                }
                let sdp = v["sdp"].as_str().context("answer without sdp")?;
                let answer = SdpAnswer::from_sdp_string(sdp)?;
                let pending = self
                    .sig
                    .as_mut()
                    .and_then(|s| s.offer.pending.take())
                    .context("answer without a pending offer")?;
                self.rtc.sdp_api().accept_answer(pending, answer)?;
                if let Some(s) = &self.sig {
                    self.recv_slots = (s.recv_audio.len() as u32, s.recv_video.len() as u32);
                }
                let again = self.sig.as_ref().is_some_and(|s| {
                    s.offer.again
                        || (s.recv_audio.len() as u32) < s.want.0
                        || (s.recv_video.len() as u32) < s.want.1
                });
                if again {
                    self.offer().await?;
                }
            }
            Some("participant_joined") => {
                self.note_participants(&v);
                self.tell_tiles().await?;
            }
            Some("renegotiate") => {
                let audio = v["audio"].as_u64().unwrap_or(0) as u32;
                let video = v["video"].as_u64().unwrap_or(0) as u32;
                if let Some(s) = self.sig.as_mut() {
                    s.want = (s.want.0.max(audio), s.want.1.max(video));
                }
                self.offer().await?;
            }
            Some("error") => {
                self.errors.push(format!("server error: {text}"));
                // A rejected offer leaves no answer coming: allow the next one.
                if let Some(s) = self.sig.as_mut() {
                    if v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("offer"))
                    {
                        s.offer.rejected();
                    }
                }
            }
            Some("ended") => {
                self.errors.push(format!("meeting ended: {text}"));
                if let Some(s) = self.sig.as_mut() {
                    s.ended = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---- peer-to-peer baseline -----------------------------------------------------------

    /// Connects two peers directly (no server): `a` offers sendonly + recvonly audio and video,
    /// `b` answers and sends on `a`'s recvonly m-lines.
    pub fn connect_direct(a: &mut Peer, b: &mut Peer) -> anyhow::Result<()> {
        let mut api = a.rtc.sdp_api();
        let a_audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let a_video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let b_audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let b_video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().context("no offer")?;
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string())?;
        let answer = b.rtc.sdp_api().accept_offer(offer)?;
        let answer = SdpAnswer::from_sdp_string(&answer.to_sdp_string())?;
        a.rtc.sdp_api().accept_answer(pending, answer)?;
        a.set_send_tracks(a_audio, a_video)?;
        b.set_send_tracks(b_audio, b_video)?;
        Ok(())
    }

    // ---- media loop ------------------------------------------------------------------------

    fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected if self.connected_at.is_none() => {
                self.connected_at = Some(now);
                if !self.role.silent {
                    self.sender.next_audio = Some(now);
                    self.sender.next_video = Some(now);
                }
            }
            Event::RtpPacket(p) => {
                let now_ns = self.timing.ns(self.rx_at.unwrap_or_else(Instant::now));
                let joined_ns = self.timing.ns(self.joined_at);
                self.recv
                    .record(&p.payload, now_ns, joined_ns, &self.timing.window);
            }
            Event::KeyframeRequest(req)
                if self.sender.video.as_ref().is_some_and(|v| v.mid == req.mid) =>
            {
                self.sender.keyframe_pending = true;
                self.keyframe_requests += 1;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.errors.push("ICE disconnected".into());
            }
            _ => {}
        }
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        // Bounded: str0m ends every drain with a Timeout.
        for _ in 0..100_000 {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                        self.errors.push(format!("send to {}: {e}", t.destination));
                    }
                }
                Output::Event(e) => self.on_event(Instant::now(), e),
            }
        }
        bail!("str0m produced no timeout after 100000 outputs")
    }

    fn write(
        rtc: &mut Rtc,
        track: &mut Track,
        now: Instant,
        payload: Vec<u8>,
        marker: bool,
        audio: bool,
    ) -> bool {
        let seq = track.rtp_seq;
        let written = Self::write_rid(rtc, track, None, seq, now, payload, marker, audio);
        if written {
            track.rtp_seq += 1;
        }
        written
    }

    /// Writes one packet on `track`'s stream `rid` (a simulcast layer) or its only stream.
    #[allow(clippy::too_many_arguments)]
    fn write_rid(
        rtc: &mut Rtc,
        track: &Track,
        rid: Option<Rid>,
        seq: u64,
        now: Instant,
        payload: Vec<u8>,
        marker: bool,
        audio: bool,
    ) -> bool {
        let exts = ExtensionValues {
            audio_level: audio.then_some(-30),
            voice_activity: audio.then_some(true),
            ..Default::default()
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(track.mid, rid) else {
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(track.pt, seq.into(), track.rtp_time, now, payload)
                .marker(marker)
                .ext_vals(exts)
                .nackable(true),
        );
        true
    }

    /// Writes the audio packets and video frames that are due.
    fn send_due(&mut self, now: Instant) {
        let window = self.timing.window;
        if let (Some(track), Some(next)) =
            (self.sender.audio.as_mut(), self.sender.next_audio.as_mut())
        {
            if now >= *next {
                *next = if now - *next > MAX_LAG {
                    now + self.sender.audio_period
                } else {
                    *next + self.sender.audio_period
                };
                let send_ns = self.timing.ns(now);
                let h = Header {
                    sender: self.index,
                    stream: Stream::Audio,
                    seq: track.tag,
                    send_ns,
                    keyframe: false,
                    last_of_frame: true,
                };
                let p = payload(&h, audio_len(track.tag));
                if Self::write(&mut self.rtc, track, now, p, true, true) {
                    self.sender
                        .stats
                        .record(Stream::Audio, track.tag, send_ns, &window);
                    track.tag += 1;
                    track.rtp_time = track.rtp_time.wrapping_add(960);
                }
            }
        }
        if let (Some(track), Some(next)) =
            (self.sender.video.as_mut(), self.sender.next_video.as_mut())
        {
            if now >= *next {
                *next = if now - *next > MAX_LAG {
                    now + self.sender.video_period
                } else {
                    *next + self.sender.video_period
                };
                let keyframe = self.sender.keyframe_pending;
                let sizes = video_frame_sizes(keyframe, self.sender.frame);
                let n = sizes.len();
                let mut written = 0;
                if let Some(layers) = self.sender.layers.as_mut() {
                    // Each layer the whole frame, low to high; a keyframe on all of them.
                    let tag = track.tag;
                    let mut any = false;
                    for (l, (rid, size, scale)) in LAYERS.iter().enumerate() {
                        let layer = &mut layers[l];
                        let mut sent = 0;
                        for (i, len) in sizes.iter().enumerate() {
                            let send_ns = self.timing.ns(Instant::now());
                            let h = Header {
                                sender: self.index,
                                stream: Stream::Video,
                                seq: tag + i as u32,
                                send_ns,
                                keyframe,
                                last_of_frame: i + 1 == n,
                            };
                            let len = ((*len as f64 * scale) as usize).max(64);
                            let p = vp8_payload(&h, len, l as u8, layer.picture_id, i == 0, *size);
                            let rid = Some(Rid::from(*rid));
                            let seq = layer.rtp_seq;
                            if !Self::write_rid(
                                &mut self.rtc,
                                track,
                                rid,
                                seq,
                                now,
                                p,
                                i + 1 == n,
                                false,
                            ) {
                                break;
                            }
                            layer.rtp_seq += 1;
                            sent += 1;
                            // The sequence tags count once, on the top layer.
                            if l + 1 == LAYERS.len() {
                                self.sender
                                    .stats
                                    .record(Stream::Video, h.seq, send_ns, &window);
                            }
                        }
                        layer.picture_id = (layer.picture_id + 1) & 0x7fff;
                        any |= sent > 0;
                        if l + 1 == LAYERS.len() {
                            written = sent;
                        }
                    }
                    // The frame's tags are taken once any layer used them.
                    if any {
                        track.tag += n as u32;
                    }
                } else {
                    for (i, len) in sizes.into_iter().enumerate() {
                        let send_ns = self.timing.ns(Instant::now());
                        let h = Header {
                            sender: self.index,
                            stream: Stream::Video,
                            seq: track.tag,
                            send_ns,
                            keyframe,
                            last_of_frame: i + 1 == n,
                        };
                        let p = payload(&h, len);
                        if !Self::write(&mut self.rtc, track, now, p, i + 1 == n, false) {
                            break;
                        }
                        self.sender
                            .stats
                            .record(Stream::Video, track.tag, send_ns, &window);
                        track.tag += 1;
                        written += 1;
                    }
                }
                if written > 0 {
                    self.sender.frame += 1;
                    track.rtp_time = track.rtp_time.wrapping_add(3000);
                    if written == n {
                        self.sender.keyframe_pending = false;
                    }
                }
            }
        }
    }

    fn next_media_due(&self) -> Option<Instant> {
        // A peer without send tracks (the Janus subscriber) has nothing due.
        [
            self.sender
                .next_audio
                .filter(|_| self.sender.audio.is_some()),
            self.sender
                .next_video
                .filter(|_| self.sender.video.is_some()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_datagram(&mut self, src: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        match Receive::new(Protocol::Udp, src, self.local, datagram) {
            Ok(r) => {
                if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                    self.errors.push(format!("handle_input: {e}"));
                }
            }
            Err(_) => self.recv.foreign += 1,
        }
    }

    /// Runs the peer until `timing.stop_at` (or its departure), then leaves and reports. The
    /// peer and its socket are dropped on return.
    pub async fn run(mut self) -> PeerReport {
        if let Err(e) = self.run_loop().await {
            self.errors.push(format!("{e:#}"));
        }
        let left_ns = self.timing.ns(Instant::now());
        let ended_by_server = self.sig.as_ref().is_some_and(|s| s.ended);
        if let Some(sig) = self.sig.as_mut() {
            if !sig.ended {
                let leave = serde_json::to_string(&ClientMsg::Leave).unwrap_or_default();
                let _ = sig.ws.send(Message::Text(leave.into())).await;
                let _ = sig.ws.close(None).await;
            }
        }
        PeerReport {
            index: self.index,
            meeting: 0,
            presence: Presence {
                joined_ns: self.timing.ns(self.joined_at),
                left_ns,
            },
            send: self.sender.stats,
            recv: self.recv,
            connect_time: self
                .connected_at
                .map(|c| c.saturating_duration_since(self.joined_at)),
            recv_slots: self.recv_slots,
            keyframe_requests: self.keyframe_requests,
            shows: self.shows,
            ended_by_server,
            joined_at_url: self.joined_at_url,
            errors: self.errors,
        }
    }

    async fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; RECV_BUF];
        let stop_at = self.stop_at();
        self.drain().await?;
        loop {
            let now = Instant::now();
            if now >= stop_at {
                return Ok(());
            }
            if now >= self.next_timeout {
                self.rtc.handle_input(Input::Timeout(now))?;
            }
            if self.connected_at.is_some() && now < stop_at {
                self.send_due(now);
            }
            self.drain().await?;
            if let Some(sig) = self.sig.as_mut() {
                if now >= sig.next_ping && !sig.ended {
                    sig.next_ping = now + PING_EVERY;
                    let ping = serde_json::to_string(&ClientMsg::Ping)?;
                    sig.ws.send(Message::Text(ping.into())).await?;
                }
            }
            let mut wake = self.next_timeout.min(stop_at);
            if let Some(t) = self.next_media_due() {
                wake = wake.min(t);
            }
            if let Some(s) = &self.sig {
                wake = wake.min(s.next_ping);
            }
            if let Some((_, at)) = self.tile_switch {
                if now >= at {
                    self.switch_tiles(now).await?;
                    continue;
                }
                wake = wake.min(at);
            }
            let w = tokio::select! {
                r = self.socket.readable() => Wake::Udp(r),
                m = next_ws(&mut self.sig) => Wake::Ws(m),
                o = next_offer(&mut self.offers) => Wake::Offer(o),
                _ = sleep_until(wake.into()) => Wake::Timer,
            };
            match w {
                Wake::Udp(r) => {
                    r?;
                    // Take whatever is queued, bounded.
                    for _ in 0..256 {
                        match recv_stamped(&self.socket, &mut buf) {
                            Ok(r) => {
                                self.rx_at = r.at;
                                for datagram in r.datagrams(&buf) {
                                    self.handle_datagram(r.source, datagram);
                                    self.drain().await?;
                                }
                                self.rx_at = None;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Wake::Ws(m) => self.on_ws(m).await?,
                Wake::Offer(Some((sdp, reply))) => {
                    let _ = reply.send(self.answer_offer(&sdp));
                }
                Wake::Offer(None) => self.offers = None,
                Wake::Timer => {}
            }
        }
    }
}

/// What one `recvmsg` on a participant's socket got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes in the buffer.
    pub(crate) len: usize,
    pub(crate) source: SocketAddr,
    /// When the kernel queued it (see [`recv_stamped`]).
    pub(crate) at: Option<Instant>,
    /// With UDP GRO: the length of each datagram in the buffer but the last (which may be
    /// shorter); `None` for a single datagram.
    segment: Option<usize>,
}

impl Received {
    /// The datagrams in `buf`: one, or the segments of a GRO message.
    fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        let bytes = &buf[..self.len.min(buf.len())];
        // `chunks` panics on 0; an empty datagram yields none (str0m would reject it).
        let size = self.segment.unwrap_or(bytes.len()).max(1);
        bytes.chunks(size)
    }
}

/// Receives one datagram, or with UDP GRO a run of them, with the time the kernel queued it
/// on the socket (`SO_TIMESTAMPNS`, enabled in [`Peer::with_socket`]), as an `Instant`.
/// Latency is measured to that moment: on loopback the server's send delivers the datagram
/// into the receiver's socket queue, so the figure is what the server adds, without the time
/// the packet then waits in the load generator (which runs every participant on one core and
/// would count its own queueing). The dial-in scenario's callers receive with it too (with
/// `SO_TIMESTAMPNS` enabled by [`enable_receive_timestamps`], without GRO).
pub(crate) fn recv_stamped(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    socket.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec, i32);
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let source = msg
            .address
            .as_ref()
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::V4((*v4).into()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
            })
            .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(std::io::Error::other(format!(
                "datagram from {source} longer than the {} byte receive buffer",
                RECV_BUF
            )));
        }
        let mut at = None;
        let mut segment = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        at = kernel_time_to_instant(Duration::new(
                            ts.tv_sec() as u64,
                            ts.tv_nsec() as u32,
                        ));
                    }
                    ControlMessageOwned::UdpGroSegments(size) => {
                        segment = usize::try_from(size).ok().filter(|s| *s > 0);
                    }
                    _ => {}
                }
            }
        }
        Ok(Received {
            len: msg.bytes,
            source,
            at,
            segment,
        })
    })
}

/// Switches on `SO_TIMESTAMPNS` for [`recv_stamped`].
pub(crate) fn enable_receive_timestamps(socket: &UdpSocket) -> anyhow::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true)
        .context("cannot enable receive timestamps")
}

/// A `CLOCK_REALTIME` time (since the epoch) from the recent past as an `Instant`.
fn kernel_time_to_instant(since_epoch: Duration) -> Option<Instant> {
    let now_real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let now = Instant::now();
    let ago = now_real.checked_sub(since_epoch).unwrap_or_default();
    // A stamp from the future or from long ago (clock stepped): fall back to now.
    if ago > Duration::from_secs(10) {
        return None;
    }
    now.checked_sub(ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_names_the_node_s_websocket() {
        assert_eq!(
            redirect_ws_url("http://127.0.0.1:8080").as_deref(),
            Some("ws://127.0.0.1:8080/api/ws")
        );
        assert_eq!(
            redirect_ws_url("https://meet.example/node/b/").as_deref(),
            Some("wss://meet.example/node/b/api/ws")
        );
        assert_eq!(redirect_ws_url("ftp://meet.example"), None);
    }

    /// The participants' clocks (see [`clock_rate`]): within the spread, close to the nominal
    /// rate on average, and far enough apart that most pairs' send phases sweep a whole audio
    /// period within a 10 s window. With one rate for all (the earlier behaviour) no pair
    /// sweeps and the period comparison at the end fails too.
    #[test]
    fn participant_clocks_drift_apart_within_the_spread() {
        for n in [2u16, 10, 16, 25, 150] {
            let rates: Vec<f64> = (0..n).map(clock_rate).collect();
            for (i, r) in rates.iter().enumerate() {
                assert!(
                    (1.0 - CLOCK_SPREAD..=1.0 + CLOCK_SPREAD).contains(r),
                    "participant {i} of {n}: rate {r}"
                );
            }
            let mean = rates.iter().sum::<f64>() / f64::from(n);
            assert!(
                (mean - 1.0).abs() < 0.005,
                "{n} participants: mean rate {mean}"
            );
            let mut pairs = 0;
            let mut sweeping = 0;
            for i in 0..rates.len() {
                for j in i + 1..rates.len() {
                    pairs += 1;
                    // How far the two senders' phases move apart in a 10 s window.
                    let drift = Duration::from_secs(10).mul_f64((rates[i] - rates[j]).abs());
                    if drift >= AUDIO_PERIOD {
                        sweeping += 1;
                    }
                }
            }
            assert!(
                sweeping * 10 >= pairs * 8,
                "{n} participants: {sweeping} of {pairs} pairs sweep an audio period in 10 s"
            );
        }
        // Periods follow the rate: a faster clock sends more often.
        let fast = (0..10).max_by(|a, b| clock_rate(*a).total_cmp(&clock_rate(*b)));
        let slow = (0..10).min_by(|a, b| clock_rate(*a).total_cmp(&clock_rate(*b)));
        let (fast, slow) = (fast.expect("10 rates"), slow.expect("10 rates"));
        assert!(AUDIO_PERIOD.div_f64(clock_rate(fast)) < AUDIO_PERIOD.div_f64(clock_rate(slow)));
    }

    #[tokio::test]
    async fn receive_time_is_the_kernel_queueing_time() -> anyhow::Result<()> {
        let a = UdpSocket::bind("127.0.0.1:0").await?;
        let b = UdpSocket::bind("127.0.0.1:0").await?;
        setsockopt(&b, sockopt::ReceiveTimestampns, &true)?;
        // Linux switches packet timestamping on asynchronously after the first such socket.
        std::thread::sleep(Duration::from_millis(50));
        a.send_to(b"x", b.local_addr()?).await?;
        let sent = Instant::now();
        // The datagram waits in the queue; its receive time stays when it was queued.
        std::thread::sleep(Duration::from_millis(50));
        b.readable().await?;
        let r = recv_stamped(&b, &mut [0u8; 16])?;
        let read = Instant::now();
        assert_eq!((r.len, r.source, r.segment), (1, a.local_addr()?, None));
        let at = r.at.context("no kernel timestamp")?;
        assert!(
            read.duration_since(at) >= Duration::from_millis(45),
            "{:?}",
            read - at
        );
        assert!(at <= sent + Duration::from_millis(5));
        Ok(())
    }

    /// Sends `datagrams` (equal lengths but the last) from `from` to `to` as one GSO message.
    fn send_gso(from: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) -> anyhow::Result<()> {
        let joined: Vec<u8> = datagrams.concat();
        let segment = datagrams[0].len() as u16;
        let to = SockaddrStorage::from(to);
        nix::sys::socket::sendmsg(
            from.as_raw_fd(),
            &[std::io::IoSlice::new(&joined)],
            &[nix::sys::socket::ControlMessage::UdpGsoSegments(&segment)],
            MsgFlags::empty(),
            Some(&to),
        )?;
        Ok(())
    }

    /// Everything queued on `socket`, as the datagrams [`recv_stamped`] splits it into, and
    /// the number of `recvmsg` calls it took.
    async fn receive_all(socket: &UdpSocket, want: usize) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
        let mut buf = vec![0u8; RECV_BUF];
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < want {
            tokio::time::timeout(Duration::from_secs(2), socket.readable()).await??;
            match recv_stamped(socket, &mut buf) {
                Ok(r) => {
                    calls += 1;
                    got.extend(r.datagrams(&buf).map(<[u8]>::to_vec));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((got, calls))
    }

    #[tokio::test]
    async fn a_gso_message_is_received_as_its_datagrams_with_and_without_gro() -> anyhow::Result<()>
    {
        let timing = Timing {
            start: Instant::now(),
            window: Window {
                start_ns: 0,
                end_ns: 0,
            },
            stop_at: Instant::now(),
        };
        let from = UdpSocket::bind("127.0.0.1:0").await?;
        let datagrams: Vec<Vec<u8>> = [1000usize, 1000, 600]
            .iter()
            .enumerate()
            .map(|(i, len)| (0..*len).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        let mut calls = Vec::new();
        for gro in [true, false] {
            let options = PeerOptions {
                gro,
                ..PeerOptions::default()
            };
            let peer = Peer::new(0, timing, options).await?;
            send_gso(&from, peer.local, &datagrams)?;
            // A plain datagram after the run stays a datagram of its own.
            from.send_to(b"single", peer.local).await?;
            let (got, n) = receive_all(&peer.socket, 4).await?;
            assert_eq!(got[..3], datagrams[..], "gro {gro}");
            assert_eq!(got[3], b"single", "gro {gro}");
            calls.push(n);
        }
        // With GRO the run arrives in one receive; without it the kernel cut it up again.
        assert_eq!(calls, [2, 4]);
        Ok(())
    }

    #[test]
    fn received_splits_only_gro_messages() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7];
        let r = Received {
            len: 7,
            source: "127.0.0.1:9".parse().expect("address"),
            at: None,
            segment: Some(3),
        };
        let parts: Vec<&[u8]> = r.datagrams(&buf).collect();
        assert_eq!(parts, [&[1u8, 2, 3][..], &[4, 5, 6], &[7]]);
        let single = Received { segment: None, ..r };
        assert_eq!(single.datagrams(&buf).collect::<Vec<_>>(), [&buf[..]]);
        let empty = Received { len: 0, ..single };
        assert_eq!(empty.datagrams(&buf).count(), 0);
    }

    #[test]
    fn active_m_lines_skip_disabled_ones() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nm=audio\r\n";
        assert_eq!(active_m_lines(sdp), (1, 2));
        assert_eq!(active_m_lines(""), (0, 0));
    }
}
