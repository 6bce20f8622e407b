//! `klausur-bench soak` (`make soak`, issue 19): simulated participants join and leave many
//! small meetings for minutes; afterwards the server must have no error in its log, no room,
//! peer, meeting or connection left, and its memory back to where it was.
//!
//! # The run
//!
//! 1. A fresh server (as for the other scenarios, [`crate::server`]) with an organiser, an
//!    administrator, the meetings, and one personal invitation per visit (each visit is a
//!    different guest, so state kept per participant cannot hide behind a reused identity).
//! 2. The status of the empty server (`GET /api/status`, signed in as the administrator) and
//!    its resident memory (VmRSS of the process).
//! 3. A warm-up round ([`Options::warmup`], 30 s by default) of the same churn, after which
//!    everyone leaves; the status is polled until no meeting, connection, room or peer is left
//!    (or [`Options::drain_bound`] passes), then after [`Options::settle`] the RSS is the
//!    **baseline**. Why not the empty process: the allocator (mimalloc) and the runtime keep
//!    memory they once used (thread caches, free segments, grown tables and buffers) for
//!    reuse, so a server that has had participants never goes back to the RSS of one that
//!    never had any. After the warm-up those pools exist; what the soak adds on top of them is
//!    what it failed to give back.
//!
//!    The server runs with `MIMALLOC_PURGE_DELAY=0`: mimalloc gives freed pages back to the
//!    system only after a delay, and the delayed purge is done by the thread that owns the
//!    pages the next time it allocates or frees. In an idle server that can be never: in a
//!    trial run without it the RSS 5 s after everyone left was 189 MiB, and 15 s into the next
//!    round, with 145 participants present, 115 MiB. The RSS of an emptied server then tells
//!    which threads happened to run last, not what is still allocated. Purging at once makes
//!    it follow what is live (plus fragmentation); it costs the server some `madvise` calls,
//!    which a soak does not measure.
//! 4. The soak round ([`Options::duration`], 5 minutes by default): participants keep joining
//!    and leaving ([`plan`]); meanwhile the RSS is sampled every second (its peak) and the
//!    status every 5 s.
//! 5. Everyone has left at the round's end: the status is polled until everything is 0 (or the
//!    bound passes), and after the same settle time the RSS is measured again.
//! 6. The verdict ([`verdict`]): the run fails on an ERROR line in the server's log, anything
//!    left in the status, memory after the soak above the baseline by more than
//!    max(10 %, 16 MiB), or more than 1 % failed joins; the process exits non-zero then.
//!
//! # Why these defaults
//!
//! - **200 participants in 40 meetings of 5.** A city's meetings are mostly small
//!   (consultations, case conferences, team meetings). Every participant sends audio and video
//!   and receives everyone in its meeting, as in the benchmark's meetings. Meetings of 10
//!   would make 20 x 10 x 9 x 140 = 252,000 forwarded packets per second: more than the
//!   server's one core forwards (about 200,000 per CPU-second, BENCHMARKS.md) and more than
//!   the load generator's one core receives, so the run would measure overload (loss,
//!   participants whose own event loop falls behind and time out) instead of what a soak is
//!   for. Meetings of 5 forward about 40 x 5 x 4 x 140 = 112,000 per second when every place
//!   is taken (about 90,000 on average with the gaps), near the `meeting-25` benchmark;
//!   `--meetings 20` runs meetings of 10 where the machine allows it.
//! - **Stays of 20 to 100 s, gaps of 1 to 10 s** (for 5 minutes; they scale with the round's
//!   length): every place sees four to five participants, about 1,000 joins and leaves in all,
//!   3 per second once the first 20 s (in which every place's first participant joins) are
//!   over. Seeded (`--seed`): every run meets the same plan.
//! - **Memory bound max(10 %, 16 MiB).** RSS moves by some MiB with fragmentation (a live
//!   allocation keeps its page) and with how big the signaling's and the room's tables grew
//!   at the peak; 16 MiB is about four participants' worth (BENCHMARKS.md: about 4 MiB each).
//!   A leak of 16 KiB per visit over 1,000 visits already crosses it.
//! - **Failed joins: 1 %** (at least one): the machine is shared and has 2 cores; a rare join
//!   that times out on a loaded machine is the load generator's, more are not.

