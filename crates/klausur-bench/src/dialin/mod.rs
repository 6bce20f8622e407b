//! `klausur-bench dialin`: the telephone dial-in gateway under load, with real callers and
//! real end-to-end encrypted meetings (issue 18, "Measured in the benchmark").
//!
//! # What runs
//!
//! - A release `klausur serve` without a gateway of its own and a release `klausur sip-gateway`
//!   process beside it, on loopback, with a gateway token file ([`rig`]). The gateway is pinned
//!   alone to the measured CPU (`--server-cpu`, default 0); the server and this load generator
//!   share the other one, so nothing else runs on the gateway's core and its CPU time is read
//!   from /proc for its process alone.
//! - Meetings (profile `internal`, with a dial-in number) of [`signal::MEMBERS`] members each:
//!   native `klausur-client` participants with their own MLS member and SFrame keys over the
//!   real signaling and WebRTC path, each sending a 20 ms Opus frame every tick. The frames are
//!   encoded once before the run and reused ([`signal`] has the tone cycle).
//! - 1 to 4 callers per meeting (`--callers`, cycled until `--calls` are placed): the
//!   benchmark's own SIP user agent ([`uac`]) calls the gateway offering PCMA and
//!   telephone-event, types the meeting number, `#`, the caller's own PIN and `#` as RFC 4733
//!   events, then sends a G.711 tone and decodes what the gateway sends back.
//!
//! Each meeting has one 20 ms clock that sends its members' frames and its callers' packets
//! (meetings' clocks are spread over the 20 ms). Member 0 of each meeting decrypts and decodes
//! what it receives from each caller (and from member 1, the baseline through the media server
//! alone); the other members decrypt nothing (what they would hear is not measured, and the
//! load generator's core is better spent sending and receiving). The callers take each
//! packet's arrival time from the kernel (`SO_TIMESTAMPNS`), so the load generator's own
//! queueing is not part of the member → caller delay; member 0's arrival times are its
//! client's, so the caller → member delay includes the load generator's receive queueing, as
//! the member → member figure does.
//!
//! On a machine shared with builds and tests, another process on the gateway's core delays
//! its ticks and the figures show that process, not the gateway. So the gateway, the server
//! and the load generator run under round-robin real-time scheduling (`chrt -r 10`; as root)
//! unless `--no-realtime`: the others then run only while these three wait. CPU times are
//! unaffected; the delays are those of cores of their own.
//!
//! The machine's other work is watched too: the busy time of the gateway's CPU beyond the
//! gateway process, and of all CPUs beyond the three processes (/proc/stat). A window in which
//! others used more than 10 % of the gateway's core (or 20 % of a core on the whole machine)
//! is reported as disturbed.
//!
//! # What is measured, in two windows of the same run
//!
//! 1. Without loss: the gateway's CPU per call (CPU-seconds per call-second) and the
//!    concurrent calls per core it implies (calls divided by the gateway's share of its core);
//!    the one-way delay both ways (tone onset sent to onset received, see [`signal`]):
//!    member → caller (through the media server, the gateway's client, the meeting's jitter
//!    buffer, the mix, G.711) and caller → member (the call's jitter buffer, Opus, the media
//!    server); the member → member delay through the media server alone, for comparison; audio
//!    gaps at the callers and the members.
//! 2. The same with [`Options::loss`] of each caller's packets dropped at random by the caller
//!    (the trunk leg's loss): gaps at the members (the gateway conceals lost G.711 frames), and
//!    again CPU and delays.
//!
//! Delays are reported beside the jitter buffer's 40 ms target, and "beyond" it is the delay
//! minus 40 ms (the target: at most 60 ms at p95); the member → member figure shows
//! how much of that the media server and the load generator account for.

pub mod report;
pub mod rig;
pub mod signal;
pub mod uac;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use klausur_client::driver::{
    self as client, AudioFrame, AudioSink, ClientEvent, ClientHandle, ClientOptions,
};
use klausur_client::session::{Event, JoinAs};
use klausur_proto::ParticipantKind;
use klausur_sip::core::codec::{OpusDecoder, OpusEncoder, OpusSettings};
use klausur_sip::core::g711::Law;
use klausur_sip::core::prompts::{Language, Prompt, PromptSet};
use klausur_sip::driver::caller::audio_level;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::procfs;
use rig::{MeetingSetup, Rig};
use signal::{
    Cycle, ToneTracker, CALLER_FREQS, CYCLE_FRAMES, MEMBERS, MEMBER_FREQS, OTHERS_FROM, PROBE_FROM,
};
use uac::{Leg, SipUa, EVENT_PT, PCMA_PT};

