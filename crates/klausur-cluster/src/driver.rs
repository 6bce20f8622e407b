//! The Redis driver: does what the core decides, over one reconnecting connection.
//!
//! Every request is bounded by [`Timing::request_timeout`]; a Redis that is down, unreachable
//! or too slow shows as [`Error::Unavailable`], apart from every other failure, and the
//! connection is built again by the next request once Redis answers (redis-rs's
//! `ConnectionManager`). Scripts are sent by hash and loaded again when Redis has forgotten
//! them (after a restart).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use crate::core::codec::{DecodeError, Keys, LeaseRecord, NodeRecord};
use crate::core::ids::{MeetingId, NodeId};
use crate::core::lease::{RenewResult, Timing};
use crate::core::node::{Load, Node};
use crate::core::placement::choose_node;

/// What can go wrong talking to the cluster's Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis is down, unreachable, loading, or did not answer in time. Nothing was decided;
    /// the request may be tried again.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis holds a value under one of the cluster's keys that klausur did not write.
    #[error("Redis holds a value under {key} that klausur cannot read: {source}")]
    Malformed { key: String, source: DecodeError },
    /// Redis refused a command (a key of the wrong type, a permission missing).
    #[error("Redis refused a command: {0}")]
    Refused(String),
    /// The Redis URL cannot be used. (The URL itself is not repeated: it may hold a password.)
    #[error("the Redis URL cannot be used: {0}")]
    Config(String),
    /// Placing a meeting lost the race for its lease three times in a row (it was placed and
    /// released again each time in between); try again.
    #[error("the meeting's lease changed hands during placement; try again")]
    Contended,
    /// Redis was (re)started a moment ago: a meeting without a lease is placed only after this
    /// long, once the nodes that run meetings have taken their leases back
    /// ([`Timing::settling`]). Meetings with a lease are found as ever.
    #[error("Redis started {up:?} ago; placing waits {wait:?} more for running meetings' owners to renew")]
    Settling { up: Duration, wait: Duration },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `uptime_in_seconds` from the text of `INFO server`.
fn parse_uptime(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What is wrong with a Redis URL for the cluster ([`check_url`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "#insecure (TLS without checking the certificate) is not accepted: give the CA that \
         signed Redis's certificate instead"
    )]
    Insecure,
    #[error("a CA certificate is given for TLS, but the URL is not rediss://")]
    CaWithoutTls,
}

/// The cluster's rules for a Redis URL, with a CA for TLS given or not: `rediss://` never
/// with `#insecure`, and a CA only with `rediss://`.
pub fn check_url(url: &str, ca_given: bool) -> Result<(), UrlError> {
    match url.starts_with("rediss://") {
        true if url.ends_with("#insecure") => Err(UrlError::Insecure),
        false if ca_given => Err(UrlError::CaWithoutTls),
        _ => Ok(()),
    }
}

/// The client for `url`, with TLS for `rediss://`.
fn client(url: &str, tls_roots: Option<Vec<u8>>) -> Result<redis::Client> {
    let config = |e: RedisError| Error::Config(e.to_string());
    check_url(url, tls_roots.is_some()).map_err(|e| Error::Config(e.to_string()))?;
    if !url.starts_with("rediss://") {
        return redis::Client::open(url).map_err(config);
    }
    // redis-rs builds its TLS configuration with the process's default crypto provider, which
    // rustls cannot choose by itself when more than one is linked: klausur's is aws-lc-rs.
    // (If the process chose one already, that one stays.)
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match tls_roots {
        Some(root_cert) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(url),
    }
    .map_err(config)
}

fn redis_error(e: RedisError) -> Error {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                )
        );
    if unavailable {
        Error::Unavailable(e.to_string())
    } else {
        Error::Refused(e.to_string())
    }
}

/// Where the cluster's keys live, how long they last, and whom to trust for TLS.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: Keys,
    pub timing: Timing,
    /// For a `rediss://` URL: the CA certificates (PEM) Redis's certificate must chain to,
    /// instead of the system's roots.
    pub tls_roots: Option<Vec<u8>>,
    /// Whether [`Cluster::place`] waits for a Redis that runs for less than a lease TTL
    /// ([`Timing::settling`]); on by default. Tests of placement alone, on a Redis started for
    /// them a moment ago, turn it off.
    pub settle: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            timing: Timing::default(),
            tls_roots: None,
            settle: true,
        }
    }
}

