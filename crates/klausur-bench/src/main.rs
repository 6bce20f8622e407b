//! `klausur-bench`: benchmark of klausur with real WebRTC peers.
//!
//! Simulated participants are str0m clients in RTP mode, each on its own UDP socket on
//! 127.0.0.1, that go through the real signaling (`/api/ws`, personal invitations) and media
//! path (ICE, DTLS-SRTP, the room) of a `klausur serve` the tool starts itself. See
//! `klausur-bench --help`.
//!
//! `compare`, the standard set and the `webinar`, `townhall`, `idle` and `churn` scenarios also
//! run against Janus 1.1.2 (VideoRoom), in network namespaces the tool creates and removes
//! (`janus.rs`, shared/recipes/janus.md); `--no-janus` leaves it out.
//!
//! Participants receive with UDP GRO (`--no-gro` switches it off): on loopback the kernel
//! delivers a datagram into the receiver's socket inside the sender's system call, so receive
//! work is charged to the server; with GRO a GSO message the server sent is delivered as one
//! (see `PeerOptions::gro`).
//!
//! Each participant's media clock runs slightly off the nominal 50 packets/s and 30 fps (up
//! to 1 % either way, the same for every run and server): the participants' send phases then
//! drift against each other during a trial, as real devices' do, and a trial measures the
//! server's cost averaged over how the sends line up instead of one chance alignment
//! (`client::clock_rate`).
//!
//! `meeting N --tiles K --simulcast` gives every camera three simulcast layers (VP8-framed
//! payloads the server switches between at keyframes, `client::LAYERS`, `header::vp8_payload`);
//! receivers count which layer each packet came on, and `--switch-ms` makes them change their
//! tile sizes so the server switches layers during the window. Besides packets forwarded per
//! server CPU-second, each trial reports packets received and forwarded per CPU-second, since a
//! simulcast camera sends the server three times the packets it forwards.
//!
//! `dialin` measures the telephone dial-in gateway instead: a `klausur sip-gateway` process
//! beside the server, meetings of native end-to-end encrypted participants and SIP callers of
//! the benchmark's own (`dialin/`, `make bench-dialin`).
//!
//! `large` measures large end-to-end encrypted meetings (`large.rs`, `make bench-large`): 50 and
//! 100 native `klausur-client` participants with real MLS and SFrame in one meeting; the join
//! time of the last joiner until its first decrypted frame, commit and Welcome sizes, rekeying
//! after a leave, the server's CPU during joins.
//!
//! Before each trial the tool measures the loopback floor, what one bare UDP datagram costs
//! the server's core right then (`floor.rs`, `klausur-bench floor`): the ceiling the packets per
//! CPU-second are to be read against, and a mark of the machine's phase during the run.

mod client;
mod cluster;
mod dialin;
mod floor;
mod header;
mod janus;
mod large;
mod procfs;
mod report;
mod scenario;
mod server;
mod soak;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::client::PeerOptions;
use crate::scenario::{ScenarioResult, ServerKind, Settings, Spec};