/// Most calls in one run.
pub const MAX_CALLS: usize = 400;
/// The jitter buffer's target delay in the gateway (both directions pass one).
pub const JITTER_TARGET_MS: f64 = 40.0;
/// A received onset more than this after the latest sent one is not paired with it.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// How long the members may take to be in their groups, and the callers to be in the meetings.
const JOIN_TIMEOUT: Duration = Duration::from_secs(90);
/// After the last caller is in: the joined prompt plays over the meeting; wait this much more.
const PROMPT_MARGIN: Duration = Duration::from_secs(2);
/// A cycle's gap window lasts up to this long after its onset: cycles closer than this to a
/// window's end belong to neither window.
const CYCLE_SPAN: Duration = Duration::from_millis(1000);

/// The scenario's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent calls.
    pub calls: usize,
    /// Callers per meeting, cycled.
    pub callers: Vec<usize>,
    /// Share of each caller's packets dropped in the second window.
    pub loss: f64,
    /// Length of each window.
    pub window: Duration,
    /// Gap between two calls' INVITEs.
    pub call_stagger: Duration,
    /// Gap between two members' joins.
    pub member_stagger: Duration,
    /// The gateway's CPU (alone), and the CPU of the server and the load generator.
    pub gateway_cpu: Option<usize>,
    pub server_cpu: Option<usize>,
    pub server_bin: PathBuf,
    /// Real-time priority (SCHED_RR) for the gateway, the server and the load generator.
    pub realtime: Option<u8>,
}

/// Callers per meeting: `pattern` cycled until `calls` are placed (the last meeting takes the
/// rest).
pub fn meeting_plan(calls: usize, pattern: &[usize]) -> Vec<usize> {
    let mut plan = Vec::new();
    let mut left = calls;
    let pattern: Vec<usize> = pattern
        .iter()
        .map(|&c| c.clamp(1, signal::MAX_CALLERS))
        .collect();
    if pattern.is_empty() {
        return plan;
    }
    for &c in pattern.iter().cycle() {
        if left == 0 {
            break;
        }
        let c = c.min(left);
        plan.push(c);
        left -= c;
    }
    plan
}

/// One member's pre-encoded cycle.
struct MemberCycle {
    frames: Vec<Vec<u8>>,
    levels: Vec<u8>,
    /// Where the onset lies: frame and the time from that frame's start.
    onset_frame: u64,
    onset_offset: Duration,
}

/// One caller's pre-encoded cycle (A-law).
struct CallerCycle {
    frames: Vec<Vec<u8>>,
    onset_frame: u64,
    onset_offset: Duration,
}

/// Everything sent, encoded once.
struct Tones {
    /// Per member: (as the cycle's probe, as one of the others).
    members: Vec<(MemberCycle, MemberCycle)>,
    callers: Vec<CallerCycle>,
}

fn onset_at(q: usize, per_frame: usize, rate: u32) -> (u64, Duration) {
    (
        (q / per_frame) as u64,
        Duration::from_secs_f64((q % per_frame) as f64 / f64::from(rate)),
    )
}

fn member_cycle(freq: f64, from: u64) -> anyhow::Result<MemberCycle> {
    let pcm = signal::cycle_pcm(freq, 48_000, from);
    let mut enc = OpusEncoder::new(48_000, OpusSettings::default())?;
    // One cycle to settle the encoder, as it will be after the first cycle of the run.
    for f in &pcm {
        enc.encode(f)?;
    }
    let frames = pcm
        .iter()
        .map(|f| enc.encode(f).map(<[u8]>::to_vec))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dec = OpusDecoder::new()?;
    for f in &frames {
        dec.decode(f)?;
    }
    let mut decoded = Vec::with_capacity(pcm.len() * 960);
    for f in &frames {
        decoded.extend_from_slice(dec.decode(f)?);
    }
    let q = signal::first_onset(&decoded, 48_000).context("no onset in an encoded cycle")?;
    let (onset_frame, onset_offset) = onset_at(q, 960, 48_000);
    Ok(MemberCycle {
        levels: pcm.iter().map(|f| audio_level(f)).collect(),
        frames,
        onset_frame,
        onset_offset,
    })
}

fn caller_cycle(freq: f64) -> anyhow::Result<CallerCycle> {
    let pcm = signal::cycle_pcm(freq, 8000, OTHERS_FROM);
    let frames: Vec<Vec<u8>> = pcm
        .iter()
        .map(|f| {
            let mut out = vec![0u8; f.len()];
            Law::ALaw.encode_slice(f, &mut out);
            out
        })
        .collect();
    let mut decoded = vec![0i16; frames.len() * 160];
    for (f, out) in frames.iter().zip(decoded.chunks_mut(160)) {
        Law::ALaw.decode_slice(f, out);
    }
    let q = signal::first_onset(&decoded, 8000).context("no onset in the caller's cycle")?;
    let (onset_frame, onset_offset) = onset_at(q, 160, 8000);
    Ok(CallerCycle {
        frames,
        onset_frame,
        onset_offset,
    })
}

