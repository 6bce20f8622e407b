//! Serves the built web client (web/dist): files as they are, and index.html for the
//! client's own routes, with security headers on every response: the Content-Security-Policy,
//! `nosniff`, no referrer, no framing, cross-origin isolation (`Cross-Origin-Opener-Policy:
//! same-origin`, `Cross-Origin-Embedder-Policy: require-corp`: no other site's window shares the
//! client's process or holds a reference to it, and the client loads nothing from elsewhere;
//! it also gives the encryption worker a fine `performance.now()` for its per-frame figures),
//! `Strict-Transport-Security` when the server speaks TLS, and `Cache-Control: no-store` on every API answer (they carry personal data, tokens and
//! one-time secrets that no browser or proxy cache may keep).

use std::path::PathBuf;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::Config;
use crate::http::http_error::{ApiError, Refusal};
use crate::state::AppState;

/// Content-Security-Policy of the client, strict: scripts, styles, workers, images and
/// connections from this server only, nothing inline (no `'unsafe-inline'`: index.html has no
/// inline script or style, and React sets `style` props through the CSSOM, which a strict
/// `style-src` allows), WebAssembly compiled by the encryption worker (`'wasm-unsafe-eval'`,
/// not `'unsafe-eval'`), no plugins, no framing, no `<base>`, forms to this server only. Call
/// and screen media are `MediaStream`s set as `srcObject`, which CSP does not govern.
/// `connect-src` gets the WebSocket origin of `public_url` by [`csp`] (`'self'` covers the
/// same-host `ws:`/`wss:` in current browsers).
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; \
    worker-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// [`CSP`], with `connect-src` naming the WebSocket origin of `public_url` when one is set
/// (`wss://host` for `https://host`, `ws://host` for `http://host`).
pub fn csp(config: &Config) -> String {
    let ws = config.public_url.as_deref().and_then(|url| {
        let (scheme, rest) = url.split_once("://")?;
        let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => "wss",
            "http" => "ws",
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Only what a source expression may hold: host, port, brackets of an IPv6 address.
        let plain = !authority.is_empty()
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        plain.then(|| format!("{ws_scheme}://{}", authority.to_ascii_lowercase()))
    });
    match ws {
        Some(ws) => CSP.replacen("connect-src 'self'", &format!("connect-src 'self' {ws}"), 1),
        None => CSP.to_string(),
    }
}

/// Where the built client is: the configured directory, or `web/dist` next to the working
/// directory or the executable (for a source checkout).
pub fn find_web_root(config: &Config) -> Option<PathBuf> {
    if let Some(w) = &config.web_root {
        return Some(w.clone());
    }
    let mut candidates = vec![PathBuf::from("web/dist")];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("web/dist"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.join("index.html").is_file())
}

/// HSTS for a server that speaks TLS: a year; not `includeSubDomains` (other hosts of the
/// city's domain may not speak TLS), not `preload` (the operator's decision).
const HSTS: &str = "max-age=31536000";

/// `Cache-Control: no-store` on the API's answers (see the module docs).
async fn no_store_api(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    if api {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

pub fn with_static(api: Router<AppState>, config: &Config) -> Router<AppState> {
    let router = match find_web_root(config) {
        Some(root) => {
            tracing::info!("serving the web client from {}", root.display());
            // Files as they are; every other path (the client's own routes such as /login,
            // /meetings/..., /j/<token>, /m/<id>) gets index.html.
            let index = ServeFile::new(root.join("index.html"));
            api.fallback_service(ServeDir::new(&root).fallback(index))
        }
        None => {
            tracing::warn!("web client not built (run `make web`); serving the API only");
            api.fallback(api_not_found)
        }
    };
    let router = if config.tls.is_some() {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ))
    } else {
        router
    };
    router
        .layer(axum::middleware::from_fn(no_store_api))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp(config)).unwrap_or(HeaderValue::from_static(CSP)),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::HeaderName::from_static("cross-origin-embedder-policy"),
            HeaderValue::from_static("require-corp"),
        ))
}

/// The reply to an `/api/` path that no route serves: a 404 in the API's error format.
pub async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    Refusal::NotFound(format!("route {} not found", uri.path())).into()
}