/// A meeting's lease as the node holding it knows it: the exact value stored, which renewing
/// and releasing compare against, and when the request that confirmed it was sent (what a
/// [`crate::LeaseTimer`] starts from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    meeting: MeetingId,
    record: LeaseRecord,
    value: String,
    sent_at: Instant,
}

impl Lease {
    pub fn meeting(&self) -> &MeetingId {
        &self.meeting
    }

    pub fn owner(&self) -> &NodeId {
        &self.record.node
    }

    /// When the request that acquired or adopted the lease was sent.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

/// Where [`Cluster::place`] put a meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node that owns the meeting.
    pub owner: NodeId,
    /// That node's description (its URL to redirect to), if its heartbeat is live.
    pub node: Option<Node>,
    /// Whether this call placed it (the lease was free); `false`: it ran there already.
    pub placed_now: bool,
    /// The lease, when this call placed the meeting on the calling node itself.
    pub lease: Option<Lease>,
}

/// Renew: extend the lease if it still holds our exact value; take it back if Redis has
/// forgotten it (restarted empty) and nobody else took it; otherwise report it taken.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// Release: delete the lease only if it still holds our exact value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// One node's handle on the cluster's Redis. Cheap to share (`&self` everywhere).
pub struct Cluster {
    conn: ConnectionManager,
    node: Node,
    settings: Settings,
    /// The load of the last heartbeat (placement counts the calling node as live with it).
    last_load: Mutex<Load>,
    renew: Script,
    release: Script,
}

impl Cluster {
    /// Connects node `node` to the Redis at `url` (`redis://[:password@]host:port[/db]`),
    /// with the default prefix and TTLs. Fails with [`Error::Unavailable`] if Redis does
    /// not answer now.
    pub async fn connect(url: &str, node: Node) -> Result<Self> {
        Self::connect_with(url, node, Settings::default()).await
    }

    /// [`Cluster::connect`] with a prefix and TTLs of its own.
    ///
    /// A `rediss://` URL speaks TLS and checks Redis's certificate against
    /// [`Settings::tls_roots`], or the system's roots if none are given; `#insecure` (no
    /// check) is refused.
    pub async fn connect_with(url: &str, node: Node, settings: Settings) -> Result<Self> {
        let client = client(url, settings.tls_roots.clone())?;
        let timeout = settings.timing.request_timeout();
        // One quick retry inside a request; beyond that the caller retries on its schedule
        // (heartbeats and renewals come every third of a TTL anyway).
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(timeout)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = tokio::time::timeout(
            timeout * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| Error::Unavailable("no answer in time".to_owned()))?
        .map_err(redis_error)?;
        Ok(Self {
            conn,
            node,
            settings,
            last_load: Mutex::new(Load::default()),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn keys(&self) -> &Keys {
        &self.settings.keys
    }

    fn ttl_ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Runs one request with the request timeout.
    async fn run<T, F>(&self, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.settings.timing.request_timeout(), fut).await {
            Ok(r) => r.map_err(redis_error),
            Err(_) => Err(Error::Unavailable("no answer in time".to_owned())),
        }
    }

    /// Publishes that this node is alive with `load`: its key with the node TTL.
    pub async fn heartbeat(&self, load: Load) -> Result<()> {
        if let Ok(mut l) = self.last_load.lock() {
            *l = load;
        }
        let value = NodeRecord {
            node: self.node.clone(),
            load,
        }
        .encode();
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys().node(self.node.id()))
            .arg(value)
            .arg("PX")
            .arg(Self::ttl_ms(self.settings.timing.node_ttl()));
        self.run(cmd.query_async::<()>(&mut conn)).await
    }

    /// Removes this node's key (an orderly shutdown: the others stop placing meetings here
    /// at once instead of after the TTL).
    pub async fn leave(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.keys().node(self.node.id()));
        self.run(cmd.query_async::<()>(&mut conn)).await
    }

