//! Scenarios and trials: `meeting N` against klausur, and the direct peer-to-peer baseline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::client::{Peer, PeerReport, Role, Timing};
use crate::janus::{self, JanusServer};
use crate::procfs;
use crate::server::KlausurServer;
use crate::stats::{
    delivery_all_to_all, median, new_histogram, quantile, RecvStats, SendStats, Window,
};

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
    /// Offer str0m's full default codec list instead of Opus + VP8 only.
    pub all_codecs: bool,
}

/// A scenario: who joins and what each participant publishes.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `meeting-10`, `webinar-1-30`, `townhall-150`.
    pub name: String,
    pub roles: Vec<Role>,
    /// Gap between two joins (else `Settings::stagger`).
    pub stagger: Option<Duration>,
}

impl Spec {
    /// `meeting N`: everyone sends audio and video, everyone receives everyone.
    pub fn meeting(n: usize) -> Spec {
        Spec {
            name: format!("meeting-{n}"),
            roles: vec![Role::AV; n],
            stagger: None,
        }
    }

    /// `webinar 1->M`: one presenter sends audio and video, M viewers only receive.
    pub fn webinar(m: usize) -> Spec {
        let mut roles = vec![Role::AV];
        roles.extend(std::iter::repeat_n(Role::listener(1, 1), m));
        Spec {
            name: format!("webinar-1-{m}"),
            roles,
            stagger: Some(Duration::from_millis(20)),
        }
    }

    /// `townhall N`: audio only; `speakers` participants talk, everyone hears them.
    pub fn townhall(n: usize, speakers: usize) -> Spec {
        let speakers = speakers.clamp(1, n);
        let speaker = Role {
            audio: true,
            video: false,
            expect: (speakers as u32 - 1, 0),
        };
        let mut roles = vec![speaker; speakers];
        roles.extend(std::iter::repeat_n(
            Role::listener(speakers as u32, 0),
            n - speakers,
        ));
        Spec {
            name: format!("townhall-{n}"),
            roles,
            stagger: Some(Duration::from_millis(20)),
        }
    }

    fn participants(&self) -> usize {
        self.roles.len()
    }

    fn is_meeting(&self) -> bool {
        self.roles.iter().all(|r| *r == Role::AV)
    }

    fn stagger(&self, settings: &Settings) -> Duration {
        self.stagger.unwrap_or(settings.stagger)
    }
}

/// The figures of one trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub participants: usize,
    pub window_s: f64,
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    pub loss_ratio: f64,
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
    pub rss_mib: f64,
    pub rss_empty_mib: f64,
    pub loadavg_1m: f64,
    pub keyframe_requests: u64,
    pub errors: Vec<String>,
    pub server_log_lines: usize,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Turns the participants' reports into figures (server fields left at zero).
pub fn summarize(reports: &[PeerReport], window: &Window) -> Trial {
    let sends: Vec<SendStats> = reports.iter().map(|r| r.send).collect();
    let recvs: Vec<RecvStats> = reports.iter().map(|r| r.recv.clone()).collect();
    let d = delivery_all_to_all(&sends, &recvs);
    let mut hist = new_histogram();
    for r in &recvs {
        let _ = hist.add(&r.latency);
    }
    let q = |p: f64| {
        if hist.is_empty() {
            f64::NAN
        } else {
            ms(hist.value_at_quantile(p))
        }
    };
    // The first participant joins an empty meeting: its wait for others is not a TTFF.
    let ttff: Vec<f64> = reports
        .iter()
        .filter(|r| r.index > 0)
        .filter_map(|r| r.recv.ttff_ns.map(ms))
        .collect();
    let ttff_missing = reports.iter().filter(|r| r.index > 0).count() - ttff.len();
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
        window_s: window.secs(),
        expected: d.expected,
        received: d.received,
        duplicates: recvs.iter().map(|r| r.duplicates()).sum(),
        loss_ratio: d.loss_ratio(),
        fwd_pkts_per_s: d.received as f64 / window.secs(),
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
        loadavg_1m: procfs::loadavg()[0],
        keyframe_requests: reports.iter().map(|r| r.keyframe_requests).sum(),
        errors,
        server_log_lines: 0,
    }
}

