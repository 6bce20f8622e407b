//! `klausur-bench large`: large end-to-end encrypted meetings (issue 21, section 4).
//!
//! For each meeting size N (`--members 50,100`) the tool starts a release `klausur serve` of
//! its own (pinned to `--server-cpu`), prepares a meeting (profile `internal`) with N personal
//! invitations, and lets N native `klausur-client` participants join it over the real
//! signaling (`/api/ws`), the real MLS delivery service of the server and the real media path:
//! each with its own device key and credential from the server's identity CA, its own openmls
//! member, SFrame-encrypted audio.
//!
//! # The participants
//!
//! - Member 1 creates the group, so it is rank 0 and commits every add and removal (the other
//!   members wait [`klausur_client::group::RANK_DELAY`] per rank). It is also the one speaker:
//!   a 20 ms Opus frame every 20 ms.
//! - Members 2 .. N - `--measured` join in a crowd, `--stagger-ms` apart, and decrypt nothing
//!   (they receive the speaker's packets; what they would hear is not measured).
//! - The last `--measured` (default 3) join one at a time, each once everyone is settled in the
//!   group, and decrypt the speaker's audio. Their joins are measured.
//!
//! All participants run in this process, on the load generator's CPU. A real meeting has a
//! device per member; here 99 members share a core. So that the measured path (the joiner, the
//! committer and speaker) is not queued behind the crowd's processing of each commit, the
//! crowd runs on a thread of its own at nice 10 and the measured participants on another at
//! the normal priority (`--no-isolate` puts everyone at the same priority). The crowd's
//! figures (when the last of them is in a new epoch) are therefore upper bounds: their commit
//! processing is serialised on one core at a low priority.
//!
//! # What is measured
//!
//! - **Join time** of each measured joiner: from "pressing join" (the client starts: it opens
//!   the WebSocket to `/api/ws`) until its first decrypted audio frame from the speaker, with
//!   the steps on the way (joined the meeting, key package out and the Welcome in, in the
//!   group, media connected). The target (issue 21): the 100th decrypts within 3 s.
//! - **Commit and Welcome sizes** in bytes (the `MLSMessage`s, not their base64) of the
//!   commit that added the joiner, and the commit that removed a leaver.
//! - **Rekeying on a leave**: a crowd member leaves; the time until the committer's removal
//!   commit is out, until a member on a core of its own (the last measured joiner) is in the
//!   new epoch, and until every remaining member is.
//! - **Server CPU** (`/proc`): CPU-seconds over each measured join and over the crowd's join,
//!   and the share of its core during the measured join.
//!
//! Every wait is bounded ([`JOIN_TIMEOUT`], [`FRAME_TIMEOUT`], [`SETTLE_TIMEOUT`]); the server
//! is killed and its directory removed when a size is done or fails.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use klausur_client::driver::{
    self as client, AudioSink, ClientEvent, ClientHandle, ClientOptions, MlsTraffic,
};
use klausur_client::session::{Event, JoinAs};
use klausur_sip::core::codec::{OpusEncoder, OpusSettings};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::procfs;
use crate::server::{self, KlausurServer};

/// Largest meeting accepted.
pub const MAX_MEMBERS: usize = 200;
/// How long the crowd may take to be in the group.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a measured joiner may take to its first decrypted frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// How long everyone may take to agree on the roster after a join or a leave.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause after the roster settled, before the next measured step.
const PAUSE: Duration = Duration::from_millis(1500);
/// The crowd thread's nice value (see the module docs).
const CROWD_NICE: i32 = 10;
/// One audio frame.
const FRAME: Duration = Duration::from_millis(20);

/// The scenario's settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    /// Joiners measured one at a time at the end (the last is the N-th).
    pub measured: usize,
    /// Gap between two crowd joins.
    pub stagger: Duration,
    pub server_cpu: Option<usize>,
    pub server_bin: PathBuf,
    /// Crowd on its own thread at a lower priority.
    pub isolate: bool,
}

