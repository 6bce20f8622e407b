//! Scenarios and trials: who joins when (and leaves, for churn), against klausur or Janus, and
//! the direct peer-to-peer baseline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::client::{Peer, PeerOptions, PeerReport, Role, Timing};
use crate::cluster::ClusterServers;
use crate::floor::{self, Floor};
use crate::janus::{self, JanusServer};
use crate::procfs;
use crate::server::KlausurServer;
use crate::stats::{delivery, median, new_histogram, quantile, Member, Overlap, Window};

/// Most participants one trial may have (churn joiners included).
pub const MAX_PARTICIPANTS: usize = 500;

/// A stream between two participants counts from this long after the later of their joins
/// (connecting and being subscribed is the time to first frame, not loss). Everyone who joins
/// during the warm-up joins at least this long before the measured window.
pub const SETTLE: Duration = Duration::from_secs(1);
/// ... and until this long before the earlier of their departures.
pub const LEAVE_MARGIN: Duration = Duration::from_millis(500);

/// Settings shared by all trials of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_bin: PathBuf,
    pub warmup: Duration,
    pub window: Duration,
    pub drain: Duration,
    pub trials: usize,
    /// Gap between two participants' joins.
    pub stagger: Duration,
    pub server_cpu: Option<usize>,
    /// Media workers of the klausur server (`--media-workers`).
    pub media_workers: usize,
    /// Length of the loopback floor measured before each trial (zero: none; see `floor.rs`).
    pub floor: Duration,
    /// How the participants are built (codec list, UDP GRO).
    pub peer: PeerOptions,
}

/// A scenario: who joins and what each participant publishes.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `meeting-10`, `webinar-1-30`, `townhall-150`, `idle-20`, `churn-10-2`.
    pub name: String,
    /// The participants that join during the warm-up.
    pub roles: Vec<Role>,
    /// Gap between two joins (else `Settings::stagger`).
    pub stagger: Option<Duration>,
    /// Leaves (and as many joins in their place) per second during the window.
    pub churn_rate: Option<f64>,
    /// Measured window (else `Settings::window`).
    pub window: Option<Duration>,
    /// Each participant shows this many others' video (the next ones by index, as a grid
    /// page would) and tells the server (`video_tiles`); `None`: everyone's.
    pub tiles: Option<usize>,
    /// Cameras send three simulcast layers (`client::LAYERS`).
    pub simulcast: bool,
    /// Each participant switches its tiles between large and small this often (with `tiles`):
    /// the server then switches the layer it forwards.
    pub tile_switch: Option<Duration>,
    /// Meetings the participants are split into, in equal blocks by index (1: one meeting).
    pub meetings: usize,
}

impl Spec {
    fn new(name: String, roles: Vec<Role>) -> Spec {
        Spec {
            name,
            roles,
            stagger: None,
            churn_rate: None,
            window: None,
            tiles: None,
            simulcast: false,
            tile_switch: None,
            meetings: 1,
        }
    }

    /// `meetings M N`: M meetings of N participants each (audio and video, everyone receives
    /// everyone of their meeting), participants `m*N .. (m+1)*N` in meeting `m`.
    pub fn meetings(m: usize, n: usize) -> Spec {
        Spec {
            meetings: m.max(1),
            ..Spec::new(format!("meetings-{m}x{n}"), vec![Role::AV; m.max(1) * n])
        }
    }

    /// The meeting participant `i` is in.
    pub fn meeting_of(&self, i: usize) -> usize {
        let per = (self.roles.len() / self.meetings.max(1)).max(1);
        (i / per).min(self.meetings.max(1) - 1)
    }

    /// The same scenario with simulcast cameras (`--simulcast`), switching tile sizes every
    /// `switch` if given (`--switch-ms`).
    pub fn with_simulcast(self, switch: Option<Duration>) -> Spec {
        let mut name = format!("{}-simulcast", self.name);
        if let Some(d) = switch {
            name.push_str(&format!("-switch-{}ms", d.as_millis()));
        }
        Spec {
            name,
            simulcast: true,
            tile_switch: switch,
            ..self
        }
    }

    /// `meeting N`: everyone sends audio and video, everyone receives everyone.
    pub fn meeting(n: usize) -> Spec {
        Spec::new(format!("meeting-{n}"), vec![Role::AV; n])
    }

    /// `meeting N --tiles K`: as `meeting N`, but each participant shows (and is sent) the
    /// video of only K others, as a receiver with a grid page of K tiles.
    pub fn meeting_tiles(n: usize, k: usize) -> Spec {
        Spec {
            tiles: Some(k.min(n.saturating_sub(1))),
            ..Spec::new(format!("meeting-{n}-tiles-{k}"), vec![Role::AV; n])
        }
    }

    /// Whose video participant `i` shows: the `tiles` after it by index, wrapping.
    fn shows(&self, i: usize) -> Option<Vec<u16>> {
        let n = self.roles.len();
        self.tiles
            .map(|k| (1..=k).map(|d| ((i + d) % n) as u16).collect())
    }