fn timing(settings: &Settings, warmup: Duration) -> Timing {
    let start = Instant::now();
    let window = Window {
        start_ns: warmup.as_nanos() as u64,
        end_ns: (warmup + settings.window).as_nanos() as u64,
    };
    Timing {
        start,
        window,
        stop_at: start + warmup + settings.window + settings.drain,
    }
}

/// The server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Klausur,
    /// Janus 1.1.2 VideoRoom in network namespaces (`janus.rs`).
    Janus,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Klausur => "klausur",
            ServerKind::Janus => "janus",
        }
    }
}

enum Running {
    Klausur(KlausurServer),
    Janus(JanusServer),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Klausur(s) => s.pid,
            Running::Janus(s) => s.pid,
        }
    }

    /// Problem lines of the server's log.
    fn problems(&self) -> Vec<String> {
        match self {
            // The server's own stdout lines ("klausur: listening on ...", the bootstrap admin)
            // are not problems; everything else in the log (warnings, errors, panics) is.
            Running::Klausur(s) => s
                .log()
                .lines()
                .filter(|l| !l.starts_with("klausur: ") && !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            Running::Janus(s) => s.problems(),
        }
    }
}

/// One trial of a scenario against a fresh server of the given kind.
pub async fn trial(settings: &Settings, spec: &Spec, kind: ServerKind) -> anyhow::Result<Trial> {
    let n = spec.participants();
    anyhow::ensure!(
        kind == ServerKind::Klausur || spec.is_meeting(),
        "{} runs against klausur only",
        spec.name
    );
    let stagger = spec.stagger(settings);
    // Everyone has joined before the window starts.
    let warmup = settings
        .warmup
        .max(stagger * n as u32 + Duration::from_secs(2));
    let loadavg = procfs::loadavg()[0];
    let bin = settings.server_bin.clone();
    let cpu = settings.server_cpu;
    let server = match kind {
        ServerKind::Klausur => Running::Klausur(
            tokio::task::spawn_blocking(move || KlausurServer::start(&bin, n, cpu))
                .await
                .context("server setup task")??,
        ),
        // Started on this thread: the guard must never outlive an interrupted run.
        ServerKind::Janus => {
            let s = JanusServer::start(cpu)?;
            s.create_room(n).await?;
            Running::Janus(s)
        }
    };
    let pid = server.pid();
    let ticks = procfs::clock_ticks_per_sec();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_empty = procfs::rss_mib(pid)?;
    let t = timing(settings, warmup);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let all_codecs = settings.all_codecs;
        let role = spec.roles[i];
        let join_at = t.start + stagger * i as u32;
        match &server {
            Running::Klausur(server) => {
                let url = server.ws_url();
                let meeting = server.meeting_id.clone();
                let token = server.tokens[i].clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(join_at.into()).await;
                    let mut peer = match Peer::new(i as u16, t, all_codecs).await {
                        Ok(p) => p,
                        Err(e) => return Err(e),
                    };
                    peer.set_role(role);
                    if let Err(e) = peer.join_klausur(&url, &meeting, &token).await {
                        return Err(e.context(format!("participant {i} could not join")));
                    }
                    Ok(peer.run().await)
                }));
            }
            Running::Janus(server) => {
                let spec = janus::JoinSpec {
                    index: i,
                    timing: t,
                    all_codecs,
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
    let cpu0 = procfs::cpu_seconds(pid, ticks)?;
    let own0 = procfs::cpu_seconds(std::process::id(), ticks)?;
    tokio::time::sleep_until((t.start + warmup + settings.window).into()).await;
    let cpu1 = procfs::cpu_seconds(pid, ticks)?;
    let own1 = procfs::cpu_seconds(std::process::id(), ticks)?;
    let rss = procfs::rss_mib(pid)?;
    let mut reports = Vec::with_capacity(n);
    let mut join_errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => join_errors.push(format!("{e:#}")),
            Err(e) => join_errors.push(format!("participant task failed: {e}")),
        }
    }
    let mut trial = summarize(&reports, &t.window);
    if !join_errors.is_empty() {
        // Participants that never joined still count: their absence is loss for everyone.
        trial.errors.splice(0..0, join_errors);
    }
    let log_lines = server.problems();
    trial.server_log_lines = log_lines.len();
    for l in log_lines.iter().take(5) {
        trial.errors.push(format!("server log: {l}"));
    }
    trial.participants = n;
    trial.server_cpu_s = cpu1 - cpu0;
    trial.loadgen_cpu_s = own1 - own0;
    trial.pkts_per_cpu_s = if trial.server_cpu_s > 0.0 {
        trial.received as f64 / trial.server_cpu_s
    } else {
        f64::NAN
    };
    trial.rss_mib = rss;
    trial.rss_empty_mib = rss_empty;
    trial.loadavg_1m = loadavg;
    drop(server);
    Ok(trial)
}

