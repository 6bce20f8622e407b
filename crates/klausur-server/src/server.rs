//! `klausur serve`: opens the database, bootstraps the first administrator, starts the media
//! worker, the HTTP(S) server and (with SIP listen addresses) the dial-in gateway, and shuts
//! down gracefully on SIGTERM or Ctrl-C: at once, or with `[server] drain_seconds` after its
//! meetings have ended, at the latest when that time is over (`drain`).
//!
//! # The first administrator
//!
//! Without an administrator, [`bootstrap_admin`] creates one with a one-time password and
//! writes that password to [`INITIAL_PASSWORD_FILE`] in the data directory (mode 0600, readable
//! by the service account only); standard output (under systemd: the journal) gets the file's
//! path, never the password. The file is removed as soon as the password has been changed (the
//! running server looks every [`INITIAL_PASSWORD_POLL`]), or at a later start if it no longer
//! holds the password of an administrator who still has to change theirs.
//!
//! # HTTP
//!
//! The HTTP server ([`serve_api`]) speaks HTTP/1.1 only, in the clear or under TLS (offered by
//! ALPN as the only protocol), and closes a connection that has not sent a complete request
//! head within `http_header_timeout` of its acceptance ([`crate::http::first_request`], the TLS
//! handshake included) or, on a connection kept alive, of its previous answer (hyper's
//! `header_read_timeout`): half-sent headers, or none at all, cannot keep connections open.
//! WebSockets are HTTP/1.1 upgrades, and a reverse proxy in front speaks HTTP/1.1 to klausur
//! anyway.
//!
//! The in-process dial-in gateway reaches the server over a listener of its own on loopback
//! ([`crate::dialin::GatewayListener`]): its meeting WebSockets, one per call, do not count against the
//! per-address limit of `[server] max_websockets_per_address`.

use klausur_store::AuditActor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use klausur_store::{Role, Store};

use crate::config::{CaSource, Config, Database};
use crate::dialin::sip_gateway;
use crate::dialin::{self, DialIn};
use crate::http::api;
use crate::http::first_request::FirstRequest;
use crate::identity::{self, IdentityIssuer};
use crate::state::AppState;
use crate::{auth, media};

/// Opens the configured database: SQLite in the data directory (creating both if missing), or
/// PostgreSQL at the configured URL. The data directory is needed either way (keys, the first
/// administrator's one-time password). Errors name the database and the cause, never a
/// password.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    writable(&config.data_dir)?;
    crate::storage_fault::set_postgres(match &config.database {
        Database::Postgres { summary, .. } => Some(summary),
        Database::Sqlite => None,
    });
    if let Database::Postgres { url, summary } = &config.database {
        return Store::open_postgres(url).await.map_err(|e| {
            // The whole chain in one message, the hint after the cause it explains.
            let e = crate::error_text::error_text(&anyhow::Error::new(e));
            let hint = if e.contains("certificate") {
                " (with sslmode=verify-ca or verify-full, the server's certificate must be \
                 signed by the CA in sslrootcert=..., or by one the system trusts if that is \
                 not given)"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}").context(format!("cannot open the PostgreSQL {summary}"))
        });
    }
    let path = config.data_dir.join(SQLITE_FILE);
    Store::open_sqlite(&path).await.map_err(|e| {
        let hint = match &e {
            klausur_store::StoreError::Unwritable(fault, _) => {
                format!(" ({})", crate::storage_fault::remedy(*fault))
            }
            _ => String::new(),
        };
        anyhow::Error::new(e).context(format!("cannot open database {}{hint}", path.display()))
    })
}

/// Whether klausur can write in the data directory `dir` (SQLite writes its journal beside the
/// database): a clear error naming the directory and what to do if not, before SQLite would
/// only say "unable to open database file".
fn writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(".klausur-write-check");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    result.map(drop).map_err(|e| {
        anyhow::anyhow!(
            "the data directory {} is not writable ({e}); klausur keeps its database there: make \
             it writable for the server's user, or mount its volume read-write",
            dir.display()
        )
    })
}

/// The file in the data directory that holds the first administrator's one-time password until
/// it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// The SQLite database's file in the data directory.
pub const SQLITE_FILE: &str = "klausur.sqlite3";
/// How often a running server looks whether the one-time password has been changed.
pub const INITIAL_PASSWORD_POLL: Duration = Duration::from_secs(2);

