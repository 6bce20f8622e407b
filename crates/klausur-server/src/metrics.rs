//! Monitoring: what `GET /metrics` tells a city's monitoring system (Prometheus, or anything
//! that reads its text format: VictoriaMetrics, Zabbix, Checkmk, Icinga, Telegraf).
//!
//! - **Access**: only with `Authorization: Bearer <token>`, the token from `[metrics]
//!   token_file` (docs/operations.md, "Monitoring"); kept here as its SHA-256 digest and
//!   compared in constant time. Without a configured token the endpoint is off (404): the
//!   figures say how busy the city's meetings are, which is nobody else's business. A session
//!   of any kind, an administrator's included, does not open it: a monitoring system needs no
//!   account that could do more.
//! - **What**: the process ([`ProcessFigures`]: memory, CPU, file descriptors, start time),
//!   meetings and WebSockets, each media worker's rooms, peers and packet counters, the
//!   database's reachability and the requests refused for it, audit records not written, failed
//!   logins and dial-in PIN checks by result (a guessing attempt shows as a rising
//!   `wrong`/`throttled`), the in-process SIP gateway's calls, and on a node of a cluster
//!   whether its heartbeat reaches Redis and how many meetings it keeps. Never a meeting's
//!   title or id, a person, an address or a token.
//! - **How**: the counters that only this module keeps ([`Metrics`]) count as things happen;
//!   the rest is read when a scrape comes (`http::metrics_api` gathers a [`Snapshot`]) and
//!   [`render`] writes it with the `prometheus-client` crate's encoder (text format 0.0.4).
//!   A remote `klausur sip-gateway` serves [`render_gateway`] on its `--metrics-listen`: its
//!   calls and SIP refusals, nothing of meetings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use zeroize::Zeroizing;

use crate::auth;
use crate::media::MediaStats;

/// The `Content-Type` of [`render`]'s output.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A copy of the in-process SIP gateway's counters ([`klausur_sip::driver::sip::SipStats`]).
pub use klausur_sip::driver::sip::{SipStats, SipStatsSource};

/// The counters kept here, the scrape token and the SIP gateway's counters (one per server, in
/// the shared state).
#[derive(Debug)]
pub struct Metrics {
    token: OnceLock<[u8; 32]>,
    started: SystemTime,
    /// Failed logins by reason (`wrong_password`, `unknown_user`, `account_disabled`,
    /// `throttled`).
    logins_failed: Mutex<BTreeMap<&'static str, u64>>,
    /// Dial-in PIN checks by result (`admit`, `wrong`, `throttled`, `not_yet`, `not_allowed`,
    /// `ended`).
    dialin_checks: Mutex<BTreeMap<&'static str, u64>>,
    /// Scrapes refused for a missing or wrong token.
    refused: AtomicU64,
    sip: OnceLock<SipStatsSource>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            token: OnceLock::new(),
            started: SystemTime::now(),
            logins_failed: Mutex::default(),
            dialin_checks: Mutex::default(),
            refused: AtomicU64::new(0),
            sip: OnceLock::new(),
        }
    }
}

/// Whether a request may read the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No `[metrics] token_file`: the endpoint is off.
    Off,
    /// No token, or another one.
    Refused,
    Granted,
}

impl Metrics {
    /// Opens the endpoint to requests that present `token` (from `[metrics] token_file`; set
    /// once, at start). A second call changes nothing and returns false.
    pub fn set_token(&self, token: &Zeroizing<String>) -> bool {
        self.token.set(auth::token_digest(token)).is_ok()
    }

    /// Whether the `Authorization` header value `authorization` opens the endpoint
    /// (constant time in the token's content).
    pub fn access(&self, authorization: Option<&str>) -> Access {
        let Some(expected) = self.token.get() else {
            return Access::Off;
        };
        let presented = auth::bearer(authorization).unwrap_or("");
        if !presented.is_empty() && auth::token_matches(expected, presented) {
            Access::Granted
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Access::Refused
        }
    }

    /// Counts a failed login (`reason` as in the audit trail's `login.failed`, or `throttled`).
    pub fn login_failed(&self, reason: &'static str) {
        count(&self.logins_failed, reason);
    }

    /// Counts a dial-in PIN check's result.
    pub fn dialin_checked(&self, result: &'static str) {
        count(&self.dialin_checks, result);
    }

