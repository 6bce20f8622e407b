//! Where the SIP gateway (crate `klausur-sip`) is started: in the `klausur serve` process when a
//! SIP listen address is configured ([`start_in_process`]), or on its own host as `klausur
//! sip-gateway --server URL` ([`run_remote`]). Both hand the gateway a [`GatewaySetup`]: the
//! validated `[dialin]` configuration, the base URL of the server, the TLS trust towards it and
//! the gateway token. The gateway talks to the server over HTTP and WebSocket only (the dial-in
//! API, the identity credential route and the meeting WebSocket; see [`crate::dialin`]).
//!
//! A remote gateway reaches an `https://` server trusting the web roots, plus the CA
//! certificates of `--ca-file` (or `[dialin] server_ca_file`) when the server's certificate
//! comes from an organisation's own CA; the file is read at start, and a file that cannot be
//! read or holds no certificate stops the start. The in-process gateway reaches its server
//! over plain HTTP on loopback.
//!
//! The gateway runs on tokio beside the server; on a shutdown it ends every call with BYE.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use klausur_sip::core::prompts::Language;
use klausur_sip::driver::sip::{DigestAlgorithm, DigestConfig, Limits, SipConfig, TlsIdentity};
use klausur_sip::driver::{Gateway, GatewayConfig, RunningGateway};
use zeroize::Zeroizing;

use crate::config::{Config, PromptLanguage};
pub use crate::dialin::GatewaySetup;

/// The realm of the digest challenge towards the trunk.
const DIGEST_REALM: &str = "klausur";

/// The gateway's configuration from the validated `[dialin]` section.
fn gateway_config(setup: &GatewaySetup) -> anyhow::Result<GatewayConfig> {
    let c = &setup.config;
    let tls_identity = match &c.tls_files {
        Some(t) => {
            Some(TlsIdentity::from_files(&t.cert, &t.key).context("[dialin] tls_cert / tls_key")?)
        }
        None => None,
    };
    let digest = match &c.digest {
        Some(d) => {
            let text =
                Zeroizing::new(std::fs::read_to_string(&d.password_file).with_context(|| {
                    format!(
                        "cannot read [dialin] digest_password_file {}",
                        d.password_file.display()
                    )
                })?);
            let password = text.lines().next().unwrap_or("").trim().to_string();
            if password.is_empty() {
                bail!(
                    "[dialin] digest_password_file {} is empty",
                    d.password_file.display()
                );
            }
            Some(DigestConfig {
                realm: DIGEST_REALM.into(),
                user: d.user.clone(),
                password: Zeroizing::new(password),
                // MD5 first: trunks that read only the first challenge mostly know MD5 only.
                algorithms: vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
            })
        }
        None => None,
    };
    let limits = Limits {
        max_calls: c.max_calls as usize,
        max_call_duration: Duration::from_secs(u64::from(c.max_call_minutes) * 60),
        invites_per_source_per_minute: c.invites_per_source_per_minute,
        ..Limits::default()
    };
    let sip = SipConfig {
        udp: c.udp.clone(),
        tcp: c.tcp.clone(),
        tls: c.tls.clone(),
        tls_identity,
        allow: c.allow.clone(),
        digest,
        limits,
        ..SipConfig::default()
    };
    Ok(GatewayConfig {
        sip,
        rtp_ip: c.rtp_address,
        rtp_ports: c.rtp_ports.clone(),
        server: setup.server_url.clone(),
        token: setup.token.clone(),
        server_tls: setup.server_tls.clone(),
        // The route towards the server decides the callers' media address.
        media_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        language: match c.language {
            PromptLanguage::De => Language::De,
            PromptLanguage::En => Language::En,
        },
        prompts_dir: None,
    })
}

async fn start(setup: &GatewaySetup) -> anyhow::Result<RunningGateway> {
    let cfg = gateway_config(setup)?;
    let gw = Gateway::start(cfg)
        .await
        .context("cannot start the SIP gateway")?;
    for (transport, addr) in gw.sip_addrs() {
        println!("klausur: dial-in gateway on {transport:?} {addr}");
    }
    Ok(gw)
}

/// Starts the gateway inside `klausur serve` (called once at start when the configuration names
/// a SIP listen address). The server shuts it down with [`RunningGateway::shutdown`].
pub async fn start_in_process(setup: GatewaySetup) -> anyhow::Result<RunningGateway> {
    disable_core_dumps();
    start(&setup).await
}

