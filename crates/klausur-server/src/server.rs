//! `klausur serve`: opens the database, bootstraps the first administrator, starts the media
//! worker, the HTTP(S) server and (with SIP listen addresses) the dial-in gateway, and shuts
//! down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use klausur_store::{Role, Store};

use crate::config::{CaSource, Config};
use crate::dialin::{self, DialIn};
use crate::identity::{self, IdentityIssuer};
use crate::state::AppState;
use crate::{api, auth, media, sip_gateway};

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("klausur.sqlite3");
    Store::open_sqlite(&path)
        .await
        .with_context(|| format!("cannot open database {}", path.display()))
}

/// Creates the first administrator if there is none, and prints its one-time password.
pub async fn bootstrap_admin(store: &Store) -> anyhow::Result<()> {
    if store.count_admins().await? > 0 {
        return Ok(());
    }
    let password = auth::new_one_time_password();
    let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let username = if store.user_by_username("admin").await?.is_none() {
        "admin".to_string()
    } else {
        format!("admin-{}", &auth::new_meeting_id()[..6])
    };
    store
        .create_user(&username, "Administrator", &hash, Role::Admin, true)
        .await?;
    // Printed once, to the operator's terminal, never to the log.
    println!(
        "klausur: created administrator \"{username}\" with one-time password: {}",
        password.as_str()
    );
    println!("klausur: the password must be changed at the first login");
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    bootstrap_admin(&store).await?;
    let removed = store
        .delete_expired_sessions(chrono::Utc::now())
        .await
        .unwrap_or(0);
    if removed > 0 {
        tracing::info!("removed {removed} expired sessions");
    }
    let (media, media_addr) = media::start(config.media_listen, config.media_public_ip)
        .await
        .with_context(|| format!("cannot bind media UDP socket {}", config.media_listen))?;
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
    // Under TLS the in-process gateway reaches this server over a plain listener on loopback:
    // the server's certificate names its public host, not the address the gateway dials, and
    // traffic on loopback never leaves the host.
    let internal = if config.tls.is_some() && config.dialin.gateway_enabled() {
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
    let state = AppState::new(config.clone(), store.clone(), media, identity, dialin);
    let gateway = match state.dialin.gateway_setup() {
        Some(setup) => Some(
            sip_gateway::start_in_process(setup)
                .await
                .context("cannot start the SIP gateway")?,
        ),
        None => None,
    };
    let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();

    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    let shutdown_state = state.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: telling participants");
        shutdown_state.registry.shutdown_all().await;
        // Give the WebSocket writers a moment to deliver the `ended` message.
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });

    if let Some((l, addr)) = internal {
        tracing::info!(listen = %addr, "loopback listener for the in-process dial-in gateway");
        let (app, handle) = (app.clone(), handle.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_http(l, None, handle, app).await {
                tracing::error!("the gateway's loopback listener failed: {e:#}");
            }
        });
    }
    println!("klausur: listening on {scheme}://{local} (media on udp {media_addr})");
    tracing::info!(listen = %local, media = %media_addr, "klausur started");
    serve_http(listener, config.tls.as_ref(), handle, app).await?;
    if let Some(gw) = gateway {
        gw.shutdown().await;
    }
    store.close().await;
    tracing::info!("stopped");
    println!("klausur: stopped");
    Ok(())
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

/// Serves `app` on `listener` until `handle` shuts it down: HTTPS with `tls` if given, else plain
/// HTTP. Used by `serve` and by `identity-ca serve`.
pub(crate) async fn serve_http(
    listener: std::net::TcpListener,
    tls: Option<&crate::config::TlsFiles>,
    handle: axum_server::Handle,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
) -> anyhow::Result<()> {
    match tls {
        Some(tls) => {
            // One crypto provider for the whole process (several rustls backends are linked).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .context("cannot load TLS certificate or key")?;
            axum_server::from_tcp_rustls(listener, rustls)
                .handle(handle)
                .serve(app)
                .await
                .context("HTTPS server failed")?;
        }
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await
                .context("HTTP server failed")?;
        }
    }
    Ok(())
}
