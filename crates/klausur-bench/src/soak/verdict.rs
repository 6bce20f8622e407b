//! The soak's pass criteria and the reading of the server's log: pure functions of the figures.
//!
//! A run fails when
//! - the server wrote an ERROR line (or panicked) at any time, or exited;
//! - after everyone left, the server still counts a running meeting, a WebSocket connection,
//!   a media room or a peer ([`Status`], polled until all are 0 or a bound passes);
//! - its resident memory after everyone left is above the baseline by more than
//!   [`Limits::memory_bound_mib`];
//! - more joins failed (refused, timed out, or joined without media ever connecting) than
//!   [`Limits::failed_joins_allowed`].
//!
//! WARN lines are counted and listed, not failed on: the server warns about what a client did
//! (a slow client disconnected, an odd request), which is its job under load.

use serde::{Deserialize, Serialize};

/// What `GET /api/status` reports (administrators only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub meetings_running: usize,
    pub connections: usize,
    pub rooms: usize,
    pub peers: usize,
    #[serde(default)]
    pub forwarded_packets: u64,
    #[serde(default)]
    pub received_datagrams: u64,
    #[serde(default)]
    pub unroutable_datagrams: u64,
    #[serde(default)]
    pub memory_rss_bytes: Option<u64>,
}

impl Status {
    /// Nothing is left: no running meeting, connection, room or peer.
    pub fn is_empty(&self) -> bool {
        self.meetings_running == 0 && self.connections == 0 && self.rooms == 0 && self.peers == 0
    }