    /// `webinar 1->M`: one presenter sends audio and video, M viewers only receive.
    pub fn webinar(m: usize) -> Spec {
        let mut roles = vec![Role::AV];
        roles.extend(std::iter::repeat_n(Role::listener(1, 1), m));
        Spec {
            stagger: Some(Duration::from_millis(20)),
            ..Spec::new(format!("webinar-1-{m}"), roles)
        }
    }

    /// `townhall N`: audio only; `speakers` participants talk, everyone hears them.
    pub fn townhall(n: usize, speakers: usize) -> Spec {
        let speakers = speakers.clamp(1, n.max(1));
        let speaker = Role {
            audio: true,
            video: false,
            expect: (speakers as u32 - 1, 0),
            silent: false,
        };
        let mut roles = vec![speaker; speakers];
        roles.extend(std::iter::repeat_n(
            Role::listener(speakers as u32, 0),
            n.saturating_sub(speakers),
        ));
        Spec {
            stagger: Some(Duration::from_millis(20)),
            ..Spec::new(format!("townhall-{n}"), roles)
        }
    }

    /// `idle N`: a meeting with microphones and cameras off: everyone negotiates audio and
    /// video, receives everyone's (empty) tracks, and sends nothing.
    pub fn idle(n: usize) -> Spec {
        Spec::new(format!("idle-{n}"), vec![Role::IDLE; n])
    }

    /// `churn N --rate R`: a meeting of N in which, during the window, R participants per
    /// second leave and as many new ones join in their place.
    pub fn churn(n: usize, rate: f64) -> Spec {
        Spec {
            churn_rate: Some(rate),
            ..Spec::new(format!("churn-{n}-{rate}"), vec![Role::AV; n])
        }
    }

    /// Participants present at a time.
    pub fn participants(&self) -> usize {
        self.roles.len()
    }

    fn stagger(&self, settings: &Settings) -> Duration {
        self.stagger.unwrap_or(settings.stagger)
    }

    pub fn window(&self, settings: &Settings) -> Duration {
        self.window.unwrap_or(settings.window)
    }

    /// Warm-up of a trial: everyone has joined at least [`SETTLE`] before the window starts
    /// (with some slack: a join is sent a little after its scheduled time).
    pub fn warmup(&self, settings: &Settings) -> Duration {
        settings.warmup.max(
            self.stagger(settings) * self.participants() as u32
                + SETTLE
                + Duration::from_millis(500),
        )
    }

    /// Churn events in a window (leaves, and as many joins), bounded by [`MAX_PARTICIPANTS`].
    pub fn churn_events(&self, window: Duration) -> usize {
        match self.churn_rate {
            Some(rate) if rate.is_finite() && rate > 0.0 && self.participants() >= 2 => {
                let k = (window.as_secs_f64() * rate).floor();
                (k as usize).min(MAX_PARTICIPANTS.saturating_sub(self.participants()))
            }
            _ => 0,
        }
    }
}

/// One participant of a trial: what it does, when it joins and when it leaves (offsets from
/// the trial's start; `None`: at the end of the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    pub role: Role,
    pub join: Duration,
    pub leave: Option<Duration>,
}

/// Who joins and leaves when. The spec's participants join one `stagger` apart from the start;
/// with churn, the `j`-th event of the window (`window_start + (j + 1/2) / rate`) makes the
/// current holder of place `1 + j mod (N - 1)` leave and a new participant (index `N + j`)
/// join in its place at the same moment: round robin over all places but the first.
pub fn schedule(
    spec: &Spec,
    stagger: Duration,
    window_start: Duration,
    window: Duration,
) -> Vec<Slot> {
    let n = spec.participants();
    let mut slots: Vec<Slot> = spec
        .roles
        .iter()
        .enumerate()
        .map(|(i, role)| Slot {
            role: *role,
            join: stagger * i as u32,
            leave: None,
        })
        .collect();
    let events = spec.churn_events(window);
    let Some(rate) = spec.churn_rate.filter(|_| events > 0) else {
        return slots;
    };
    // Who holds each place now (by participant index).
    let mut holder: Vec<usize> = (0..n).collect();
    for j in 0..events {
        let at = window_start + Duration::from_secs_f64((j as f64 + 0.5) / rate);
        let place = 1 + j % (n - 1);
        let leaving = holder[place];
        slots[leaving].leave = Some(at);
        holder[place] = slots.len();
        slots.push(Slot {
            role: spec.roles[place],
            join: at,
            leave: None,
        });
    }
    slots
}

