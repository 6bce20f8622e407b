//! Serves the built web client (web/dist): files as they are, and index.html for the
//! client's own routes, with security headers on every response: the Content-Security-Policy,
//! `nosniff`, no referrer, no framing, `Cross-Origin-Opener-Policy: same-origin` (no other
//! site's window shares the client's browsing context group or holds a reference to it; the
//! Content-Security-Policy already keeps the client from loading anything from elsewhere), and
//! with `[server] cross_origin_isolated` also `Cross-Origin-Embedder-Policy: require-corp`
//! (cross-origin isolation, for a fine `performance.now()` in the encryption worker's figures;
//! not by default, since Firefox then opens no WebRTC connection through an HTTP proxy),
//! `Strict-Transport-Security` when the server speaks TLS, and `Cache-Control: no-store` on every API answer (they carry personal data, tokens and
//! one-time secrets that no browser or proxy cache may keep).
//!
//! The client is about 2 MB (most of it the encryption core's WebAssembly), which a participant
//! on a slow mobile link must load before joining. So the build writes each file also
//! compressed (`.br`, `.gz`, web/vite.config.ts) and the server sends those to browsers that
//! accept them (a third of the size with Brotli); a directory without them is served as it is.
//! The files under `/assets/` carry a hash of their content in their names and are cached for a
//! year (`immutable`); everything else (index.html, which names the current assets) is
//! revalidated on every load (`no-cache`), so an upgraded server's client is used at once. A
//! missing asset is a 404, not index.html.

use std::path::PathBuf;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
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

/// `Cache-Control` of an answer to `path` (see the module docs): the API's answers are not
/// stored, the hashed assets are kept for a year, the rest is revalidated.
fn cache_policy(path: &str, status: StatusCode) -> &'static str {
    if path.starts_with("/api/") {
        "no-store"
    } else if path.starts_with("/assets/")
        && (status.is_success() || status == StatusCode::NOT_MODIFIED)
    {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// Sets [`cache_policy`] on every answer, and `Vary: Accept-Encoding` on the client's files:
/// the same URL is answered compressed or not, which a shared cache (a city's proxy) must keep
/// apart.
async fn cache_control(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    let policy = cache_policy(&path, res.status());
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    if !path.starts_with("/api/") {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    res
}

pub fn with_static(api: Router<AppState>, config: &Config) -> Router<AppState> {
    let router = match find_web_root(config) {
        Some(root) => {
            tracing::info!("serving the web client from {}", root.display());
            // Files as they are (compressed when the build wrote a `.br` or `.gz` beside them
            // and the browser accepts it); every other path (the client's own routes such as
            // /login, /meetings/..., /j/<token>, /m/<id>) gets index.html, except under
            // /assets/, where a missing file is a 404.
            let index = ServeFile::new(root.join("index.html"))
                .precompressed_br()
                .precompressed_gzip();
            let assets = ServeDir::new(root.join("assets"))
                .precompressed_br()
                .precompressed_gzip();
            let files = ServeDir::new(&root)
                .precompressed_br()
                .precompressed_gzip()
                .fallback(index);
            api.nest_service("/assets", assets).fallback_service(files)
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
        .layer(axum::middleware::from_fn(cache_control))
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
            config
                .cross_origin_isolated
                .then(|| HeaderValue::from_static("require-corp")),
        ))
}

/// The reply to an `/api/` path that no route serves: a 404 in the API's error format.
pub async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    Refusal::NotFound(format!("route {} not found", uri.path())).into()
}