    /// What is left, e.g. `2 rooms, 3 peers` (empty when nothing is).
    pub fn leftovers(&self) -> Vec<String> {
        [
            (self.meetings_running, "running meetings"),
            (self.connections, "WebSocket connections"),
            (self.rooms, "media rooms"),
            (self.peers, "media peers"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }
}

/// The level of a server log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Error,
    Warn,
    /// INFO and below, continuation lines, anything else.
    Other,
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`), which the server's log writer
/// puts around the level when it thinks it writes to a terminal.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the sequence's final letter (bounded by the line).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The level of one line of the server's standard error: the level field of a log line
/// (`<time> ERROR <target>: ...`: the first word, or the second after a timestamp), and a Rust panic's message
/// counts as an error.
pub fn level(line: &str) -> Level {
    let line = strip_ansi(line);
    if line.contains(" panicked at ") {
        return Level::Error;
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    // The level comes first, or right after a timestamp.
    let word = if first.starts_with(|c: char| c.is_ascii_digit()) {
        words.next().unwrap_or("")
    } else {
        first
    };
    match word {
        "ERROR" => Level::Error,
        "WARN" => Level::Warn,
        _ => Level::Other,
    }
}

/// The server log's ERROR and WARN lines (ANSI sequences removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogLines {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Sorts the lines of the server's log by level.
pub fn classify(log: &str) -> LogLines {
    let mut out = LogLines::default();
    for line in log.lines() {
        match level(line) {
            Level::Error => out.errors.push(strip_ansi(line)),
            Level::Warn => out.warnings.push(strip_ansi(line)),
            Level::Other => {}
        }
    }
    out
}

/// The bounds of the criteria.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Memory after everyone left may exceed the baseline by this share of it ...
    pub memory_ratio: f64,
    /// ... or by this many MiB, whichever is larger.
    pub memory_floor_mib: f64,
    /// Share of join attempts that may fail (at least one may).
    pub failed_join_ratio: f64,
}

impl Default for Limits {
    /// 10 % or 16 MiB; 1 % of joins (see the module docs of `soak` for why).
    fn default() -> Self {
        Limits {
            memory_ratio: 0.10,
            memory_floor_mib: 16.0,
            failed_join_ratio: 0.01,
        }
    }
}

impl Limits {
    /// How far above `baseline_mib` the memory after everyone left may be.
    pub fn memory_bound_mib(&self, baseline_mib: f64) -> f64 {
        (baseline_mib * self.memory_ratio).max(self.memory_floor_mib)
    }

    /// Failed joins accepted among `attempts`.
    pub fn failed_joins_allowed(&self, attempts: usize) -> usize {
        ((attempts as f64 * self.failed_join_ratio).ceil() as usize).max(1)
    }
}

/// The figures the criteria look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// ERROR lines (and panics) in the server's log.
    pub error_lines: usize,
    /// How the server process ended during the run, if it did.
    pub server_exited: Option<String>,
    /// The status after everyone left (`None`: it could not be read).
    pub after: Option<Status>,
    /// RSS after the warm-up round (everyone left), MiB.
    pub baseline_rss_mib: f64,
    /// RSS after the soak (everyone left), MiB.
    pub after_rss_mib: f64,
    /// Joins tried in the soak round (the warm-up's count too).
    pub join_attempts: usize,
    /// Joins refused or timed out, and joins whose media never connected.
    pub failed_joins: usize,
}

/// The criteria that failed, each as a sentence (empty: the run passed).
pub fn failures(e: &Evidence, limits: &Limits) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(how) = &e.server_exited {
        out.push(format!("the server exited during the run ({how})"));
    }
    if e.error_lines > 0 {
        out.push(format!(
            "the server logged {} ERROR line(s) (listed below)",
            e.error_lines
        ));
    }
    match &e.after {
        None => out.push("the server's status after everyone left could not be read".into()),
        Some(s) if !s.is_empty() => out.push(format!(
            "after everyone left the server still has {}",
            s.leftovers().join(", ")
        )),
        Some(_) => {}
    }
    let bound = limits.memory_bound_mib(e.baseline_rss_mib);
    let growth = e.after_rss_mib - e.baseline_rss_mib;
    if !(e.after_rss_mib.is_finite() && e.baseline_rss_mib.is_finite()) {
        out.push("the server's memory could not be read".into());
    } else if growth > bound {
        out.push(format!(
            "memory after everyone left is {:.1} MiB, {growth:.1} MiB above the baseline of \
             {:.1} MiB (allowed: {bound:.1} MiB)",
            e.after_rss_mib, e.baseline_rss_mib
        ));
    }
    let allowed = limits.failed_joins_allowed(e.join_attempts);
    if e.failed_joins > allowed {
        out.push(format!(
            "{} of {} joins failed (allowed: {allowed})",
            e.failed_joins, e.join_attempts
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> Evidence {
        Evidence {
            error_lines: 0,
            server_exited: None,
            after: Some(Status::default()),
            baseline_rss_mib: 60.0,
            after_rss_mib: 70.0,
            join_attempts: 1000,
            failed_joins: 10,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        assert_eq!(
            failures(&passing(), &Limits::default()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_criterion_fails_on_its_own() {
        let l = Limits::default();
        let check = |e: Evidence, want: &str| {
            let f = failures(&e, &l);
            assert_eq!(f.len(), 1, "{f:?}");
            assert!(f[0].contains(want), "{f:?} should say {want}");
        };
        check(
            Evidence {
                error_lines: 1,
                ..passing()
            },
            "1 ERROR line",
        );
        check(
            Evidence {
                server_exited: Some("signal 6".into()),
                ..passing()
            },
            "exited during the run (signal 6)",
        );
        check(
            Evidence {
                after: None,
                ..passing()
            },
            "could not be read",
        );
        for (status, want) in [
            (
                Status {
                    rooms: 1,
                    ..Status::default()
                },
                "1 media rooms",
            ),
            (
                Status {
                    peers: 3,
                    ..Status::default()
                },
                "3 media peers",
            ),
            (
                Status {
                    meetings_running: 2,
                    ..Status::default()
                },
                "2 running meetings",
            ),
            (
                Status {
                    connections: 1,
                    ..Status::default()
                },
                "1 WebSocket connections",
            ),
        ] {
            check(
                Evidence {
                    after: Some(status),
                    ..passing()
                },
                want,
            );
        }
        // 16 MiB above a 60 MiB baseline is allowed (10 % would be 6), 16.5 is not.
        check(
            Evidence {
                after_rss_mib: 76.5,
                ..passing()
            },
            "16.5 MiB above the baseline of 60.0 MiB (allowed: 16.0 MiB)",
        );
        check(
            Evidence {
                after_rss_mib: f64::NAN,
                ..passing()
            },
            "memory could not be read",
        );
        // 1 % of 1000 joins may fail; 11 may not.
        check(
            Evidence {
                failed_joins: 11,
                ..passing()
            },
            "11 of 1000 joins failed (allowed: 10)",
        );
    }

    #[test]
    fn memory_bound_is_ten_percent_or_sixteen_mib() {
        let l = Limits::default();
        assert_eq!(l.memory_bound_mib(60.0), 16.0);
        assert_eq!(l.memory_bound_mib(160.0), 16.0);
        assert!((l.memory_bound_mib(300.0) - 30.0).abs() < 1e-9);
        let big = Evidence {
            baseline_rss_mib: 300.0,
            after_rss_mib: 329.0,
            ..passing()
        };
        assert!(failures(&big, &l).is_empty());
        let over = Evidence {
            after_rss_mib: 331.0,
            ..big
        };
        assert_eq!(failures(&over, &l).len(), 1);
        // Less memory than the baseline is fine.
        let less = Evidence {
            after_rss_mib: 40.0,
            ..passing()
        };
        assert!(failures(&less, &l).is_empty());
    }

    #[test]
    fn failed_joins_allowed_is_one_percent_and_at_least_one() {
        let l = Limits::default();
        assert_eq!(l.failed_joins_allowed(0), 1);
        assert_eq!(l.failed_joins_allowed(20), 1);
        assert_eq!(l.failed_joins_allowed(101), 2);
        assert_eq!(l.failed_joins_allowed(1000), 10);
    }

    #[test]
    fn log_levels_with_and_without_colour() {
        let plain = "2026-12-04T16:38:18.123456Z ERROR klausur_server::media: room failed";
        assert_eq!(level(plain), Level::Error);
        let coloured =
            "\u{1b}[2m2026-12-04T16:38:18.123456Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mklausur_server::ws\u{1b}[0m\u{1b}[2m:\u{1b}[0m slow client";
        assert_eq!(level(coloured), Level::Warn);
        assert_eq!(
            strip_ansi(coloured),
            "2026-12-04T16:38:18.123456Z  WARN klausur_server::ws: slow client"
        );
        assert_eq!(
            level("2026-12-04T16:38:18Z  INFO klausur_server: ERROR in a message"),
            Level::Other
        );
        assert_eq!(
            level("thread 'media' panicked at crates/klausur-room/src/lib.rs:1:1:"),
            Level::Error
        );
        assert_eq!(
            level("klausur: listening on http://127.0.0.1:1"),
            Level::Other
        );
        assert_eq!(level("   continuation ERROR"), Level::Other);
        let log = format!("{plain}\n{coloured}\nklausur: listening\n\n{plain}\n");
        let c = classify(&log);
        assert_eq!(c.errors.len(), 2);
        assert_eq!(c.warnings.len(), 1);
        assert!(!c.warnings[0].contains('\u{1b}'));
    }

    #[test]
    fn status_reads_the_servers_json() -> Result<(), serde_json::Error> {
        let s: Status = serde_json::from_str(
            r#"{"meetings_running":1,"connections":2,"rooms":1,"peers":2,"forwarded_packets":5,
                "received_datagrams":9,"unroutable_datagrams":0,"memory_rss_bytes":1048576}"#,
        )?;
        assert_eq!(
            (s.meetings_running, s.connections, s.rooms, s.peers),
            (1, 2, 1, 2)
        );
        assert_eq!(s.memory_rss_bytes, Some(1 << 20));
        assert!(!s.is_empty());
        // The four counts the leak check needs must be there.
        assert!(serde_json::from_str::<Status>(r#"{"rooms":0,"peers":0}"#).is_err());
        Ok(())
    }
}