/// A one-time password waiting in [`INITIAL_PASSWORD_FILE`] for its administrator's first
/// login.
#[derive(Debug, Clone)]
pub struct InitialPassword {
    pub path: PathBuf,
    pub username: String,
    /// The stored hash of the one-time password: another hash means it was changed.
    password_hash: String,
}

/// Creates the first administrator if there is none and writes its one-time password to
/// [`INITIAL_PASSWORD_FILE`] in `data_dir` (mode 0600), printing only the file's path. With an
/// administrator, looks at a file left from before: kept (and its path printed again) while it
/// holds the password of an administrator who must still change it, otherwise removed.
/// Returns the password still waiting, for [`remove_initial_password_when_changed`].
pub async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
) -> anyhow::Result<Option<InitialPassword>> {
    let path = data_dir.join(INITIAL_PASSWORD_FILE);
    if store.count_admins().await? > 0 {
        return waiting_initial_password(store, path).await;
    }
    let password = auth::new_one_time_password();
    let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let username = if store.user_by_username("admin").await?.is_none() {
        "admin".to_string()
    } else {
        format!("admin-{}", &auth::new_meeting_id()[..6])
    };
    // The file first: an administrator whose password went nowhere would lock the operator out.
    // A file left from an earlier database is replaced.
    let mut content = zeroize::Zeroizing::new(password.to_string());
    content.push('\n');
    identity::write_secret_file(&path, content.as_bytes(), true).map_err(|e| match e {
        identity::WriteSecretError::Exists => anyhow::anyhow!("{} exists", path.display()),
        identity::WriteSecretError::Other(e) => e,
    })?;
    let user = match store
        .create_user(&username, "Administrator", &hash, Role::Admin, true)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    crate::audit::Audit::new(store.clone())
        .record(
            crate::audit::Entry::new(crate::audit::kind::USER_CREATED, AuditActor::system())
                .details(serde_json::json!({
                    "target": crate::audit::user_target(&user),
                    "role": user.role,
                    "first_administrator": true,
                })),
        )
        .await;
    println!(
        "klausur: created administrator \"{username}\"; its one-time password is in {} \
         (readable by this account only; removed once the password is changed at the first login)",
        path.display()
    );
    Ok(Some(InitialPassword {
        path,
        username,
        password_hash: hash,
    }))
}

/// The one-time password in `path` if an enabled administrator who must still change their
/// password has it; otherwise the file (if any) is removed.
async fn waiting_initial_password(
    store: &Store,
    path: PathBuf,
) -> anyhow::Result<Option<InitialPassword>> {
    let password = match std::fs::read_to_string(&path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the one-time password file: {e}");
            return Ok(None);
        }
    };
    let password = password.trim_end_matches(['\r', '\n']);
    for user in store.list_users().await? {
        if user.role == Role::Admin
            && user.must_change_password
            && auth::verify_password(password, &user.password_hash)
        {
            println!(
                "klausur: the one-time password of administrator \"{}\" is still in {}",
                user.username,
                path.display()
            );
            return Ok(Some(InitialPassword {
                path,
                username: user.username,
                password_hash: user.password_hash,
            }));
        }
    }
    remove_initial_password(&path);
    Ok(None)
}

fn remove_initial_password(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "one-time password changed; its file was removed");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            file = %path.display(),
            "the one-time password was changed but its file could not be removed ({e}); delete it"
        ),
    }
}

/// Removes the file of `initial` once its administrator's password is no longer the one-time
/// password (changed, or the account deleted), looking every [`INITIAL_PASSWORD_POLL`].
pub async fn remove_initial_password_when_changed(store: Store, initial: InitialPassword) {
    let mut tick = tokio::time::interval(INITIAL_PASSWORD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.user_by_username(&initial.username).await {
            Ok(Some(u)) if u.password_hash == initial.password_hash => {}
            Ok(_) => {
                remove_initial_password(&initial.path);
                return;
            }
            Err(e) => tracing::warn!("cannot look up the first administrator: {e}"),
        }
    }
}