/// The figures of one trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Participants present at a time.
    pub participants: usize,
    /// Participants that joined during the window (churn).
    pub joins_in_window: usize,
    pub window_s: f64,
    /// Packets expected and received between participants present at the same time (see
    /// [`delivery`]).
    pub expected: u64,
    pub received: u64,
    /// Every distinct window packet that reached a participant.
    pub forwarded: u64,
    /// Window packets the participants sent to the server (with simulcast, each layer's).
    pub sent_to_server: u64,
    /// Packets the server received and forwarded per server CPU-second:
    /// (`sent_to_server` + `forwarded`) / `server_cpu_s`.
    pub handled_per_cpu_s: f64,
    /// Window video packets the receivers got per simulcast layer (low, middle, high).
    pub layer_packets: [u64; 3],
    pub duplicates: u64,
    pub loss_ratio: f64,
    /// Loss between the participants present for the whole window only.
    pub stable_loss_ratio: f64,
    pub fwd_pkts_per_s: f64,
    pub server_cpu_s: f64,
    pub pkts_per_cpu_s: f64,
    /// CPU seconds of the load generator itself over the window (a saturated load generator
    /// inflates latency).
    pub loadgen_cpu_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub ttff_p50_ms: f64,
    pub ttff_p99_ms: f64,
    pub ttff_missing: usize,
    pub connected: usize,
    /// Server RSS at the end of the window.
    pub rss_mib: f64,
    /// Server RSS before anyone joined.
    pub rss_empty_mib: f64,
    /// Server RSS at the start of the window.
    pub rss_start_mib: f64,
    pub loadavg_1m: f64,
    pub keyframe_requests: u64,
    pub errors: Vec<String>,
    pub server_log_lines: usize,
    /// The loopback floor measured right before the trial (see `floor.rs`), if any.
    pub floor: Option<Floor>,
    /// A cluster's nodes, in node order (empty for one server).
    pub nodes: Vec<NodeTrial>,
}

/// One node of a cluster in a [`Trial`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeTrial {
    /// Participants that joined at it (after the redirect): its meetings'.
    pub participants: usize,
    /// Window packets that reached them.
    pub forwarded: u64,
    pub cpu_s: f64,
    pub pkts_per_cpu_s: f64,
}

/// CPU seconds of each process in `pids`, in their order.
fn cpu_of(pids: &[u32], ticks: f64) -> anyhow::Result<Vec<f64>> {
    pids.iter()
        .map(|&p| procfs::cpu_seconds(p, ticks))
        .collect()
}

/// The summed resident memory of `pids` in MiB.
fn rss_of(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| procfs::rss_mib(p)).sum()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn loss(d: crate::stats::Delivery) -> f64 {
    if d.expected == 0 {
        f64::NAN
    } else {
        d.loss_ratio()
    }
}

/// Turns the participants' reports into figures (server fields left at zero). Time to first
/// frame counts for participants with an index of at least `ttff_from` (the first participant
/// joins an empty meeting: its wait for others is not a TTFF; with churn, only the joins
/// during the window count).
pub fn summarize(reports: &[PeerReport], window: &Window, ttff_from: usize) -> Trial {
    let overlap = Overlap {
        settle_ns: SETTLE.as_nanos() as u64,
        margin_ns: LEAVE_MARGIN.as_nanos() as u64,
    };
    let members: Vec<Member<'_>> = reports
        .iter()
        .map(|r| Member {
            index: r.index,
            meeting: r.meeting,
            shows: r.shows.as_deref(),
            presence: r.presence,
            send: &r.send,
            recv: &r.recv,
        })
        .collect();
    let d = delivery(&members, overlap);
    let stable: Vec<Member<'_>> = members
        .iter()
        .filter(|m| m.presence.joined_ns <= window.start_ns && m.presence.left_ns >= window.end_ns)
        .copied()
        .collect();
    let stable_d = delivery(&stable, overlap);
    let forwarded: u64 = reports
        .iter()
        .flat_map(|r| r.recv.seen.values())
        .map(|t| t.unique)
        .sum();
    let sent_to_server: u64 = reports
        .iter()
        .map(|r| {
            let [audio, video] = &r.send.log;
            (audio.len() + video.len() * usize::from(r.send.video_layers.max(1))) as u64
        })
        .sum();
    let mut hist = new_histogram();
    for r in reports {
        let _ = hist.add(&r.recv.latency);
    }
    let q = |p: f64| {
        if hist.is_empty() {
            f64::NAN
        } else {
            ms(hist.value_at_quantile(p))
        }
    };
    let counted = || reports.iter().filter(|r| usize::from(r.index) >= ttff_from);
    let ttff: Vec<f64> = counted()
        .filter_map(|r| r.recv.time_to_first_frame_ns().map(ms))
        .collect();
    let ttff_missing = counted().count() - ttff.len();
    let mut errors: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("participant {}: {e}", r.index))
        })
        .collect();
    errors.truncate(20);
    Trial {
        participants: reports.len(),
        joins_in_window: reports
            .iter()
            .filter(|r| window.contains(r.presence.joined_ns))
            .count(),
        window_s: window.secs(),
        expected: d.expected,
        received: d.received,
        forwarded,
        sent_to_server,
        handled_per_cpu_s: 0.0,
        layer_packets: reports.iter().fold([0; 3], |mut a, r| {
            for (x, y) in a.iter_mut().zip(r.recv.layers) {
                *x += y;
            }
            a
        }),
        duplicates: reports.iter().map(|r| r.recv.duplicates()).sum(),
        loss_ratio: loss(d),
        stable_loss_ratio: loss(stable_d),
        fwd_pkts_per_s: forwarded as f64 / window.secs(),
        server_cpu_s: 0.0,
        pkts_per_cpu_s: 0.0,
        loadgen_cpu_s: 0.0,
        latency_p50_ms: q(0.5),
        latency_p99_ms: q(0.99),
        latency_p999_ms: q(0.999),
        ttff_p50_ms: quantile(&ttff, 0.5).unwrap_or(f64::NAN),
        ttff_p99_ms: quantile(&ttff, 0.99).unwrap_or(f64::NAN),
        ttff_missing,
        connected: reports.iter().filter(|r| r.connect_time.is_some()).count(),
        rss_mib: 0.0,
        rss_empty_mib: 0.0,
        rss_start_mib: 0.0,
        loadavg_1m: procfs::loadavg()[0],
        keyframe_requests: reports.iter().map(|r| r.keyframe_requests).sum(),
        errors,
        server_log_lines: 0,
        floor: None,
        nodes: Vec::new(),
    }
}