    /// Agrees on what every node must share (a fingerprint of the keys they must hold
    /// alike): the first node to ask writes `value` (`SET NX`, no TTL); every node gets back
    /// the value stored, which is its own if it agrees. After Redis lost it (a restart without
    /// persistence) the next node to ask writes it again.
    pub async fn agree(&self, value: &str) -> Result<String> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys().shared()).arg(value).arg("NX");
        let _: Option<String> = self.run(cmd.query_async(&mut conn)).await?;
        let mut get = redis::cmd("GET");
        get.arg(self.keys().shared());
        let stored: Option<String> = self.run(get.query_async(&mut conn)).await?;
        // Deleted between the two requests: this node's value stands until the next asks.
        Ok(stored.unwrap_or_else(|| value.to_owned()))
    }

    /// Shares `value` with every node for `ttl` under `kind` and `digest` (the SHA-256 of a
    /// secret in hex: the secret itself never reaches Redis). A dial-in call's ticket, for
    /// one: issued by the node whose gateway took the call, looked up by the node that runs
    /// the meeting.
    pub async fn share(&self, kind: &str, digest: &str, value: &str, ttl: Duration) -> Result<()> {
        let key = self.shared_key(kind, digest)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(value)
            .arg("PX")
            .arg(Self::ttl_ms(ttl).max(1));
        self.run(cmd.query_async::<()>(&mut conn)).await
    }

    /// A value [`Cluster::share`]d and not yet expired or forgotten.
    pub async fn shared(&self, kind: &str, digest: &str) -> Result<Option<String>> {
        let key = self.shared_key(kind, digest)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.run(cmd.query_async(&mut conn)).await
    }

    /// Forgets a shared value; whether it was there.
    pub async fn forget(&self, kind: &str, digest: &str) -> Result<bool> {
        let key = self.shared_key(kind, digest)?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let n: i64 = self.run(cmd.query_async(&mut conn)).await?;
        Ok(n > 0)
    }

    fn shared_key(&self, kind: &str, digest: &str) -> Result<String> {
        self.keys()
            .shared_value(kind, digest)
            .ok_or_else(|| Error::Refused(format!("not a shared value's key: {kind}")))
    }

    /// Every key matching `pattern` (SCAN, so Redis is never blocked; duplicates removed).
    async fn scan(&self, pattern: &str) -> Result<BTreeSet<String>> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = BTreeSet::new();
        // SCAN ends when the cursor is 0 again; the bound only guards against a broken server.
        for _ in 0..1_000_000 {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500);
            let (next, batch): (u64, Vec<String>) = self.run(cmd.query_async(&mut conn)).await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
        Err(Error::Unavailable("SCAN did not end".to_owned()))
    }

    /// The values of `keys`, `None` where a key is gone (expired since it was listed).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(200) {
            let mut cmd = redis::cmd("MGET");
            cmd.arg(chunk);
            let values: Vec<Option<Vec<u8>>> = self.run(cmd.query_async(&mut conn)).await?;
            out.extend(values);
        }
        Ok(out)
    }

    /// The live nodes with their loads, by id. A node key whose value klausur cannot read is
    /// left out and logged.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let keys: Vec<String> = self
            .scan(&self.keys().node_pattern())
            .await?
            .into_iter()
            .collect();
        let values = self.get_many(&keys).await?;
        let mut nodes = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let Some(raw) = value else { continue };
            match NodeRecord::decode(self.keys(), key, &raw) {
                Ok(rec) => nodes.push(rec),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "ignoring a node key klausur cannot read")
                }
            }
        }
        nodes.sort_by(|a, b| a.node.id().cmp(b.node.id()));
        Ok(nodes)
    }

    /// One node's record, if its heartbeat is live.
    pub async fn node_record(&self, id: &NodeId) -> Result<Option<NodeRecord>> {
        let key = self.keys().node(id);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let raw: Option<Vec<u8>> = self.run(cmd.query_async(&mut conn)).await?;
        raw.map(|raw| {
            NodeRecord::decode(self.keys(), &key, &raw).map_err(|source| Error::Malformed {
                key: key.clone(),
                source,
            })
        })
        .transpose()
    }

    /// The lease record of `meeting`, if it is placed.
    async fn lease_record(&self, meeting: &MeetingId) -> Result<Option<(LeaseRecord, String)>> {
        let key = self.keys().lease(meeting);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let raw: Option<Vec<u8>> = self.run(cmd.query_async(&mut conn)).await?;
        let Some(raw) = raw else { return Ok(None) };
        let rec = LeaseRecord::decode(&raw).map_err(|source| Error::Malformed {
            key: self.keys().lease_pattern().replace('*', "…"),
            source,
        })?;
        // The exact stored text: what renewing and releasing compare against.
        let value = String::from_utf8(raw).map_err(|_| Error::Malformed {
            key: self.keys().lease_pattern().replace('*', "…"),
            source: DecodeError::NotJson("not UTF-8".to_owned()),
        })?;
        Ok(Some((rec, value)))
    }

    /// The node that owns `meeting`, if it is placed.
    pub async fn owner(&self, meeting: &MeetingId) -> Result<Option<NodeId>> {
        Ok(self.lease_record(meeting).await?.map(|(rec, _)| rec.node))
    }

    /// How many leases each node holds (the meetings placed on it, including those it has not
    /// picked up yet). Lease values klausur cannot read are left out and logged.
    pub async fn leases_per_node(&self) -> Result<BTreeMap<NodeId, u32>> {
        let keys: Vec<String> = self
            .scan(&self.keys().lease_pattern())
            .await?
            .into_iter()
            .collect();
        let values = self.get_many(&keys).await?;
        let mut counts = BTreeMap::new();
        for raw in values.into_iter().flatten() {
            match LeaseRecord::decode(&raw) {
                Ok(rec) => *counts.entry(rec.node).or_insert(0) += 1,
                // The key names a meeting: not logged.
                Err(e) => tracing::warn!(error = %e, "ignoring a lease klausur cannot read"),
            }
        }
        Ok(counts)
    }

    fn new_token() -> String {
        let bytes: [u8; 16] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `SET key value NX PX ttl`: whether the key was free and is now set.
    async fn set_nx(&self, key: &str, value: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(Self::ttl_ms(self.settings.timing.lease_ttl()));
        let reply: Option<String> = self.run(cmd.query_async(&mut conn)).await?;
        Ok(reply.is_some())
    }

    /// Takes `meeting`'s lease for this node if nobody holds it (atomic: of several nodes
    /// trying at once exactly one gets it). `None`: another node (or this one, in an earlier
    /// acquisition) holds it.
    pub async fn acquire(&self, meeting: &MeetingId) -> Result<Option<Lease>> {
        self.acquire_for(meeting, self.node.id().clone()).await
    }

    /// Takes `meeting`'s lease for `owner` if nobody holds it.
    async fn acquire_for(&self, meeting: &MeetingId, owner: NodeId) -> Result<Option<Lease>> {
        let record = LeaseRecord::new(owner, Self::new_token());
        let value = record.encode();
        let sent_at = Instant::now();
        if self.set_nx(&self.keys().lease(meeting), &value).await? {
            Ok(Some(Lease {
                meeting: meeting.clone(),
                record,
                value,
                sent_at,
            }))
        } else {
            Ok(None)
        }
    }

    /// Picks up a lease another node wrote for this one in [`Cluster::place`]: if `meeting`'s
    /// lease names this node, it is confirmed by a renewal and returned; `None` if the meeting
    /// is not placed here.
    pub async fn adopt(&self, meeting: &MeetingId) -> Result<Option<Lease>> {
        let Some((record, value)) = self.lease_record(meeting).await? else {
            return Ok(None);
        };
        if record.node != *self.node.id() {
            return Ok(None);
        }
        let mut lease = Lease {
            meeting: meeting.clone(),
            record,
            value,
            sent_at: Instant::now(),
        };
        match self.renew(&mut lease).await? {
            RenewResult::Renewed | RenewResult::Reacquired => Ok(Some(lease)),
            RenewResult::TakenOver | RenewResult::Unreachable => Ok(None),
        }
    }

    /// Renews a held lease, atomically only if Redis still holds its exact value (or holds
    /// nothing under its key: Redis forgot it, and it is taken back). Returns
    /// [`RenewResult::Renewed`], [`RenewResult::Reacquired`] or [`RenewResult::TakenOver`];
    /// on success the lease's [`Lease::sent_at`] moves to this request's send time. An
    /// [`Error::Unavailable`] is what a [`crate::LeaseTimer`] takes as
    /// [`RenewResult::Unreachable`] (see [`Cluster::renew_result`]).
    pub async fn renew(&self, lease: &mut Lease) -> Result<RenewResult> {
        let mut conn = self.conn.clone();
        let sent_at = Instant::now();
        let mut inv = self.renew.prepare_invoke();
        inv.key(self.keys().lease(&lease.meeting))
            .arg(&lease.value)
            .arg(Self::ttl_ms(self.settings.timing.lease_ttl()));
        let code: i64 = self.run(inv.invoke_async(&mut conn)).await?;
        match code {
            1 | 2 => {
                lease.sent_at = sent_at;
                Ok(if code == 1 {
                    RenewResult::Renewed
                } else {
                    RenewResult::Reacquired
                })
            }
            _ => Ok(RenewResult::TakenOver),
        }
    }

    /// [`Cluster::renew`] for a [`crate::LeaseTimer`]: every failure is
    /// [`RenewResult::Unreachable`] (logged), to be retried until the lease runs out.
    pub async fn renew_result(&self, lease: &mut Lease) -> RenewResult {
        match self.renew(lease).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "renewing a meeting lease failed");
                RenewResult::Unreachable
            }
        }
    }

    /// How long Redis has run (`INFO server`'s `uptime_in_seconds`, whole seconds); `None` if
    /// it does not say (a managed Redis may forbid `INFO`): then no placement waits.
    async fn uptime(&self) -> Result<Option<Duration>> {
        let mut conn = self.conn.clone();
        let info: Result<String> = self
            .run(redis::cmd("INFO").arg("server").query_async(&mut conn))
            .await;
        match info {
            Ok(text) => Ok(parse_uptime(&text)),
            Err(e @ Error::Unavailable(_)) => Err(e),
            Err(e) => {
                tracing::debug!("Redis does not tell its uptime: {e}");
                Ok(None)
            }
        }
    }

    /// Gives a lease up (the meeting ended on this node): deleted only if Redis still holds
    /// its exact value. Whether it was deleted.
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut inv = self.release.prepare_invoke();
        inv.key(self.keys().lease(&lease.meeting)).arg(&lease.value);
        let deleted: i64 = self.run(inv.invoke_async(&mut conn)).await?;
        Ok(deleted == 1)
    }

    /// Where `meeting` runs: its current owner if it is placed; otherwise it is placed now on
    /// the node [`choose_node`] picks among the live nodes (this node always among them, with
    /// its last heartbeat's load), counting the leases each holds as its meetings. The lease
    /// is written for the chosen node, whichever node that is (it picks the lease up with
    /// [`Cluster::adopt`] when the meeting's first participant reaches it); of several nodes
    /// placing one meeting at once, one `SET NX` wins and the others return its owner.
    pub async fn place(&self, meeting: &MeetingId) -> Result<Placement> {
        for _ in 0..3 {
            if let Some((rec, _)) = self.lease_record(meeting).await? {
                let node = self.node_record(&rec.node).await?.map(|r| r.node);
                return Ok(Placement {
                    owner: rec.node,
                    node,
                    placed_now: false,
                    lease: None,
                });
            }
            if self.settings.settle {
                if let Some(up) = self.uptime().await? {
                    if let Some(wait) = self.settings.timing.settling(up) {
                        return Err(Error::Settling { up, wait });
                    }
                }
            }
            let nodes = self.nodes().await?;
            let counts = self.leases_per_node().await?;
            let mut candidates: Vec<(NodeId, Load)> = nodes
                .iter()
                .map(|r| (r.node.id().clone(), r.load))
                .collect();
            if !candidates.iter().any(|(id, _)| id == self.node.id()) {
                let load = self.last_load.lock().map(|l| *l).unwrap_or_default();
                candidates.push((self.node.id().clone(), load));
            }
            for (id, load) in &mut candidates {
                load.meetings = counts.get(id).copied().unwrap_or(0);
            }
            let Some(chosen) = choose_node(&candidates).cloned() else {
                continue; // not reached: this node is always a candidate
            };
            if let Some(lease) = self.acquire_for(meeting, chosen.clone()).await? {
                let node = if chosen == *self.node.id() {
                    Some(self.node.clone())
                } else {
                    nodes
                        .into_iter()
                        .find(|r| *r.node.id() == chosen)
                        .map(|r| r.node)
                };
                let own = chosen == *self.node.id();
                return Ok(Placement {
                    owner: chosen,
                    node,
                    placed_now: true,
                    lease: own.then_some(lease),
                });
            }
            // Another node placed it in the meantime: read its owner.
        }
        Err(Error::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uptime_is_read_from_info_server() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\nuptime_in_days:0\r\n";
        assert_eq!(parse_uptime(info), Some(Duration::from_secs(42)));
        assert_eq!(parse_uptime("# Server\r\nredis_version:7.0.15\r\n"), None);
        assert_eq!(parse_uptime("uptime_in_seconds:soon\r\n"), None);
    }
}