/// The media plane's settings from the configuration.
pub fn media_config(config: &Config) -> media::MediaConfig {
    media::MediaConfig {
        listen: config.media_listen,
        public_ip: config.media_public_ip,
        public_ipv6: config.media_public_ipv6,
        tcp: config.media_tcp,
        workers: config.media_workers,
        room: klausur_room::RoomConfig {
            bandwidth_estimation: config.media_bandwidth_estimation,
            ..klausur_room::RoomConfig::default()
        },
    }
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    match &config.database {
        Database::Sqlite => tracing::info!(
            file = %config.data_dir.join(SQLITE_FILE).display(),
            "database: SQLite"
        ),
        Database::Postgres { summary, .. } => tracing::info!("database: PostgreSQL {summary}"),
    }
    if let Some(initial) = bootstrap_admin(&store, &config.data_dir).await? {
        tokio::spawn(remove_initial_password_when_changed(store.clone(), initial));
    }
    let removed = store
        .delete_expired_sessions(chrono::Utc::now())
        .await
        .unwrap_or(0);
    if removed > 0 {
        tracing::info!("removed {removed} expired sessions");
    }
    let (media, media_addrs) = media::start(media_config(&config)).await.with_context(|| {
        format!(
            "cannot bind the media sockets from {} ({} workers, one port each; UDP, and TCP \
                 unless media.tcp = false)",
            config.media_listen, config.media_workers
        )
    })?;
    let identity = match &config.identity.ca {
        CaSource::KeyFile(path) => {
            let (ca, created) = identity::load_or_create(path)?;
            if created {
                println!(
                    "klausur: created identity CA key {} (public key {})",
                    path.display(),
                    identity::public_key_hex(&ca)
                );
            }
            IdentityIssuer::Local(ca)
        }
        CaSource::Remote(remote) => {
            let ca = identity::RemoteCa::connect(remote).await?;
            let issuer = IdentityIssuer::Remote(ca);
            println!(
                "klausur: using the identity CA at {} (public key {}); this server holds no CA key",
                remote.url,
                issuer.public_key_hex()
            );
            issuer
        }
    };
    let (listener, local, scheme) = bind_listener(config.listen, config.tls.as_ref())?;
    // The in-process gateway reaches this server over a plain listener of its own on loopback:
    // under TLS, the server's certificate names its public host, not the address the gateway
    // dials, and traffic on loopback never leaves the host; and its meeting WebSockets (one per
    // call) are not counted against the per-address limit there.
    let internal = if config.dialin.gateway_enabled() {
        let (l, addr, _) = bind_listener(
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            None,
        )?;
        Some((l, addr))
    } else {
        None
    };
    let gateway_url = match &internal {
        Some((_, addr)) => format!("http://{addr}"),
        None => dialin::self_url(local, config.tls.is_some()),
    };
    let dialin = DialIn::load(&config, gateway_url)?;
    // The address actually bound (a configured port 0 is a real port now): links fall back to
    // it, and a request's Host is checked against it.
    let mut config = config;
    config.listen = local;
    let cluster = match &config.cluster {
        Some(c) => {
            let node = crate::cluster::ClusterNode::connect(c, media_addrs.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e} (cluster.redis_url)"))?;
            let pin_check = dialin.pin_key().pin_hash("klausur-cluster", "key-check");
            node.check_same_keys(&identity.public_key_hex(), &pin_check)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(node = %c.node_id, url = %c.node_url, redis = %c.redis_summary, "cluster node");
            Some(node)
        }
        None => None,
    };
    let state = match &cluster {
        Some(node) => AppState::new_in_cluster(
            config.clone(),
            store.clone(),
            media,
            identity,
            dialin,
            node.clone(),
        ),
        None => AppState::new(config.clone(), store.clone(), media, identity, dialin),
    };
    if let Some(file) = &config.metrics_token_file {
        state.metrics.set_token(&metrics_token(file)?);
        tracing::info!("monitoring: GET /metrics serves the scrapers that present the token");
    }
    if let Some(node) = &cluster {
        tokio::spawn(
            node.clone()
                .heartbeat_forever(state.registry.clone(), state.media.clone()),
        );
    }
    let gateway = match state.dialin.gateway_setup() {
        Some(setup) => Some(
            sip_gateway::start_in_process(setup)
                .await
                .context("cannot start the SIP gateway")?,
        ),
        None => None,
    };
    if let Some(gw) = &gateway {
        state.metrics.set_sip(gw.stats_source());
    }
    if config.database == Database::Sqlite {
        // PostgreSQL checkpoints its own write-ahead log.
        tokio::spawn(checkpoint_periodically(store.clone()));
    }
    tokio::spawn(crate::storage_fault::watch_outage(store.clone()));
    state
        .audit
        .record(
            crate::audit::Entry::new(crate::audit::kind::SERVER_STARTED, AuditActor::system())
                .details(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
        )
        .await;
    tokio::spawn(housekeeping_daily(
        state.store.clone(),
        state.audit.clone(),
        config.clone(),
    ));
    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    let shutdown_state = state.clone();
    let calls = gateway.as_ref().map(|g| g.call_gate());
    tokio::spawn(async move {
        wait_for_signal().await;
        if !shutdown_state.config.drain.is_zero() {
            drain(&shutdown_state, calls.as_ref()).await;
        }
        tracing::info!("shutting down: telling participants");
        // A node of a cluster: no new meeting is placed here from now on.
        if let Some(node) = &shutdown_state.cluster {
            node.leave().await;
        }
        shutdown_state.registry.shutdown_all().await;
        // A node's meetings' leases are released, so they move at once.
        if let Some(node) = &shutdown_state.cluster {
            node.wait_released(Duration::from_secs(2)).await;
        }
        // Give the WebSocket writers a moment to deliver the `ended` message.
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });

    if let Some((l, addr)) = internal {
        tracing::info!(listen = %addr, "loopback listener for the in-process dial-in gateway");
        let app = api::router(state.clone())
            .layer(axum::Extension(crate::dialin::GatewayListener))
            .into_make_service_with_connect_info::<SocketAddr>();
        let (handle, timeout) = (handle.clone(), config.http_header_timeout);
        tokio::spawn(async move {
            if let Err(e) = serve_http(l, None, handle, app, timeout).await {
                tracing::error!("the gateway's loopback listener failed: {e:#}");
            }
        });
    }
    let media_ports = media_addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(c) = &config.cluster {
        println!(
            "klausur: node {} of the cluster on Redis {} (reached at {})",
            c.node_id, c.redis_summary, c.node_url
        );
    }
    let announced = match config.media_public_ipv6 {
        Some(v6) => format!(", announced as {} and {v6}", config.media_public_ip),
        None if media_addrs.first().map(|a| a.ip()) != Some(config.media_public_ip) => {
            format!(", announced as {}", config.media_public_ip)
        }
        None => String::new(),
    };
    println!("klausur: listening on {scheme}://{local} (media on udp {media_ports}{announced})");
    tracing::info!(listen = %local, media = %media_ports, "klausur started");
    serve_api(state, listener, handle).await?;
    if let Some(gw) = gateway {
        gw.shutdown().await;
    }
    store.close().await;
    tracing::info!("stopped");
    println!("klausur: stopped");
    Ok(())
}

/// SIGTERM with `[server] drain_seconds`: the server is taken out of service gently. Everyone
/// in its meetings is told when the interruption comes at the latest (`maintenance`), and so is
/// everyone who joins meanwhile; a node of a cluster publishes that it drains, so new meetings
/// are placed on the other nodes, and its dial-in gateway answers new calls 503 so that the
/// trunk sends them to another node. Returns when its meetings and calls have ended, when the
/// drain time is over, or on a second signal; the caller then shuts down as without a drain.
async fn drain(state: &AppState, calls: Option<&klausur_sip::driver::sip::SipCallGate>) {
    let limit = state.config.drain;
    let deadline = tokio::time::Instant::now() + limit;
    // Listening for a second signal from now on, before anyone is told: one sent right after
    // the notice is not missed (a signal stream sees only what arrives after its first poll).
    let again = wait_for_signal();
    tokio::pin!(again);
    if futures::FutureExt::now_or_never(&mut again).is_some() {
        return;
    }
    state
        .registry
        .announce_maintenance(deadline.into_std())
        .await;
    if let Some(node) = &state.cluster {
        node.drain(&state.registry, &state.media).await;
        if let Some(calls) = calls {
            calls.refuse_new_calls();
        }
    }
    let busy = || {
        (
            state.registry.running(),
            calls.map_or(0, |c| c.active_calls()),
        )
    };
    let (meetings, active_calls) = busy();
    state
        .audit
        .record(
            crate::audit::Entry::new(crate::audit::kind::SERVER_DRAINING, AuditActor::system())
                .details(serde_json::json!({
                    "meetings": meetings,
                    "calls": active_calls,
                    "drain_seconds": limit.as_secs(),
                })),
        )
        .await;
    println!(
        "klausur: draining: {meetings} meetings and {active_calls} calls running; stopping when \
         they have ended, at the latest in {} s (send SIGTERM again to stop now)",
        limit.as_secs()
    );
    tracing::warn!(
        meetings,
        calls = active_calls,
        limit_s = limit.as_secs(),
        in_cluster = state.cluster.is_some(),
        "draining: stopping when the running meetings have ended (a node of a cluster takes no \
         new ones meanwhile)"
    );
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = &mut again => {
                tracing::warn!("a second signal: stopping now");
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let (meetings, calls) = busy();
                tracing::warn!(meetings, calls, "the drain time is over: ending what still runs");
                return;
            }
            _ = tick.tick() => {
                if busy() == (0, 0) {
                    tracing::info!("drained: every meeting and call has ended");
                    return;
                }
            }
        }
    }
}