#[derive(Parser, Debug)]
#[command(
    name = "klausur-bench",
    about = "Benchmark klausur with real WebRTC peers (str0m, RTP mode)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The klausur binary to start.
    #[arg(long, global = true, default_value = "target/release/klausur")]
    server_bin: PathBuf,
    /// Warm-up before the measured window, seconds (default 5; `standard`: 3).
    #[arg(long, global = true)]
    warmup: Option<f64>,
    /// Measured window, seconds (default 15; `standard`: 10, its `idle` scenario 5).
    #[arg(long, global = true)]
    window: Option<f64>,
    /// Trials per figure (the median is reported).
    #[arg(long, global = true)]
    trials: Option<usize>,
    /// Shorter warm-up, window and trials (3 s + 8 s, 3 trials).
    #[arg(long, global = true)]
    quick: bool,
    /// Gap between two participants' joins, milliseconds.
    #[arg(long, global = true, default_value_t = 50)]
    stagger_ms: u64,
    /// CPU for the server (taskset); the load generator takes the next one.
    #[arg(long, global = true, default_value_t = 0)]
    server_cpu: usize,
    /// Do not pin server and load generator to CPUs.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Media workers of the klausur server (one thread and UDP port each; `scaling` runs 1
    /// and 2 whatever this says). 1 keeps the figures comparable with a server pinned to one
    /// core.
    #[arg(long, global = true, default_value_t = 1)]
    media_workers: usize,
    /// Participants offer str0m's full default codec list (browser-like SDP sizes) instead of
    /// Opus + VP8 only.
    #[arg(long, global = true)]
    all_codecs: bool,
    /// Participants receive without UDP GRO: every datagram of the server's GSO messages is
    /// then delivered (and, on loopback, charged to the server) on its own.
    #[arg(long, global = true)]
    no_gro: bool,
    /// Loopback floor measured before each trial, milliseconds (0: none): the server core's
    /// CPU per bare UDP datagram, reported beside each scenario and for the run (see
    /// `floor.rs`).
    #[arg(long, global = true, default_value_t = 300)]
    floor_ms: u64,
    /// Write the full results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// klausur only, without the Janus side (`compare`, `standard`, `webinar`, `townhall`,
    /// `idle`, `churn`).
    #[arg(long, global = true)]
    no_janus: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// `meeting N`: everyone sends audio and video, everyone receives everyone (klausur only;
    /// `compare` runs it against both servers).
    Meeting {
        /// Participants.
        participants: usize,
        /// Each participant shows only this many others' video (a grid page) and says so to
        /// the server, which forwards only those (`video_tiles`).
        #[arg(long)]
        tiles: Option<usize>,
        /// Cameras send three simulcast layers (VP8, 320x180, 640x360, 1280x720); the server
        /// forwards each receiver one, by the size of its tiles (640x360: the middle layer).
        #[arg(long)]
        simulcast: bool,
        /// With --tiles and --simulcast: each participant switches its tiles between
        /// 1280x720 and 320x180 this often (milliseconds), so the server switches layers.
        #[arg(long)]
        switch_ms: Option<u64>,
    },
    /// `webinar 1->M`: one presenter sends audio and video, M viewers only receive.
    Webinar {
        /// Viewers.
        viewers: usize,
    },
    /// `townhall N`: audio only, a few speakers, everyone listens.
    Townhall {
        /// Participants (speakers included).
        participants: usize,
        #[arg(long, default_value_t = 3)]
        speakers: usize,
    },
    /// `floor`: measure the loopback floor (the server core's CPU per bare UDP datagram, see
    /// `--floor-ms`) several times in a row, and nothing else.
    Floor {
        /// Measurements.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// `idle N`: a meeting with microphones and cameras off (audio and video negotiated, no
    /// packets): server memory and CPU per idle participant.
    Idle {
        /// Participants.
        participants: usize,
    },
    /// `churn N --rate R`: a meeting of N (audio and video) in which, during the window, R
    /// participants per second leave and as many new ones join in their places.
    Churn {
        /// Participants present at a time.
        participants: usize,
        /// Leaves (and joins) per second.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
    },
    /// `scaling`: the same meetings (M meetings of N, audio and video) against a klausur
    /// server with one media worker, pinned to the server CPU, and with two, on both CPUs; the
    /// load generator stays on its CPU in both. Reports forwarded packets per server
    /// CPU-second of each and the per-packet cost of two workers against one.
    Scaling {
        /// Meetings.
        #[arg(long, default_value_t = 4)]
        meetings: usize,
        /// Participants per meeting.
        #[arg(long, default_value_t = 5)]
        participants: usize,
    },
    /// `cluster`: the same meetings (M meetings of N, audio and video) on one node of a cluster
    /// (PostgreSQL and Redis, throwaway ones the bench starts), pinned to the server CPU, and on
    /// two nodes, one per CPU (the load generator stays on its CPU in both, so the second node
    /// shares it); participants arrive at the nodes in turn and follow the redirect to their
    /// meeting's node. Reports each node's forwarded packets per CPU-second and the two nodes'
    /// sum against one node's (issue 22: at least 1.8); when pinned, also one node on the load
    /// generator's CPU, and the sum against one node on each of the two CPUs (like with like).
    Cluster {
        /// Meetings.
        #[arg(long, default_value_t = 4)]
        meetings: usize,
        /// Participants per meeting.
        #[arg(long, default_value_t = 5)]
        participants: usize,
    },
    /// Runs `meeting 10` against klausur and Janus 1.1.2 (VideoRoom) in the same run.
    Compare {
        #[arg(long, default_value_t = 10)]
        participants: usize,
    },
    /// `dialin`: the telephone dial-in gateway (`klausur sip-gateway`, its own process, alone on
    /// the measured CPU) with meetings of 5 end-to-end encrypted members and SIP callers: CPU
    /// per call, calls per core, one-way delay both ways, audio gaps under trunk loss
    /// (`make bench-dialin`). The window options give each of its two windows' length.
    Dialin {
        /// Concurrent calls (default 40; with --quick 12).
        #[arg(long)]
        calls: Option<usize>,
        /// Callers per meeting, cycled until all calls are placed.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
        callers: Vec<usize>,
        /// Share of each caller's packets dropped in the second window (the trunk leg's loss).
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// Gap between two calls' INVITEs, milliseconds.
        #[arg(long, default_value_t = 150)]
        call_stagger_ms: u64,
        /// Write the figures into this file's dial-in section (e.g. BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Run the gateway, the server and the load generator under normal scheduling instead
        /// of real-time round robin (chrt -r 10, needs root).
        #[arg(long)]
        no_realtime: bool,
    },
    /// `large` (`make bench-large`): end-to-end encrypted meetings of 50 and 100 native
    /// participants (real MLS and SFrame): the join time of the last joiner until its first
    /// decrypted frame, commit and Welcome sizes, rekeying after a leave, server CPU during
    /// joins (see `large.rs`).
    Large {
        /// Meeting sizes, one meeting (and server) each.
        #[arg(long, value_delimiter = ',', default_value = "50,100")]
        members: Vec<usize>,
        /// The last joiners, joining one at a time, whose joins are measured.
        #[arg(long, default_value_t = 3)]
        measured: usize,
        /// Run the crowd at the same priority as the measured participants (by default it has
        /// a thread of its own at nice 10).
        #[arg(long)]
        no_isolate: bool,
    },
    /// `soak` (`make soak`): participants keep joining and leaving many small meetings (audio
    /// and video) for minutes, after a warm-up round; afterwards the server must have no ERROR
    /// line in its log, no meeting, connection, room or peer left, and its memory back within
    /// max(10 %, 16 MiB) of the baseline taken after the warm-up round. Exits non-zero when a
    /// criterion fails. With --quick: 20 participants, 30 s, a 10 s warm-up round.
    Soak {
        /// Participants present at most at a time (default 200; --quick 20).
        #[arg(long)]
        participants: Option<usize>,
        /// Meetings they are spread over (default: meetings of 5).
        #[arg(long)]
        meetings: Option<usize>,
        /// Length of the soak round, seconds (default 300; --quick 30).
        #[arg(long)]
        duration: Option<f64>,
        /// Length of the warm-up round before the baseline, seconds (default 30; --quick 10).
        #[arg(long)]
        warmup_round: Option<f64>,
        /// Shortest and longest stay, seconds (default: a fifteenth and a third of the round,
        /// at least 5 s).
        #[arg(long, value_delimiter = ',', num_args = 2)]
        stay: Option<Vec<f64>>,
        /// Shortest and longest gap before a place's next participant joins, seconds (default:
        /// 1 s and a thirtieth of the round, at least 1 s).
        #[arg(long, value_delimiter = ',', num_args = 2)]
        gap: Option<Vec<f64>>,
        /// Seed of the plan (who joins and leaves when).
        #[arg(long, default_value_t = 19)]
        seed: u64,
        /// Wait after everything is 0 before reading the RSS, seconds.
        #[arg(long, default_value_t = 5.0)]
        settle: f64,
        /// Write the figures into this file's soak section (e.g. BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// The standard set (`make bench`), against klausur and Janus: prints a Markdown table and
    /// updates BENCHMARKS.md.
    Standard {
        /// The file to update.
        #[arg(long, default_value = "BENCHMARKS.md")]
        markdown: PathBuf,
        /// Meeting sizes to run (klausur and Janus), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,25")]
        sizes: Vec<usize>,
        /// Viewers of the `webinar 1->M` scenario (0: skip).
        #[arg(long, default_value_t = 30)]
        webinar: usize,
        /// Participants of the `townhall` scenario, 3 of them speaking (0: skip).
        #[arg(long, default_value_t = 150)]
        townhall: usize,
        /// Participants of the `idle` scenario (0: skip).
        #[arg(long, default_value_t = 20)]
        idle: usize,
        /// Participants of the `churn` scenario (0: skip).
        #[arg(long, default_value_t = 10)]
        churn: usize,
        /// Leaves (and joins) per second of the `churn` scenario.
        #[arg(long, default_value_t = 2.0)]
        churn_rate: f64,
        /// Skip the latency check at half capacity (a klausur meeting sized to half of what
        /// one core forwards, from the largest meeting's packets per CPU-second).
        #[arg(long)]
        no_half_capacity: bool,
    },
}

/// Largest meeting (and churn) accepted.
const MAX_MEETING: usize = 100;

/// Fastest churn accepted, leaves (and joins) per second: beyond it the joins themselves, not
/// the meeting, would be what is measured.
const MAX_CHURN_RATE: f64 = 20.0;

fn settings(c: &Common, cmd: &Cmd) -> Settings {
    let (warmup, window, trials) = if matches!(cmd, Cmd::Dialin { .. }) {
        // Two windows in one run, no trials.
        (0.0, if c.quick { 10.0 } else { 30.0 }, 1)
    } else if c.quick {
        (3.0, 8.0, 3)
    } else if matches!(cmd, Cmd::Standard { .. }) {
        // Six scenarios on two servers, 3 trials each: under 10 minutes (about 9 on the
        // project's 2-core machine).
        (3.0, 10.0, 3)
    } else {
        (5.0, 15.0, 3)
    };
    let server_cpu = (!c.no_pin && procfs::nproc() >= 2).then_some(c.server_cpu);
    Settings {
        server_bin: c.server_bin.clone(),
        warmup: Duration::from_secs_f64(c.warmup.unwrap_or(warmup).clamp(0.5, 600.0)),
        window: Duration::from_secs_f64(c.window.unwrap_or(window).clamp(1.0, 600.0)),
        drain: Duration::from_millis(700),
        trials: c.trials.unwrap_or(trials).clamp(1, 20),
        stagger: Duration::from_millis(c.stagger_ms.min(2000)),
        server_cpu,
        media_workers: c.media_workers.clamp(1, 64),
        floor: Duration::from_millis(c.floor_ms.min(10_000)),
        peer: PeerOptions {
            all_codecs: c.all_codecs,
            gro: !c.no_gro,
        },
    }
}

fn settings_json(s: &Settings) -> serde_json::Value {
    json!({
        "warmup_s": s.warmup.as_secs_f64(),
        "window_s": s.window.as_secs_f64(),
        "trials": s.trials,
        "stagger_ms": s.stagger.as_millis() as u64,
        "floor_ms": s.floor.as_millis() as u64,
        "server_cpu": s.server_cpu,
        "client_cpu": s.server_cpu.map(|c| (c + 1) % procfs::nproc()),
        "server_bin": s.server_bin.display().to_string(),
        "all_codecs": s.peer.all_codecs,
        "receiver_gro": s.peer.gro,
    })
}

/// Writes a run's results as pretty JSON (`--json`).
fn write_json(path: &std::path::Path, v: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")?;
    eprintln!("klausur-bench: wrote {}", path.display());
    Ok(())
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
fn pin_to(cpu: usize) {
    let ok = core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().find(|c| c.id == cpu))
        .is_some_and(core_affinity::set_for_current);
    if !ok {
        eprintln!("klausur-bench: warning: could not pin the load generator to CPU {cpu}");
    }
}

/// The meeting size at which klausur forwards half of what its one core can: capacity is the
/// largest klausur meeting's forwarded packets per server CPU-second (the server is pinned to
/// one core), and the packet rate per (sender, receiver) pair is measured in that same meeting.
/// `None` without a klausur meeting result.
fn half_capacity_size(results: &[ScenarioResult]) -> Option<usize> {
    let largest = results
        .iter()
        .filter(|r| r.server == "klausur" && r.scenario.starts_with("meeting-"))
        .filter(|r| r.participants >= 2 && r.pkts_per_cpu_s.is_finite())
        .max_by_key(|r| r.participants)?;
    let n = largest.participants as f64;
    let per_pair = largest.fwd_pkts_per_s / (n * (n - 1.0));
    half_capacity_participants(largest.pkts_per_cpu_s, per_pair)
}

/// The largest meeting size whose forwarded packet rate, `n (n - 1) per_pair`, is at most half
/// of `capacity` packets per second (at least 2, at most [`MAX_MEETING`]).
fn half_capacity_participants(capacity: f64, per_pair: f64) -> Option<usize> {
    if !(capacity.is_finite() && per_pair.is_finite() && capacity > 0.0 && per_pair > 0.0) {
        return None;
    }
    let target = capacity / 2.0;
    (2..=MAX_MEETING)
        .take_while(|&n| (n * (n - 1)) as f64 * per_pair <= target)
        .last()
}

/// The scenarios of a command, each with whether it also runs against Janus.
fn specs(cli: &Cli) -> anyhow::Result<Vec<(Spec, bool)>> {
    let janus = !cli.common.no_janus;
    let meeting = |n: usize| {
        anyhow::ensure!(
            (2..=MAX_MEETING).contains(&n),
            "a meeting needs 2 to {MAX_MEETING} participants"
        );
        Ok(Spec::meeting(n))
    };
    let churn = |n: usize, rate: f64| {
        anyhow::ensure!(
            (2..=MAX_MEETING).contains(&n),
            "churn needs 2 to {MAX_MEETING} participants"
        );
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0 && rate <= MAX_CHURN_RATE,
            "the churn rate must be above 0 and at most {MAX_CHURN_RATE} per second"
        );
        Ok(Spec::churn(n, rate))
    };
    let mut specs = Vec::new();
    match &cli.command {
        Cmd::Meeting {
            participants,
            tiles,
            simulcast,
            switch_ms,
        } => {
            let mut spec = meeting(*participants)?;
            if let Some(k) = tiles {
                spec = Spec::meeting_tiles(*participants, *k);
            }
            anyhow::ensure!(
                switch_ms.is_none() || (*simulcast && tiles.is_some()),
                "--switch-ms needs --simulcast and --tiles"
            );
            anyhow::ensure!(
                switch_ms.is_none_or(|ms| (100..=60_000).contains(&ms)),
                "--switch-ms must lie between 100 and 60000"
            );
            if *simulcast {
                spec = spec.with_simulcast(switch_ms.map(Duration::from_millis));
            }
            specs.push((spec, false))
        }
        Cmd::Compare { participants } => specs.push((meeting(*participants)?, janus)),
        Cmd::Webinar { viewers } => specs.push((Spec::webinar(*viewers), janus)),
        Cmd::Townhall {
            participants,
            speakers,
        } => {
            anyhow::ensure!(*speakers >= 1, "a town hall needs a speaker");
            specs.push((Spec::townhall(*participants, *speakers), janus));
        }
        Cmd::Idle { participants } => specs.push((Spec::idle(*participants), janus)),
        Cmd::Floor { .. }
        | Cmd::Dialin { .. }
        | Cmd::Soak { .. }
        | Cmd::Large { .. }
        | Cmd::Scaling { .. }
        | Cmd::Cluster { .. } => {}
        Cmd::Churn { participants, rate } => specs.push((churn(*participants, *rate)?, janus)),
        Cmd::Standard {
            sizes,
            webinar,
            townhall,
            idle,
            churn: churn_n,
            churn_rate,
            ..
        } => {
            for n in sizes {
                specs.push((meeting(*n)?, janus));
            }
            if *webinar > 0 {
                specs.push((Spec::webinar(*webinar), janus));
            }
            if *townhall > 0 {
                specs.push((Spec::townhall(*townhall, 3), janus));
            }
            if *churn_n > 0 {
                specs.push((churn(*churn_n, *churn_rate)?, janus));
            }
            if *idle > 0 {
                let mut spec = Spec::idle(*idle);
                // Nothing moves: a short window measures idle CPU and memory as well.
                if cli.common.window.is_none() && !cli.common.quick {
                    spec.window = Some(IDLE_WINDOW);
                }
                specs.push((spec, janus));
            }
        }
    }
    for (spec, _) in &specs {
        anyhow::ensure!(
            (2..=scenario::MAX_PARTICIPANTS).contains(&spec.participants()),
            "{}: 2 to {} participants",
            spec.name,
            scenario::MAX_PARTICIPANTS
        );
    }
    Ok(specs)
}