/// One measured join. Times are seconds from "pressing join".
#[derive(Debug, Clone, Serialize, Default)]
pub struct JoinFigures {
    /// The joiner's number (N for the last).
    pub number: usize,
    /// In the meeting (`joined` from the server).
    pub joined_s: Option<f64>,
    /// The committer's commit that adds the joiner went out.
    pub commit_sent_s: Option<f64>,
    /// The Welcome arrived.
    pub welcome_s: Option<f64>,
    /// The joiner is in the group (Welcome processed, leaf claimed).
    pub in_group_s: Option<f64>,
    pub media_s: Option<f64>,
    /// The first decrypted audio frame of the speaker.
    pub first_frame_s: Option<f64>,
    /// Sizes of the commit that added the joiner and of its Welcome (bytes).
    pub commit_bytes: Option<usize>,
    pub welcome_bytes: Option<usize>,
    /// Joiners the commit added (1 when the join was alone).
    pub added: usize,
    /// Every member has the joiner in its roster.
    pub all_members_s: Option<f64>,
    /// Server CPU-seconds from pressing join to the first frame, and its share of a core.
    pub server_cpu_s: f64,
    pub server_core_share: f64,
}

/// Rekeying after a member leaves. Times are seconds from the leave.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LeaveFigures {
    pub commit_sent_s: Option<f64>,
    pub commit_bytes: Option<usize>,
    /// The last measured joiner (a core of its own) is in the new epoch.
    pub own_core_member_s: Option<f64>,
    /// The speaker (the committer) is in the new epoch.
    pub committer_s: Option<f64>,
    /// Every remaining member is (the crowd serialised on one core: an upper bound).
    pub all_members_s: Option<f64>,
    /// The last measured joiner's first decrypted frame after it entered the new epoch.
    pub first_frame_after_s: Option<f64>,
    pub server_cpu_s: f64,
}

/// One meeting size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub members: usize,
    /// The crowd's join: wall time until everyone was in the group and agreed on the roster,
    /// server CPU over it, commits it took.
    pub crowd: usize,
    pub crowd_s: f64,
    pub crowd_server_cpu_s: f64,
    pub crowd_commits: usize,
    pub joins: Vec<JoinFigures>,
    pub leave: LeaveFigures,
    pub problems: Vec<String>,
}

/// The run.
#[derive(Debug, Clone, Serialize)]
pub struct LargeResult {
    pub sizes: Vec<SizeResult>,
    pub isolate: bool,
    pub stagger_ms: u64,
    pub server_cpu: Option<usize>,
    pub wall_s: f64,
}

/// What one participant's events said, with the time they were taken from the channel (on the
/// participant's own thread).
#[derive(Debug, Default)]
struct MemberState {
    joined: Option<Instant>,
    in_group: Option<Instant>,
    media: Option<Instant>,
    /// (when, roster length) of each roster change.
    rosters: Vec<(Instant, usize)>,
    commits_sent: Vec<(Instant, usize, Option<usize>, usize)>,
    welcome: Option<(Instant, usize)>,
    /// Arrival of each decrypted frame (the measured joiners only; bounded).
    frames: Vec<Instant>,
    failed: Option<String>,
    left: bool,
}

impl MemberState {
    fn roster_len(&self) -> usize {
        self.rosters.last().map_or(0, |r| r.1)
    }
}

type States = Arc<Mutex<Vec<MemberState>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most frames kept per measured joiner.
const MAX_FRAMES: usize = 20_000;

async fn drain_events(states: States, i: usize, mut events: mpsc::UnboundedReceiver<ClientEvent>) {
    while let Some(e) = events.recv().await {
        let now = Instant::now();
        let mut all = lock(&states);
        let Some(s) = all.get_mut(i) else { return };
        match e {
            ClientEvent::Session(Event::Joined { .. }) => {
                s.joined.get_or_insert(now);
            }
            ClientEvent::Session(Event::InGroup) => {
                s.in_group.get_or_insert(now);
            }
            ClientEvent::Session(Event::MediaConnected) => {
                s.media.get_or_insert(now);
            }
            ClientEvent::Session(Event::Roster(r)) => s.rosters.push((now, r.len())),
            ClientEvent::Mls(MlsTraffic::CommitSent {
                commit_bytes,
                welcome_bytes,
                welcome_for,
                at,
                ..
            }) => s
                .commits_sent
                .push((at, commit_bytes, welcome_bytes, welcome_for)),
            ClientEvent::Mls(MlsTraffic::WelcomeReceived { bytes, at, .. }) => {
                s.welcome = Some((at, bytes));
            }
            ClientEvent::Failed(why) if !s.left => {
                s.failed.get_or_insert(why);
            }
            _ => {}
        }
    }
}