pub mod plan;
pub mod report;
pub mod status;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use crate::client::{Peer, PeerOptions, Role, Timing};
use crate::procfs;
use crate::server::{self, KlausurServer};
use crate::stats::{quantile, Window};
use plan::{PlanSpec, Visit};
use status::StatusClient;
use verdict::{Evidence, Limits, LogLines, Status};

/// The administrator that reads `/api/status`.
const ADMIN: &str = "soak-admin";
const ADMIN_PASSWORD: &str = "soak-admin-password-not-secret";
/// The server's allocator (mimalloc) returns freed pages to the system at once instead of
/// after a delay (see the module docs).
const SERVER_ENV: &[(&str, &str)] = &[("MIMALLOC_PURGE_DELAY", "0")];
/// A join (WebSocket, `join`, `joined`) that takes longer counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// A visit whose place is still busy this close to its planned leave is skipped.
const MIN_LATE_STAY: Duration = Duration::from_secs(2);
/// How often the RSS, and every how many of those samples the status, is read during a round.
const RSS_EVERY: Duration = Duration::from_secs(1);
const STATUS_EVERY: u32 = 5;
/// Progress line every so many seconds.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Participants present at most at a time (places).
    pub participants: usize,
    pub meetings: usize,
    /// The soak round.
    pub duration: Duration,
    /// The warm-up round before the baseline.
    pub warmup: Duration,
    pub stay: (Duration, Duration),
    pub gap: (Duration, Duration),
    /// The places' first joins are spread over this long.
    pub ramp: Duration,
    pub seed: u64,
    /// After everything is 0, wait this long before reading the RSS.
    pub settle: Duration,
    /// Longest wait for everything to be 0 after everyone left.
    pub drain_bound: Duration,
    pub server_bin: PathBuf,
    pub server_cpu: Option<usize>,
    pub peer: PeerOptions,
    pub limits: Limits,
}

/// Stays, gaps and ramp for a round of `duration` (see the module docs): stays of a fifteenth
/// to a third of the round (at least 5 s), gaps of 1 s to a thirtieth, the first joins over
/// up to 20 s.
pub fn default_lengths(
    duration: Duration,
) -> ((Duration, Duration), (Duration, Duration), Duration) {
    let stay_min = (duration / 15).max(Duration::from_secs(5));
    let stay = (stay_min, (duration / 3).max(stay_min));
    let gap_min = Duration::from_secs(1);
    let gap = (gap_min, (duration / 30).max(gap_min));
    let ramp = Duration::from_secs(20).min(duration / 3);
    (stay, gap, ramp)
}

impl Options {
    /// The plan of the soak round.
    pub fn soak_spec(&self) -> PlanSpec {
        PlanSpec {
            participants: self.participants,
            meetings: self.meetings,
            duration: self.duration,
            ramp: self.ramp,
            stay: self.stay,
            gap: self.gap,
            seed: self.seed,
        }
    }

    /// The plan of the warm-up round: the same churn, shorter, another seed; its first joins
    /// over at most two thirds of it, and stays short enough that every place's first visit
    /// fits after the ramp (at least [`plan::MIN_STAY`]).
    pub fn warmup_spec(&self) -> PlanSpec {
        let ramp = self.ramp.min(self.warmup * 2 / 3);
        let stay_min = self
            .stay
            .0
            .min(self.warmup.saturating_sub(ramp))
            .max(plan::MIN_STAY);
        PlanSpec {
            duration: self.warmup,
            ramp,
            stay: (stay_min, self.stay.1.min(self.warmup).max(stay_min)),
            seed: self.seed.wrapping_add(1),
            ..self.soak_spec()
        }
    }
}

