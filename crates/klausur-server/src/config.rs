//! Configuration: defaults, then a TOML file, then `KLAUSUR_*` environment variables, then
//! command-line flags. Everything is parsed into a validated [`Config`] at start; an invalid
//! value stops the start with a message naming the key and the problem.
//!
//! The bottom layer: imports nothing else of the crate. The types a setting is made of (the
//! trusted proxies, the default client queue) live here, and the modules that act on them
//! import them from here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A problem with the configuration, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// Validates `[turn]` and reads its secret.
fn resolve_turn(t: RawTurn) -> Result<crate::turn::TurnConfig, ConfigError> {
    let urls = t.urls.unwrap_or_default();
    if urls.is_empty() {
        return Err(invalid(
            "turn.urls",
            "missing: at least one turn: or turns: URL, like \"turns:turn.example.org:443?transport=tcp\"",
        ));
    }
    if urls.len() > 8 {
        return Err(invalid("turn.urls", "at most 8 URLs"));
    }
    for u in &urls {
        crate::turn::check_url(u).map_err(|e| invalid("turn.urls", e))?;
    }
    let Some(path) = t.secret_file else {
        return Err(invalid(
            "turn.secret_file",
            "missing: the file with the secret shared with the TURN server (coturn's static-auth-secret)",
        ));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        invalid(
            "turn.secret_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.len() < 16 {
        return Err(invalid(
            "turn.secret_file",
            format!(
                "{}: the secret must be at least 16 characters",
                path.display()
            ),
        ));
    }
    let minutes = t.credential_minutes.unwrap_or(720);
    if !(1..=2880).contains(&minutes) {
        return Err(invalid(
            "turn.credential_minutes",
            "must be between 1 and 2880 (two days)",
        ));
    }
    Ok(crate::turn::TurnConfig {
        urls,
        secret: secret.as_bytes().to_vec(),
        credential_lifetime: std::time::Duration::from_secs(u64::from(minutes) * 60),
    })
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The file format. Every field is optional; unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub media: RawMedia,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub dialin: RawDialIn,
    #[serde(default)]
    pub audit: RawAudit,
    pub turn: Option<RawTurn>,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// `[metrics]`: the monitoring endpoint `GET /metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub token_file: Option<PathBuf>,
}

/// `[cluster]`: several nodes sharing PostgreSQL, placed and kept alive through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis_url: Option<String>,
    pub redis_ca_cert: Option<PathBuf>,
    pub node_id: Option<String>,
    pub node_url: Option<String>,
    pub node_ttl_ms: Option<u64>,
    pub lease_ttl_ms: Option<u64>,
    pub prefix: Option<String>,
    pub capacity: Option<u32>,
}

/// `[turn]`: a TURN server for browsers on networks that let only TCP/TLS to port 443 out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTurn {
    pub urls: Option<Vec<String>>,
    pub secret_file: Option<PathBuf>,
    pub credential_minutes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub web_root: Option<PathBuf>,
    pub danger_plain_http: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_websockets_per_address: Option<u32>,
    pub drain_seconds: Option<u64>,
    pub cross_origin_isolated: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub listen: Option<String>,
    pub public_ip: Option<String>,
    pub public_ipv6: Option<String>,
    pub tcp: Option<bool>,
    pub bandwidth_estimation: Option<bool>,
    pub workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub ended_meetings_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub session_hours: Option<i64>,
    pub invitation_hours: Option<i64>,
    pub login_attempts_per_15min: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub ca_key_file: Option<PathBuf>,
    pub guest_credentials_per_15min: Option<u32>,
    pub remote_url: Option<String>,
    pub remote_token_file: Option<PathBuf>,
    pub remote_tls_ca_cert: Option<PathBuf>,
}

/// The `[dialin]` section as written (see [`DialInConfig`] for what each key means).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDialIn {
    pub udp: Option<Vec<String>>,
    pub tcp: Option<Vec<String>>,
    pub tls: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow: Option<Vec<String>>,
    pub digest_user: Option<String>,
    pub digest_password_file: Option<PathBuf>,
    pub phone_number: Option<String>,
    pub rtp_address: Option<String>,
    pub rtp_ports: Option<String>,
    pub max_calls: Option<u32>,
    pub max_call_minutes: Option<u32>,
    pub invites_per_source_per_minute: Option<u32>,
    pub language: Option<String>,
    pub gateway_token_file: Option<PathBuf>,
    pub server_ca_file: Option<PathBuf>,
}

/// Where the durable state lives (`[storage] database`, `KLAUSUR_DATABASE`, `--database`).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite in `<data_dir>/klausur.sqlite3`: the default, with nothing configured.
    Sqlite,
    /// PostgreSQL at `url`, which may hold a password: never printed, not even by `Debug`;
    /// `summary` says where it points (database, host, user) for messages.
    Postgres { url: String, summary: String },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite => f.write_str("Sqlite"),
            Database::Postgres { summary, .. } => write!(f, "Postgres({summary})"),
        }
    }
}

/// Checks `[storage] database`: a `postgres://` or `postgresql://` URL that parses.
fn resolve_database(value: Option<String>) -> Result<Database, ConfigError> {
    let Some(url) = value else {
        return Ok(Database::Sqlite);
    };
    match klausur_store::postgres_url_summary(&url) {
        Ok(summary) => Ok(Database::Postgres { url, summary }),
        Err(e) => Err(invalid(
            "storage.database",
            format!(
                "{e} (expected a PostgreSQL URL like \
                 postgres://klausur:PASSWORD@db.example:5432/klausur; leave it out for SQLite \
                 in the data directory)"
            ),
        )),
    }
}

/// The validated `[cluster]` section: this node's id and direct URL, the Redis it shares with
/// the other nodes, and how long its keys live (docs/cluster.md).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// May hold a password: never printed, not even by `Debug`; see `redis_summary`.
    pub redis_url: String,
    /// Where `redis_url` points (host and port), for messages.
    pub redis_summary: String,
    /// For a `rediss://` URL: the CA certificate (PEM file) Redis's certificate is checked
    /// against instead of the system's roots.
    pub redis_ca_cert: Option<PathBuf>,
    pub node_id: klausur_cluster::NodeId,
    /// The base URL under which browsers reach this node itself, bypassing the load balancer
    /// (on the same site as `server.public_url`, e.g. `https://meet.example/node/a`): what a
    /// join for one of its meetings arriving at another node is redirected to.
    pub node_url: String,
    pub timing: klausur_cluster::Timing,
    pub prefix: String,
    /// The participants this node is sized for (`capacity`): a node at it gets a new meeting
    /// only when every node is. `None`: no limit, placement by meetings and participants.
    pub capacity: Option<u32>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redis_summary)
            .field("redis_ca_cert", &self.redis_ca_cert)
            .field("node_id", &self.node_id)
            .field("node_url", &self.node_url)
            .field("timing", &self.timing)
            .field("prefix", &self.prefix)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The longest `[server] drain_seconds`: a day.
pub const MAX_DRAIN_SECONDS: u64 = 24 * 3600;

/// A dead node's heartbeat key goes after this (a third of it between heartbeats) ...
pub const DEFAULT_NODE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// ... and its meetings' leases after this: the time a meeting takes to move when its node
/// dies; a Redis outage of up to about 2.8 s (the lease less a tenth, less the 1.7 s between
/// renewals) stops no meeting.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Host and port of a `redis://` URL, without user or password.
fn redis_summary(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    (!host.is_empty()).then(|| host.to_string())
}

/// The machine's host name, as a node id if it is one.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Checks `[cluster]`: nothing set is a single node; `redis_url` turns the cluster on and needs
/// PostgreSQL and a `node_url`.
fn resolve_cluster(
    raw: RawCluster,
    env: &dyn Fn(&str) -> Option<String>,
    o: &Overrides,
    database: &Database,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let redis_url = o
        .redis_url
        .clone()
        .or_else(|| env("KLAUSUR_REDIS_URL"))
        .or(raw.redis_url);
    let node_id = o
        .node_id
        .clone()
        .or_else(|| env("KLAUSUR_NODE_ID"))
        .or(raw.node_id);
    let node_url = o
        .node_url
        .clone()
        .or_else(|| env("KLAUSUR_NODE_URL"))
        .or(raw.node_url);
    let Some(redis_url) = redis_url else {
        if node_id.is_some() || node_url.is_some() {
            return Err(invalid(
                "cluster.redis_url",
                "required with cluster.node_id or cluster.node_url: the Redis the nodes share \
                 (leave [cluster] out for a single node)",
            ));
        }
        return Ok(None);
    };
    let redis_summary = redis_summary(&redis_url).ok_or_else(|| {
        invalid(
            "cluster.redis_url",
            "expected a URL like redis://:PASSWORD@redis.example:6379/0",
        )
    })?;
    let redis_ca_cert = env("KLAUSUR_REDIS_CA_CERT")
        .map(PathBuf::from)
        .or(raw.redis_ca_cert);
    match (
        klausur_cluster::check_url(&redis_url, redis_ca_cert.is_some()),
        &redis_ca_cert,
    ) {
        (Err(e @ klausur_cluster::UrlError::Insecure), _) => {
            return Err(invalid(
                "cluster.redis_url",
                format!("{e} (in cluster.redis_ca_cert)"),
            ));
        }
        (Err(klausur_cluster::UrlError::CaWithoutTls), Some(c)) => {
            return Err(invalid(
                "cluster.redis_ca_cert",
                format!(
                    "{} is given, but cluster.redis_url is not a rediss:// (TLS) URL",
                    c.display()
                ),
            ));
        }
        _ => {}
    }
    if let Some(c) = &redis_ca_cert {
        if !c.is_file() {
            return Err(invalid(
                "cluster.redis_ca_cert",
                format!("file {} does not exist", c.display()),
            ));
        }
    }
    if !matches!(database, Database::Postgres { .. }) {
        return Err(invalid(
            "cluster.redis_url",
            "several nodes need one shared database: set storage.database to a \
             postgres:// URL (every node the same)",
        ));
    }
    let node_id_s = match node_id {
        Some(id) => id,
        None => host_name().ok_or_else(|| {
            invalid(
                "cluster.node_id",
                "required: the host name cannot be read; give every node its own id",
            )
        })?,
    };
    let node_id = klausur_cluster::NodeId::new(node_id_s.clone()).map_err(|e| {
        invalid(
            "cluster.node_id",
            format!("{node_id_s:?}: {e} (the host name is the default)"),
        )
    })?;
    let node_url = node_url.ok_or_else(|| {
        invalid(
            "cluster.node_url",
            "required with cluster.redis_url: the URL under which browsers reach this node \
             itself, on the same site as server.public_url (e.g. https://meet.example/node/a, \
             routed to this node by the reverse proxy)",
        )
    })?;
    let node_url = node_url.trim_end_matches('/').to_string();
    klausur_cluster::Node::new(node_id.clone(), node_url.clone(), Vec::new())
        .map_err(|e| invalid("cluster.node_url", format!("{node_url:?}: {e}")))?;
    let node_ttl = raw
        .node_ttl_ms
        .map_or(DEFAULT_NODE_TTL, std::time::Duration::from_millis);
    let lease_ttl = raw
        .lease_ttl_ms
        .map_or(DEFAULT_LEASE_TTL, std::time::Duration::from_millis);
    let timing = klausur_cluster::Timing::new(node_ttl, lease_ttl).map_err(|e| {
        let key = match e {
            klausur_cluster::TimingError::OutOfRange(d) if d == node_ttl => "cluster.node_ttl_ms",
            _ => "cluster.lease_ttl_ms",
        };
        invalid(key, e.to_string())
    })?;
    let prefix = raw.prefix.unwrap_or_else(|| "klausur".to_string());
    klausur_cluster::Keys::new(prefix.clone())
        .map_err(|e| invalid("cluster.prefix", format!("{prefix:?}: {e}")))?;
    if raw.capacity == Some(0) {
        return Err(invalid(
            "cluster.capacity",
            "must be at least 1 (the participants this node is sized for; leave it out for no limit)",
        ));
    }
    Ok(Some(ClusterConfig {
        redis_url,
        redis_summary,
        redis_ca_cert,
        node_id,
        node_url,
        timing,
        prefix,
        capacity: raw.capacity,
    }))
}