/// Runs [`housekeeping`] now and then once a day.
async fn housekeeping_daily(store: Store, audit: crate::audit::Audit, config: Config) {
    let mut tick = tokio::time::interval(Duration::from_secs(24 * 3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        housekeeping(&store, &audit, &config, chrono::Utc::now()).await;
    }
}

/// What is kept only for a while goes at `now`: meetings that ended more than
/// `[storage] ended_meetings_days` ago (with their invitations, moderators, bans, mutes and
/// guest passes; recorded in the audit trail as `meeting.deleted`), and audit records older
/// than `[audit] retention_days` (recorded as `audit.deleted`). A failure is logged; the next
/// day tries again.
pub async fn housekeeping(
    store: &Store,
    audit: &crate::audit::Audit,
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
) {
    let cutoff = now - chrono::Duration::days(i64::from(config.ended_meetings_days));
    match store.purge_ended_meetings_before(cutoff).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(deleted = n, "meetings that ended long ago deleted");
            audit
                .record_at(
                    crate::audit::Entry::new(
                        crate::audit::kind::MEETINGS_DELETED,
                        AuditActor::system(),
                    )
                    .details(serde_json::json!({
                        "deleted": n,
                        "ended_before": cutoff.to_rfc3339(),
                    })),
                    now,
                )
                .await;
        }
        Err(e) => tracing::error!("ended meetings could not be deleted: {e}"),
    }
    audit
        .apply_retention(config.audit_retention_days, now)
        .await;
}