/// One visit as it went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VisitOutcome {
    pub meeting: usize,
    /// Not tried: its place was still busy with an earlier visit until close to its leave.
    pub skipped: bool,
    /// The join was refused or timed out.
    pub join_error: Option<String>,
    /// Joined (`joined` received).
    pub joined: bool,
    /// ICE and DTLS connected.
    pub connected: bool,
    /// The server ended its signaling before it left.
    pub ended_by_server: bool,
    /// Media packets received (distinct).
    pub received: u64,
    /// From `join` to the first complete keyframe.
    pub ttff_ms: Option<f64>,
    pub errors: Vec<String>,
}

/// A round's figures, from its visits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundFigures {
    pub seconds: f64,
    pub visits_planned: usize,
    pub skipped: usize,
    pub join_attempts: usize,
    pub joins: usize,
    /// Joins refused or timed out.
    pub failed_joins: usize,
    /// Joined, but media never connected.
    pub not_connected: usize,
    /// Left on their own (leave message, connections closed).
    pub leaves: usize,
    /// Joined, and the server ended their signaling before they left.
    pub ended_by_server: usize,
    /// Participants present at most at once (counted by the load generator).
    pub most_present: usize,
    pub received_packets: u64,
    pub ttff_p50_ms: f64,
    pub ttff_p99_ms: f64,
    /// Visits that saw an error on their side.
    pub visits_with_errors: usize,
    /// The first few of those errors.
    pub errors: Vec<String>,
}

impl RoundFigures {
    /// Joins that count as failed: refused, timed out, or without media.
    pub fn failed(&self) -> usize {
        self.failed_joins + self.not_connected
    }
}

/// Errors of visits kept for the report.
const ERRORS_KEPT: usize = 20;

/// Counts a round's visits.
pub fn summarize(outcomes: &[VisitOutcome], seconds: f64, most_present: usize) -> RoundFigures {
    let attempted = || outcomes.iter().filter(|o| !o.skipped);
    let joined = || outcomes.iter().filter(|o| o.joined);
    let ttff: Vec<f64> = joined().filter_map(|o| o.ttff_ms).collect();
    let mut errors = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        for e in o.join_error.iter().chain(&o.errors) {
            if errors.len() < ERRORS_KEPT {
                errors.push(format!("visit {i} (meeting {}): {e}", o.meeting));
            }
        }
    }
    RoundFigures {
        seconds,
        visits_planned: outcomes.len(),
        skipped: outcomes.iter().filter(|o| o.skipped).count(),
        join_attempts: attempted().count(),
        joins: joined().count(),
        failed_joins: attempted().filter(|o| o.join_error.is_some()).count(),
        not_connected: joined().filter(|o| !o.connected).count(),
        leaves: joined().filter(|o| !o.ended_by_server).count(),
        ended_by_server: joined().filter(|o| o.ended_by_server).count(),
        most_present,
        received_packets: outcomes.iter().map(|o| o.received).sum(),
        ttff_p50_ms: quantile(&ttff, 0.5).unwrap_or(f64::NAN),
        ttff_p99_ms: quantile(&ttff, 0.99).unwrap_or(f64::NAN),
        visits_with_errors: outcomes
            .iter()
            .filter(|o| o.join_error.is_some() || !o.errors.is_empty())
            .count(),
        errors,
    }
}

/// One reading during a round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_mib: f64,
    /// Read every [`STATUS_EVERY`] samples.
    pub status: Option<Status>,
    /// Participants present (load generator's count).
    pub present: usize,
}

/// The server after everyone left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Drained {
    /// The last status read (`None`: none could be read).
    pub status: Option<Status>,
    /// Until everything was 0, or the bound.
    pub seconds: f64,
    /// RSS after the settle time, MiB.
    pub rss_mib: f64,
}