    /// Lets the scrapes read the in-process SIP gateway's counters (set once, at start).
    pub fn set_sip(&self, source: SipStatsSource) {
        let _ = self.sip.set(source);
    }

    /// The figures kept here, into `s`.
    pub fn fill(&self, s: &mut Snapshot) {
        s.start_time = self
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        s.logins_failed = read(&self.logins_failed);
        s.dialin_checks = read(&self.dialin_checks);
        s.scrapes_refused = self.refused.load(Ordering::Relaxed);
        s.sip = self.sip.get().map(SipStatsSource::stats);
    }
}

fn count(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key).or_default() += 1;
}

fn read(map: &Mutex<BTreeMap<&'static str, u64>>) -> Vec<(&'static str, u64)> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.iter().map(|(k, v)| (*k, *v)).collect()
}

/// The process as Linux reports it (`/proc/self`, `getrusage`, `getrlimit`); `None` where it
/// cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub resident_bytes: Option<u64>,
    /// User and system CPU time of all threads, in seconds.
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessFigures {
    pub fn read() -> ProcessFigures {
        use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho};
        let resident_bytes = resident_memory();
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).ok().map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                tv.tv_sec() as f64 + f64::from(i32::try_from(tv.tv_usec()).unwrap_or(0)) / 1e6
            };
            t(u.user_time()) + t(u.system_time())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = getrlimit(Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        ProcessFigures {
            resident_bytes,
            cpu_seconds,
            open_fds,
            max_fds,
        }
    }
}

/// The process's resident set in bytes, from the `VmRSS` line of `/proc/self/status` (in kB).
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A node of a cluster, as a scrape sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    pub heartbeat_ok: bool,
    pub leases_kept: usize,
}

/// Everything a scrape reports, gathered at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: &'static str,
    /// `[cluster] node_id`, if a node of a cluster.
    pub node: Option<String>,
    /// Seconds since 1970 when the process started.
    pub start_time: f64,
    pub process: ProcessFigures,
    pub meetings_running: usize,
    /// The server is being taken out of service and lets its meetings finish
    /// (`[server] drain_seconds`).
    pub draining: bool,
    pub websockets: usize,
    /// Each media worker's counters, in worker order.
    pub workers: Vec<MediaStats>,
    pub database_reachable: bool,
    /// Since the start: writes refused because the storage could not take them, requests
    /// refused because the database could not be reached.
    pub refused_unwritable: u64,
    pub refused_unreachable: u64,
    pub audit_write_failures: u64,
    pub logins_failed: Vec<(&'static str, u64)>,
    pub dialin_checks: Vec<(&'static str, u64)>,
    pub scrapes_refused: u64,
    /// The in-process SIP gateway's counters, if it runs.
    pub sip: Option<SipStats>,
    pub cluster: Option<ClusterFigures>,
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    r.register(name, help, g);
}

fn gauge_f64(r: &mut Registry, name: &str, help: &str, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    r.register(name, help, g);
}

/// A counter; `name` without `_total`, which the encoder adds.
fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    r.register(name, help, c);
}

type Labels = Vec<(&'static str, String)>;

fn gauges(r: &mut Registry, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, i64)>) {
    let f = Family::<Labels, Gauge<i64>>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).set(v);
    }
    r.register(name, help, f);
}

fn counters(
    r: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) {
    let f = Family::<Labels, Counter<u64>>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).inc_by(v);
    }
    r.register(name, help, f);
}