/// How often the server empties the database's write-ahead log ([`Store::checkpoint`]).
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Empties the write-ahead log every [`WAL_CHECKPOINT_EVERY`], so that it does not grow with
/// every write until the disk is full.
async fn checkpoint_periodically(store: Store) {
    let mut tick = tokio::time::interval(WAL_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.checkpoint().await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("write-ahead log in use; checkpoint again later"),
            Err(klausur_store::StoreError::Unwritable(fault, e)) => {
                crate::storage_fault::report(fault, &e)
            }
            Err(e) => tracing::warn!("write-ahead log checkpoint failed: {e}"),
        }
    }
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `klausur sip-gateway --metrics-listen ADDR`: serves `GET /metrics` on `addr` in the
/// background (HTTPS with `[server] tls_cert`/`tls_key`, else HTTP; the header timeout as for
/// the server) to scrapers with the `[metrics] token_file` token, which must be configured.
/// Returns the counters' home, which the gateway fills once it runs.
pub fn serve_gateway_metrics(
    config: &Config,
    addr: SocketAddr,
) -> anyhow::Result<Arc<crate::metrics::Metrics>> {
    let file = config.metrics_token_file.as_ref().context(
        "--metrics-listen needs a scrape token: set [metrics] token_file (or \
         KLAUSUR_METRICS_TOKEN_FILE)",
    )?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    metrics.set_token(&metrics_token(file)?);
    let (listener, local, scheme) = bind_listener(addr, config.tls.as_ref())?;
    let app = crate::http::metrics_api::gateway_router(metrics.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let (tls, timeout) = (config.tls.clone(), config.http_header_timeout);
    tokio::spawn(async move {
        let handle = axum_server::Handle::new();
        if let Err(e) = serve_http(listener, tls.as_ref(), handle, app, timeout).await {
            tracing::error!("the metrics listener failed: {e:#}");
        }
    });
    println!("klausur: metrics on {scheme}://{local}/metrics");
    Ok(metrics)
}

/// The scrape token of `[metrics] token_file`.
fn metrics_token(file: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    crate::identity::ca_protocol::load_token_file(file).context("metrics.token_file")
}

/// Binds the TCP listener for `serve_http`: the listener, its address and the URL scheme.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    tls: Option<&crate::config::TlsFiles>,
) -> anyhow::Result<(std::net::TcpListener, SocketAddr, &'static str)> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    Ok((
        listener,
        local,
        if tls.is_some() { "https" } else { "http" },
    ))
}