/// One trial of the direct peer-to-peer baseline: two peers, same packet rates, no server.
pub async fn baseline_trial(settings: &Settings) -> anyhow::Result<Trial> {
    let loadavg = procfs::loadavg()[0];
    let warmup = Duration::from_secs(1).min(settings.warmup);
    let t = timing(settings, warmup);
    let mut a = Peer::new(0, t, settings.all_codecs).await?;
    let mut b = Peer::new(1, t, settings.all_codecs).await?;
    Peer::connect_direct(&mut a, &mut b)?;
    let ha = tokio::spawn(a.run());
    let hb = tokio::spawn(b.run());
    let reports = vec![ha.await?, hb.await?];
    let mut trial = summarize(&reports, &t.window);
    trial.loadavg_1m = loadavg;
    Ok(trial)
}

/// Medians over trials of one scenario on one server, with the baseline beside it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub server: String,
    pub participants: usize,
    pub trials: usize,
    pub pkts_per_cpu_s: f64,
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
    pub ttff_p50_ms: f64,
    pub ttff_p99_ms: f64,
    pub rss_mib: f64,
    pub rss_mib_per_participant: f64,
    /// (RSS with participants - RSS of the empty server) / participants.
    pub rss_added_mib_per_participant: f64,
    pub loadavg_1m: f64,
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
    let lat50 = med(&trials, |t| t.latency_p50_ms);
    let lat99 = med(&trials, |t| t.latency_p99_ms);
    let lat999 = med(&trials, |t| t.latency_p999_ms);
    let b50 = med(&baseline, |t| t.latency_p50_ms);
    let b99 = med(&baseline, |t| t.latency_p99_ms);
    let b999 = med(&baseline, |t| t.latency_p999_ms);
    let rss = med(&trials, |t| t.rss_mib);
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
        ttff_p50_ms: med(&trials, |t| t.ttff_p50_ms),
        ttff_p99_ms: med(&trials, |t| t.ttff_p99_ms),
        rss_mib: rss,
        rss_mib_per_participant: rss / n.max(1) as f64,
        rss_added_mib_per_participant: med(&trials, |t| {
            (t.rss_mib - t.rss_empty_mib) / n.max(1) as f64
        }),
        loadavg_1m: med(&trials, |t| t.loadavg_1m),
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
        eprintln!(
            "klausur-bench: {}, {}, trial {}/{}",
            spec.name,
            kind.name(),
            i + 1,
            settings.trials
        );
        let t = trial(settings, spec, kind).await?;
        eprintln!(
            "  {:.0} fwd pkt/s, {:.3} server CPU-s, {:.3} load generator CPU-s, {:.0} pkt/CPU-s, p50 {:.3} ms, p99 {:.3} ms, loss {:.5}, ttff p50 {:.0} ms, rss {:.1} MiB, problems {}",
            t.fwd_pkts_per_s,
            t.server_cpu_s,
            t.loadgen_cpu_s,
            t.pkts_per_cpu_s,
            t.latency_p50_ms,
            t.latency_p99_ms,
            t.loss_ratio,
            t.ttff_p50_ms,
            t.rss_mib,
            t.errors.len()
        );
        trials.push(t);
    }
    Ok(combine(&spec.name, kind.name(), trials, baseline))
}