async fn drain_audio(states: States, i: usize, mut rx: mpsc::Receiver<client::AudioFrame>) {
    while let Some(f) = rx.recv().await {
        let mut all = lock(&states);
        if let Some(s) = all.get_mut(i) {
            if s.frames.len() < MAX_FRAMES {
                s.frames.push(f.arrived);
            }
        }
    }
}

/// A thread with a current-thread runtime of its own, at `nice` when given; stops when
/// dropped.
struct Lane {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lane {
    fn start(name: &str, nice: Option<i32>) -> anyhow::Result<Lane> {
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Some(n) = nice {
                    renice_self(n);
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = htx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = htx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Tasks still running (clients that did not stop) are dropped with the runtime.
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        let handle = hrx
            .recv_timeout(Duration::from_secs(10))
            .context("lane thread")?
            .map_err(|e| anyhow::anyhow!("lane runtime: {e}"))?;
        Ok(Lane {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn spawn_client(&self, opts: ClientOptions) -> ClientHandle {
        let _g = self.handle.enter();
        client::spawn(opts)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sets the calling thread's nice value (Linux: nice is per thread).
fn renice_self(nice: i32) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let ok = tid.is_some_and(|tid| {
        std::process::Command::new("renice")
            .args(["-n", &nice.to_string(), "-p", &tid])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("klausur-bench: large: warning: could not renice the crowd's thread");
    }
}

/// A 20 ms Opus frame of a tone, and its level.
fn speaker_frame() -> anyhow::Result<(Vec<u8>, u8)> {
    let pcm: Vec<i16> = (0..960)
        .map(|n| ((n as f64 * 440.0 * 2.0 * std::f64::consts::PI / 48_000.0).sin() * 8000.0) as i16)
        .collect();
    let mut enc = OpusEncoder::new(48_000, OpusSettings::default())?;
    let mut frame = Vec::new();
    for _ in 0..3 {
        frame = enc.encode(&pcm)?.to_vec();
    }
    Ok((frame, klausur_sip::driver::caller::audio_level(&pcm)))
}

/// The server with a meeting and `n` invitations.
fn start_server(opts: &Options, n: usize) -> anyhow::Result<KlausurServer> {
    server::check_bin(&opts.server_bin)?;
    let dir = server::new_dir()?;
    let data = server::data_dir(&dir);
    let bin = &opts.server_bin;
    server::add_organiser(bin, &data)?;
    let meeting = server::admin(
        bin,
        &data,
        &[
            "meeting",
            "create",
            "Large",
            "--organiser",
            server::organiser(),
            "--profile",
            "internal",
        ],
        "",
    )?;
    let id = meeting["id"].as_str().context("meeting id")?.to_string();
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("Mitglied {}", i + 1);
        let inv = server::admin(bin, &data, &["invite", "create", &id, "--name", &name], "")?;
        tokens.push(inv["token"].as_str().context("token")?.to_string());
    }
    KlausurServer::launch(bin, dir, opts.server_cpu, id, tokens, &[])
}

/// Waits until `done` holds for the states, at most `timeout`; fails with `what` and the first
/// participant failure.
async fn wait_for(
    states: &States,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[MemberState]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let all = lock(states);
            if let Some((i, why)) = all
                .iter()
                .enumerate()
                .find_map(|(i, s)| s.failed.as_ref().map(|f| (i, f)))
            {
                bail!("{what}: member {} failed: {why}", i + 1);
            }
            if done(&all) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let all = lock(states);
            let in_group = all.iter().filter(|s| s.in_group.is_some()).count();
            bail!(
                "{what}: not within {} s ({in_group} of {} in the group)",
                timeout.as_secs(),
                all.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn secs(from: Instant, to: Option<Instant>) -> Option<f64> {
    to.map(|t| t.saturating_duration_since(from).as_secs_f64())
}

/// Runs one meeting size.
async fn run_size(opts: &Options, n: usize) -> anyhow::Result<SizeResult> {
    let measured = opts.measured.clamp(1, n.saturating_sub(2).max(1));
    if n < 3 || n <= measured + 1 {
        bail!("a meeting needs more members than the measured joiners plus the speaker");
    }
    let (bin, o) = (opts.server_bin.clone(), opts.clone());
    let srv = tokio::task::spawn_blocking(move || {
        let _ = bin;
        start_server(&o, n)
    })
    .await
    .context("setup task")??;
    eprintln!("klausur-bench: large: {n} members; server pid {}", srv.pid);
    let ticks = procfs::clock_ticks_per_sec();
    let server_cpu = |pid: u32| procfs::cpu_seconds(pid, ticks).unwrap_or(0.0);
    let fast = Lane::start("large-measured", None)?;
    let crowd_lane = if opts.isolate {
        Some(Lane::start("large-crowd", Some(CROWD_NICE))?)
    } else {
        None
    };
    let crowd = crowd_lane.as_ref().unwrap_or(&fast);
    let states: States = Arc::new(Mutex::new((0..n).map(|_| MemberState::default()).collect()));
    let mut handles: Vec<Option<ClientHandle>> = Vec::with_capacity(n);
    let base = srv.base_url();

    let spawn = |lane: &Lane, i: usize, listen: bool| -> ClientHandle {
        let audio = if listen {
            let (tx, rx) = mpsc::channel(4096);
            lane.handle.spawn(drain_audio(states.clone(), i, rx));
            AudioSink {
                tx,
                filter: Arc::new(|_: &str| true),
            }
        } else {
            AudioSink {
                tx: mpsc::channel(1).0,
                filter: Arc::new(|_: &str| false),
            }
        };
        let mut h = lane.spawn_client(ClientOptions {
            server: base.clone(),
            meeting_id: srv.meeting_id.clone(),
            join: JoinAs::Invitation(srv.tokens[i].clone()),
            publish_audio: true,
            bind_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            client_id: i as u64,
            audio: Some(audio),
            tls: None,
            gateway_token: None,
        });
        let events = std::mem::replace(&mut h.events, mpsc::unbounded_channel().1);
        lane.handle.spawn(drain_events(states.clone(), i, events));
        h
    };

    let mut problems = Vec::new();
    let result = async {
        // The speaker and committer.
        handles.push(Some(spawn(&fast, 0, false)));
        wait_for(
            &states,
            "the first member creates the group",
            JOIN_TIMEOUT,
            |s| s[0].in_group.is_some(),
        )
        .await?;
        let (frame, level) = speaker_frame()?;
        let speaker = handles[0].take();
        let speaking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let go = speaking.clone();
        let speaker_task = fast.handle.spawn(async move {
            let mut tick = tokio::time::interval(FRAME);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while go.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                if let Some(s) = &speaker {
                    s.send_audio(frame.clone(), level);
                }
            }
            speaker
        });

        // The crowd.
        let crowd_end = n - measured;
        let cpu0 = server_cpu(srv.pid);
        let t_crowd = Instant::now();
        for i in 1..crowd_end {
            handles.push(Some(spawn(crowd, i, false)));
            tokio::time::sleep(opts.stagger).await;
        }
        wait_for(&states, "the crowd joins the group", JOIN_TIMEOUT, |s| {
            s[..crowd_end].iter().all(|m| m.in_group.is_some())
        })
        .await?;
        wait_for(
            &states,
            "the crowd agrees on the roster",
            SETTLE_TIMEOUT,
            |s| s[..crowd_end].iter().all(|m| m.roster_len() == crowd_end),
        )
        .await?;
        let crowd_s = t_crowd.elapsed().as_secs_f64();
        let crowd_server_cpu_s = server_cpu(srv.pid) - cpu0;
        let crowd_commits = lock(&states)[0].commits_sent.len();
        eprintln!(
            "klausur-bench: large: {crowd_end} in the group after {crowd_s:.1} s \
             ({crowd_commits} commits)"
        );
        tokio::time::sleep(PAUSE).await;

        // The measured joins, one at a time.
        let mut joins = Vec::new();
        for i in crowd_end..n {
            let cpu_a = server_cpu(srv.pid);
            let t0 = Instant::now();
            let commits_before = lock(&states)[0].commits_sent.len();
            handles.push(Some(spawn(&fast, i, true)));
            wait_for(&states, "a measured joiner decrypts", FRAME_TIMEOUT, |s| {
                !s[i].frames.is_empty()
            })
            .await?;
            let cpu_b = server_cpu(srv.pid);
            let first = lock(&states)[i].frames.first().copied();
            wait_for(&states, "everyone has the joiner", SETTLE_TIMEOUT, |s| {
                s[..=i].iter().all(|m| m.roster_len() == i + 1)
            })
            .await?;
            let f = {
                let all = lock(&states);
                let s = &all[i];
                let commit = all[0]
                    .commits_sent
                    .get(commits_before..)
                    .and_then(|c| c.iter().find(|c| c.3 > 0));
                let all_members = all[..=i]
                    .iter()
                    .filter_map(|m| m.rosters.last().map(|r| r.0))
                    .max();
                let wall = first.map_or(0.0, |f| f.saturating_duration_since(t0).as_secs_f64());
                JoinFigures {
                    number: i + 1,
                    joined_s: secs(t0, s.joined),
                    commit_sent_s: secs(t0, commit.map(|c| c.0)),
                    welcome_s: secs(t0, s.welcome.map(|w| w.0)),
                    in_group_s: secs(t0, s.in_group),
                    media_s: secs(t0, s.media),
                    first_frame_s: secs(t0, first),
                    commit_bytes: commit.map(|c| c.1),
                    welcome_bytes: commit.and_then(|c| c.2),
                    added: commit.map_or(0, |c| c.3),
                    all_members_s: secs(t0, all_members),
                    server_cpu_s: cpu_b - cpu_a,
                    server_core_share: if wall > 0.0 {
                        (cpu_b - cpu_a) / wall
                    } else {
                        0.0
                    },
                }
            };
            eprintln!(
                "klausur-bench: large: joiner {} decrypts after {:.3} s",
                i + 1,
                f.first_frame_s.unwrap_or(f64::NAN)
            );
            joins.push(f);
            tokio::time::sleep(PAUSE).await;
        }

        // A crowd member leaves.
        let leaver = 1;
        let last = n - 1;
        let cpu_a = server_cpu(srv.pid);
        let commits_before = lock(&states)[0].commits_sent.len();
        let rosters_before: Vec<usize> = lock(&states).iter().map(|m| m.rosters.len()).collect();
        lock(&states)[leaver].left = true;
        let t0 = Instant::now();
        if let Some(h) = handles.get(leaver).and_then(Option::as_ref) {
            h.leave();
        }
        let remaining = |i: usize| i != leaver;
        wait_for(
            &states,
            "everyone is rekeyed after a leave",
            SETTLE_TIMEOUT,
            |s| {
                s.iter()
                    .enumerate()
                    .filter(|(i, _)| remaining(*i))
                    .all(|(_, m)| m.roster_len() == n - 1)
            },
        )
        .await?;
        let server_cpu_s = server_cpu(srv.pid) - cpu_a;
        // A few frames in the new epoch.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leave = {
            let all = lock(&states);
            let new_epoch_at = |i: usize| {
                all[i]
                    .rosters
                    .get(rosters_before[i]..)
                    .and_then(|r| r.iter().find(|r| r.1 == n - 1))
                    .map(|r| r.0)
            };
            let commit = all[0]
                .commits_sent
                .get(commits_before..)
                .and_then(|c| c.first());
            let own = new_epoch_at(last);
            LeaveFigures {
                commit_sent_s: secs(t0, commit.map(|c| c.0)),
                commit_bytes: commit.map(|c| c.1),
                own_core_member_s: secs(t0, own),
                committer_s: secs(t0, new_epoch_at(0)),
                all_members_s: secs(
                    t0,
                    (0..n)
                        .filter(|&i| remaining(i))
                        .filter_map(new_epoch_at)
                        .max(),
                ),
                first_frame_after_s: secs(
                    t0,
                    own.and_then(|o| all[last].frames.iter().copied().find(|&f| f > o)),
                ),
                server_cpu_s,
            }
        };
        speaking.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Ok(Some(s)) = speaker_task.await {
            s.leave();
        }
        anyhow::Ok((
            crowd_end,
            crowd_s,
            crowd_server_cpu_s,
            crowd_commits,
            joins,
            leave,
        ))
    }
    .await;

    for h in handles.iter().flatten() {
        h.leave();
    }
    // Give the leaves a moment to go out, then stop the lanes and the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(crowd_lane);
    drop(fast);
    let (crowd, crowd_s, crowd_server_cpu_s, crowd_commits, joins, leave) = result?;
    for l in srv.log().lines() {
        // The bench serves the API only: the missing web client is no problem.
        if !l.starts_with("klausur: ")
            && !l.trim().is_empty()
            && !l.contains("web client not built")
        {
            problems.push(format!("server: {l}"));
        }
    }
    drop(srv);
    Ok(SizeResult {
        members: n,
        crowd,
        crowd_s,
        crowd_server_cpu_s,
        crowd_commits,
        joins,
        leave,
        problems,
    })
}

/// Runs every size.
pub async fn run(opts: &Options) -> anyhow::Result<LargeResult> {
    let started = Instant::now();
    if opts.sizes.is_empty() {
        bail!("--members names no size");
    }
    let mut sizes = Vec::new();
    for &n in &opts.sizes {
        if !(4..=MAX_MEMBERS).contains(&n) {
            bail!("--members: each size must be 4 to {MAX_MEMBERS}");
        }
        sizes.push(run_size(opts, n).await?);
    }
    Ok(LargeResult {
        sizes,
        isolate: opts.isolate,
        stagger_ms: opts.stagger.as_millis() as u64,
        server_cpu: opts.server_cpu,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |s| format!("{:.0}", s * 1000.0))
}

fn bytes(v: Option<usize>) -> String {
    v.map_or_else(|| "–".into(), |b| b.to_string())
}

/// The figures as Markdown tables.
pub fn tables(r: &LargeResult) -> String {
    let mut out = String::new();
    out.push_str(
        "| members | joiner | joined (ms) | commit out (ms) | Welcome in (ms) | in group (ms) | media (ms) | **first decrypted frame (ms)** | everyone has it (ms) | commit (B) | Welcome (B) | server CPU (ms) | server core |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &r.sizes {
        for j in &s.joins {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {:.0} | {:.0} % |\n",
                s.members,
                j.number,
                ms(j.joined_s),
                ms(j.commit_sent_s),
                ms(j.welcome_s),
                ms(j.in_group_s),
                ms(j.media_s),
                ms(j.first_frame_s),
                ms(j.all_members_s),
                bytes(j.commit_bytes),
                bytes(j.welcome_bytes),
                j.server_cpu_s * 1000.0,
                j.server_core_share * 100.0
            ));
        }
    }
    out.push_str(
        "\n| members | removal commit out (ms) | commit (B) | committer rekeyed (ms) | member on own core rekeyed (ms) | its first frame after (ms) | all members rekeyed (ms, crowd on one core) | server CPU (ms) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &r.sizes {
        let l = &s.leave;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            s.members,
            ms(l.commit_sent_s),
            bytes(l.commit_bytes),
            ms(l.committer_s),
            ms(l.own_core_member_s),
            ms(l.first_frame_after_s),
            ms(l.all_members_s),
            l.server_cpu_s * 1000.0
        ));
    }
    out.push_str(
        "\n| members | crowd | crowd in group and agreed (s) | commits | server CPU (s) | server CPU per joiner (ms) |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &r.sizes {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {:.2} | {:.1} |\n",
            s.members,
            s.crowd,
            s.crowd_s,
            s.crowd_commits,
            s.crowd_server_cpu_s,
            s.crowd_server_cpu_s * 1000.0 / (s.crowd.max(2) - 1) as f64
        ));
    }
    out
}

/// Target lines: the N-th joiner of the largest size decrypts within 3 s.
pub fn targets(r: &LargeResult) -> Vec<String> {
    r.sizes
        .iter()
        .filter_map(|s| {
            let j = s.joins.last()?;
            let t = j.first_frame_s?;
            Some(format!(
                "{} members: the {}th joiner decrypts after {:.2} s (target 3 s): {}",
                s.members,
                j.number,
                t,
                if t <= 3.0 { "met" } else { "missed" }
            ))
        })
        .collect()
}