fn prepare_tones() -> anyhow::Result<Tones> {
    let members = MEMBER_FREQS
        .iter()
        .map(|&f| Ok((member_cycle(f, PROBE_FROM)?, member_cycle(f, OTHERS_FROM)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let callers = CALLER_FREQS
        .iter()
        .map(|&f| caller_cycle(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Tones { members, callers })
}

/// What a caller's receive task keeps.
struct CallerRx {
    tracker: ToneTracker,
    /// The last RTP timestamp and its extension to 64 bits; the first extended one.
    last: Option<(u32, u64)>,
    first: u64,
    packets: u64,
    cycles: Vec<Cycle>,
}

impl CallerRx {
    fn new() -> CallerRx {
        CallerRx {
            tracker: ToneTracker::new(8000, signal::tone_length(PROBE_FROM)),
            last: None,
            first: 0,
            packets: 0,
            cycles: Vec::new(),
        }
    }

    fn on_packet(&mut self, bytes: &[u8], arrived: Instant) {
        let Ok(p) = klausur_sip::core::rtp::parse(bytes) else {
            return;
        };
        if p.payload_type != PCMA_PT || p.payload.len() != 160 {
            return;
        }
        let ext = match self.last {
            None => {
                // Far from zero, so a packet from before the first one still has a place.
                let e = 1u64 << 40;
                self.first = e;
                e
            }
            Some((ts, e)) => e.wrapping_add_signed(i64::from(p.timestamp.wrapping_sub(ts) as i32)),
        };
        if self.last.is_none_or(|(_, e)| ext > e) {
            self.last = Some((p.timestamp, ext));
        }
        self.packets += 1;
        let Some(pos) = ext.checked_sub(self.first) else {
            return;
        };
        let mut pcm = [0i16; 160];
        Law::ALaw.decode_slice(p.payload, &mut pcm);
        self.tracker.push(pos, arrived, &pcm);
        self.cycles.extend(self.tracker.take_cycles());
    }
}

/// One caller of a meeting.
struct CallerSlot {
    meeting: usize,
    index: usize,
    keys: String,
    socket: Arc<UdpSocket>,
    /// The RTP leg and where it goes, once the call is answered.
    leg: Mutex<Option<(Leg, SocketAddr)>>,
    rx: Mutex<CallerRx>,
    call: Mutex<Option<uac::Call>>,
    error: Mutex<Option<String>>,
}

/// Which stream member 0 is listening to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Caller(usize),
    Member1,
}

/// One stream member 0 decodes.
struct Track {
    source: Source,
    decoder: OpusDecoder,
    tracker: ToneTracker,
    first: Option<u64>,
    frames: u64,
    cycles: Vec<Cycle>,
}

/// The onsets a meeting sent: per cycle the probe's, member 1's, and each caller's.
#[derive(Default)]
struct SentOnsets {
    probe: Vec<Instant>,
    member1: Vec<Instant>,
    callers: Vec<Vec<Instant>>,
}

/// What member 0 of a meeting sees.
#[derive(Default)]
struct View {
    /// Participant id -> the stream it is to member 0.
    sources: HashMap<String, Source>,
    /// Callers in the meeting with their MLS leaf claimed.
    phones_in: usize,
    in_group: Vec<bool>,
    errors: Vec<String>,
}

struct MeetingSlot {
    index: usize,
    setup: MeetingSetup,
    callers: Vec<Arc<CallerSlot>>,
    sent: Mutex<SentOnsets>,
    view: Mutex<View>,
    tracks: Mutex<HashMap<String, Track>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drains a member's events into the meeting's view.
async fn member_events(
    slot: Arc<MeetingSlot>,
    j: usize,
    mut events: mpsc::UnboundedReceiver<ClientEvent>,
) {
    while let Some(e) = events.recv().await {
        let mut v = lock(&slot.view);
        match e {
            ClientEvent::Session(Event::InGroup) => {
                if let Some(g) = v.in_group.get_mut(j) {
                    *g = true;
                }
            }
            ClientEvent::Session(Event::Participants(list)) if j == 0 => {
                let mut sources = HashMap::new();
                let mut phones_in = 0;
                for p in &list {
                    if p.kind == ParticipantKind::PhoneGateway {
                        if let Some(c) = (0..slot.callers.len())
                            .find(|&c| rig::caller_name(slot.index, c) == p.display_name)
                        {
                            sources.insert(p.id.to_string(), Source::Caller(c));
                        }
                        if p.leaf.is_some() {
                            phones_in += 1;
                        }
                    } else if p.display_name == format!("Mitglied {}.1", slot.index) {
                        sources.insert(p.id.to_string(), Source::Member1);
                    }
                }
                v.sources = sources;
                v.phones_in = phones_in;
            }
            ClientEvent::Failed(why) => v
                .errors
                .push(format!("meeting {} member {j} failed: {why}", slot.index)),
            _ => {}
        }
    }
}

/// Member 0's decoding of the streams it listens to.
async fn listen(slot: Arc<MeetingSlot>, mut audio: mpsc::Receiver<AudioFrame>) {
    while let Some(f) = audio.recv().await {
        let source = lock(&slot.view).sources.get(&f.participant_id).copied();
        let Some(source) = source else { continue };
        let mut tracks = lock(&slot.tracks);
        let track = match tracks.get_mut(&f.participant_id) {
            Some(t) => t,
            None => {
                let Ok(decoder) = OpusDecoder::new() else {
                    continue;
                };
                let tone = match source {
                    Source::Caller(_) => signal::tone_length(OTHERS_FROM),
                    // Member 1's tone is the shorter one in most cycles.
                    Source::Member1 => signal::tone_length(OTHERS_FROM),
                };
                tracks.entry(f.participant_id.clone()).or_insert(Track {
                    source,
                    decoder,
                    tracker: ToneTracker::new(48_000, tone),
                    first: None,
                    frames: 0,
                    cycles: Vec::new(),
                })
            }
        };
        let first = *track.first.get_or_insert(f.rtp_time);
        let Some(pos) = f.rtp_time.checked_sub(first) else {
            continue;
        };
        track.frames += 1;
        let Ok(pcm) = track.decoder.decode(&f.opus) else {
            continue;
        };
        track.tracker.push(pos, f.arrived, pcm);
        let done = track.tracker.take_cycles();
        track.cycles.extend(done);
    }
}

/// A meeting's clock: every 20 ms its members' frames and its callers' packets.
async fn meeting_clock(
    slot: Arc<MeetingSlot>,
    members: Vec<ClientHandle>,
    tones: Arc<Tones>,
    start: tokio::time::Instant,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval_at(start, signal::FRAME);
    // A media clock: frames late from a busy moment are sent at once, not skipped.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut packet = Vec::with_capacity(200);
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        let (cycle, f) = (k / CYCLE_FRAMES, k % CYCLE_FRAMES);
        let probe = (cycle % MEMBERS as u64) as usize;
        for (j, m) in members.iter().enumerate() {
            let Some((as_probe, as_other)) = tones.members.get(j) else {
                continue;
            };
            let c = if j == probe { as_probe } else { as_other };
            let (Some(frame), Some(&level)) = (c.frames.get(f as usize), c.levels.get(f as usize))
            else {
                continue;
            };
            m.send_audio(frame.clone(), level);
            if f == c.onset_frame {
                let mut sent = lock(&slot.sent);
                if j == probe {
                    sent.probe.push(now + c.onset_offset);
                }
                if j == 1 {
                    sent.member1.push(now + c.onset_offset);
                }
            }
        }
        for caller in &slot.callers {
            let mut leg = lock(&caller.leg);
            let Some((leg, remote)) = leg.as_mut() else {
                continue;
            };
            let Some(tone) = tones.callers.get(caller.index) else {
                continue;
            };
            let Some(frame) = tone.frames.get(f as usize) else {
                continue;
            };
            let talking = leg.talking();
            let at = Instant::now();
            if leg.tick(frame, &mut packet) == uac::Sent::Packet && !packet.is_empty() {
                let _ = caller.socket.try_send_to(&packet, *remote);
            }
            if talking && f == tone.onset_frame {
                let mut sent = lock(&slot.sent);
                if let Some(v) = sent.callers.get_mut(caller.index) {
                    v.push(at + tone.onset_offset);
                }
            }
        }
        k += 1;
    }
    for m in &members {
        m.leave();
    }
}

/// Receives what the gateway sends one caller, each packet with the time the kernel queued it
/// on the socket (so the load generator's own queueing is not part of the delay).
async fn caller_receive(slot: Arc<CallerSlot>) {
    let mut buf = vec![0u8; 2048];
    loop {
        if slot.socket.readable().await.is_err() {
            return;
        }
        loop {
            match crate::client::recv_stamped(&slot.socket, &mut buf) {
                Ok(r) => {
                    if let Some(bytes) = buf.get(..r.len) {
                        let arrived = r.at.unwrap_or_else(Instant::now);
                        lock(&slot.rx).on_packet(bytes, arrived);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
    }
}

/// Places one call; the meeting's clock does the rest once the leg is set.
async fn place_call(
    ua: Arc<SipUa>,
    gateway: SocketAddr,
    slot: Arc<CallerSlot>,
    loss_ppm: Arc<AtomicU32>,
    seed: u64,
) {
    let rtp = match slot.socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            *lock(&slot.error) = Some(format!("RTP socket: {e}"));
            return;
        }
    };
    let caller = format!("+49301000{:03}{}", slot.meeting, slot.index);
    match ua.call(gateway, &caller, rtp).await {
        Ok(call) => {
            let leg = Leg::new(seed, PCMA_PT, EVENT_PT, &slot.keys, loss_ppm);
            *lock(&slot.leg) = Some((leg, call.remote_rtp));
            *lock(&slot.call) = Some(call);
        }
        Err(e) => *lock(&slot.error) = Some(format!("{e:#}")),
    }
}

/// CPU seconds of the gateway, the server and this process, busy seconds of the gateway's CPU
/// and of the whole machine, and the gateway's RSS.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    gateway: f64,
    server: f64,
    own: f64,
    gateway_core_busy: f64,
    machine_busy: f64,
    gateway_rss_mib: f64,
}

fn snapshot(rig: &Rig, gateway_cpu: Option<usize>, ticks: f64) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        at: Instant::now(),
        gateway: procfs::cpu_seconds(rig.gateway_pid, ticks)?,
        server: procfs::cpu_seconds(rig.server_pid, ticks)?,
        own: procfs::cpu_seconds(std::process::id(), ticks)?,
        gateway_core_busy: procfs::cpu_busy_seconds(gateway_cpu, ticks)?,
        machine_busy: procfs::cpu_busy_seconds(None, ticks)?,
        gateway_rss_mib: procfs::rss_mib(rig.gateway_pid)?,
    })
}

/// Beyond these shares of a core used by others, a window counts as disturbed.
const DISTURBED_GATEWAY_CORE: f64 = 0.10;
const DISTURBED_MACHINE: f64 = 0.20;

/// What one window measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowResult {
    pub name: String,
    pub loss: f64,
    pub seconds: f64,
    pub calls: usize,
    /// Gateway CPU-seconds over the window.
    pub gateway_cpu_s: f64,
    /// Gateway CPU-seconds per call-second.
    pub cpu_per_call_s: f64,
    /// Calls one core would carry at this cost.
    pub calls_per_core: f64,
    /// Share of a core used by the server and by the load generator (sharing one core).
    pub server_core_share: f64,
    pub loadgen_core_share: f64,
    /// Share of a core the gateway's CPU was busy with anything but the gateway process
    /// (other processes, interrupts); with the whole machine (all CPUs) minus the gateway, the
    /// server and the load generator. High values mean the window was disturbed.
    pub gateway_core_other_share: f64,
    pub machine_other_share: f64,
    pub gateway_rss_mib: f64,
    pub member_to_caller: report::Delays,
    pub caller_to_member: report::Delays,
    pub member_to_member: report::Delays,
    pub gaps_at_callers: signal::GapSummary,
    pub gaps_at_members: signal::GapSummary,
    /// Packets the callers received from the gateway, and the frames missing in their streams.
    pub caller_packets: u64,
    pub caller_missing_frames: u64,
    /// Caller frames member 0 received, and the ones missing in their streams.
    pub member_frames: u64,
    pub member_missing_frames: u64,
    /// Caller packets dropped on purpose (the trunk's loss).
    pub dropped_by_callers: u64,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DialinResult {
    pub calls: usize,
    pub meetings: usize,
    pub callers_per_meeting: Vec<usize>,
    pub members_per_meeting: usize,
    pub gateway_cpu: Option<usize>,
    pub server_cpu: Option<usize>,
    pub realtime: Option<u8>,
    pub joined_prompt_s: f64,
    pub setup_s: f64,
    pub windows: Vec<WindowResult>,
    pub problems: Vec<String>,
    pub wall_s: f64,
}

/// Counters at a moment, to take differences over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    caller_packets: u64,
    caller_missing: u64,
    member_frames: u64,
    member_missing: u64,
    dropped: u64,
}