/// Everything a soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub participants: usize,
    pub meetings: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub stay_s: (f64, f64),
    pub gap_s: (f64, f64),
    pub ramp_s: f64,
    pub seed: u64,
    pub settle_s: f64,
    pub server_cpu: Option<usize>,
    /// What the soak adds to the server's environment.
    pub server_env: Vec<String>,
    /// The empty server before the first join.
    pub empty: Status,
    pub empty_rss_mib: f64,
    pub warmup_round: RoundFigures,
    pub baseline: Drained,
    pub soak_round: RoundFigures,
    pub peak_rss_mib: f64,
    /// The largest value of each status field seen during the soak round.
    pub peak_status: Status,
    pub samples: Vec<Sample>,
    pub after: Drained,
    /// Server CPU seconds in the soak round.
    pub server_cpu_s: f64,
    /// Load generator CPU seconds in the soak round.
    pub loadgen_cpu_s: f64,
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
    pub server_exited: Option<String>,
    pub log: LogLines,
    pub limits: Limits,
    pub memory_bound_mib: f64,
    /// Failed criteria (empty: passed).
    pub failures: Vec<String>,
}

impl SoakResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// What the criteria look at.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            error_lines: self.log.errors.len(),
            server_exited: self.server_exited.clone(),
            after: self.after.status,
            baseline_rss_mib: self.baseline.rss_mib,
            after_rss_mib: self.after.rss_mib,
            join_attempts: self.warmup_round.join_attempts + self.soak_round.join_attempts,
            failed_joins: self.warmup_round.failed() + self.soak_round.failed(),
        }
    }
}

/// A visit to run: where, when, who.
struct Job {
    visit: Visit,
    index: u16,
    token: String,
}

/// The meeting ids, and per round, per place, the jobs.
type Prepared = (Vec<String>, Vec<Vec<Vec<Job>>>);