/// The measured window of `idle` in the standard set.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// The trial lengths of a run, for the reader of BENCHMARKS.md.
fn lengths(s: &Settings, specs: &[(Spec, bool)]) -> String {
    let mut text = format!(
        "{} trials per figure, each {:.0} s of warm-up (longer when the joins take longer) and a {:.0} s window",
        s.trials,
        s.warmup.as_secs_f64(),
        s.window.as_secs_f64()
    );
    for (spec, _) in specs {
        let w = spec.window(s);
        if w != s.window {
            text.push_str(&format!(" ({}: {:.0} s)", spec.name, w.as_secs_f64()));
        }
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let s = settings(&cli.common, &cli.command);
    if let Cmd::Floor { count } = cli.command {
        anyhow::ensure!(!s.floor.is_zero(), "--floor-ms 0 measures nothing");
        for _ in 0..count.clamp(1, 1000) {
            println!("{}", floor::measure_async(s.server_cpu, s.floor).await?);
        }
        return Ok(());
    }
    if let Cmd::Dialin { .. } = &cli.command {
        return run_dialin(&cli, &s, started).await;
    }
    if let Cmd::Soak { .. } = &cli.command {
        return run_soak(&cli, &s, started).await;
    }
    if let Cmd::Large { .. } = &cli.command {
        return run_large(&cli, &s, started).await;
    }
    if let Cmd::Scaling { .. } = &cli.command {
        return run_scaling(&cli, &s, started).await;
    }
    if let Cmd::Cluster { .. } = &cli.command {
        return run_cluster(&cli, &s, started).await;
    }
    let specs = specs(&cli)?;
    let lengths = lengths(&s, &specs);
    let baseline = scenario::run_baseline(&s).await?;
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut janus_failures = Vec::new();
    let half_capacity = matches!(
        cli.command,
        Cmd::Standard {
            no_half_capacity: false,
            ..
        }
    );
    for (spec, janus) in specs {
        if !janus {
            results.push(
                scenario::run_scenario(&s, &spec, baseline.clone(), ServerKind::Klausur).await?,
            );
            continue;
        }
        // Trials alternate between the servers: the machine's speed drifts over minutes, and
        // a drift then moves both servers' medians alike instead of the ratio.
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut janus_failed = None;
        for i in 0..s.trials {
            ours.push(scenario::run_trial(&s, &spec, ServerKind::Klausur, i).await?);
            if janus_failed.is_none() {
                match scenario::run_trial(&s, &spec, ServerKind::Janus, i).await {
                    Ok(t) => theirs.push(t),
                    Err(e) => janus_failed = Some(e),
                }
            }
        }
        let name = ServerKind::Klausur.name();
        results.push(scenario::combine(&spec.name, name, ours, baseline.clone()));
        match janus_failed {
            None => {
                let name = ServerKind::Janus.name();
                results.push(scenario::combine(
                    &spec.name,
                    name,
                    theirs,
                    baseline.clone(),
                ));
            }
            Some(e) => {
                let e = format!("{} against Janus failed: {e:#}", spec.name);
                eprintln!("klausur-bench: {e}");
                janus_failures.push(e);
            }
        }
    }
    if half_capacity {
        if let Some(n) = half_capacity_size(&results) {
            let mut spec = Spec::meeting(n);
            spec.name = format!("meeting-{n}-half-capacity");
            results.push(scenario::run_scenario(&s, &spec, baseline, ServerKind::Klausur).await?);
        }
    }
    println!("{}", report::markdown_table(&results));
    for r in &results {
        for e in &r.errors {
            eprintln!("klausur-bench: {}: {e}", r.scenario);
        }
    }
    if let Some(path) = &cli.common.json {
        let mut v = report::compare_json(&results, settings_json(&s));
        if !janus_failures.is_empty() {
            v["janus_failures"] = json!(janus_failures);
        }
        write_json(path, &v)?;
    }
    let wall = started.elapsed();
    if let Cmd::Standard { markdown, .. } = &cli.command {
        let command: Vec<String> = std::env::args().collect();
        let run = report::RunInfo {
            command: command.join(" "),
            lengths,
            wall,
        };
        report::write_benchmarks(markdown, &results, &run, &janus_failures)?;
        eprintln!("klausur-bench: updated {}", markdown.display());
    }
    eprintln!("klausur-bench: done in {:.1} s", wall.as_secs_f64());
    Ok(())
}

/// `meetings` meetings of `participants` (audio and video) for the `what` command, which needs
/// 2 to 32 meetings of 2 to [`MAX_MEETING`], at most [`scenario::MAX_PARTICIPANTS`] in all.
fn meetings_spec(what: &str, meetings: usize, participants: usize) -> anyhow::Result<Spec> {
    anyhow::ensure!(
        (2..=32).contains(&meetings) && (2..=MAX_MEETING).contains(&participants),
        "{what} needs 2 to 32 meetings of 2 to {MAX_MEETING}"
    );
    let spec = Spec::meetings(meetings, participants);
    anyhow::ensure!(
        spec.participants() <= scenario::MAX_PARTICIPANTS,
        "{}: at most {} participants in all",
        spec.name,
        scenario::MAX_PARTICIPANTS
    );
    Ok(spec)
}

/// `scaling`: the same meetings against one media worker and against two, trials alternating
/// (the machine's speed drifts over minutes; a drift then moves both alike).
async fn run_scaling(cli: &Cli, s: &Settings, started: std::time::Instant) -> anyhow::Result<()> {
    let Cmd::Scaling {
        meetings,
        participants,
    } = &cli.command
    else {
        anyhow::bail!("not the scaling command");
    };
    let spec = meetings_spec("scaling", *meetings, *participants)?;
    let one = Settings {
        media_workers: 1,
        ..s.clone()
    };
    // Two workers need both CPUs: the server is not pinned; the load generator stays pinned
    // (in `main`) to the CPU after the server's, so one worker shares it.
    let two = Settings {
        media_workers: 2,
        server_cpu: None,
        floor: Duration::ZERO,
        ..s.clone()
    };
    let baseline = scenario::run_baseline(s).await?;
    let (mut ones, mut twos) = (Vec::new(), Vec::new());
    for i in 0..s.trials {
        ones.push(scenario::run_trial(&one, &spec, ServerKind::Klausur, i).await?);
        twos.push(scenario::run_trial(&two, &spec, ServerKind::Klausur, i).await?);
    }
    let one_r = scenario::combine(
        &spec.name,
        "klausur, 1 media worker",
        ones,
        baseline.clone(),
    );
    let two_r = scenario::combine(&spec.name, "klausur, 2 media workers", twos, baseline);
    println!(
        "{}",
        report::markdown_table(&[one_r.clone(), two_r.clone()])
    );
    // Per-packet cost: CPU-seconds per forwarded packet, the inverse of packets per CPU-second.
    let cost_ratio = one_r.pkts_per_cpu_s / two_r.pkts_per_cpu_s;
    println!(
        "{}: {:.0} forwarded packets per server CPU-second with 1 media worker, {:.0} with 2; \
         per-packet cost with 2 workers {:.2}x that with 1 (target: at most 1.10); server CPU \
         {:.2} and {:.2} CPU-s per second; loss {:.5} and {:.5}; load generator pinned to CPU {}",
        spec.name,
        one_r.pkts_per_cpu_s,
        two_r.pkts_per_cpu_s,
        cost_ratio,
        one_r.server_cpu_s_per_s,
        two_r.server_cpu_s_per_s,
        one_r.loss_ratio,
        two_r.loss_ratio,
        s.server_cpu
            .map_or("none (--no-pin)".to_string(), |c| ((c + 1)
                % procfs::nproc())
            .to_string())
    );
    for r in [&one_r, &two_r] {
        for e in &r.errors {
            eprintln!("klausur-bench: {} ({}): {e}", r.scenario, r.server);
        }
    }
    if let Some(path) = &cli.common.json {
        let mut v = report::compare_json(&[one_r, two_r], settings_json(s));
        v["per_packet_cost_2_vs_1"] = json!(cost_ratio);
        write_json(path, &v)?;
    }
    eprintln!(
        "klausur-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cluster`: the same meetings on one node of a cluster and on two, trials alternating.
/// A node's capacity is its forwarded packets per CPU-second (each node has a CPU of its own);
/// two nodes' capacity is the sum of theirs.
async fn run_cluster(cli: &Cli, s: &Settings, started: std::time::Instant) -> anyhow::Result<()> {
    let Cmd::Cluster {
        meetings,
        participants,
    } = &cli.command
    else {
        anyhow::bail!("not the cluster command");
    };
    let spec = meetings_spec("cluster", *meetings, *participants)?;
    let s = &Settings {
        media_workers: 1,
        ..s.clone()
    };
    let baseline = scenario::run_baseline(s).await?;
    // The second node shares its CPU with the load generator (pinned once, at the start): a
    // single node on that CPU too, so that each of the two nodes can be compared with one node
    // where it runs (like with like), beside the comparison with the better CPU alone.
    let beside = s.server_cpu.map(|c| Settings {
        server_cpu: Some((c + 1) % procfs::nproc()),
        ..s.clone()
    });
    let (mut ones, mut twos, mut besides) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..s.trials {
        ones.push(scenario::run_trial(s, &spec, ServerKind::Cluster(1), i).await?);
        twos.push(scenario::run_trial(s, &spec, ServerKind::Cluster(2), i).await?);
        if let Some(b) = &beside {
            besides.push(scenario::run_trial(b, &spec, ServerKind::Cluster(1), i).await?);
        }
    }
    let one_node: Vec<f64> = ones.iter().map(|t| t.pkts_per_cpu_s).collect();
    let node_of = |k: usize| -> Vec<f64> {
        twos.iter()
            .map(|t| t.nodes.get(k).map_or(f64::NAN, |n| n.pkts_per_cpu_s))
            .collect()
    };
    let sums: Vec<f64> = twos
        .iter()
        .map(|t| t.nodes.iter().map(|n| n.pkts_per_cpu_s).sum())
        .collect();
    let shares: Vec<String> = twos
        .iter()
        .map(|t| {
            let p: Vec<String> = t.nodes.iter().map(|n| n.participants.to_string()).collect();
            p.join("/")
        })
        .collect();
    let med = |v: &[f64]| stats::median(v).unwrap_or(f64::NAN);
    let (c1, a, b, total) = (
        med(&one_node),
        med(&node_of(0)),
        med(&node_of(1)),
        med(&sums),
    );
    let one_r = scenario::combine(
        &spec.name,
        ServerKind::Cluster(1).name(),
        ones,
        baseline.clone(),
    );
    let beside_r = (!besides.is_empty()).then(|| {
        scenario::combine(
            &spec.name,
            "klausur, 1 node on the load generator's CPU",
            besides,
            baseline.clone(),
        )
    });
    let two_r = scenario::combine(&spec.name, ServerKind::Cluster(2).name(), twos, baseline);
    println!(
        "{}",
        report::markdown_table(&[one_r.clone(), two_r.clone()])
    );
    println!(
        "{}: one node {c1:.0} forwarded packets per CPU-second; two nodes {a:.0} and {b:.0} \
         (participants per node {}), together {total:.0}: {:.2}x one node (target: at least \
         1.8); loss {:.5} and {:.5}",
        spec.name,
        shares.join(", "),
        total / c1,
        one_r.loss_ratio,
        two_r.loss_ratio,
    );
    // One node's capacity as the mean of one node on each of the two nodes' CPUs (the
    // median of its trials, as `c1`).
    let beside_c1 = beside_r.as_ref().map(|r| r.pkts_per_cpu_s);
    let like = beside_c1.map(|b| total / ((c1 + b) / 2.0));
    if let (Some(r), Some(like)) = (&beside_r, like) {
        // A node that does not get its CPU when packets arrive takes them in larger batches:
        // its packets per CPU-second rise while its delay grows. The delays say whether the
        // like-with-like ratio compares like with like.
        println!(
            "{}: one node on the load generator's CPU {:.0} forwarded packets per CPU-second \
             (p99 {:.1} ms, loss {:.5}; on its own CPU p99 {:.1} ms); two nodes together \
             against one node on each of their CPUs (the mean, {:.0}): {like:.2}x",
            spec.name,
            r.pkts_per_cpu_s,
            r.latency_p99_ms,
            r.loss_ratio,
            one_r.latency_p99_ms,
            total / like,
        );
    }
    for r in [Some(&one_r), Some(&two_r), beside_r.as_ref()]
        .into_iter()
        .flatten()
    {
        for e in &r.errors {
            eprintln!("klausur-bench: {} ({}): {e}", r.scenario, r.server);
        }
    }
    if let Some(path) = &cli.common.json {
        let mut v = report::compare_json(&[one_r, two_r], settings_json(s));
        v["one_node_pkts_per_cpu_s"] = json!(c1);
        v["two_nodes_pkts_per_cpu_s"] = json!([a, b]);
        v["two_nodes_capacity_vs_one"] = json!(total / c1);
        v["one_node_beside_load_generator_pkts_per_cpu_s"] = json!(beside_c1);
        v["two_nodes_capacity_vs_one_on_each_cpu"] = json!(like);
        write_json(path, &v)?;
    }
    eprintln!(
        "klausur-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Default calls of `dialin` (and with `--quick`).
const DIALIN_CALLS: usize = 40;
const DIALIN_CALLS_QUICK: usize = 12;
/// Real-time priority of `dialin`'s processes (SCHED_RR, 1-99; low: above every normal process,
/// below the kernel's own real-time threads).
const DIALIN_RT_PRIORITY: u8 = 10;

async fn run_dialin(cli: &Cli, s: &Settings, started: std::time::Instant) -> anyhow::Result<()> {
    let Cmd::Dialin {
        calls,
        callers,
        loss,
        call_stagger_ms,
        markdown,
        no_realtime,
    } = &cli.command
    else {
        anyhow::bail!("not the dialin command");
    };
    let calls = calls.unwrap_or(if cli.common.quick {
        DIALIN_CALLS_QUICK
    } else {
        DIALIN_CALLS
    });
    let opts = dialin::Options {
        calls,
        callers: callers.clone(),
        loss: *loss,
        window: s.window,
        call_stagger: Duration::from_millis((*call_stagger_ms).min(5000)),
        member_stagger: s.stagger,
        gateway_cpu: s.server_cpu,
        // The server shares the load generator's CPU: the gateway's is its alone.
        server_cpu: s.server_cpu.map(|c| (c + 1) % procfs::nproc()),
        server_bin: s.server_bin.clone(),
        realtime: (!no_realtime).then_some(DIALIN_RT_PRIORITY),
    };
    let result = dialin::run(&opts).await?;
    println!("{}", dialin::report::tables(&result));
    for t in dialin::report::targets(&result) {
        println!("- {t}");
    }
    for p in &result.problems {
        eprintln!("klausur-bench: dialin: {p}");
    }
    if let Some(path) = &cli.common.json {
        let v = json!({
            "scenario": "dialin",
            "commit": report::git_commit(),
            "machine": report::machine_json(),
            "result": result,
        });
        write_json(path, &v)?;
    }
    let wall = started.elapsed();
    if let Some(path) = markdown {
        let command: Vec<String> = std::env::args().collect();
        let run = report::RunInfo {
            command: command.join(" "),
            lengths: format!(
                "two windows of {:.0} s (the second with {:.0} % of each caller's packets dropped)",
                s.window.as_secs_f64(),
                loss * 100.0
            ),
            wall,
        };
        dialin::report::write_benchmarks(path, &result, &run)?;
        eprintln!("klausur-bench: updated {}", path.display());
    }
    eprintln!("klausur-bench: done in {:.1} s", wall.as_secs_f64());
    Ok(())
}

async fn run_large(cli: &Cli, s: &Settings, started: std::time::Instant) -> anyhow::Result<()> {
    let Cmd::Large {
        members,
        measured,
        no_isolate,
    } = &cli.command
    else {
        anyhow::bail!("not the large command");
    };
    let opts = large::Options {
        sizes: members.clone(),
        measured: (*measured).clamp(1, 10),
        stagger: s.stagger,
        server_cpu: s.server_cpu,
        server_bin: s.server_bin.clone(),
        isolate: !no_isolate,
    };
    let result = large::run(&opts).await?;
    println!("{}", large::tables(&result));
    for t in large::targets(&result) {
        println!("- {t}");
    }
    for size in &result.sizes {
        for p in &size.problems {
            eprintln!("klausur-bench: large {}: {p}", size.members);
        }
    }
    if let Some(path) = &cli.common.json {
        let v = json!({
            "scenario": "large",
            "commit": report::git_commit(),
            "machine": report::machine_json(),
            "result": result,
        });
        write_json(path, &v)?;
    }
    eprintln!(
        "klausur-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Participants per meeting when `soak --meetings` is not given (see `soak`'s module docs).
const SOAK_MEETING_SIZE: usize = 5;

/// `soak`'s options from the command line.
fn soak_options(cli: &Cli, s: &Settings) -> anyhow::Result<soak::Options> {
    let Cmd::Soak {
        participants,
        meetings,
        duration,
        warmup_round,
        stay,
        gap,
        seed,
        settle,
        ..
    } = &cli.command
    else {
        anyhow::bail!("not the soak command");
    };
    let quick = cli.common.quick;
    let seconds = |v: f64, what: &str| {
        anyhow::ensure!(
            v.is_finite() && (0.0..=3600.0).contains(&v),
            "{what} must be 0 to 3600 seconds"
        );
        Ok(Duration::from_secs_f64(v))
    };
    let participants = participants.unwrap_or(if quick { 20 } else { 200 });
    let duration = seconds(
        duration.unwrap_or(if quick { 30.0 } else { 300.0 }),
        "--duration",
    )?;
    let warmup = seconds(
        warmup_round.unwrap_or(if quick { 10.0 } else { 30.0 }),
        "--warmup-round",
    )?;
    let (default_stay, default_gap, ramp) = soak::default_lengths(duration);
    let pair = |v: &Option<Vec<f64>>, default, what: &str| match v.as_deref() {
        None => Ok(default),
        Some([a, b]) => Ok((seconds(*a, what)?, seconds(*b, what)?)),
        Some(_) => anyhow::bail!("{what} takes two values: shortest,longest"),
    };
    Ok(soak::Options {
        participants,
        meetings: meetings.unwrap_or(participants.div_ceil(SOAK_MEETING_SIZE)),
        duration,
        warmup,
        stay: pair(stay, default_stay, "--stay")?,
        gap: pair(gap, default_gap, "--gap")?,
        ramp,
        seed: *seed,
        settle: seconds(*settle, "--settle")?,
        drain_bound: Duration::from_secs(30),
        server_bin: s.server_bin.clone(),
        server_cpu: s.server_cpu,
        peer: s.peer,
        limits: soak::verdict::Limits::default(),
    })
}

async fn run_soak(cli: &Cli, s: &Settings, started: std::time::Instant) -> anyhow::Result<()> {
    let opts = soak_options(cli, s)?;
    let result = soak::run(&opts).await?;
    println!("{}", soak::report::table(&result));
    for l in &result.log.errors {
        eprintln!("klausur-bench: soak: server ERROR: {l}");
    }
    println!("- verdict: {}", soak::report::verdict_line(&result));
    if let Some(path) = &cli.common.json {
        let v = json!({
            "scenario": "soak",
            "commit": report::git_commit(),
            "dirty": report::git_dirty(),
            "date": chrono::Utc::now().to_rfc3339(),
            "machine": report::machine_json(),
            "result": result,
        });
        write_json(path, &v)?;
    }
    let wall = started.elapsed();
    if let Cmd::Soak {
        markdown: Some(path),
        ..
    } = &cli.command
    {
        let command: Vec<String> = std::env::args().collect();
        let run = report::RunInfo {
            command: command.join(" "),
            lengths: String::new(),
            wall,
        };
        soak::report::write_benchmarks(path, &result, &run)?;
        eprintln!("klausur-bench: updated {}", path.display());
    }
    eprintln!("klausur-bench: done in {:.1} s", wall.as_secs_f64());
    anyhow::ensure!(
        result.passed(),
        "soak failed: {}",
        result.failures.join("; ")
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let s = settings(&cli.common, &cli.command);
    if let Some(cpu) = s.server_cpu {
        pin_to((cpu + 1) % procfs::nproc());
    }
    // One thread for all simulated participants: the load generator stays on its own core.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("klausur-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C and SIGTERM drop the run, and with it a running Janus and its namespaces (biased:
    // the handlers are installed before the run's first step).
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
            r = run(cli) => r,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("klausur-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::half_capacity_participants;

    #[test]
    fn half_capacity_is_the_largest_meeting_under_half_the_rate() {
        // 140 packets/s per pair; one core forwards 100,000 packets/s: half is 50,000, and
        // 19 * 18 * 140 = 47,880 fits while 20 * 19 * 140 = 53,200 does not.
        assert_eq!(half_capacity_participants(100_000.0, 140.0), Some(19));
        assert_eq!(half_capacity_participants(400.0, 140.0), None);
        assert_eq!(half_capacity_participants(f64::NAN, 140.0), None);
        assert_eq!(half_capacity_participants(100_000.0, 0.0), None);
        assert_eq!(half_capacity_participants(1e12, 140.0), Some(100));
    }
}