fn counters(meetings: &[Arc<MeetingSlot>]) -> Counters {
    let mut c = Counters::default();
    for m in meetings {
        for caller in &m.callers {
            {
                let rx = lock(&caller.rx);
                c.caller_packets += rx.packets;
                c.caller_missing += rx.tracker.missing_samples / 160;
            }
            if let Some((leg, _)) = lock(&caller.leg).as_ref() {
                c.dropped += leg.dropped;
            }
        }
        for t in lock(&m.tracks).values() {
            if matches!(t.source, Source::Caller(_)) {
                c.member_frames += t.frames;
                c.member_missing += t.tracker.missing_samples / 960;
            }
        }
    }
    c
}

/// Runs the scenario.
pub async fn run(opts: &Options) -> anyhow::Result<DialinResult> {
    let started = Instant::now();
    if !(1..=MAX_CALLS).contains(&opts.calls) {
        bail!("--calls must be 1 to {MAX_CALLS}");
    }
    if !(0.0..0.5).contains(&opts.loss) {
        bail!("--loss must be at least 0 and below 0.5");
    }
    let plan = meeting_plan(opts.calls, &opts.callers);
    let tones = Arc::new(prepare_tones()?);
    let joined_prompt = PromptSet::builtin(Language::De)
        .map(|p| p.clip(Prompt::Joined).duration())
        .unwrap_or(Duration::from_secs(20));

    if let Some(p) = opts.realtime {
        crate::server::set_own_realtime(p)
            .context("real-time scheduling for the load generator (--no-realtime runs without)")?;
    }
    let (bin, plan2, scpu, gcpu, rt) = (
        opts.server_bin.clone(),
        plan.clone(),
        opts.server_cpu,
        opts.gateway_cpu,
        opts.realtime,
    );
    let rig =
        tokio::task::spawn_blocking(move || Rig::start(&bin, &plan2, MEMBERS, scpu, gcpu, rt))
            .await
            .context("setup task")??;
    eprintln!(
        "klausur-bench: dialin: {} calls in {} meetings; server pid {}, gateway pid {} ({})",
        opts.calls,
        plan.len(),
        rig.server_pid,
        rig.gateway_pid,
        rig.dir().display()
    );

    // Meetings and their callers' sockets.
    let mut slots = Vec::with_capacity(plan.len());
    for (m, setup) in rig.meetings.iter().enumerate() {
        let mut callers = Vec::new();
        for (c, pin) in setup.caller_pins.iter().enumerate() {
            let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
                .await
                .context("a caller's RTP socket")?;
            crate::client::enable_receive_timestamps(&socket)?;
            callers.push(Arc::new(CallerSlot {
                meeting: m,
                index: c,
                keys: format!("{}#{pin}#", setup.number),
                socket: Arc::new(socket),
                leg: Mutex::new(None),
                rx: Mutex::new(CallerRx::new()),
                call: Mutex::new(None),
                error: Mutex::new(None),
            }));
        }
        slots.push(Arc::new(MeetingSlot {
            index: m,
            setup: setup.clone(),
            sent: Mutex::new(SentOnsets {
                callers: vec![Vec::new(); callers.len()],
                ..SentOnsets::default()
            }),
            callers,
            view: Mutex::new(View {
                in_group: vec![false; MEMBERS],
                ..View::default()
            }),
            tracks: Mutex::new(HashMap::new()),
        }));
    }

    // Members join, meeting by meeting.
    let mut background = Vec::new();
    let mut handles: Vec<Vec<ClientHandle>> = Vec::new();
    let mut client_id = 1u64;
    for slot in &slots {
        let mut members = Vec::with_capacity(MEMBERS);
        for (j, token) in slot.setup.member_tokens.iter().enumerate() {
            let audio = if j == 0 {
                let (tx, rx) = mpsc::channel(8192);
                background.push(tokio::spawn(listen(slot.clone(), rx)));
                let filter_slot = slot.clone();
                Some(AudioSink {
                    tx,
                    filter: Arc::new(move |pid: &str| {
                        lock(&filter_slot.view).sources.contains_key(pid)
                    }),
                })
            } else {
                // The other members decrypt nothing: what they would hear is not measured,
                // and the load generator's core is better spent on sending and receiving.
                Some(AudioSink {
                    tx: mpsc::channel(1).0,
                    filter: Arc::new(|_: &str| false),
                })
            };
            let mut handle = client::spawn(ClientOptions {
                server: rig.base_url.clone(),
                meeting_id: slot.setup.id.clone(),
                join: JoinAs::Invitation(token.clone()),
                publish_audio: true,
                bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                client_id,
                audio,
                tls: None,
                gateway_token: None,
            });
            client_id += 1;
            let events = std::mem::replace(&mut handle.events, mpsc::unbounded_channel().1);
            background.push(tokio::spawn(member_events(slot.clone(), j, events)));
            members.push(handle);
            tokio::time::sleep(opts.member_stagger).await;
        }
        handles.push(members);
    }
    wait_until(
        "every member in its meeting's encrypted group",
        &slots,
        |v, _| v.in_group.iter().all(|&g| g),
    )
    .await?;

    // The clocks start: members speak; callers' legs join them when answered.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut clocks = Vec::new();
    for (slot, members) in slots.iter().zip(handles) {
        // Spread the meetings' ticks over the 20 ms.
        let phase = signal::FRAME * slot.index as u32 / plan.len().max(1) as u32;
        clocks.push(tokio::spawn(meeting_clock(
            slot.clone(),
            members,
            tones.clone(),
            t0 + phase,
            stop.clone(),
        )));
    }

    // The calls.
    let ua = Arc::new(SipUa::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?);
    let loss_ppm = Arc::new(AtomicU32::new(0));
    let mut placing = Vec::new();
    for slot in &slots {
        for caller in &slot.callers {
            background.push(tokio::spawn(caller_receive(caller.clone())));
        }
    }
    let all_callers: Vec<Arc<CallerSlot>> = slots.iter().flat_map(|s| s.callers.clone()).collect();
    // Each call's 20 ms clock in the gateway starts when it is answered; a random part of a
    // tick in the gaps between INVITEs spreads those clocks' phases against the meetings'
    // (else a stagger of whole and half ticks would give every run a few phases of its own,
    // and the delays would differ from run to run by up to a tick per stage).
    let mut phases = StdRng::seed_from_u64(0x5eed);
    for (i, caller) in all_callers.iter().enumerate() {
        placing.push(tokio::spawn(place_call(
            ua.clone(),
            rig.sip,
            caller.clone(),
            loss_ppm.clone(),
            0x5eed_0000 + i as u64,
        )));
        let spread = Duration::from_micros(phases.gen_range(0..signal::FRAME.as_micros() as u64));
        tokio::time::sleep(opts.call_stagger + spread).await;
    }
    for p in placing {
        let _ = p.await;
    }
    let refused: Vec<String> = all_callers
        .iter()
        .filter_map(|c| lock(&c.error).clone())
        .collect();
    if let Some(e) = refused.first() {
        bail!(
            "{} of {} calls failed; the first: {e}",
            refused.len(),
            all_callers.len()
        );
    }
    wait_until("every caller in its meeting", &slots, |v, s| {
        v.phones_in >= s.callers.len()
    })
    .await?;
    let in_at = Instant::now();
    tokio::time::sleep(joined_prompt + PROMPT_MARGIN).await;
    let setup_s = in_at.duration_since(started).as_secs_f64();

    // The two windows.
    let ticks = procfs::clock_ticks_per_sec();
    let mut marks = Vec::new();
    for (name, loss) in [("no loss", 0.0), ("trunk loss", opts.loss)] {
        loss_ppm.store((loss * 1e6).round() as u32, Ordering::Relaxed);
        let a = snapshot(&rig, opts.gateway_cpu, ticks)?;
        let ca = counters(&slots);
        tokio::time::sleep(opts.window).await;
        let b = snapshot(&rig, opts.gateway_cpu, ticks)?;
        let cb = counters(&slots);
        marks.push((name, loss, a, b, ca, cb));
    }
    loss_ppm.store(0, Ordering::Relaxed);
    // Let the last cycles end.
    tokio::time::sleep(CYCLE_SPAN + Duration::from_millis(500)).await;

    let mut windows = Vec::new();
    for (name, loss, a, b, ca, cb) in marks {
        windows.push(window_result(
            name, loss, opts.calls, &a, &b, &ca, &cb, &slots,
        ));
    }

    // Hang up, leave, stop.
    let calls: Vec<uac::Call> = all_callers
        .iter()
        .filter_map(|c| lock(&c.call).take())
        .collect();
    let ended_early = calls
        .iter()
        .filter(|c| c.ended.load(Ordering::Relaxed))
        .count();
    for c in calls {
        c.hang_up().await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clocks {
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for b in background {
        b.abort();
    }
    let mut problems: Vec<String> = Vec::new();
    for w in &windows {
        if w.gateway_core_other_share > DISTURBED_GATEWAY_CORE
            || w.machine_other_share > DISTURBED_MACHINE
        {
            problems.push(format!(
                "window \"{}\" disturbed: other work used {:.0} % of the gateway's core and {:.0} % of a core on the whole machine",
                w.name,
                w.gateway_core_other_share * 100.0,
                w.machine_other_share * 100.0
            ));
        }
    }
    if ended_early > 0 {
        problems.push(format!(
            "{ended_early} of {} calls were ended by the gateway during the run",
            opts.calls
        ));
    }
    problems.extend(slots.iter().flat_map(|s| lock(&s.view).errors.clone()));
    problems.extend(rig.problems().into_iter().take(20));
    drop(rig);
    Ok(DialinResult {
        calls: opts.calls,
        meetings: plan.len(),
        callers_per_meeting: plan,
        members_per_meeting: MEMBERS,
        gateway_cpu: opts.gateway_cpu,
        server_cpu: opts.server_cpu,
        realtime: opts.realtime,
        joined_prompt_s: joined_prompt.as_secs_f64(),
        setup_s,
        windows,
        problems,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Waits until `done` holds for every meeting's view (bounded by [`JOIN_TIMEOUT`]).
async fn wait_until(
    what: &str,
    slots: &[Arc<MeetingSlot>],
    done: impl Fn(&View, &MeetingSlot) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let mut missing = 0;
        for s in slots {
            let v = lock(&s.view);
            if let Some(e) = v.errors.first() {
                bail!("waiting for {what}: {e}");
            }
            if !done(&v, s) {
                missing += 1;
            }
        }
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "waiting for {what}: {missing} of {} meetings not there after {} s",
                slots.len(),
                JOIN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Delays of one direction in one window.
#[derive(Default)]
struct Delayed {
    ms: Vec<f64>,
    unmatched: usize,
}

impl Delayed {
    /// Takes a received cycle if it belongs to the window; true if it did.
    fn add(&mut self, sent: &[Instant], c: &Cycle, inside: &impl Fn(Instant) -> bool) -> bool {
        match signal::sent_onset(sent, c.onset, MAX_DELAY) {
            Some(s) if inside(s) => {
                self.ms.push((c.onset - s).as_secs_f64() * 1000.0);
                true
            }
            Some(_) => false,
            None if inside(c.onset) => {
                self.unmatched += 1;
                true
            }
            None => false,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn window_result(
    name: &str,
    loss: f64,
    calls: usize,
    a: &Snapshot,
    b: &Snapshot,
    ca: &Counters,
    cb: &Counters,
    slots: &[Arc<MeetingSlot>],
) -> WindowResult {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    // A cycle belongs to the window its sent onset lies in, if its gap window ends inside it
    // too; a received onset that belongs to no sent one counts by its own time.
    let inside = |t: Instant| t >= a.at && t + CYCLE_SPAN <= b.at;
    let (mut m2c, mut c2m, mut m2m) = (Delayed::default(), Delayed::default(), Delayed::default());
    let (mut at_callers, mut at_members) = (Vec::new(), Vec::new());
    let mut expected = 0usize;
    for s in slots {
        let sent = lock(&s.sent);
        let sent_in = |v: &[Instant]| v.iter().filter(|&&t| inside(t)).count();
        for caller in &s.callers {
            let rx = lock(&caller.rx);
            for c in &rx.cycles {
                if m2c.add(&sent.probe, c, &inside) {
                    at_callers.push(c.clone());
                }
            }
            expected += sent_in(&sent.probe);
        }
        for t in lock(&s.tracks).values() {
            let (out, sent_t) = match t.source {
                Source::Caller(c) => (&mut c2m, sent.callers.get(c).map(Vec::as_slice)),
                Source::Member1 => (&mut m2m, Some(sent.member1.as_slice())),
            };
            for c in &t.cycles {
                if out.add(sent_t.unwrap_or(&[]), c, &inside) && t.source != Source::Member1 {
                    at_members.push(c.clone());
                }
            }
        }
    }
    let gw_cpu = b.gateway - a.gateway;
    let call_s = calls as f64 * secs;
    WindowResult {
        name: name.to_string(),
        loss,
        seconds: secs,
        calls,
        gateway_cpu_s: gw_cpu,
        cpu_per_call_s: gw_cpu / call_s,
        calls_per_core: if gw_cpu > 0.0 {
            call_s / gw_cpu
        } else {
            f64::NAN
        },
        server_core_share: (b.server - a.server) / secs,
        loadgen_core_share: (b.own - a.own) / secs,
        gateway_core_other_share: ((b.gateway_core_busy - a.gateway_core_busy) - gw_cpu).max(0.0)
            / secs,
        machine_other_share: ((b.machine_busy - a.machine_busy)
            - gw_cpu
            - (b.server - a.server)
            - (b.own - a.own))
            .max(0.0)
            / secs,
        gateway_rss_mib: b.gateway_rss_mib,
        member_to_caller: report::Delays::of(&m2c.ms, m2c.unmatched, expected),
        caller_to_member: report::Delays::of(&c2m.ms, c2m.unmatched, expected),
        member_to_member: report::Delays::of(&m2m.ms, m2m.unmatched, 0),
        gaps_at_callers: signal::summarize_gaps(&at_callers),
        gaps_at_members: signal::summarize_gaps(&at_members),
        caller_packets: cb.caller_packets - ca.caller_packets,
        caller_missing_frames: cb.caller_missing - ca.caller_missing,
        member_frames: cb.member_frames - ca.member_frames,
        member_missing_frames: cb.member_missing - ca.member_missing,
        dropped_by_callers: cb.dropped - ca.dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spread_over_meetings_by_the_pattern() {
        assert_eq!(meeting_plan(10, &[1, 2, 3, 4]), vec![1, 2, 3, 4]);
        assert_eq!(meeting_plan(12, &[1, 2, 3, 4]), vec![1, 2, 3, 4, 1, 1]);
        assert_eq!(meeting_plan(9, &[4]), vec![4, 4, 1]);
        // Out of range entries are clamped to 1..=4.
        assert_eq!(meeting_plan(6, &[0, 9]), vec![1, 4, 1]);
        assert_eq!(meeting_plan(0, &[1, 2]), Vec::<usize>::new());
        assert_eq!(meeting_plan(5, &[]), Vec::<usize>::new());
        assert_eq!(meeting_plan(40, &[1, 2, 3, 4]).iter().sum::<usize>(), 40);
    }

    #[test]
    fn the_tones_are_encoded_with_their_onsets_where_the_cycle_puts_them() {
        let tones = prepare_tones().expect("tones");
        for (probe, other) in &tones.members {
            assert_eq!(probe.frames.len() as u64, CYCLE_FRAMES);
            // Opus delays the decoded onset by its look-ahead: a few ms, within the frame.
            assert_eq!(probe.onset_frame, PROBE_FROM, "{:?}", probe.onset_offset);
            assert!(probe.onset_offset < Duration::from_millis(15));
            assert_eq!(other.onset_frame, OTHERS_FROM);
            assert!(probe.levels[0] == 127 && probe.levels[PROBE_FROM as usize] < 40);
        }
        for c in &tones.callers {
            assert_eq!(c.frames.len() as u64, CYCLE_FRAMES);
            assert!(c.frames.iter().all(|f| f.len() == 160));
            assert_eq!(c.onset_frame, OTHERS_FROM);
            assert!(c.onset_offset < Duration::from_millis(1));
        }
    }
}