/// Prepares the data directory: organiser, administrator, meetings, and one invitation per
/// visit of both rounds (in the order of [`plan::plan`]'s places and visits). Returns the
/// meeting ids and, per round, per place, the jobs.
fn prepare(
    bin: &Path,
    data: &Path,
    meetings: usize,
    rounds: &[&[Vec<Visit>]],
) -> anyhow::Result<Prepared> {
    server::add_organiser(bin, data)?;
    server::admin(
        bin,
        data,
        &[
            "user",
            "add",
            ADMIN,
            "--display-name",
            "Soak Admin",
            "--role",
            "admin",
            "--permanent-password",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    )?;
    let mut ids = Vec::with_capacity(meetings);
    for m in 0..meetings {
        let v = server::admin(
            bin,
            data,
            &[
                "meeting",
                "create",
                &format!("Soak {m}"),
                "--organiser",
                server::organiser(),
                "--profile",
                "strict",
            ],
            "",
        )?;
        ids.push(v["id"].as_str().context("meeting id")?.to_string());
    }
    let total: usize = rounds.iter().flat_map(|r| r.iter()).map(Vec::len).sum();
    anyhow::ensure!(
        total < usize::from(u16::MAX),
        "{total} visits: more than the participant index holds"
    );
    let started = Instant::now();
    let mut index = 0u16;
    let mut next_progress = 200u16;
    let mut out = Vec::with_capacity(rounds.len());
    for round in rounds {
        let mut places = Vec::with_capacity(round.len());
        for visits in round.iter() {
            let mut jobs = Vec::with_capacity(visits.len());
            for v in visits {
                let meeting = ids.get(v.meeting).context("meeting of a visit")?;
                let name = format!("Soak Guest {index}");
                let inv = server::admin(
                    bin,
                    data,
                    &["invite", "create", meeting, "--name", &name],
                    "",
                )?;
                let token = inv["token"].as_str().context("invitation token")?;
                jobs.push(Job {
                    visit: *v,
                    index,
                    token: token.to_string(),
                });
                index += 1;
                if index == next_progress {
                    next_progress = next_progress.saturating_add(200);
                    eprintln!(
                        "  {index} of {total} invitations ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            places.push(jobs);
        }
        out.push(places);
    }
    Ok((ids, out))
}

/// Shared by a round's place tasks.
struct RoundCtx {
    ws_url: String,
    meeting_ids: Vec<String>,
    peer: PeerOptions,
    start: Instant,
    timing: Timing,
    /// Present now, and most at once.
    present: AtomicUsize,
    most: AtomicUsize,
    joins: AtomicUsize,
    failed: AtomicUsize,
}

/// Runs a place's visits one after the other: at most one participant per place at a time.
async fn run_place(ctx: Arc<RoundCtx>, jobs: Vec<Job>) -> Vec<VisitOutcome> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let v = job.visit;
        let mut o = VisitOutcome {
            meeting: v.meeting,
            ..VisitOutcome::default()
        };
        tokio::time::sleep_until((ctx.start + v.join).into()).await;
        let leave_at = ctx.start + v.leave;
        if Instant::now() + MIN_LATE_STAY > leave_at {
            o.skipped = true;
            out.push(o);
            continue;
        }
        let mut peer = match Peer::new(job.index, ctx.timing, ctx.peer).await {
            Ok(p) => p,
            Err(e) => {
                o.join_error = Some(format!("no participant: {e:#}"));
                ctx.failed.fetch_add(1, Ordering::Relaxed);
                out.push(o);
                continue;
            }
        };
        peer.set_role(Role::AV);
        peer.set_leave_at(Some(leave_at));
        let meeting = ctx.meeting_ids.get(v.meeting).cloned().unwrap_or_default();
        let joined = tokio::time::timeout(
            JOIN_TIMEOUT,
            peer.join_klausur(&ctx.ws_url, &meeting, &job.token),
        )
        .await;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => o.join_error = Some(format!("{e:#}")),
            Err(_) => {
                o.join_error = Some(format!("no `joined` within {} s", JOIN_TIMEOUT.as_secs()))
            }
        }
        if o.join_error.is_some() {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
            out.push(o);
            continue;
        }
        o.joined = true;
        ctx.joins.fetch_add(1, Ordering::Relaxed);
        let now = ctx.present.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.most.fetch_max(now, Ordering::Relaxed);
        let report = peer.run().await;
        ctx.present.fetch_sub(1, Ordering::Relaxed);
        o.connected = report.connect_time.is_some();
        o.ended_by_server = report.ended_by_server;
        o.received = report.recv.unique();
        o.ttff_ms = report
            .recv
            .time_to_first_frame_ns()
            .map(|ns| ns as f64 / 1e6);
        o.errors = report.errors;
        out.push(o);
    }
    out
}

/// What [`monitor`] saw.
#[derive(Debug, Default)]
struct Watched {
    peak_rss_mib: f64,
    peak: Status,
    samples: Vec<Sample>,
}

fn max_status(a: Status, b: &Status) -> Status {
    Status {
        meetings_running: a.meetings_running.max(b.meetings_running),
        connections: a.connections.max(b.connections),
        rooms: a.rooms.max(b.rooms),
        peers: a.peers.max(b.peers),
        forwarded_packets: a.forwarded_packets.max(b.forwarded_packets),
        received_datagrams: a.received_datagrams.max(b.received_datagrams),
        unroutable_datagrams: a.unroutable_datagrams.max(b.unroutable_datagrams),
        memory_rss_bytes: a.memory_rss_bytes.max(b.memory_rss_bytes),
    }
}

/// Samples the server's RSS (and every few samples its status) until `stop` turns true or
/// `bound` passes; prints a progress line now and then.
async fn monitor(
    pid: u32,
    client: &StatusClient,
    ctx: &RoundCtx,
    mut stop: watch::Receiver<bool>,
    bound: Duration,
) -> Watched {
    let mut w = Watched::default();
    let mut n: u32 = 0;
    let mut next_progress = ctx.start + PROGRESS_EVERY;
    let deadline = ctx.start + bound;
    while !*stop.borrow() && Instant::now() < deadline {
        let rss = procfs::rss_mib(pid).unwrap_or(f64::NAN);
        if rss > w.peak_rss_mib {
            w.peak_rss_mib = rss;
        }
        let status = if n == 0 {
            client.status().await.ok()
        } else {
            None
        };
        if let Some(s) = &status {
            w.peak = max_status(w.peak, s);
        }
        let present = ctx.present.load(Ordering::Relaxed);
        let t_s = ctx.start.elapsed().as_secs_f64();
        if status.is_some() {
            w.samples.push(Sample {
                t_s,
                rss_mib: rss,
                status,
                present,
            });
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            eprintln!(
                "  {t_s:.0} s: {present} present, {} joins, {} failed, server RSS {rss:.1} MiB, load {:.2}",
                ctx.joins.load(Ordering::Relaxed),
                ctx.failed.load(Ordering::Relaxed),
                procfs::loadavg()[0],
            );
        }
        n = (n + 1) % STATUS_EVERY;
        tokio::select! {
            _ = tokio::time::sleep(RSS_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    w
}

/// Runs a round: one task per place; returns the visits' outcomes (in place and visit order)
/// and what the monitor saw.
async fn round(
    server: &KlausurServer,
    client: &StatusClient,
    meeting_ids: &[String],
    peer: PeerOptions,
    places: Vec<Vec<Job>>,
    duration: Duration,
) -> anyhow::Result<(RoundFigures, Watched)> {
    let start = Instant::now();
    let end_ns = (duration + Duration::from_secs(10)).as_nanos() as u64;
    let ctx = Arc::new(RoundCtx {
        ws_url: server.ws_url(),
        meeting_ids: meeting_ids.to_vec(),
        peer,
        start,
        timing: Timing {
            start,
            window: Window {
                start_ns: 0,
                end_ns,
            },
            // Every visit leaves by the round's end; this is a backstop.
            stop_at: start + duration + Duration::from_secs(1),
        },
        present: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        joins: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let tasks: Vec<_> = places
        .into_iter()
        .map(|jobs| tokio::spawn(run_place(ctx.clone(), jobs)))
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Bounded: joins time out, stays end by the round's end.
    let bound = duration + JOIN_TIMEOUT + Duration::from_secs(60);
    let visits = async {
        let mut outcomes = Vec::new();
        let mut lost = 0usize;
        for t in tasks {
            match t.await {
                Ok(o) => outcomes.extend(o),
                Err(_) => lost += 1,
            }
        }
        let _ = stop_tx.send(true);
        (outcomes, lost)
    };
    let ((outcomes, lost), watched) =
        tokio::join!(visits, monitor(server.pid, client, &ctx, stop_rx, bound));
    anyhow::ensure!(
        lost == 0,
        "{lost} participant tasks of the load generator failed"
    );
    let figures = summarize(
        &outcomes,
        start.elapsed().as_secs_f64(),
        ctx.most.load(Ordering::Relaxed),
    );
    Ok((figures, watched))
}

/// Polls the status until everything is 0 or `bound` passes, waits `settle`, and reads the
/// RSS.
async fn drain(pid: u32, client: &StatusClient, bound: Duration, settle: Duration) -> Drained {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(s) = client.status().await {
            last = Some(s);
            if s.is_empty() {
                break;
            }
        }
        if start.elapsed() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    Drained {
        status: last,
        seconds,
        rss_mib: procfs::rss_mib(pid).unwrap_or(f64::NAN),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the soak (see the module docs).
pub async fn run(opts: &Options) -> anyhow::Result<SoakResult> {
    let soak_plan = plan::plan(&opts.soak_spec()).context("the soak round")?;
    let warm_plan = plan::plan(&opts.warmup_spec()).context("the warm-up round")?;
    let visits = |p: &[Vec<Visit>]| p.iter().map(Vec::len).sum::<usize>();
    eprintln!(
        "klausur-bench: soak, {} participants in {} meetings (of {} to {}), {:.0} s ({} visits) after a {:.0} s warm-up round ({} visits)",
        opts.participants,
        opts.meetings,
        opts.soak_spec().meeting_size(opts.meetings.saturating_sub(1)),
        opts.soak_spec().meeting_size(0),
        secs(opts.duration),
        visits(&soak_plan),
        secs(opts.warmup),
        visits(&warm_plan),
    );
    server::check_bin(&opts.server_bin)?;
    let bin = opts.server_bin.clone();
    let cpu = opts.server_cpu;
    let meetings = opts.meetings;
    let (mut server, meeting_ids, mut rounds) = tokio::task::spawn_blocking(move || {
        let dir = server::new_dir()?;
        let data = server::data_dir(&dir);
        let (ids, rounds) = prepare(&bin, &data, meetings, &[&warm_plan, &soak_plan])?;
        let server = KlausurServer::launch(&bin, dir, cpu, String::new(), Vec::new(), SERVER_ENV)?;
        anyhow::Ok((server, ids, rounds))
    })
    .await
    .context("server setup task")??;
    let soak_jobs = rounds.pop().context("the soak round's jobs")?;
    let warm_jobs = rounds.pop().context("the warm-up round's jobs")?;
    let client = StatusClient::login(&server.base_url(), ADMIN, ADMIN_PASSWORD).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let empty = client.status().await?;
    let empty_rss_mib = procfs::rss_mib(server.pid)?;
    eprintln!("  empty server: RSS {empty_rss_mib:.1} MiB");

    eprintln!(
        "klausur-bench: soak: warm-up round, {:.0} s",
        secs(opts.warmup)
    );
    let (warmup_round, _) = round(
        &server,
        &client,
        &meeting_ids,
        opts.peer,
        warm_jobs,
        opts.warmup,
    )
    .await?;
    let baseline = drain(server.pid, &client, opts.drain_bound, opts.settle).await;
    eprintln!(
        "  {} joins, {} failed; everything 0 after {:.1} s: {}; baseline RSS {:.1} MiB",
        warmup_round.joins,
        warmup_round.failed(),
        baseline.seconds,
        baseline.status.is_some_and(|s| s.is_empty()),
        baseline.rss_mib
    );

    eprintln!(
        "klausur-bench: soak: soak round, {:.0} s",
        secs(opts.duration)
    );
    let ticks = procfs::clock_ticks_per_sec();
    let loadavg_start = procfs::loadavg();
    let cpu0 = procfs::cpu_seconds(server.pid, ticks)?;
    let own0 = procfs::cpu_seconds(std::process::id(), ticks)?;
    let (soak_round, watched) = round(
        &server,
        &client,
        &meeting_ids,
        opts.peer,
        soak_jobs,
        opts.duration,
    )
    .await?;
    let cpu1 = procfs::cpu_seconds(server.pid, ticks).unwrap_or(f64::NAN);
    let own1 = procfs::cpu_seconds(std::process::id(), ticks).unwrap_or(f64::NAN);
    let after = drain(server.pid, &client, opts.drain_bound, opts.settle).await;
    let loadavg_end = procfs::loadavg();
    eprintln!(
        "  {} joins, {} failed; everything 0 after {:.1} s: {}; RSS {:.1} MiB (peak {:.1})",
        soak_round.joins,
        soak_round.failed(),
        after.seconds,
        after.status.is_some_and(|s| s.is_empty()),
        after.rss_mib,
        watched.peak_rss_mib,
    );
    let server_exited = server.exited();
    let log = verdict::classify(&server.log());
    drop(server);
    let mut result = SoakResult {
        participants: opts.participants,
        meetings: opts.meetings,
        duration_s: secs(opts.duration),
        warmup_s: secs(opts.warmup),
        stay_s: (secs(opts.stay.0), secs(opts.stay.1)),
        gap_s: (secs(opts.gap.0), secs(opts.gap.1)),
        ramp_s: secs(opts.ramp),
        seed: opts.seed,
        settle_s: secs(opts.settle),
        server_cpu: opts.server_cpu,
        server_env: SERVER_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        empty,
        empty_rss_mib,
        warmup_round,
        baseline,
        soak_round,
        peak_rss_mib: watched.peak_rss_mib,
        peak_status: watched.peak,
        samples: watched.samples,
        after,
        server_cpu_s: cpu1 - cpu0,
        loadgen_cpu_s: own1 - own0,
        loadavg_start,
        loadavg_end,
        server_exited,
        log,
        limits: opts.limits,
        memory_bound_mib: opts.limits.memory_bound_mib(baseline.rss_mib),
        failures: Vec::new(),
    };
    result.failures = verdict::failures(&result.evidence(), &opts.limits);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lengths_scale_with_the_round() {
        let s = Duration::from_secs;
        assert_eq!(
            default_lengths(s(300)),
            ((s(20), s(100)), (s(1), s(10)), s(20))
        );
        // The quick mode's 30 s.
        assert_eq!(default_lengths(s(30)), ((s(5), s(10)), (s(1), s(1)), s(10)));
    }

    fn options(duration: u64, warmup: u64) -> Options {
        let d = Duration::from_secs(duration);
        let (stay, gap, ramp) = default_lengths(d);
        Options {
            participants: 200,
            meetings: 40,
            duration: d,
            warmup: Duration::from_secs(warmup),
            stay,
            gap,
            ramp,
            seed: 19,
            settle: Duration::from_secs(5),
            drain_bound: Duration::from_secs(30),
            server_bin: PathBuf::new(),
            server_cpu: None,
            peer: PeerOptions::default(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn both_rounds_of_the_defaults_and_the_quick_mode_plan() -> Result<(), plan::PlanError> {
        for (d, w) in [(300, 30), (30, 10), (60, 10)] {
            let o = options(d, w);
            let soak = plan::plan(&o.soak_spec())?;
            let warm = plan::plan(&o.warmup_spec())?;
            // Everyone joins in the warm-up round, and has left at its end.
            assert!(warm.iter().all(|p| !p.is_empty()), "{d}/{w}");
            assert_eq!(plan::present(&warm, o.warmup, None), 0);
            assert_eq!(plan::present(&soak, o.duration, None), 0);
            assert_ne!(o.soak_spec().seed, o.warmup_spec().seed);
        }
        Ok(())
    }

    fn joined(meeting: usize, connected: bool, ended: bool, ttff: Option<f64>) -> VisitOutcome {
        VisitOutcome {
            meeting,
            joined: true,
            connected,
            ended_by_server: ended,
            received: 100,
            ttff_ms: ttff,
            ..VisitOutcome::default()
        }
    }

    #[test]
    fn a_rounds_visits_are_counted() {
        let outcomes = vec![
            joined(0, true, false, Some(50.0)),
            joined(1, true, false, Some(70.0)),
            joined(1, false, false, None),
            joined(2, true, true, Some(60.0)),
            VisitOutcome {
                meeting: 0,
                join_error: Some("no `joined` within 15 s".into()),
                ..VisitOutcome::default()
            },
            VisitOutcome {
                meeting: 2,
                skipped: true,
                ..VisitOutcome::default()
            },
        ];
        let f = summarize(&outcomes, 30.0, 3);
        assert_eq!(f.visits_planned, 6);
        assert_eq!(f.skipped, 1);
        assert_eq!(f.join_attempts, 5);
        assert_eq!(f.joins, 4);
        assert_eq!(f.failed_joins, 1);
        assert_eq!(f.not_connected, 1);
        assert_eq!(f.failed(), 2);
        assert_eq!(f.leaves, 3);
        assert_eq!(f.ended_by_server, 1);
        assert_eq!(f.received_packets, 400);
        assert_eq!(f.ttff_p50_ms, 60.0);
        assert_eq!(f.visits_with_errors, 1);
        assert_eq!(f.errors, ["visit 4 (meeting 0): no `joined` within 15 s"]);
        assert_eq!(f.most_present, 3);
        let none = summarize(&[], 1.0, 0);
        assert!(none.ttff_p50_ms.is_nan());
        assert_eq!(none.failed(), 0);
    }
}