/// Overrides from the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub media_listen: Option<String>,
    /// `--media-workers`: replaces `[media] workers`.
    pub media_workers: Option<usize>,
    pub data_dir: Option<PathBuf>,
    /// `--database`: a PostgreSQL URL instead of SQLite in the data directory.
    pub database: Option<String>,
    pub web_root: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub public_url: Option<String>,
    pub danger_plain_http: bool,
    pub identity_remote_url: Option<String>,
    pub identity_remote_token_file: Option<PathBuf>,
    /// `--sip-listen`: replaces `[dialin] udp`.
    pub sip_listen: Vec<String>,
    /// `--redis-url`, `--node-id`, `--node-url`: replace `[cluster]`'s keys.
    pub redis_url: Option<String>,
    pub node_id: Option<String>,
    pub node_url: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    pub web_root: Option<PathBuf>,
    pub danger_plain_http: bool,
    pub media_listen: SocketAddr,
    /// The address announced to browsers as the media candidate.
    pub media_public_ip: IpAddr,
    /// `[media] public_ipv6`: an IPv6 address announced beside an IPv4 `public_ip` (dual
    /// stack: `media.listen` on `[::]`, which takes both families on one socket per worker).
    pub media_public_ipv6: Option<IpAddr>,
    /// ICE-TCP: also listen on TCP (the media port number) and announce a TCP candidate.
    pub media_tcp: bool,
    /// Estimate each participant's downlink and choose simulcast layers that fit it.
    pub media_bandwidth_estimation: bool,
    /// Media workers (threads, one UDP port each from `media_listen`'s on); default one per
    /// core.
    pub media_workers: usize,
    /// `[turn]`: the TURN server browsers get credentials for, if any.
    pub turn: Option<std::sync::Arc<crate::turn::TurnConfig>>,
    /// `[cluster]`: this node's place among several, if `redis_url` is set; `None` (the
    /// default): a single node, no Redis.
    pub cluster: Option<ClusterConfig>,
    /// Keys, the first administrator's one-time password and (with SQLite) the database.
    pub data_dir: PathBuf,
    /// Where the durable state lives: SQLite in the data directory, or PostgreSQL.
    pub database: Database,
    pub session_hours: i64,
    pub invitation_hours: i64,
    pub login_attempts_per_15min: u32,
    pub identity: IdentityConfig,
    /// Meeting WebSockets: the server sends a WebSocket ping this often (browsers answer it in
    /// their network stack, also in a background tab whose timers are throttled) ...
    pub ws_keepalive: std::time::Duration,
    /// ... and closes a connection that sent nothing, not even a pong, for this long: a client
    /// whose network went away leaves the meeting within this time. Not in the config file.
    pub ws_idle: std::time::Duration,
    /// The `[dialin]` section: telephone dial-in.
    pub dialin: DialInConfig,
    /// The unit of the dial-in throttle's growing delay (`2^(n-3)` units after `n` failures, at
    /// most 30 units; see `dialin::ThrottleRule`): one second. Not in the config file.
    pub dialin_throttle_unit: std::time::Duration,
    /// `[server] trusted_proxies`: the proxies whose `X-Forwarded-For` names the client (see
    /// `http::client_addr`); empty by default: no proxy is trusted.
    pub trusted_proxies: TrustedProxies,
    /// `[server] max_websockets_per_address`: meeting WebSockets open at once per client
    /// address (default 20); more are refused with 429 before the upgrade.
    pub max_websockets_per_address: u32,
    /// `[server] drain_seconds`: on SIGTERM, how long the server lets its running meetings
    /// finish before it ends them (0, the default: at once). Meanwhile everyone in them is
    /// told when the interruption comes at the latest, a node of a cluster gets no new
    /// meetings, and a second SIGTERM stops at once.
    pub drain: std::time::Duration,
    /// `[server] cross_origin_isolated`: serve the web client with `Cross-Origin-Embedder-Policy:
    /// require-corp` beside `Cross-Origin-Opener-Policy: same-origin`, which makes its pages
    /// cross-origin isolated (the encryption worker's `performance.now()` then steps by 5 µs
    /// instead of 100 µs to 1 ms, for measuring its per-frame cost). Off by default: Firefox
    /// opens no WebRTC connection through an HTTP proxy from a page with that policy (the
    /// tunnel's channel fails its embedder check), and nothing else in the client needs it.
    pub cross_origin_isolated: bool,
    /// A connection that has not sent a complete request head this long after it opened (or
    /// after its previous request) is closed: 10 seconds. Not in the config file.
    pub http_header_timeout: std::time::Duration,
    /// A meeting WebSocket opened with a session looks this often whether the session is still
    /// valid (ended by `klausur user disable` in another process, or expired), and closes when
    /// not: 30 seconds. Not in the config file.
    pub ws_session_check: std::time::Duration,
    /// Messages queued for one meeting WebSocket; a client that falls this far behind is
    /// disconnected (it joins again): 512. Not in the config file.
    pub client_queue: usize,
    /// Password hashing and checking (argon2) run on at most this many threads of the blocking
    /// pool at once: the number of cores. Not in the config file.
    pub password_workers: usize,
    /// ... and at most this many wait for one (16 per worker); beyond that a login is answered
    /// 503 "try again". Not in the config file.
    pub password_queue: usize,
    /// `[audit] retention_days`: audit records older than this are deleted (daily, and at
    /// start); the deletion is itself recorded. Default 90, at most 3650.
    pub audit_retention_days: u32,
    /// `[storage] ended_meetings_days`: a meeting that ended this long ago is deleted with its
    /// invitations, moderators, bans, mutes and guest passes (daily, and at start). Default 90.
    pub ended_meetings_days: u32,
    /// `[metrics] token_file` (`KLAUSUR_METRICS_TOKEN_FILE`): the token a monitoring system
    /// presents to read `GET /metrics`; `None` (the default): the endpoint is off.
    pub metrics_token_file: Option<PathBuf>,
}

/// The validated `[dialin]` section. The server reads `phone_number` (shown with every
/// meeting's dial-in number) and `gateway_token_file` (the token a remote gateway presents);
/// the SIP gateway (in this process when any listen address is given, or `klausur
/// sip-gateway` elsewhere) reads the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialInConfig {
    /// SIP listen addresses over UDP (`udp`, or `--sip-listen`), TCP and TLS. Any of them turns
    /// the in-process gateway on ([`DialInConfig::gateway_enabled`]).
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// Certificate and key for the TLS listeners (required with `tls`, refused without).
    pub tls_files: Option<TlsFiles>,
    /// Trunk addresses or networks allowed to call; default loopback only.
    pub allow: Vec<ipnet::IpNet>,
    /// Digest authentication the trunk must answer, if configured.
    pub digest: Option<DigestAuth>,
    /// The number users dial, as shown to them (`"+49 30 9999 0000"`).
    pub phone_number: Option<String>,
    /// The address the gateway puts in its SDP: where the trunk sends RTP.
    pub rtp_address: IpAddr,
    /// The gateway's RTP ports (inclusive).
    pub rtp_ports: std::ops::RangeInclusive<u16>,
    /// Concurrent calls; more are refused.
    pub max_calls: u32,
    /// Longest call; the gateway ends it after this.
    pub max_call_minutes: u32,
    /// INVITEs accepted per source address and minute.
    pub invites_per_source_per_minute: u32,
    /// The language of the voice prompts.
    pub language: PromptLanguage,
    /// Server side: the token remote gateways (`klausur sip-gateway`) present. Gateway side:
    /// the token it presents to the server (unless `--token-file` is given).
    pub gateway_token_file: Option<PathBuf>,
    /// Gateway side (`klausur sip-gateway`, unless `--ca-file` is given): a PEM file of CA
    /// certificates to trust for an `https://` server besides the web roots (a certificate from
    /// an organisation's own CA).
    pub server_ca_file: Option<PathBuf>,
}