fn timing(window: Duration, drain: Duration, warmup: Duration) -> Timing {
    let start = Instant::now();
    let w = Window {
        start_ns: warmup.as_nanos() as u64,
        end_ns: (warmup + window).as_nanos() as u64,
    };
    Timing {
        start,
        window: w,
        stop_at: start + warmup + window + drain,
    }
}

/// The server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Klausur,
    /// Janus 1.1.2 VideoRoom in network namespaces (`janus.rs`).
    Janus,
    /// This many klausur nodes of one cluster on PostgreSQL and Redis (`cluster.rs`), one
    /// media worker each, node `i` pinned to the CPU `i` after the settings' server CPU.
    Cluster(usize),
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Klausur => "klausur",
            ServerKind::Janus => "janus",
            ServerKind::Cluster(1) => "klausur, 1 node of a cluster",
            ServerKind::Cluster(2) => "klausur, 2 nodes of a cluster",
            ServerKind::Cluster(_) => "klausur, nodes of a cluster",
        }
    }
}

enum Running {
    Klausur(KlausurServer),
    Janus(JanusServer),
    Cluster(ClusterServers),
}

impl Running {
    /// The server's processes (a cluster's nodes, in node order).
    fn pids(&self) -> Vec<u32> {
        match self {
            Running::Klausur(s) => vec![s.pid],
            Running::Janus(s) => vec![s.pid],
            Running::Cluster(c) => c.pids(),
        }
    }

    /// Where participant `i` joins a klausur server or cluster (WebSocket URL, meeting,
    /// invitation); `None` for Janus. A cluster's participants arrive at the nodes in turn,
    /// as through a load balancer, and are redirected to their meeting's node.
    fn klausur_join(&self, i: usize) -> Option<(String, String, String)> {
        match self {
            Running::Klausur(s) => {
                Some((s.ws_url(), s.token_meetings[i].clone(), s.tokens[i].clone()))
            }
            Running::Cluster(c) => Some((
                c.nodes[i % c.nodes.len()].ws_url(),
                c.token_meetings[i].clone(),
                c.tokens[i].clone(),
            )),
            Running::Janus(_) => None,
        }
    }