/// Runs the gateway on its own until `stop` completes (`klausur sip-gateway`: SIGINT or
/// SIGTERM). `metrics`, if given (`--metrics-listen`), gets the gateway's counters to serve.
pub async fn run_remote(
    setup: GatewaySetup,
    stop: impl std::future::Future<Output = ()>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
) -> anyhow::Result<()> {
    disable_core_dumps();
    let gw = start(&setup).await?;
    if let Some(m) = metrics {
        m.set_sip(gw.stats_source());
    }
    println!(
        "klausur: SIP gateway for {} listening on {}",
        setup.server_url,
        listen_summary(&setup)
    );
    stop.await;
    tracing::info!("shutting down the SIP gateway: ending every call");
    gw.shutdown().await;
    println!("klausur: stopped");
    Ok(())
}

/// Decrypted telephone audio passes through this process's memory: no core dump may hold it.
fn disable_core_dumps() {
    match nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        Ok(()) => tracing::debug!("core dumps disabled"),
        Err(e) => tracing::warn!("cannot disable core dumps: {e}"),
    }
}

fn listen_summary(setup: &GatewaySetup) -> String {
    let c = &setup.config;
    let all: Vec<String> = (c.udp.iter().map(|a| format!("udp {a}")))
        .chain(c.tcp.iter().map(|a| format!("tcp {a}")))
        .chain(c.tls.iter().map(|a| format!("tls {a}")))
        .collect();
    all.join(", ")
}

/// `klausur sip-gateway`: checks its command line and configuration and builds the setup for
/// [`run_remote`]. `server` is the server's base URL; `token_file` (else `[dialin]
/// gateway_token_file`) holds the token the server expects; `ca_file` (else `[dialin]
/// server_ca_file`), if any, the CA certificates (PEM) to trust for the server besides the web
/// roots.
pub fn remote_setup(
    config: &Config,
    server: &str,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> anyhow::Result<GatewaySetup> {
    let server_url = check_server_url(server, config.danger_plain_http)?;
    let token_file = token_file
        .or_else(|| config.dialin.gateway_token_file.clone())
        .context(
            "no gateway token: pass --token-file (or set [dialin] gateway_token_file) with the \
             token the server's [dialin] gateway_token_file holds",
        )?;
    let token =
        crate::identity::ca_protocol::load_token_file(&token_file).context("--token-file")?;
    let server_tls = match ca_file {
        Some(f) => Some(klausur_client::driver::tls_config(Some(&f)).context("--ca-file")?),
        None => match &config.dialin.server_ca_file {
            Some(f) => Some(
                klausur_client::driver::tls_config(Some(f)).context("[dialin] server_ca_file")?,
            ),
            None => None,
        },
    };
    if !config.dialin.gateway_enabled() {
        bail!(
            "no SIP listen address: set [dialin] udp, tcp or tls in the configuration, or pass \
             --sip-listen"
        );
    }
    Ok(GatewaySetup {
        config: config.dialin.clone(),
        server_url,
        token,
        server_tls,
    })
}

/// The server's base URL without a trailing `/`. Plain `http://` only to a loopback host unless
/// `danger_plain_http` (the gateway token and the callers' PINs would cross the network in
/// clear).
fn check_server_url(url: &str, danger_plain_http: bool) -> anyhow::Result<String> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("--server {url:?} is not a URL"))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => bail!("--server {url:?} must start with https:// (or http://)"),
    };
    if parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || parsed.path() != "/"
    {
        bail!("--server {url:?} must be a base URL like https://konferenz.example");
    }
    let host = parsed.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback && !danger_plain_http {
        bail!(
            "--server {url:?} uses plain http to a non-loopback host: the gateway token and the \
             callers' PINs would cross the network in clear; use https://"
        );
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            check_server_url("https://konferenz.example/", false).expect("ok"),
            "https://konferenz.example"
        );
        assert!(check_server_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_server_url("http://[::1]:8080", false).is_ok());
        let err = check_server_url("http://192.0.2.1:8080", false).expect_err("plain");
        assert!(err.to_string().contains("in clear"), "{err}");
        assert!(check_server_url("http://192.0.2.1:8080", true).is_ok());
        assert!(check_server_url("ftp://x", false).is_err());
        assert!(check_server_url("https://x/sub", false).is_err());
        assert!(check_server_url("nonsense", false).is_err());
    }
}