/// `[dialin] digest_user` and `digest_password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestAuth {
    pub user: String,
    /// The file holding the password (first line).
    pub password_file: PathBuf,
}

/// The language of the gateway's voice prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptLanguage {
    De,
    En,
}

impl PromptLanguage {
    /// The code as written in the configuration (`"de"`, `"en"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PromptLanguage::De => "de",
            PromptLanguage::En => "en",
        }
    }
}

impl DialInConfig {
    /// Whether the gateway runs in this process: some SIP listen address is configured.
    pub fn gateway_enabled(&self) -> bool {
        !(self.udp.is_empty() && self.tcp.is_empty() && self.tls.is_empty())
    }

    /// Whether a call from `ip` is allowed (`allow`).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// The `[identity]` section: the identity CA that issues end-to-end encryption credentials.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where credentials are signed.
    pub ca: CaSource,
    /// Guest (lobby) credentials issued per client address in 15 minutes.
    pub guest_credentials_per_15min: u32,
}

/// Who holds the identity CA key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The server itself: the CA signing key (see `identity`) in this file; default
    /// `<data_dir>/identity-ca.key`, created with mode 0600 on the first start if missing.
    KeyFile(PathBuf),
    /// A CA service (`klausur identity-ca serve`) elsewhere; the server holds no CA key.
    Remote(RemoteCaConfig),
}

/// `[identity] remote_url`, `remote_token_file`, `remote_tls_ca_cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCaConfig {
    /// Base URL of the CA service, without a trailing `/` (e.g. `https://ca.internal:8443`).
    pub url: String,
    /// File holding the bearer token the CA service expects (one line).
    pub token_file: PathBuf,
    /// Extra trusted root certificate (PEM) for the CA service's TLS certificate, e.g. an
    /// internal PKI; the public web roots are trusted as well.
    pub tls_ca_cert: Option<PathBuf>,
}