/// A count as a gauge's value (saturating).
fn as_i64(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The snapshot in Prometheus's text format (version 0.0.4; [`CONTENT_TYPE`]).
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::default();
    build_info(&mut r, s, None);
    process(&mut r, s);
    gauge(
        &mut r,
        "klausur_meetings_running",
        "Meetings running on this server",
        as_i64(s.meetings_running),
    );
    gauge(
        &mut r,
        "klausur_draining",
        "1 while the server, stopped by its operator, lets its meetings finish before it stops \
         (no new meetings on a node of a cluster)",
        i64::from(s.draining),
    );
    gauge(
        &mut r,
        "klausur_websocket_connections",
        "Meeting WebSockets open (browsers, native clients, phone callers)",
        as_i64(s.websockets),
    );
    media(&mut r, &s.workers);
    gauge(
        &mut r,
        "klausur_database_reachable",
        "1 while the database answers, 0 from a request refused because it could not be \
         reached until it answers again",
        i64::from(s.database_reachable),
    );
    counters(
        &mut r,
        "klausur_database_refused_requests",
        "Requests refused because the database could not be written (unwritable) or reached \
         (unreachable)",
        [
            (
                vec![("reason", "unwritable".to_string())],
                s.refused_unwritable,
            ),
            (
                vec![("reason", "unreachable".to_string())],
                s.refused_unreachable,
            ),
        ],
    );
    counter(
        &mut r,
        "klausur_audit_write_failures",
        "Audit records that could not be written",
        s.audit_write_failures,
    );
    counters(
        &mut r,
        "klausur_login_failures",
        "Failed logins by reason",
        reasons(
            &s.logins_failed,
            &[
                "wrong_password",
                "unknown_user",
                "account_disabled",
                "throttled",
            ],
            "reason",
        ),
    );
    counters(
        &mut r,
        "klausur_dialin_pin_checks",
        "Dial-in PIN checks by result",
        reasons(
            &s.dialin_checks,
            &[
                "admit",
                "wrong",
                "throttled",
                "not_yet",
                "not_allowed",
                "ended",
            ],
            "result",
        ),
    );
    refused_scrapes(&mut r, s);
    if let Some(sip) = &s.sip {
        dialin(&mut r, sip);
    }
    if let Some(c) = &s.cluster {
        gauge(
            &mut r,
            "klausur_cluster_heartbeat_ok",
            "1 if this node's last heartbeat reached Redis",
            i64::from(c.heartbeat_ok),
        );
        gauge(
            &mut r,
            "klausur_cluster_leases",
            "Meetings whose leases this node keeps",
            as_i64(c.leases_kept),
        );
    }
    encode(&r)
}