    /// Problem lines of the server's log.
    fn problems(&self) -> Vec<String> {
        match self {
            // The server's own stdout lines ("klausur: listening on ...", the bootstrap admin)
            // are not problems; everything else in the log (warnings, errors, panics) is.
            Running::Klausur(_) | Running::Cluster(_) => self
                .klausur_log()
                .lines()
                .filter(|l| !l.starts_with("klausur: ") && !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            Running::Janus(s) => s.problems(),
        }
    }

    fn klausur_log(&self) -> String {
        match self {
            Running::Klausur(s) => s.log(),
            Running::Cluster(c) => c.log(),
            Running::Janus(_) => String::new(),
        }
    }
}

/// One trial of a scenario against a fresh server of the given kind.
pub async fn trial(settings: &Settings, spec: &Spec, kind: ServerKind) -> anyhow::Result<Trial> {
    let n = spec.participants();
    let stagger = spec.stagger(settings);
    let warmup = spec.warmup(settings);
    let window = spec.window(settings);
    let slots = schedule(spec, stagger, warmup, window);
    let total = slots.len();
    let loadavg = procfs::loadavg()[0];
    let bin = settings.server_bin.clone();
    let cpu = settings.server_cpu;
    let meeting_of: Vec<usize> = (0..total).map(|i| spec.meeting_of(i)).collect();
    let (meetings, workers) = (spec.meetings, settings.media_workers);
    let server = match kind {
        ServerKind::Klausur => Running::Klausur(
            tokio::task::spawn_blocking(move || {
                KlausurServer::start(&bin, &meeting_of, meetings, workers, cpu)
            })
            .await
            .context("server setup task")??,
        ),
        ServerKind::Janus if spec.meetings > 1 => {
            anyhow::bail!("{}: several meetings run against klausur only", spec.name)
        }
        ServerKind::Cluster(nodes) => {
            let first = cpu.unwrap_or(0);
            let cpus = (0..nodes)
                .map(|i| cpu.map(|_| (first + i) % procfs::nproc()))
                .collect();
            Running::Cluster(ClusterServers::start(&bin, meeting_of, meetings, cpus).await?)
        }
        // Started on this thread: the guard must never outlive an interrupted run.
        ServerKind::Janus => {
            let s = JanusServer::start(cpu)?;
            s.create_room(total).await?;
            Running::Janus(s)
        }
    };
    let pids = server.pids();
    let ticks = procfs::clock_ticks_per_sec();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_empty = rss_of(&pids)?;
    let t = timing(window, settings.drain, warmup);
    let mut tasks = Vec::with_capacity(total);
    for (i, slot) in slots.iter().enumerate() {
        let options = settings.peer;
        let role = slot.role;
        let join_at = t.start + slot.join;
        let leave_at = slot.leave.map(|d| t.start + d);
        match server.klausur_join(i) {
            Some((url, meeting, token)) => {
                let shows = spec.shows(i);
                let simulcast = spec.simulcast;
                // Switches spread over the period, so they do not all come at once.
                let switch = spec.tile_switch.map(|every| {
                    let offset = every.mul_f64(i as f64 / total.max(1) as f64);
                    (every, t.start + warmup + offset)
                });
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(join_at.into()).await;
                    let mut peer = Peer::new(i as u16, t, options).await?;
                    peer.set_role(role);
                    peer.set_shows(shows);
                    peer.set_simulcast(simulcast);
                    if let Some((every, first)) = switch {
                        peer.set_tile_switch(every, first);
                    }
                    peer.set_leave_at(leave_at);
                    if let Err(e) = peer.join_klausur(&url, &meeting, &token).await {
                        return Err(e.context(format!("participant {i} could not join")));
                    }
                    Ok(peer.run().await)
                }));
            }
            None => {
                let Running::Janus(server) = &server else {
                    anyhow::bail!("no way to join participant {i}");
                };
                let spec = janus::JoinSpec {
                    index: i,
                    role,
                    timing: t,
                    leave_at,
                    options,
                    sockets: server.sockets()?,
                };
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(join_at.into()).await;
                    janus::participant(spec)
                        .await
                        .map_err(|e| e.context(format!("participant {i} could not join")))
                }));
            }
        }
    }
    tokio::time::sleep_until((t.start + warmup).into()).await;
    let cpu0 = cpu_of(&pids, ticks)?;
    let own0 = procfs::cpu_seconds(std::process::id(), ticks)?;
    let rss_start = rss_of(&pids)?;
    tokio::time::sleep_until((t.start + warmup + window).into()).await;
    let cpu1 = cpu_of(&pids, ticks)?;
    let own1 = procfs::cpu_seconds(std::process::id(), ticks)?;
    let rss = rss_of(&pids)?;
    let mut reports = Vec::with_capacity(total);
    let mut join_errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(mut r)) => {
                r.meeting = spec.meeting_of(usize::from(r.index)) as u16;
                reports.push(r)
            }
            Ok(Err(e)) => join_errors.push(format!("{e:#}")),
            Err(e) => join_errors.push(format!("participant task failed: {e}")),
        }
    }
    let ttff_from = if spec.churn_rate.is_some() { n } else { 1 };
    let mut trial = summarize(&reports, &t.window, ttff_from);
    if spec.roles.iter().all(|r| r.silent) {
        // Idle: everyone holds a receive slot for everyone else's audio and video.
        let want = (n as u32 - 1, n as u32 - 1);
        let short: Vec<String> = reports
            .iter()
            .filter(|r| r.recv_slots.0 < want.0 || r.recv_slots.1 < want.1)
            .map(|r| format!("{} ({}/{})", r.index, r.recv_slots.0, r.recv_slots.1))
            .collect();
        if !short.is_empty() {
            join_errors.push(format!(
                "participants with fewer than {}/{} audio/video receive slots: {}",
                want.0,
                want.1,
                short.join(", ")
            ));
        }
    }
    if trial.connected < total {
        join_errors.push(format!(
            "{} of {total} participants never connected",
            total - trial.connected
        ));
    }
    if !join_errors.is_empty() {
        // Participants that never joined still count: their absence is loss for everyone.
        trial.errors.splice(0..0, join_errors);
    }
    let log_lines = server.problems();
    trial.server_log_lines = log_lines.len();
    for l in log_lines.iter().take(5) {
        trial.errors.push(format!("server log: {l}"));
    }
    if let Running::Cluster(c) = &server {
        // Each node's share: the packets that reached the participants joined at it (its
        // meetings' participants), and its own CPU.
        for (k, node) in c.nodes.iter().enumerate() {
            let url = node.ws_url();
            let mine: Vec<PeerReport> = reports
                .iter()
                .filter(|r| r.joined_at_url.as_deref() == Some(url.as_str()))
                .cloned()
                .collect();
            let forwarded = summarize(&mine, &t.window, ttff_from).forwarded;
            let cpu_s = cpu1[k] - cpu0[k];
            trial.nodes.push(NodeTrial {
                participants: mine.len(),
                forwarded,
                cpu_s,
                pkts_per_cpu_s: if cpu_s > 0.0 {
                    forwarded as f64 / cpu_s
                } else {
                    f64::NAN
                },
            });
        }
    }
    let (cpu0, cpu1): (f64, f64) = (cpu0.iter().sum(), cpu1.iter().sum());
    trial.participants = n;
    trial.server_cpu_s = cpu1 - cpu0;
    trial.loadgen_cpu_s = own1 - own0;
    let per_cpu_s = |packets: u64| {
        if trial.server_cpu_s > 0.0 && trial.forwarded > 0 {
            packets as f64 / trial.server_cpu_s
        } else {
            f64::NAN
        }
    };
    trial.pkts_per_cpu_s = per_cpu_s(trial.forwarded);
    trial.handled_per_cpu_s = per_cpu_s(trial.forwarded + trial.sent_to_server);
    trial.rss_mib = rss;
    trial.rss_empty_mib = rss_empty;
    trial.rss_start_mib = rss_start;
    trial.loadavg_1m = loadavg;
    drop(server);
    Ok(trial)
}