/// Serves the server's routes (the API, the WebSocket and the web client of `state`) on
/// `listener` as `klausur serve` does, until `handle` shuts it down: HTTPS with the configured
/// TLS files, else plain HTTP; HTTP/1.1 with the configured header timeout (see the module
/// documentation).
pub async fn serve_api(
    state: AppState,
    listener: std::net::TcpListener,
    handle: axum_server::Handle,
) -> anyhow::Result<()> {
    let tls = state.config.tls.clone();
    let timeout = state.config.http_header_timeout;
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    serve_http(listener, tls.as_ref(), handle, app, timeout).await
}

/// hyper's `header_read_timeout` for the requests after a connection's first (the first one is
/// [`FirstRequest`]'s to time).
fn limit_header_time(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header_timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
}

/// Serves `app` on `listener` until `handle` shuts it down: HTTPS with `tls` if given (offering
/// only HTTP/1.1 by ALPN), else plain HTTP; each connection has `header_timeout` for its first
/// request head ([`FirstRequest`]) and for each later one ([`limit_header_time`]).
pub(crate) async fn serve_http(
    listener: std::net::TcpListener,
    tls: Option<&crate::config::TlsFiles>,
    handle: axum_server::Handle,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
    header_timeout: Duration,
) -> anyhow::Result<()> {
    match tls {
        Some(tls) => {
            // One crypto provider for the whole process (several rustls backends are linked).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .context("cannot load TLS certificate or key")?;
            let mut server_config = (*rustls.get_inner()).clone();
            server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
            rustls.reload_from_config(Arc::new(server_config));
            let acceptor = FirstRequest::new(
                axum_server::tls_rustls::RustlsAcceptor::new(rustls),
                header_timeout,
            );
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle);
            limit_header_time(server.http_builder(), header_timeout);
            server.serve(app).await.context("HTTPS server failed")?;
        }
        None => {
            let acceptor =
                FirstRequest::new(axum_server::accept::DefaultAcceptor::new(), header_timeout);
            let mut server = axum_server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle);
            limit_header_time(server.http_builder(), header_timeout);
            server.serve(app).await.context("HTTP server failed")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_left_file_is_kept_only_while_it_holds_a_password_to_change() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_sqlite_memory().await.expect("store");
        // No administrator: one is made, and its password is in the file only.
        let initial = bootstrap_admin(&store, dir.path())
            .await
            .expect("bootstrap")
            .expect("a new one-time password");
        let path = dir.path().join(INITIAL_PASSWORD_FILE);
        assert_eq!(initial.path, path);
        let password = std::fs::read_to_string(&path).expect("file");
        let admin = store
            .user_by_username(&initial.username)
            .await
            .expect("lookup")
            .expect("admin");
        assert!(auth::verify_password(password.trim(), &admin.password_hash));
        // A later start keeps the file while the password is unchanged ...
        let again = bootstrap_admin(&store, dir.path()).await.expect("again");
        assert_eq!(again.map(|i| i.username), Some(initial.username.clone()));
        assert!(path.exists());
        // ... and removes it once the account has another password.
        let other = auth::hash_password("another-long-password").expect("hash");
        store
            .set_password(admin.id, &other, false)
            .await
            .expect("set");
        assert!(bootstrap_admin(&store, dir.path())
            .await
            .expect("later")
            .is_none());
        assert!(!path.exists());
        // A running server notices the change too.
        let watched = InitialPassword {
            path: path.clone(),
            username: initial.username,
            password_hash: initial.password_hash,
        };
        std::fs::write(&path, "x\n").expect("write");
        tokio::time::timeout(
            INITIAL_PASSWORD_POLL * 3,
            remove_initial_password_when_changed(store.clone(), watched),
        )
        .await
        .expect("removed in time");
        assert!(!path.exists());
    }
}