/// Every known key with its count (0 if it never happened), so that a rate can be taken from
/// the first scrape on.
fn reasons(
    seen: &[(&'static str, u64)],
    known: &[&'static str],
    label: &'static str,
) -> Vec<(Labels, u64)> {
    let mut keys: Vec<&'static str> = known.to_vec();
    keys.extend(seen.iter().map(|(k, _)| *k).filter(|k| !known.contains(k)));
    keys.into_iter()
        .map(|k| {
            let v = seen.iter().find(|(s, _)| *s == k).map_or(0, |(_, v)| *v);
            (vec![(label, k.to_string())], v)
        })
        .collect()
}

/// A remote `klausur sip-gateway`'s figures (`--metrics-listen`): the version with `role`
/// `sip-gateway`, the process, its calls and SIP refusals, and the refused scrapes; nothing of
/// meetings or media, which it has none of.
pub fn render_gateway(s: &Snapshot) -> String {
    let mut r = Registry::default();
    build_info(&mut r, s, Some("sip-gateway"));
    process(&mut r, s);
    refused_scrapes(&mut r, s);
    dialin(&mut r, &s.sip.unwrap_or_default());
    encode(&r)
}

fn build_info(r: &mut Registry, s: &Snapshot, role: Option<&'static str>) {
    let mut info: Labels = vec![("version", s.version.to_string())];
    if let Some(node) = &s.node {
        info.push(("node", node.clone()));
    }
    if let Some(role) = role {
        info.push(("role", role.to_string()));
    }
    r.register(
        "klausur_build",
        "The version (and node id in a cluster, role of a process that is not a server)",
        Info::new(info),
    );
}

fn refused_scrapes(r: &mut Registry, s: &Snapshot) {
    counter(
        r,
        "klausur_metrics_refused_scrapes",
        "Requests for these metrics refused for a missing or wrong token",
        s.scrapes_refused,
    );
}

fn encode(r: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; the encoder only passes the writer's errors on.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, r);
    out
}

fn process(r: &mut Registry, s: &Snapshot) {
    let p = &s.process;
    gauge_f64(
        r,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        s.start_time,
    );
    if let Some(v) = p.resident_bytes {
        gauge(
            r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            as_i64(v),
        );
    }
    if let Some(v) = p.cpu_seconds {
        let c = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        c.inc_by(v);
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            c,
        );
    }
    if let Some(v) = p.open_fds {
        gauge(
            r,
            "process_open_fds",
            "Number of open file descriptors",
            as_i64(v),
        );
    }
    if let Some(v) = p.max_fds {
        gauge(
            r,
            "process_max_fds",
            "Maximum number of open file descriptors",
            as_i64(v),
        );
    }
}

/// Per-worker gauges: name, help, the figure.
type WorkerGauge = (&'static str, &'static str, fn(&MediaStats) -> usize);
/// Per-worker counters: name (without `_total`), help, the figure.
type WorkerCounter = (&'static str, &'static str, fn(&MediaStats) -> u64);

const WORKER_GAUGES: [WorkerGauge; 3] = [
    (
        "klausur_media_rooms",
        "Meetings' media rooms on each worker",
        |w| w.rooms,
    ),
    (
        "klausur_media_peers",
        "Media connections (participants with audio or video) on each worker",
        |w| w.peers,
    ),
    (
        "klausur_media_tcp_connections",
        "ICE-TCP connections open on each worker",
        |w| w.tcp_connections,
    ),
];

const WORKER_COUNTERS: [WorkerCounter; 7] = [
    (
        "klausur_media_forwarded_packets",
        "RTP packets forwarded to participants",
        |w| w.forwarded_packets,
    ),
    (
        "klausur_media_received_datagrams",
        "UDP datagrams received",
        |w| w.received_datagrams,
    ),
    ("klausur_media_sent_datagrams", "UDP datagrams sent", |w| {
        w.sent_datagrams
    }),
    (
        "klausur_media_unroutable_datagrams",
        "UDP datagrams that belonged to no participant (dropped)",
        |w| w.unroutable_datagrams,
    ),
    (
        "klausur_media_tcp_refused_frames",
        "ICE-TCP connections closed for bad framing",
        |w| w.tcp_refused_frames,
    ),
    (
        "klausur_media_tcp_dropped_packets",
        "Packets dropped because an ICE-TCP connection's send queue was full",
        |w| w.tcp_dropped_packets,
    ),
    (
        "klausur_media_worker_restarts",
        "Times a media worker failed and was restarted",
        |w| w.restarts,
    ),
];

fn media(r: &mut Registry, workers: &[MediaStats]) {
    gauge(
        r,
        "klausur_media_workers",
        "Media worker threads",
        as_i64(workers.len()),
    );
    let label = |i: usize| vec![("worker", i.to_string())];
    for (name, help, figure) in WORKER_GAUGES {
        let rows = workers.iter().enumerate();
        gauges(
            r,
            name,
            help,
            rows.map(|(i, w)| (label(i), as_i64(figure(w)))),
        );
    }
    for (name, help, figure) in WORKER_COUNTERS {
        let rows = workers.iter().enumerate();
        counters(r, name, help, rows.map(|(i, w)| (label(i), figure(w))));
    }
}

fn dialin(r: &mut Registry, s: &SipStats) {
    gauge(
        r,
        "klausur_dialin_calls_active",
        "Telephone calls in progress (offered or established)",
        as_i64(s.active_calls),
    );
    counter(
        r,
        "klausur_dialin_calls_offered",
        "Telephone calls offered to the gateway",
        s.calls_offered,
    );
    counter(
        r,
        "klausur_dialin_calls_answered",
        "Telephone calls established",
        s.calls_answered,
    );
    counters(
        r,
        "klausur_dialin_sip_refused",
        "SIP messages and calls refused, by reason",
        [
            ("busy", s.busy),
            ("rate_limited", s.rate_limited),
            ("not_allowed", s.not_allowed),
            ("auth_failed", s.auth_failures),
            ("dropped", s.dropped),
        ]
        .map(|(k, v)| (vec![("reason", k.to_string())], v)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample's value from the text format (`name{labels} value`), by its exact series.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_every_figure_under_its_series() {
        let workers = vec![
            MediaStats {
                rooms: 2,
                peers: 7,
                forwarded_packets: 1234,
                ..MediaStats::default()
            },
            MediaStats {
                rooms: 1,
                restarts: 1,
                ..MediaStats::default()
            },
        ];
        let s = Snapshot {
            version: "9.8.7",
            node: Some("a\"b".into()),
            meetings_running: 3,
            draining: true,
            websockets: 11,
            workers,
            database_reachable: false,
            refused_unreachable: 5,
            logins_failed: vec![("wrong_password", 4)],
            dialin_checks: vec![("wrong", 2), ("admit", 1)],
            sip: Some(SipStats {
                active_calls: 2,
                calls_offered: 9,
                ..SipStats::default()
            }),
            cluster: Some(ClusterFigures {
                heartbeat_ok: true,
                leases_kept: 3,
            }),
            ..Snapshot::default()
        };
        let text = render(&s);
        let expect = [
            ("klausur_meetings_running", 3.0),
            ("klausur_draining", 1.0),
            ("klausur_websocket_connections", 11.0),
            ("klausur_media_workers", 2.0),
            ("klausur_media_rooms{worker=\"0\"}", 2.0),
            ("klausur_media_rooms{worker=\"1\"}", 1.0),
            ("klausur_media_peers{worker=\"0\"}", 7.0),
            (
                "klausur_media_forwarded_packets_total{worker=\"0\"}",
                1234.0,
            ),
            ("klausur_media_worker_restarts_total{worker=\"1\"}", 1.0),
            ("klausur_database_reachable", 0.0),
            (
                "klausur_database_refused_requests_total{reason=\"unreachable\"}",
                5.0,
            ),
            (
                "klausur_database_refused_requests_total{reason=\"unwritable\"}",
                0.0,
            ),
            (
                "klausur_login_failures_total{reason=\"wrong_password\"}",
                4.0,
            ),
            ("klausur_login_failures_total{reason=\"throttled\"}", 0.0),
            ("klausur_dialin_pin_checks_total{result=\"wrong\"}", 2.0),
            ("klausur_dialin_pin_checks_total{result=\"admit\"}", 1.0),
            ("klausur_dialin_calls_active", 2.0),
            ("klausur_dialin_calls_offered_total", 9.0),
            ("klausur_cluster_heartbeat_ok", 1.0),
            ("klausur_cluster_leases", 3.0),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
        // Label values are escaped.
        assert!(text.contains(r#"node="a\"b""#), "{text}");
        assert!(
            text.contains("# TYPE klausur_media_forwarded_packets_total counter"),
            "{text}"
        );
    }

    #[test]
    fn a_remote_gateway_reports_its_calls_and_nothing_of_meetings() {
        let s = Snapshot {
            version: "1.2.3",
            sip: Some(SipStats {
                active_calls: 1,
                busy: 2,
                ..SipStats::default()
            }),
            ..Snapshot::default()
        };
        let text = render_gateway(&s);
        assert_eq!(
            sample(&text, "klausur_dialin_calls_active"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "klausur_dialin_sip_refused_total{reason=\"busy\"}"),
            Some(2.0)
        );
        assert!(text.contains(r#"klausur_build_info{version="1.2.3",role="sip-gateway"} 1"#));
        assert!(!text.contains("klausur_meetings_running"), "{text}");
        assert!(!text.contains("klausur_media_"), "{text}");
    }

    #[test]
    fn a_single_node_without_gateway_has_no_cluster_or_dialin_series() {
        let text = render(&Snapshot::default());
        assert!(
            sample(&text, "klausur_meetings_running").is_some(),
            "{text}"
        );
        assert!(!text.contains("klausur_cluster_"), "{text}");
        assert!(!text.contains("klausur_dialin_calls"), "{text}");
    }

    #[test]
    fn only_the_configured_token_opens_it() {
        let m = Metrics::default();
        assert_eq!(m.access(Some("Bearer anything")), Access::Off);
        let token = Zeroizing::new("a-token-of-forty-characters-0123456789ab".to_string());
        assert!(m.set_token(&token));
        assert!(!m.set_token(&Zeroizing::new("another".into())));
        assert_eq!(
            m.access(Some(&format!("Bearer {}", token.as_str()))),
            Access::Granted
        );
        assert_eq!(m.access(Some(token.as_str())), Access::Refused);
        assert_eq!(m.access(Some("Bearer another")), Access::Refused);
        assert_eq!(m.access(Some("Bearer ")), Access::Refused);
        assert_eq!(m.access(None), Access::Refused);
        let mut s = Snapshot::default();
        m.fill(&mut s);
        assert_eq!(s.scrapes_refused, 4);
    }

    #[test]
    fn the_process_reads_itself() {
        let p = ProcessFigures::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(
            p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
            "{p:?}"
        );
        assert!(p.cpu_seconds.is_some_and(|c| c > 0.0), "{p:?}");
    }
}