/// One trial of the direct peer-to-peer baseline: two peers, same packet rates, no server.
pub async fn baseline_trial(settings: &Settings) -> anyhow::Result<Trial> {
    let loadavg = procfs::loadavg()[0];
    let warmup = Duration::from_secs(1).min(settings.warmup);
    let t = timing(settings.window, settings.drain, warmup);
    let mut a = Peer::new(0, t, settings.peer).await?;
    let mut b = Peer::new(1, t, settings.peer).await?;
    Peer::connect_direct(&mut a, &mut b)?;
    let ha = tokio::spawn(a.run());
    let hb = tokio::spawn(b.run());
    let mut reports = vec![ha.await?, hb.await?];
    // Connected from the start: the settle time for joins does not apply.
    for r in &mut reports {
        r.presence.joined_ns = 0;
    }
    let mut trial = summarize(&reports, &t.window, 1);
    trial.loadavg_1m = loadavg;
    Ok(trial)
}

/// Medians over trials of one scenario on one server, with the baseline beside it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub server: String,
    /// Participants present at a time.
    pub participants: usize,
    pub trials: usize,
    pub pkts_per_cpu_s: f64,
    /// Received plus forwarded packets per server CPU-second (see [`Trial::handled_per_cpu_s`]).
    pub handled_per_cpu_s: f64,
    pub fwd_pkts_per_s: f64,
    pub server_cpu_s_per_s: f64,
    pub loadgen_cpu_s_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub baseline_p50_ms: f64,
    pub baseline_p99_ms: f64,
    pub baseline_p999_ms: f64,
    pub p50_added_latency_ms: f64,
    pub p99_added_latency_ms: f64,
    pub p999_added_latency_ms: f64,
    pub loss_ratio: f64,
    pub stable_loss_ratio: f64,
    pub ttff_p50_ms: f64,
    pub ttff_p99_ms: f64,
    /// Joins during the window (churn).
    pub joins_in_window: f64,
    /// Server RSS at the end of the window.
    pub rss_mib: f64,
    /// Server RSS before anyone joined.
    pub rss_empty_mib: f64,
    /// (RSS at the end - RSS of the empty server) / participants: what a participant costs.
    pub rss_mib_per_participant: f64,
    /// RSS at the end / participants (the empty server's memory shared out).
    pub rss_total_mib_per_participant: f64,
    /// RSS at the end of the window - RSS at its start (with churn: a leak check, the same
    /// number of participants before and after).
    pub rss_window_growth_mib: f64,
    pub loadavg_1m: f64,
    /// The loopback floor before the trials, microseconds per datagram (see `floor.rs`).
    pub loopback_floor_us: f64,
    pub errors: Vec<String>,
    pub trial_figures: Vec<Trial>,
    pub baseline_figures: Vec<Trial>,
}