impl IdentityConfig {
    /// The key file, when the server holds the CA key itself.
    pub fn ca_key_file(&self) -> Option<&Path> {
        match &self.ca {
            CaSource::KeyFile(p) => Some(p),
            CaSource::Remote(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Reads `file` (if given), applies the environment and `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => parse_file(path)?,
            None => RawConfig::default(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::resolve(raw, &env, overrides)
    }

    /// Validates without environment or overrides (for `klausur check-config`).
    pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
        let raw = parse_file(path)?;
        Self::resolve(raw, &|_| None, &Overrides::default())
    }

    fn resolve(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        o: &Overrides,
    ) -> Result<Config, ConfigError> {
        let listen_s = o
            .listen
            .clone()
            .or_else(|| env("KLAUSUR_LISTEN"))
            .or(raw.server.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{listen_s:?} is not an address with port, like \"127.0.0.1:8080\""),
            )
        })?;
        let media_s = o
            .media_listen
            .clone()
            .or_else(|| env("KLAUSUR_MEDIA_LISTEN"))
            .or(raw.media.listen)
            .unwrap_or_else(|| format!("{}:10000", listen.ip()));
        let media_listen: SocketAddr = media_s.parse().map_err(|_| {
            invalid(
                "media.listen",
                format!("{media_s:?} is not an address with port, like \"127.0.0.1:10000\""),
            )
        })?;
        let media_public_ip = match env("KLAUSUR_MEDIA_PUBLIC_IP").or(raw.media.public_ip) {
            Some(s) => {
                let ip = s.parse::<IpAddr>().map_err(|_| {
                    invalid("media.public_ip", format!("{s:?} is not an IP address"))
                })?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(invalid(
                        "media.public_ip",
                        format!(
                            "{s:?} is no address browsers can send media to: give the \
                             server's own address, as browsers reach it"
                        ),
                    ));
                }
                ip
            }
            None if media_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "media.public_ip",
                    "required when media.listen binds all interfaces (0.0.0.0 or ::): \
                     the address browsers should send media to",
                ))
            }
            None => media_listen.ip(),
        };
        let media_public_ipv6 = match env("KLAUSUR_MEDIA_PUBLIC_IPV6").or(raw.media.public_ipv6) {
            None => None,
            Some(s) => {
                let ip = s.parse::<IpAddr>().map_err(|_| {
                    invalid("media.public_ipv6", format!("{s:?} is not an IP address"))
                })?;
                if !ip.is_ipv6() || ip.is_unspecified() || ip.is_multicast() {
                    return Err(invalid(
                        "media.public_ipv6",
                        format!(
                            "{s:?} is no IPv6 address browsers can send media to: give the \
                             server's own IPv6 address, as browsers reach it"
                        ),
                    ));
                }
                if !media_public_ip.is_ipv4() {
                    return Err(invalid(
                        "media.public_ipv6",
                        "is the IPv6 address beside an IPv4 media.public_ip; media.public_ip \
                         is IPv6 already",
                    ));
                }
                if media_listen.ip() != IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
                    return Err(invalid(
                        "media.public_ipv6",
                        format!(
                            "needs media.listen on \"[::]:{}\" (both IPv4 and IPv6 on each \
                             worker's port), not {media_listen}",
                            media_listen.port()
                        ),
                    ));
                }
                Some(ip)
            }
        };
        let media_tcp = env_bool(env, "KLAUSUR_MEDIA_TCP", "media.tcp")?
            .or(raw.media.tcp)
            .unwrap_or(true);
        let media_bandwidth_estimation = env_bool(
            env,
            "KLAUSUR_MEDIA_BANDWIDTH_ESTIMATION",
            "media.bandwidth_estimation",
        )?
        .or(raw.media.bandwidth_estimation)
        .unwrap_or(true);
        let media_workers = match env("KLAUSUR_MEDIA_WORKERS") {
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                invalid(
                    "media.workers",
                    format!("KLAUSUR_MEDIA_WORKERS={v:?} is not a number"),
                )
            })?),
            None => None,
        };
        let media_workers = o
            .media_workers
            .or(media_workers)
            .or(raw.media.workers)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(crate::media::MAX_WORKERS)
            });
        if !(1..=crate::media::MAX_WORKERS).contains(&media_workers) {
            return Err(invalid(
                "media.workers",
                format!(
                    "{media_workers} media workers: must be between 1 and {}",
                    crate::media::MAX_WORKERS
                ),
            ));
        }
        let last_port = usize::from(media_listen.port()) + media_workers - 1;
        if media_listen.port() != 0 && last_port > usize::from(u16::MAX) {
            return Err(invalid(
                "media.workers",
                format!(
                    "{media_workers} media workers listen on the ports {} to {last_port} \
                     (one each from media.listen's on): beyond 65535; choose a lower port",
                    media_listen.port()
                ),
            ));
        }
        let turn = match raw.turn {
            Some(t) => Some(std::sync::Arc::new(resolve_turn(t)?)),
            None => None,
        };
        let public_url = o
            .public_url
            .clone()
            .or_else(|| env("KLAUSUR_PUBLIC_URL"))
            .or(raw.server.public_url);
        if let Some(u) = &public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.ends_with('/') {
                return Err(invalid(
                    "server.public_url",
                    format!("{u:?} must start with https:// (or http://) and not end with /"),
                ));
            }
        }
        let cert = o
            .tls_cert
            .clone()
            .or_else(|| env("KLAUSUR_TLS_CERT").map(PathBuf::from))
            .or(raw.server.tls_cert);
        let key = o
            .tls_key
            .clone()
            .or_else(|| env("KLAUSUR_TLS_KEY").map(PathBuf::from))
            .or(raw.server.tls_key);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                for (k, p) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                    if !p.is_file() {
                        return Err(invalid(k, format!("file {} does not exist", p.display())));
                    }
                }
                Some(TlsFiles { cert, key })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key",
                    "missing (server.tls_cert is set)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert",
                    "missing (server.tls_key is set)",
                ))
            }
        };
        let danger_plain_http = o.danger_plain_http
            || env("KLAUSUR_DANGER_PLAIN_HTTP").is_some_and(|v| v == "1" || v == "true")
            || raw.server.danger_plain_http.unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !danger_plain_http {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address and no TLS certificate is configured; \
                     set server.tls_cert and server.tls_key (or pass --danger-plain-http if a \
                     TLS proxy in front of klausur terminates TLS)"
                ),
            ));
        }
        let web_root = o
            .web_root
            .clone()
            .or_else(|| env("KLAUSUR_WEB_ROOT").map(PathBuf::from))
            .or(raw.server.web_root);
        if let Some(w) = &web_root {
            if !w.join("index.html").is_file() {
                return Err(invalid(
                    "server.web_root",
                    format!(
                        "{} has no index.html (build the client with `make web`)",
                        w.display()
                    ),
                ));
            }
        }
        let data_dir = o
            .data_dir
            .clone()
            .or_else(|| env("KLAUSUR_DATA_DIR").map(PathBuf::from))
            .or(raw.storage.data_dir)
            .unwrap_or_else(|| PathBuf::from("./klausur-data"));
        let database = resolve_database(
            o.database
                .clone()
                .or_else(|| env("KLAUSUR_DATABASE"))
                .or(raw.storage.database),
        )?;
        let session_hours = raw.security.session_hours.unwrap_or(12);
        if !(1..=24 * 30).contains(&session_hours) {
            return Err(invalid(
                "security.session_hours",
                "must be between 1 and 720",
            ));
        }
        let invitation_hours = raw.security.invitation_hours.unwrap_or(24 * 14);
        if !(1..=24 * 365).contains(&invitation_hours) {
            return Err(invalid(
                "security.invitation_hours",
                "must be between 1 and 8760",
            ));
        }
        let login_attempts_per_15min = raw.security.login_attempts_per_15min.unwrap_or(10);
        if !(1..=1000).contains(&login_attempts_per_15min) {
            return Err(invalid(
                "security.login_attempts_per_15min",
                "must be between 1 and 1000",
            ));
        }
        let ca = resolve_ca_source(&raw.identity, env, o, &data_dir, danger_plain_http)?;
        let guest_credentials_per_15min = raw.identity.guest_credentials_per_15min.unwrap_or(60);
        if !(1..=100_000).contains(&guest_credentials_per_15min) {
            return Err(invalid(
                "identity.guest_credentials_per_15min",
                "must be between 1 and 100000",
            ));
        }
        let dialin = resolve_dialin(raw.dialin, o)?;
        let trusted_proxies = resolve_trusted_proxies(raw.server.trusted_proxies)?;
        let max_websockets_per_address = match env("KLAUSUR_MAX_WEBSOCKETS_PER_ADDRESS") {
            Some(v) => v.parse::<u32>().map_err(|_| {
                invalid(
                    "KLAUSUR_MAX_WEBSOCKETS_PER_ADDRESS",
                    format!("{v:?} is not a number"),
                )
            })?,
            None => raw.server.max_websockets_per_address.unwrap_or(20),
        };
        if !(1..=100_000).contains(&max_websockets_per_address) {
            return Err(invalid(
                "server.max_websockets_per_address",
                "must be between 1 and 100000",
            ));
        }
        let drain_seconds = match env("KLAUSUR_DRAIN_SECONDS") {
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| invalid("KLAUSUR_DRAIN_SECONDS", format!("{v:?} is not a number")))?,
            None => raw.server.drain_seconds.unwrap_or(0),
        };
        if drain_seconds > MAX_DRAIN_SECONDS {
            return Err(invalid(
                "server.drain_seconds",
                format!("must be between 0 and {MAX_DRAIN_SECONDS} (a day)"),
            ));
        }
        let cross_origin_isolated = env_bool(
            env,
            "KLAUSUR_CROSS_ORIGIN_ISOLATED",
            "server.cross_origin_isolated",
        )?
        .or(raw.server.cross_origin_isolated)
        .unwrap_or(false);
        let audit_retention_days = raw.audit.retention_days.unwrap_or(90);
        if !(1..=3650).contains(&audit_retention_days) {
            return Err(invalid(
                "audit.retention_days",
                "must be between 1 and 3650",
            ));
        }
        let ended_meetings_days = raw.storage.ended_meetings_days.unwrap_or(90);
        if !(1..=3650).contains(&ended_meetings_days) {
            return Err(invalid(
                "storage.ended_meetings_days",
                "must be between 1 and 3650",
            ));
        }
        let cluster = resolve_cluster(raw.cluster, env, o, &database)?;
        if cluster.is_some() && dialin.gateway_enabled() && dialin.gateway_token_file.is_none() {
            return Err(invalid(
                "dialin.gateway_token_file",
                "required for telephone dial-in on a node of a cluster: the same token file on \
                 every node (its gateway's calls join meetings that run on the other nodes with \
                 it); make one with `klausur identity-ca init-token --token-file FILE`",
            ));
        }
        let metrics_token_file = env("KLAUSUR_METRICS_TOKEN_FILE")
            .map(PathBuf::from)
            .or(raw.metrics.token_file);
        if let Some(f) = &metrics_token_file {
            if !f.is_file() {
                return Err(invalid(
                    "metrics.token_file",
                    format!(
                        "file {} does not exist (make one with `klausur identity-ca init-token \
                         --token-file FILE`; the monitoring system sends it as \
                         Authorization: Bearer)",
                        f.display()
                    ),
                ));
            }
        }
        let password_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Config {
            listen,
            public_url,
            tls,
            web_root,
            danger_plain_http,
            media_listen,
            media_public_ip,
            media_public_ipv6,
            media_tcp,
            media_bandwidth_estimation,
            media_workers,
            turn,
            cluster,
            data_dir,
            database,
            session_hours,
            invitation_hours,
            login_attempts_per_15min,
            identity: IdentityConfig {
                ca,
                guest_credentials_per_15min,
            },
            ws_keepalive: std::time::Duration::from_secs(10),
            ws_idle: std::time::Duration::from_secs(30),
            dialin,
            dialin_throttle_unit: std::time::Duration::from_secs(1),
            trusted_proxies,
            max_websockets_per_address,
            drain: std::time::Duration::from_secs(drain_seconds),
            cross_origin_isolated,
            http_header_timeout: std::time::Duration::from_secs(10),
            ws_session_check: std::time::Duration::from_secs(30),
            client_queue: CLIENT_QUEUE,
            password_workers,
            password_queue: 16 * password_workers,
            audit_retention_days,
            ended_meetings_days,
            metrics_token_file,
        })
    }

    /// Whether cookies get the `Secure` attribute.
    pub fn secure_cookies(&self) -> bool {
        self.tls.is_some()
            || self
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }
}

/// Queue depth towards one client (the default of `client_queue`); a client that falls this far
/// behind is disconnected.
pub const CLIENT_QUEUE: usize = 512;

/// The operator's trusted proxies: addresses and networks (`[server] trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<ipnet::IpNet>) -> Self {
        TrustedProxies(networks)
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The networks, as configured.
    pub fn networks(&self) -> &[ipnet::IpNet] {
        &self.0
    }
}

/// A true/false setting from the environment variable `name` (`true`/`false` or `1`/`0`), for
/// the config key `key`; `None` when unset.
fn env_bool(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    key: &str,
) -> Result<Option<bool>, ConfigError> {
    match env(name) {
        None => Ok(None),
        Some(v) => match v.as_str() {
            "1" | "true" => Ok(Some(true)),
            "0" | "false" => Ok(Some(false)),
            _ => Err(invalid(
                key,
                format!("{name}={v:?} must be true or false (1 or 0)"),
            )),
        },
    }
}

/// Parses `[server] trusted_proxies`: addresses (`"127.0.0.1"`, `"::1"`) and networks
/// (`"10.0.0.0/8"`).
fn resolve_trusted_proxies(list: Option<Vec<String>>) -> Result<TrustedProxies, ConfigError> {
    let networks = list
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let a = a.trim();
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    invalid(
                        "server.trusted_proxies",
                        format!(
                            "{a:?} is not an address or network, like \"127.0.0.1\" or \
                             \"10.0.0.0/8\""
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(all) = networks.iter().find(|n| n.prefix_len() == 0) {
        return Err(invalid(
            "server.trusted_proxies",
            format!(
                "{all} would trust every address: then any client could name its own address \
                 in X-Forwarded-For"
            ),
        ));
    }
    Ok(TrustedProxies::new(networks))
}

/// Parses `[dialin]`; `--sip-listen` replaces `udp`.
fn resolve_dialin(raw: RawDialIn, o: &Overrides) -> Result<DialInConfig, ConfigError> {
    let addresses = |key: &str, list: &[String]| -> Result<Vec<SocketAddr>, ConfigError> {
        list.iter()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        key,
                        format!("{a:?} is not an address with port, like \"127.0.0.1:5060\""),
                    )
                })
            })
            .collect()
    };
    let udp = if o.sip_listen.is_empty() {
        addresses("dialin.udp", raw.udp.as_deref().unwrap_or_default())?
    } else {
        addresses("--sip-listen", &o.sip_listen)?
    };
    let tcp = addresses("dialin.tcp", raw.tcp.as_deref().unwrap_or_default())?;
    let tls = addresses("dialin.tls", raw.tls.as_deref().unwrap_or_default())?;
    let tls_files = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => {
            if tls.is_empty() {
                return Err(invalid(
                    "dialin.tls_cert",
                    "set, but dialin.tls lists no address to use it on",
                ));
            }
            for (k, p) in [("dialin.tls_cert", &cert), ("dialin.tls_key", &key)] {
                if !p.is_file() {
                    return Err(invalid(k, format!("file {} does not exist", p.display())));
                }
            }
            Some(TlsFiles { cert, key })
        }
        (None, None) if !tls.is_empty() => {
            return Err(invalid(
                "dialin.tls_cert",
                "missing (dialin.tls lists an address; it needs tls_cert and tls_key)",
            ))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "dialin.tls_key",
                "missing (dialin.tls_cert is set)",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "dialin.tls_cert",
                "missing (dialin.tls_key is set)",
            ))
        }
    };
    let allow = match raw.allow {
        None => vec![
            ipnet::IpNet::from(IpAddr::from([127, 0, 0, 1])),
            ipnet::IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ],
        Some(list) => list
            .iter()
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .or_else(|_| a.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        invalid(
                            "dialin.allow",
                            format!(
                                "{a:?} is not an address or network, like \"192.0.2.10\" or \
                                 \"192.0.2.0/24\""
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let digest = match (raw.digest_user, raw.digest_password_file) {
        (Some(user), Some(password_file)) => {
            if user.is_empty()
                || user.chars().count() > 64
                || user.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(invalid(
                    "dialin.digest_user",
                    "must be 1 to 64 characters without spaces or control characters",
                ));
            }
            if !password_file.is_file() {
                return Err(invalid(
                    "dialin.digest_password_file",
                    format!("file {} does not exist", password_file.display()),
                ));
            }
            Some(DigestAuth {
                user,
                password_file,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "dialin.digest_password_file",
                "missing (dialin.digest_user is set)",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "dialin.digest_user",
                "missing (dialin.digest_password_file is set)",
            ))
        }
    };
    let phone_number = raw
        .phone_number
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(n) = &phone_number {
        let ok = n.chars().count() <= 40
            && n.chars().any(|c| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_digit() || " +-/().".contains(c));
        if !ok {
            return Err(invalid(
                "dialin.phone_number",
                format!(
                    "{n:?} must be a telephone number of at most 40 characters: digits, spaces \
                     and + - / ( ) ., like \"+49 30 9999 0000\""
                ),
            ));
        }
    }
    let first_listen = udp.iter().chain(&tcp).chain(&tls).next().copied();
    let rtp_address = match raw.rtp_address {
        Some(a) => {
            let ip = a.parse::<IpAddr>().map_err(|_| {
                invalid("dialin.rtp_address", format!("{a:?} is not an IP address"))
            })?;
            if ip.is_unspecified() {
                return Err(invalid(
                    "dialin.rtp_address",
                    "must be the address the trunk sends RTP to, not an unspecified one",
                ));
            }
            ip
        }
        None => match first_listen {
            Some(l) if l.ip().is_unspecified() => {
                return Err(invalid(
                    "dialin.rtp_address",
                    "required when a dialin listen address binds all interfaces (0.0.0.0 or \
                     ::): the address the trunk sends RTP to",
                ))
            }
            Some(l) => l.ip(),
            None => IpAddr::from([127, 0, 0, 1]),
        },
    };
    let max_calls = raw.max_calls.unwrap_or(200);
    if !(1..=10_000).contains(&max_calls) {
        return Err(invalid("dialin.max_calls", "must be between 1 and 10000"));
    }
    let rtp_ports = raw.rtp_ports.as_deref().unwrap_or("20000-20999");
    let range = rtp_ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| *a >= 1024 && a < b)
        .ok_or_else(|| {
            invalid(
                "dialin.rtp_ports",
                format!(
                    "{rtp_ports:?} must be a port range like \"20000-20999\" (from 1024 up, \
                     first below last)"
                ),
            )
        })?;
    let ports = u32::from(range.1 - range.0) + 1;
    if ports < max_calls {
        return Err(invalid(
            "dialin.rtp_ports",
            format!(
                "{rtp_ports:?} has {ports} ports, fewer than dialin.max_calls ({max_calls}): \
                 each call needs one"
            ),
        ));
    }
    let max_call_minutes = raw.max_call_minutes.unwrap_or(240);
    if !(1..=24 * 60).contains(&max_call_minutes) {
        return Err(invalid(
            "dialin.max_call_minutes",
            "must be between 1 and 1440",
        ));
    }
    let invites_per_source_per_minute = raw.invites_per_source_per_minute.unwrap_or(30);
    if !(1..=10_000).contains(&invites_per_source_per_minute) {
        return Err(invalid(
            "dialin.invites_per_source_per_minute",
            "must be between 1 and 10000",
        ));
    }
    let language = match raw.language.as_deref().unwrap_or("de") {
        "de" => PromptLanguage::De,
        "en" => PromptLanguage::En,
        other => {
            return Err(invalid(
                "dialin.language",
                format!("{other:?} is not one of \"de\", \"en\""),
            ))
        }
    };
    if let Some(f) = &raw.gateway_token_file {
        if !f.is_file() {
            return Err(invalid(
                "dialin.gateway_token_file",
                format!("file {} does not exist", f.display()),
            ));
        }
    }
    if let Some(f) = &raw.server_ca_file {
        if !f.is_file() {
            return Err(invalid(
                "dialin.server_ca_file",
                format!("file {} does not exist", f.display()),
            ));
        }
    }
    Ok(DialInConfig {
        udp,
        tcp,
        tls,
        tls_files,
        allow,
        digest,
        phone_number,
        rtp_address,
        rtp_ports: range.0..=range.1,
        max_calls,
        max_call_minutes,
        invites_per_source_per_minute,
        language,
        gateway_token_file: raw.gateway_token_file,
        server_ca_file: raw.server_ca_file,
    })
}

/// The `[identity]` key source: a local key file (default) or a remote CA service. An explicitly
/// given `ca_key_file` and a `remote_url` exclude each other.
fn resolve_ca_source(
    raw: &RawIdentity,
    env: &dyn Fn(&str) -> Option<String>,
    o: &Overrides,
    data_dir: &Path,
    danger_plain_http: bool,
) -> Result<CaSource, ConfigError> {
    let ca_key_file = env("KLAUSUR_IDENTITY_CA_KEY_FILE")
        .map(PathBuf::from)
        .or_else(|| raw.ca_key_file.clone());
    let remote_url = o
        .identity_remote_url
        .clone()
        .or_else(|| env("KLAUSUR_IDENTITY_REMOTE_URL"))
        .or_else(|| raw.remote_url.clone());
    let token_file = o
        .identity_remote_token_file
        .clone()
        .or_else(|| env("KLAUSUR_IDENTITY_REMOTE_TOKEN_FILE").map(PathBuf::from))
        .or_else(|| raw.remote_token_file.clone());
    let tls_ca_cert = env("KLAUSUR_IDENTITY_REMOTE_TLS_CA_CERT")
        .map(PathBuf::from)
        .or_else(|| raw.remote_tls_ca_cert.clone());
    let Some(url) = remote_url else {
        if token_file.is_some() {
            return Err(invalid(
                "identity.remote_url",
                "missing (identity.remote_token_file is set)",
            ));
        }
        if tls_ca_cert.is_some() {
            return Err(invalid(
                "identity.remote_url",
                "missing (identity.remote_tls_ca_cert is set)",
            ));
        }
        let ca_key_file = ca_key_file.unwrap_or_else(|| data_dir.join("identity-ca.key"));
        if ca_key_file.as_os_str().is_empty() || ca_key_file.is_dir() {
            return Err(invalid(
                "identity.ca_key_file",
                format!("{} is not a file path", ca_key_file.display()),
            ));
        }
        return Ok(CaSource::KeyFile(ca_key_file));
    };
    if let Some(k) = ca_key_file {
        return Err(invalid(
            "identity.remote_url",
            format!(
                "cannot be combined with identity.ca_key_file ({}): with a remote CA the server \
                 holds no CA key; remove one of the two",
                k.display()
            ),
        ));
    }
    let url = validate_remote_url(&url, danger_plain_http)?;
    let token_file = token_file.ok_or_else(|| {
        invalid(
            "identity.remote_token_file",
            "missing (required with identity.remote_url: the file with the CA service's token)",
        )
    })?;
    if !token_file.is_file() {
        return Err(invalid(
            "identity.remote_token_file",
            format!("file {} does not exist", token_file.display()),
        ));
    }
    if let Some(c) = &tls_ca_cert {
        if !c.is_file() {
            return Err(invalid(
                "identity.remote_tls_ca_cert",
                format!("file {} does not exist", c.display()),
            ));
        }
    }
    Ok(CaSource::Remote(RemoteCaConfig {
        url,
        token_file,
        tls_ca_cert,
    }))
}

/// Checks a CA service URL and returns it without a trailing `/`. Plain `http://` is accepted
/// for loopback hosts only, unless `danger_plain_http` is set (the token would cross the
/// network in clear).
fn validate_remote_url(url: &str, danger_plain_http: bool) -> Result<String, ConfigError> {
    const KEY: &str = "identity.remote_url";
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(KEY, format!("{url:?} is not a URL: {e}")))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(invalid(
                KEY,
                format!("{url:?} must start with https:// (or http://)"),
            ))
        }
    };
    if parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(invalid(
            KEY,
            format!("{url:?} must be a base URL like https://ca.example:8443 (no user, query or fragment)"),
        ));
    }
    let host = parsed.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback && !danger_plain_http {
        return Err(invalid(
            KEY,
            format!(
                "{url:?} uses plain http to a non-loopback host: the token and the credentials \
                 would cross the network in clear; use https:// (or set \
                 server.danger_plain_http if the link is protected otherwise)"
            ),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Config::resolve(raw, &|_| None, &Overrides::default())
    }

    #[test]
    fn defaults_are_loopback_without_tls() {
        let c = resolve("").expect("defaults valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.media_listen, "127.0.0.1:10000".parse().expect("addr"));
        assert!(c.tls.is_none());
        assert!(!c.secure_cookies());
        assert_eq!(
            c.identity.ca,
            CaSource::KeyFile(PathBuf::from("./klausur-data").join("identity-ca.key"))
        );
    }

    #[test]
    fn identity_section() {
        let c = resolve(
            "[identity]\nca_key_file = \"/etc/klausur/ca.key\"\nguest_credentials_per_15min = 5",
        )
        .expect("valid");
        assert_eq!(
            c.identity.ca_key_file(),
            Some(Path::new("/etc/klausur/ca.key"))
        );
        assert_eq!(c.identity.guest_credentials_per_15min, 5);
        let err = resolve("[identity]\nguest_credentials_per_15min = 0").expect_err("zero");
        assert!(
            err.to_string()
                .starts_with("identity.guest_credentials_per_15min"),
            "{err}"
        );
    }

    /// A token file that exists, for the remote CA tests.
    fn token_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ca.token");
        std::fs::write(&path, "x".repeat(43)).expect("write");
        let p = path.to_str().expect("utf-8").to_string();
        (dir, p)
    }

    #[test]
    fn remote_ca_from_the_file() {
        let (_dir, token) = token_file();
        let c = resolve(&format!(
            "[identity]\nremote_url = \"https://ca.example:8443/\"\nremote_token_file = {token:?}"
        ))
        .expect("valid");
        assert_eq!(
            c.identity.ca,
            CaSource::Remote(RemoteCaConfig {
                url: "https://ca.example:8443".into(),
                token_file: PathBuf::from(&token),
                tls_ca_cert: None,
            })
        );
        assert_eq!(c.identity.ca_key_file(), None);
        // Plain http is fine on loopback.
        for url in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000/ca",
        ] {
            let c = resolve(&format!(
                "[identity]\nremote_url = {url:?}\nremote_token_file = {token:?}"
            ))
            .expect(url);
            assert!(matches!(c.identity.ca, CaSource::Remote(_)), "{url}");
        }
    }

    #[test]
    fn remote_ca_from_environment_and_flags() {
        let (_dir, token) = token_file();
        let env_token = token.clone();
        let env = move |name: &str| match name {
            "KLAUSUR_IDENTITY_REMOTE_URL" => Some("https://env.example".to_string()),
            "KLAUSUR_IDENTITY_REMOTE_TOKEN_FILE" => Some(env_token.clone()),
            _ => None,
        };
        let c = Config::resolve(RawConfig::default(), &env, &Overrides::default()).expect("env");
        let CaSource::Remote(r) = &c.identity.ca else {
            panic!("not remote: {:?}", c.identity.ca)
        };
        assert_eq!(r.url, "https://env.example");
        // A flag beats the environment.
        let o = Overrides {
            identity_remote_url: Some("https://flag.example".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(RawConfig::default(), &env, &o).expect("flag");
        let CaSource::Remote(r) = &c.identity.ca else {
            panic!("not remote")
        };
        assert_eq!(r.url, "https://flag.example");
        // A key file from the environment plus a remote URL from a flag: refused.
        let env_key = |name: &str| {
            (name == "KLAUSUR_IDENTITY_CA_KEY_FILE").then(|| "/etc/klausur/ca.key".to_string())
        };
        let o = Overrides {
            identity_remote_url: Some("https://flag.example".into()),
            identity_remote_token_file: Some(PathBuf::from(&token)),
            ..Overrides::default()
        };
        let err = Config::resolve(RawConfig::default(), &env_key, &o).expect_err("both");
        assert!(err.to_string().starts_with("identity.remote_url"), "{err}");
    }

    #[test]
    fn remote_ca_errors_name_the_key() {
        let (_dir, token) = token_file();
        let cases = [
            // Mutual exclusion with an explicit key file.
            (
                format!(
                    "[identity]\nca_key_file = \"/etc/klausur/ca.key\"\nremote_url = \"https://ca.example\"\nremote_token_file = {token:?}"
                ),
                "identity.remote_url",
                "identity.ca_key_file",
            ),
            (
                "[identity]\nremote_url = \"https://ca.example\"".to_string(),
                "identity.remote_token_file",
                "missing",
            ),
            (
                "[identity]\nremote_url = \"https://ca.example\"\nremote_token_file = \"/nonexistent/t\"".to_string(),
                "identity.remote_token_file",
                "does not exist",
            ),
            (
                format!("[identity]\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "missing",
            ),
            (
                format!("[identity]\nremote_url = \"ftp://ca.example\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "https://",
            ),
            (
                format!("[identity]\nremote_url = \"not a url\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "not a URL",
            ),
            (
                format!("[identity]\nremote_url = \"https://ca.example/?x=1\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "base URL",
            ),
            (
                format!("[identity]\nremote_url = \"http://192.0.2.7:9000\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "in clear",
            ),
            (
                format!("[identity]\nremote_url = \"https://ca.example\"\nremote_token_file = {token:?}\nremote_tls_ca_cert = \"/nonexistent/ca.pem\""),
                "identity.remote_tls_ca_cert",
                "does not exist",
            ),
        ];
        for (text, key, needle) in cases {
            let err = resolve(&text).expect_err(&text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        // Plain http to another host is allowed with the danger switch.
        let c = resolve(&format!(
            "[server]\ndanger_plain_http = true\n[identity]\nremote_url = \"http://192.0.2.7:9000\"\nremote_token_file = {token:?}"
        ))
        .expect("danger switch");
        assert!(matches!(c.identity.ca, CaSource::Remote(_)));
    }

    #[test]
    fn the_database_is_sqlite_unless_a_postgres_url_is_given() {
        assert_eq!(resolve("").expect("defaults").database, Database::Sqlite);
        let c =
            resolve("[storage]\ndatabase = \"postgres://klausur:s3cret@db.example:5433/klausur\"")
                .expect("valid");
        let Database::Postgres { url, summary } = &c.database else {
            panic!("{:?}", c.database);
        };
        assert_eq!(url, "postgres://klausur:s3cret@db.example:5433/klausur");
        assert!(summary.contains("db.example:5433"), "{summary}");
        // The password is in no message and no debug output.
        assert!(!summary.contains("s3cret"), "{summary}");
        assert!(!format!("{c:?}").contains("s3cret"));
        // The command line comes before the file.
        let raw: RawConfig =
            toml::from_str("[storage]\ndatabase = \"postgres://a@file/x\"").expect("toml");
        let o = Overrides {
            database: Some("postgresql:///klausur?host=/run/postgresql".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(raw, &|_| None, &o).expect("valid");
        assert!(
            matches!(&c.database, Database::Postgres { url, .. } if url.starts_with("postgresql:///")),
            "{:?}",
            c.database
        );
        for bad in [
            "sqlite:///var/lib/klausur/db",
            "postgres://u:s3cret@[::1/x",
            "db.example",
            "",
        ] {
            let err = resolve(&format!("[storage]\ndatabase = \"{bad}\""))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("storage.database"), "{bad}: {err}");
            assert!(!err.contains("s3cret"), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[media]\nlisten = \"1.2.3.4\"", "media.listen"),
            (
                "[server]\nlisten = \"0.0.0.0:8080\"\n[media]\npublic_ip = \"192.0.2.1\"",
                "server.listen",
            ),
            (
                "[server]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"",
                "server.tls_cert",
            ),
            ("[server]\ntls_cert = \"/x\"", "server.tls_key"),
            ("[security]\nsession_hours = 0", "security.session_hours"),
            ("[audit]\nretention_days = 0", "audit.retention_days"),
            (
                "[storage]\nended_meetings_days = 0",
                "storage.ended_meetings_days",
            ),
            ("[audit]\nretention_days = 99999", "audit.retention_days"),
            ("[server]\npublic_url = \"ftp://x\"", "server.public_url"),
            ("[media]\nlisten = \"0.0.0.0:10000\"", "media.public_ip"),
            ("[media]\npublic_ip = \"0.0.0.0\"", "media.public_ip"),
            ("[media]\npublic_ip = \"::\"", "media.public_ip"),
            ("[media]\npublic_ip = \"224.0.0.1\"", "media.public_ip"),
            (
                "[media]\nlisten = \"[::]:10000\"\npublic_ip = \"192.0.2.1\"\npublic_ipv6 = \"192.0.2.2\"",
                "media.public_ipv6",
            ),
            (
                "[media]\nlisten = \"0.0.0.0:10000\"\npublic_ip = \"192.0.2.1\"\npublic_ipv6 = \"2001:db8::1\"",
                "media.public_ipv6",
            ),
            (
                "[media]\nlisten = \"[::]:10000\"\npublic_ip = \"2001:db8::2\"\npublic_ipv6 = \"2001:db8::1\"",
                "media.public_ipv6",
            ),
            ("[media]\nworkers = 0", "media.workers"),
            ("[media]\nworkers = 65", "media.workers"),
            (
                "[media]\nlisten = \"127.0.0.1:65535\"\nworkers = 2",
                "media.workers",
            ),
        ];
        for (text, key) in cases {
            let err = resolve(text).expect_err(text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_and_websocket_cap() {
        let c = resolve("").expect("defaults");
        assert!(
            c.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        assert_eq!(c.max_websockets_per_address, 20);
        let c = resolve(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.1.2.3/8\", \"::1\"]\n\
             max_websockets_per_address = 5",
        )
        .expect("valid");
        assert_eq!(
            c.trusted_proxies.networks(),
            &[
                "127.0.0.1/32".parse::<ipnet::IpNet>().expect("net"),
                "10.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ]
        );
        assert!(c
            .trusted_proxies
            .contains("10.200.0.1".parse().expect("ip")));
        assert!(!c.trusted_proxies.contains("11.0.0.1".parse().expect("ip")));
        assert_eq!(c.max_websockets_per_address, 5);
        assert_eq!(c.drain, std::time::Duration::ZERO, "no drain by default");
        let c = resolve("[server]\ndrain_seconds = 3600").expect("valid");
        assert_eq!(c.drain, std::time::Duration::from_secs(3600));
        let e = resolve("[server]\ndrain_seconds = 90000").expect_err("over a day");
        assert!(e.to_string().contains("server.drain_seconds"), "{e}");
        assert!(!c.cross_origin_isolated, "not isolated by default");
        let c = resolve("[server]\ncross_origin_isolated = true").expect("valid");
        assert!(c.cross_origin_isolated);
        for (text, needle) in [
            (
                "[server]\ntrusted_proxies = [\"proxy.example\"]",
                "\"proxy.example\"",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                "10.0.0.0/33",
            ),
            (
                "[server]\ntrusted_proxies = [\"0.0.0.0/0\"]",
                "every address",
            ),
            ("[server]\nmax_websockets_per_address = 0", "between 1 and"),
        ] {
            let err = resolve(text).expect_err(text).to_string();
            assert!(err.starts_with("server."), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = resolve("[server]\nlisten_port = 8080").expect_err("unknown key");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn dual_stack_media_announces_an_ipv6_address_beside_the_ipv4_one() {
        let c = resolve(
            "[media]\nlisten = \"[::]:10000\"\npublic_ip = \"192.0.2.1\"\npublic_ipv6 = \"2001:db8::1\"",
        )
        .expect("dual stack");
        assert_eq!(
            c.media_public_ip,
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            c.media_public_ipv6,
            Some("2001:db8::1".parse::<IpAddr>().expect("ip"))
        );
        let c = resolve("[media]\npublic_ip = \"127.0.0.1\"").expect("single stack");
        assert_eq!(c.media_public_ipv6, None, "none by default");
    }

    #[test]
    fn plain_http_on_public_address_needs_the_danger_switch() {
        let c = resolve("[server]\nlisten = \"0.0.0.0:8080\"\ndanger_plain_http = true\n[media]\npublic_ip = \"192.0.2.1\"")
            .expect("allowed with danger switch");
        assert!(c.danger_plain_http);
        assert_eq!(
            c.media_public_ip,
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn dialin_defaults_are_off_and_loopback() {
        let c = resolve("").expect("defaults");
        let d = &c.dialin;
        assert!(!d.gateway_enabled());
        assert!(d.allows("127.0.0.1".parse().expect("ip")));
        assert!(d.allows("::1".parse().expect("ip")));
        assert!(d.allows("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!d.allows("192.0.2.1".parse().expect("ip")));
        assert_eq!(d.rtp_address, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(d.rtp_ports, 20000..=20999);
        assert_eq!(
            (
                d.max_calls,
                d.max_call_minutes,
                d.invites_per_source_per_minute
            ),
            (200, 240, 30)
        );
        assert_eq!(d.language, PromptLanguage::De);
        assert_eq!(d.phone_number, None);
        assert_eq!(d.gateway_token_file, None);
        assert_eq!(d.server_ca_file, None);
        assert_eq!(c.dialin_throttle_unit, std::time::Duration::from_secs(1));
    }

    #[test]
    fn dialin_section_is_parsed() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "x".repeat(40)).expect("write");
            p.to_str().expect("utf-8").to_string()
        };
        let (cert, key, pw, token) = (file("c.pem"), file("k.pem"), file("pw"), file("t"));
        let ca = file("ca.pem");
        let c = resolve(&format!(
            "[dialin]\nudp = [\"0.0.0.0:5060\"]\ntcp = [\"192.0.2.5:5060\"]\n\
             tls = [\"[::]:5061\"]\ntls_cert = {cert:?}\ntls_key = {key:?}\n\
             allow = [\"192.0.2.0/24\", \"2001:db8::7\", \"198.51.100.9/24\"]\n\
             digest_user = \"trunk\"\ndigest_password_file = {pw:?}\n\
             phone_number = \" +49 30 9999-0000 \"\nrtp_address = \"192.0.2.5\"\n\
             rtp_ports = \"30000-30099\"\nmax_calls = 50\nmax_call_minutes = 60\n\
             invites_per_source_per_minute = 5\nlanguage = \"en\"\ngateway_token_file = {token:?}\n\
             server_ca_file = {ca:?}\n"
        ))
        .expect("valid");
        let d = &c.dialin;
        assert!(d.gateway_enabled());
        assert_eq!(d.udp, ["0.0.0.0:5060".parse().expect("addr")]);
        assert_eq!(d.tcp, ["192.0.2.5:5060".parse().expect("addr")]);
        assert_eq!(d.tls, ["[::]:5061".parse().expect("addr")]);
        assert_eq!(
            d.tls_files,
            Some(TlsFiles {
                cert: cert.into(),
                key: key.into()
            })
        );
        assert!(d.allows("192.0.2.200".parse().expect("ip")));
        assert!(d.allows("2001:db8::7".parse().expect("ip")));
        assert!(!d.allows("2001:db8::8".parse().expect("ip")));
        // A host address written with a network's prefix means the network.
        assert!(d.allows("198.51.100.1".parse().expect("ip")));
        assert!(
            !d.allows("127.0.0.1".parse().expect("ip")),
            "loopback no longer"
        );
        assert_eq!(
            d.digest,
            Some(DigestAuth {
                user: "trunk".into(),
                password_file: pw.into()
            })
        );
        assert_eq!(d.phone_number.as_deref(), Some("+49 30 9999-0000"));
        assert_eq!(d.rtp_address, "192.0.2.5".parse::<IpAddr>().expect("ip"));
        assert_eq!(d.rtp_ports, 30000..=30099);
        assert_eq!(
            (
                d.max_calls,
                d.max_call_minutes,
                d.invites_per_source_per_minute
            ),
            (50, 60, 5)
        );
        assert_eq!(d.language, PromptLanguage::En);
        assert_eq!(d.language.as_str(), "en");
        assert_eq!(d.gateway_token_file, Some(PathBuf::from(&token)));
        assert_eq!(d.server_ca_file, Some(PathBuf::from(&ca)));
        // Without rtp_address, a specific listen address is the RTP address.
        let c = resolve("[dialin]\nudp = [\"192.0.2.5:5060\"]").expect("valid");
        assert_eq!(
            c.dialin.rtp_address,
            "192.0.2.5".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn sip_listen_replaces_udp() {
        let raw: RawConfig =
            toml::from_str("[dialin]\nudp = [\"127.0.0.1:5060\", \"127.0.0.1:5070\"]")
                .expect("toml");
        let o = Overrides {
            sip_listen: vec!["127.0.0.1:6060".into()],
            ..Overrides::default()
        };
        let c = Config::resolve(raw, &|_| None, &o).expect("valid");
        assert_eq!(c.dialin.udp, ["127.0.0.1:6060".parse().expect("addr")]);
        let o = Overrides {
            sip_listen: vec!["nope".into()],
            ..Overrides::default()
        };
        let err = Config::resolve(RawConfig::default(), &|_| None, &o).expect_err("bad");
        assert!(err.to_string().starts_with("--sip-listen"), "{err}");
    }

    #[test]
    fn dialin_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f");
        std::fs::write(&f, "x").expect("write");
        let f = f.to_str().expect("utf-8").to_string();
        let cases = [
            ("[dialin]\nudp = [\"5060\"]".to_string(), "dialin.udp", "address with port"),
            ("[dialin]\ntcp = [\"x:1\"]".to_string(), "dialin.tcp", "address"),
            (
                "[dialin]\ntls = [\"127.0.0.1:5061\"]".to_string(),
                "dialin.tls_cert",
                "missing",
            ),
            (
                format!("[dialin]\ntls_cert = {f:?}\ntls_key = {f:?}"),
                "dialin.tls_cert",
                "no address",
            ),
            (
                "[dialin]\ntls = [\"127.0.0.1:5061\"]\ntls_cert = \"/nonexistent/c\"\ntls_key = \"/nonexistent/k\"".to_string(),
                "dialin.tls_cert",
                "does not exist",
            ),
            (format!("[dialin]\ntls_cert = {f:?}"), "dialin.tls_key", "missing"),
            ("[dialin]\nallow = [\"everyone\"]".to_string(), "dialin.allow", "network"),
            ("[dialin]\nallow = [\"10.0.0.0/33\"]".to_string(), "dialin.allow", "network"),
            ("[dialin]\ndigest_user = \"u\"".to_string(), "dialin.digest_password_file", "missing"),
            (format!("[dialin]\ndigest_password_file = {f:?}"), "dialin.digest_user", "missing"),
            (
                format!("[dialin]\ndigest_user = \"a b\"\ndigest_password_file = {f:?}"),
                "dialin.digest_user",
                "spaces",
            ),
            (
                "[dialin]\ndigest_user = \"u\"\ndigest_password_file = \"/nonexistent/pw\"".to_string(),
                "dialin.digest_password_file",
                "does not exist",
            ),
            ("[dialin]\nphone_number = \"call us\"".to_string(), "dialin.phone_number", "telephone number"),
            ("[dialin]\nphone_number = \"+-/\"".to_string(), "dialin.phone_number", "telephone number"),
            ("[dialin]\nrtp_address = \"here\"".to_string(), "dialin.rtp_address", "IP address"),
            ("[dialin]\nrtp_address = \"0.0.0.0\"".to_string(), "dialin.rtp_address", "unspecified"),
            (
                "[dialin]\nudp = [\"0.0.0.0:5060\"]".to_string(),
                "dialin.rtp_address",
                "required",
            ),
            ("[dialin]\nrtp_ports = \"20000\"".to_string(), "dialin.rtp_ports", "port range"),
            ("[dialin]\nrtp_ports = \"20000-19999\"".to_string(), "dialin.rtp_ports", "port range"),
            ("[dialin]\nrtp_ports = \"80-2000\"".to_string(), "dialin.rtp_ports", "1024"),
            ("[dialin]\nrtp_ports = \"20000-20009\"".to_string(), "dialin.rtp_ports", "max_calls"),
            ("[dialin]\nmax_calls = 0".to_string(), "dialin.max_calls", "between"),
            ("[dialin]\nmax_call_minutes = 0".to_string(), "dialin.max_call_minutes", "between"),
            (
                "[dialin]\ninvites_per_source_per_minute = 0".to_string(),
                "dialin.invites_per_source_per_minute",
                "between",
            ),
            ("[dialin]\nlanguage = \"fr\"".to_string(), "dialin.language", "\"de\""),
            (
                "[dialin]\ngateway_token_file = \"/nonexistent/t\"".to_string(),
                "dialin.gateway_token_file",
                "does not exist",
            ),
            (
                "[dialin]\nserver_ca_file = \"/nonexistent/ca.pem\"".to_string(),
                "dialin.server_ca_file",
                "does not exist",
            ),
            ("[dialin]\nudp_port = 5060".to_string(), "config file t.toml", "udp_port"),
        ];
        for (text, key, needle) in cases {
            let err = resolve(&text).expect_err(&text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        // Negative control: the same keys with good values are accepted.
        resolve(&format!(
            "[dialin]\nudp = [\"127.0.0.1:5060\"]\nrtp_ports = \"20000-20199\"\n\
             digest_user = \"u\"\ndigest_password_file = {f:?}\nphone_number = \"0800 123\""
        ))
        .expect("valid");
    }

    #[test]
    fn the_metrics_token_file_comes_from_the_file_or_the_environment() {
        assert_eq!(resolve("").expect("defaults").metrics_token_file, None);
        let err = resolve("[metrics]\ntoken_file = \"/nonexistent/m.token\"")
            .expect_err("missing file")
            .to_string();
        assert!(err.starts_with("metrics.token_file"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        let err = resolve("[metrics]\ntoken = \"x\"")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("token"), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("m.token");
        std::fs::write(&f, "t\n").expect("write");
        let c = resolve(&format!("[metrics]\ntoken_file = {f:?}")).expect("valid");
        assert_eq!(c.metrics_token_file.as_deref(), Some(f.as_path()));
        let from_env = f.display().to_string();
        let env = |k: &str| (k == "KLAUSUR_METRICS_TOKEN_FILE").then(|| from_env.clone());
        let c = Config::resolve(RawConfig::default(), &env, &Overrides::default()).expect("env");
        assert_eq!(c.metrics_token_file.as_deref(), Some(f.as_path()));
    }

    #[test]
    fn media_tcp_is_on_unless_switched_off() {
        assert!(resolve("").expect("defaults").media_tcp);
        assert!(!resolve("[media]\ntcp = false").expect("off").media_tcp);
        assert!(resolve("").expect("defaults").media_bandwidth_estimation);
        assert!(
            !resolve("[media]\nbandwidth_estimation = false")
                .expect("off")
                .media_bandwidth_estimation
        );
        let raw = RawConfig::default();
        let env = |k: &str| (k == "KLAUSUR_MEDIA_TCP").then(|| "0".to_string());
        let c = Config::resolve(raw, &env, &Overrides::default()).expect("env");
        assert!(!c.media_tcp);
        let env = |k: &str| (k == "KLAUSUR_MEDIA_TCP").then(|| "nein".to_string());
        let err = Config::resolve(RawConfig::default(), &env, &Overrides::default())
            .expect_err("bad value")
            .to_string();
        assert!(err.starts_with("media.tcp"), "{err}");
    }

    #[test]
    fn a_cluster_needs_redis_postgres_and_the_node_url_and_hides_the_redis_password() {
        assert!(
            resolve("").expect("defaults").cluster.is_none(),
            "one node by default"
        );
        let pg = "[storage]\ndatabase = \"postgres://k:pw@db.example/k\"\n";
        let full = format!(
            "{pg}[cluster]\nredis_url = \"redis://:r3dis-secret@redis.example:6379/0\"\n\
             node_id = \"a\"\nnode_url = \"https://meet.example/node/a/\"\n"
        );
        let c = resolve(&full).expect("valid").cluster.expect("a cluster");
        assert_eq!(c.node_id.as_str(), "a");
        assert_eq!(c.redis_ca_cert, None);
        assert_eq!(
            c.node_url, "https://meet.example/node/a",
            "without the trailing slash"
        );
        assert_eq!(c.redis_summary, "redis.example:6379");
        assert_eq!(c.timing.node_ttl(), DEFAULT_NODE_TTL);
        assert_eq!(c.timing.lease_ttl(), DEFAULT_LEASE_TTL);
        assert_eq!(c.capacity, None);
        let sized = format!("{full}capacity = 400\n");
        assert_eq!(
            resolve(&sized)
                .expect("valid")
                .cluster
                .expect("cluster")
                .capacity,
            Some(400)
        );
        let zero = format!("{full}capacity = 0\n");
        assert!(resolve(&zero)
            .expect_err("0")
            .to_string()
            .starts_with("cluster.capacity"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("r3dis-secret"), "{shown}");
        // Flags and the environment replace the file's keys.
        let flag = Overrides {
            node_id: Some("b".into()),
            ..Overrides::default()
        };
        let env = |k: &str| (k == "KLAUSUR_NODE_URL").then(|| "http://10.0.0.2:8080".to_string());
        let raw: RawConfig = toml::from_str(&full).expect("toml");
        let c = Config::resolve(raw, &env, &flag)
            .expect("valid")
            .cluster
            .expect("cluster");
        assert_eq!(
            (c.node_id.as_str(), c.node_url.as_str()),
            ("b", "http://10.0.0.2:8080")
        );
        // Telephone dial-in on a node of a cluster needs the shared gateway token.
        let sip = format!("{full}[dialin]\nudp = [\"127.0.0.1:5060\"]\n");
        let err = resolve(&sip).expect_err("no token file").to_string();
        assert!(err.starts_with("dialin.gateway_token_file"), "{err}");
        let dir = tempfile::tempdir().expect("tmp");
        let token = dir.path().join("gateway.token");
        std::fs::write(&token, format!("{}\n", "t".repeat(40))).expect("token");
        let with_token = format!(
            "{sip}gateway_token_file = {:?}\n",
            token.display().to_string()
        );
        if let Err(e) = resolve(&with_token) {
            panic!("{e}");
        }
        // TLS to Redis, checked against the operator's CA.
        let ca = dir.path().join("redis-ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("ca");
        let tls = full.replace("redis://", "rediss://")
            + &format!("redis_ca_cert = {:?}\n", ca.display().to_string());
        let c = resolve(&tls).expect("valid").cluster.expect("a cluster");
        assert_eq!(c.redis_ca_cert.as_deref(), Some(ca.as_path()));
        assert_eq!(c.redis_summary, "redis.example:6379");
        for (text, key, says) in [
            (
                "[cluster]\nredis_url = \"redis://r:6379\"\nnode_url = \"http://a\"".to_string(),
                "cluster.redis_url",
                "postgres://",
            ),
            (format!("{pg}[cluster]\nredis_url = \"redis://r:6379\""), "cluster.node_url", "required"),
            (format!("{pg}[cluster]\nnode_url = \"http://a\""), "cluster.redis_url", "required"),
            (
                format!("{pg}[cluster]\nredis_url = \"mysql://r\"\nnode_url = \"http://a\""),
                "cluster.redis_url",
                "redis://",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"redis://r\"\nnode_url = \"ftp://a\"\nnode_id = \"a\""),
                "cluster.node_url",
                "ftp://a",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"redis://r\"\nnode_url = \"http://a\"\nnode_id = \"a b\""),
                "cluster.node_id",
                "a b",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"redis://r\"\nnode_url = \"http://a\"\nnode_id = \"a\"\nlease_ttl_ms = 5"),
                "cluster.lease_ttl_ms",
                "5ms",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"redis://r\"\nnode_url = \"http://a\"\nnode_id = \"a\"\nnode_ttl_ms = 5"),
                "cluster.node_ttl_ms",
                "5ms",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"rediss://r/#insecure\"\nnode_url = \"http://a\"\nnode_id = \"a\""),
                "cluster.redis_url",
                "#insecure",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"redis://r\"\nredis_ca_cert = \"/etc/ssl/certs/ca-certificates.crt\"\nnode_url = \"http://a\"\nnode_id = \"a\""),
                "cluster.redis_ca_cert",
                "not a rediss://",
            ),
            (
                format!("{pg}[cluster]\nredis_url = \"rediss://r\"\nredis_ca_cert = \"/nonexistent/ca.pem\"\nnode_url = \"http://a\"\nnode_id = \"a\""),
                "cluster.redis_ca_cert",
                "/nonexistent/ca.pem does not exist",
            ),
        ] {
            let err = resolve(&text).expect_err(&text).to_string();
            assert!(err.starts_with(key) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn media_workers_default_to_the_cores_and_are_set_by_file_env_or_flag() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            resolve("").expect("defaults").media_workers,
            cores.min(crate::media::MAX_WORKERS)
        );
        assert_eq!(
            resolve("[media]\nworkers = 3").expect("file").media_workers,
            3
        );
        // The last port of the range may be 65535.
        let c = resolve("[media]\nlisten = \"127.0.0.1:65534\"\nworkers = 2").expect("fits");
        assert_eq!(c.media_workers, 2);
        let env = |k: &str| (k == "KLAUSUR_MEDIA_WORKERS").then(|| "4".to_string());
        let c = Config::resolve(RawConfig::default(), &env, &Overrides::default()).expect("env");
        assert_eq!(c.media_workers, 4);
        let flag = Overrides {
            media_workers: Some(1),
            ..Overrides::default()
        };
        assert_eq!(
            Config::resolve(RawConfig::default(), &env, &flag)
                .expect("flag")
                .media_workers,
            1
        );
        let env = |k: &str| (k == "KLAUSUR_MEDIA_WORKERS").then(|| "viele".to_string());
        let err = Config::resolve(RawConfig::default(), &env, &Overrides::default())
            .expect_err("bad value")
            .to_string();
        assert!(
            err.starts_with("media.workers") && err.contains("viele"),
            "{err}"
        );
    }

    #[test]
    fn turn_section_is_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("secret");
        std::fs::write(&good, "a-long-enough-turn-secret\n").expect("write");
        let short = dir.path().join("short");
        std::fs::write(&short, "short\n").expect("write");
        let c = resolve(&format!(
            "[turn]\nurls = [\"turns:turn.example:443?transport=tcp\"]\nsecret_file = {good:?}"
        ))
        .expect("valid");
        let t = c.turn.expect("turn");
        assert_eq!(t.secret, b"a-long-enough-turn-secret");
        assert_eq!(
            t.credential_lifetime,
            std::time::Duration::from_secs(720 * 60)
        );
        assert!(resolve("").expect("defaults").turn.is_none());
        let cases = [
            (format!("[turn]\nsecret_file = {good:?}"), "turn.urls", "missing"),
            (
                format!("[turn]\nurls = [\"stun:turn.example\"]\nsecret_file = {good:?}"),
                "turn.urls",
                "turn: or turns:",
            ),
            (
                "[turn]\nurls = [\"turn:turn.example\"]".to_string(),
                "turn.secret_file",
                "missing",
            ),
            (
                "[turn]\nurls = [\"turn:turn.example\"]\nsecret_file = \"/nonexistent/s\"".to_string(),
                "turn.secret_file",
                "cannot read",
            ),
            (
                format!("[turn]\nurls = [\"turn:turn.example\"]\nsecret_file = {short:?}"),
                "turn.secret_file",
                "at least 16",
            ),
            (
                format!("[turn]\nurls = [\"turn:turn.example\"]\nsecret_file = {good:?}\ncredential_minutes = 0"),
                "turn.credential_minutes",
                "between",
            ),
        ];
        for (text, key, needle) in cases {
            let err = resolve(&text).expect_err(&text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
            // The secret is never in an error.
            assert!(!err.contains("a-long-enough"), "{err}");
        }
    }
}