fn med(trials: &[Trial], f: impl Fn(&Trial) -> f64) -> f64 {
    median(&trials.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

/// Combines the trials (median of each figure) and the baseline trials.
pub fn combine(
    scenario: &str,
    server: &str,
    trials: Vec<Trial>,
    baseline: Vec<Trial>,
) -> ScenarioResult {
    let n = trials.first().map(|t| t.participants).unwrap_or(0);
    let per = |mib: f64| mib / n.max(1) as f64;
    let lat50 = med(&trials, |t| t.latency_p50_ms);
    let lat99 = med(&trials, |t| t.latency_p99_ms);
    let lat999 = med(&trials, |t| t.latency_p999_ms);
    let b50 = med(&baseline, |t| t.latency_p50_ms);
    let b99 = med(&baseline, |t| t.latency_p99_ms);
    let b999 = med(&baseline, |t| t.latency_p999_ms);
    let mut errors: Vec<String> = trials
        .iter()
        .flat_map(|t| t.errors.iter().cloned())
        .collect();
    errors.sort();
    errors.dedup();
    errors.truncate(20);
    ScenarioResult {
        scenario: scenario.to_string(),
        server: server.to_string(),
        participants: n,
        trials: trials.len(),
        pkts_per_cpu_s: med(&trials, |t| t.pkts_per_cpu_s),
        handled_per_cpu_s: med(&trials, |t| t.handled_per_cpu_s),
        fwd_pkts_per_s: med(&trials, |t| t.fwd_pkts_per_s),
        server_cpu_s_per_s: med(&trials, |t| t.server_cpu_s / t.window_s),
        loadgen_cpu_s_per_s: med(&trials, |t| t.loadgen_cpu_s / t.window_s),
        latency_p50_ms: lat50,
        latency_p99_ms: lat99,
        latency_p999_ms: lat999,
        baseline_p50_ms: b50,
        baseline_p99_ms: b99,
        baseline_p999_ms: b999,
        p50_added_latency_ms: lat50 - b50,
        p99_added_latency_ms: lat99 - b99,
        p999_added_latency_ms: lat999 - b999,
        loss_ratio: med(&trials, |t| t.loss_ratio),
        stable_loss_ratio: med(&trials, |t| t.stable_loss_ratio),
        ttff_p50_ms: med(&trials, |t| t.ttff_p50_ms),
        ttff_p99_ms: med(&trials, |t| t.ttff_p99_ms),
        joins_in_window: med(&trials, |t| t.joins_in_window as f64),
        rss_mib: med(&trials, |t| t.rss_mib),
        rss_empty_mib: med(&trials, |t| t.rss_empty_mib),
        rss_mib_per_participant: med(&trials, |t| per(t.rss_mib - t.rss_empty_mib)),
        rss_total_mib_per_participant: med(&trials, |t| per(t.rss_mib)),
        rss_window_growth_mib: med(&trials, |t| t.rss_mib - t.rss_start_mib),
        loadavg_1m: med(&trials, |t| t.loadavg_1m),
        loopback_floor_us: med(&trials, |t| t.floor.map_or(f64::NAN, |f| f.us_per_datagram)),
        errors,
        trial_figures: trials,
        baseline_figures: baseline,
    }
}

/// Runs the direct baseline `settings.trials` times.
pub async fn run_baseline(settings: &Settings) -> anyhow::Result<Vec<Trial>> {
    let mut baseline = Vec::new();
    for i in 0..settings.trials {
        eprintln!(
            "klausur-bench: direct peer-to-peer baseline, trial {}/{}",
            i + 1,
            settings.trials
        );
        let b = baseline_trial(settings).await?;
        eprintln!(
            "  p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, loss {:.5}",
            b.latency_p50_ms, b.latency_p99_ms, b.latency_p999_ms, b.loss_ratio
        );
        baseline.push(b);
    }
    Ok(baseline)
}

/// Runs a scenario against the given server `settings.trials` times; `baseline` from
/// [`run_baseline`].
pub async fn run_scenario(
    settings: &Settings,
    spec: &Spec,
    baseline: Vec<Trial>,
    kind: ServerKind,
) -> anyhow::Result<ScenarioResult> {
    let mut trials = Vec::new();
    for i in 0..settings.trials {
        trials.push(run_trial(settings, spec, kind, i).await?);
    }
    Ok(combine(&spec.name, kind.name(), trials, baseline))
}

/// Trial `i` of a scenario on one server, logged.
pub async fn run_trial(
    settings: &Settings,
    spec: &Spec,
    kind: ServerKind,
    i: usize,
) -> anyhow::Result<Trial> {
    eprintln!(
        "klausur-bench: {}, {}, trial {}/{}",
        spec.name,
        kind.name(),
        i + 1,
        settings.trials
    );
    let started = Instant::now();
    let measured_floor = if settings.floor.is_zero() {
        None
    } else {
        let f = floor::measure_async(settings.server_cpu, settings.floor).await?;
        eprintln!("  loopback floor {f}");
        Some(f)
    };
    let mut t = trial(settings, spec, kind).await?;
    t.floor = measured_floor;
    eprintln!(
        "  {:.0} fwd pkt/s, {:.3} server CPU-s, {:.3} load generator CPU-s, {:.0} pkt/CPU-s ({:.0} in + out), p50 {:.3} ms, p99 {:.3} ms, loss {:.5}, ttff p50 {:.0} ms, {} connected, {} joins in the window, rss {:.1} MiB (empty {:.1}, window start {:.1}), problems {}, {:.1} s{}",
        t.fwd_pkts_per_s,
        t.server_cpu_s,
        t.loadgen_cpu_s,
        t.pkts_per_cpu_s,
        t.handled_per_cpu_s,
        t.latency_p50_ms,
        t.latency_p99_ms,
        t.loss_ratio,
        t.ttff_p50_ms,
        t.connected,
        t.joins_in_window,
        t.rss_mib,
        t.rss_empty_mib,
        t.rss_start_mib,
        t.errors.len(),
        started.elapsed().as_secs_f64(),
        if t.layer_packets.iter().any(|&n| n > 0) {
            format!(
                ", video packets per layer (low / middle / high) {} / {} / {}",
                t.layer_packets[0], t.layer_packets[1], t.layer_packets[2]
            )
        } else {
            String::new()
        },
    );
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_are_split_into_meetings_in_blocks() {
        let spec = Spec::meetings(3, 4);
        assert_eq!(spec.participants(), 12);
        let of: Vec<usize> = (0..12).map(|i| spec.meeting_of(i)).collect();
        assert_eq!(of, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        // One meeting: everyone in it, also the churn's later slots.
        let one = Spec::meeting(5);
        assert!((0..20).all(|i| one.meeting_of(i) == 0));
    }

    fn settings() -> Settings {
        Settings {
            server_bin: PathBuf::new(),
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(10),
            drain: Duration::from_millis(700),
            trials: 3,
            stagger: Duration::from_millis(50),
            server_cpu: None,
            media_workers: 1,
            floor: Duration::ZERO,
            peer: PeerOptions::default(),
        }
    }

    #[test]
    fn churn_is_round_robin_over_all_places_but_the_first() {
        let spec = Spec::churn(4, 2.0);
        let s = settings();
        let warmup = spec.warmup(&s);
        assert_eq!(warmup, Duration::from_secs(3));
        let slots = schedule(&spec, s.stagger, warmup, Duration::from_secs(4));
        // 8 events in 4 s, 0.5 s apart from 3.25 s on; places 1, 2, 3, 1, 2, 3, 1, 2.
        assert_eq!(slots.len(), 4 + 8);
        let at = |j: u32| Some(Duration::from_millis(3_250 + 500 * u64::from(j)));
        assert_eq!(slots[0].leave, None);
        assert_eq!(slots[1].leave, at(0));
        assert_eq!(slots[2].leave, at(1));
        assert_eq!(slots[3].leave, at(2));
        // Participant 4 took place 1 at event 0 and leaves at event 3, and so on.
        for (j, place_event_next) in [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7)] {
            assert_eq!(slots[4 + j].join, at(j as u32).expect("time"));
            assert_eq!(slots[4 + j].leave, at(place_event_next));
        }
        for j in 5..8 {
            assert_eq!(slots[4 + j].leave, None, "participant {}", 4 + j);
        }
        // Always 4 present: one leaves whenever one joins.
        let present = |t: Duration| {
            slots
                .iter()
                .filter(|s| s.join <= t && s.leave.is_none_or(|l| l > t))
                .count()
        };
        for ms in (3_000..7_000).step_by(100) {
            assert_eq!(present(Duration::from_millis(ms)), 4, "at {ms} ms");
        }
        assert!(slots.iter().all(|s| s.role == Role::AV));
    }

    #[test]
    fn no_churn_without_a_rate_and_bounded_with_one() {
        let s = settings();
        let w = Duration::from_secs(10);
        let slots = schedule(&Spec::meeting(5), s.stagger, Duration::from_secs(3), w);
        assert_eq!(slots.len(), 5);
        assert!(slots.iter().all(|s| s.leave.is_none()));
        assert_eq!(slots[4].join, Duration::from_millis(200));
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Spec::churn(5, rate).churn_events(w), 0, "{rate}");
        }
        assert_eq!(Spec::churn(1, 2.0).churn_events(w), 0);
        assert_eq!(Spec::churn(10, 1e6).churn_events(w), MAX_PARTICIPANTS - 10);
        let idle = Spec::idle(3);
        assert!(idle.roles.iter().all(|r| r.silent && r.audio && r.video));
        // The town hall's listeners receive audio only and publish nothing.
        let th = Spec::townhall(10, 3);
        assert_eq!(th.roles.iter().filter(|r| r.publishes()).count(), 3);
        assert!(th.roles.iter().all(|r| !r.video && r.expect.1 == 0));
    }

    fn trial_with(rss_empty: f64, rss_start: f64, rss: f64) -> Trial {
        let mut t = summarize(
            &[],
            &Window {
                start_ns: 0,
                end_ns: 1_000_000_000,
            },
            1,
        );
        t.participants = 10;
        t.rss_empty_mib = rss_empty;
        t.rss_start_mib = rss_start;
        t.rss_mib = rss;
        t
    }

    #[test]
    fn memory_per_participant_is_the_growth_over_the_empty_server() {
        let trials = vec![
            trial_with(11.0, 30.0, 31.0),
            trial_with(11.0, 30.0, 33.0),
            trial_with(12.0, 30.0, 32.0),
        ];
        let r = combine("idle-10", "klausur", trials, Vec::new());
        // Medians of (31 - 11) / 10, (33 - 11) / 10, (32 - 12) / 10.
        assert!((r.rss_mib_per_participant - 2.0).abs() < 1e-9);
        assert!((r.rss_total_mib_per_participant - 3.2).abs() < 1e-9);
        assert!((r.rss_window_growth_mib - 2.0).abs() < 1e-9);
        assert!((r.rss_empty_mib - 11.0).abs() < 1e-9);
        // No packets: no loss figure, no packets per CPU-second.
        assert!(r.loss_ratio.is_nan());
        assert!(r.ttff_p50_ms.is_nan());
    }
}
