//! `GET /metrics`: the monitoring figures ([`crate::metrics`]) for a scraper that presents the
//! `[metrics] token_file` token as `Authorization: Bearer`; on the server's own listener
//! ([`scrape`]), and on a remote `klausur sip-gateway`'s `--metrics-listen`
//! ([`gateway_router`]).
//!
//! Without a configured token the route answers 404 as if it did not exist; with a missing or
//! wrong token 401. Reading the figures touches neither the database nor Redis (a scrape during
//! their outage reports it instead of failing with it); each media worker answers a stats
//! command, as for `GET /api/status`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::http_error::{ApiError, Refusal};
use crate::metrics::{self, Access, ClusterFigures, Metrics, ProcessFigures, Snapshot};
use crate::state::AppState;

/// The reply that refuses the request, unless it presents the token.
fn refusal(metrics: &Metrics, headers: &HeaderMap) -> Option<Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match metrics.access(authorization) {
        Access::Granted => None,
        Access::Off => Some(
            ApiError::from(Refusal::NotFound(
                "metrics are off on this server (set [metrics] token_file to serve them)".into(),
            ))
            .into_response(),
        ),
        Access::Refused => {
            tracing::debug!("metrics: request without the scrape token refused");
            let mut response = ApiError::from(Refusal::Unauthorized(
                "missing or wrong token: send the [metrics] token_file token as \
                 Authorization: Bearer"
                    .into(),
            ))
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"klausur metrics\""),
            );
            Some(response)
        }
    }
}

/// The text format's reply.
fn reply(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /metrics` of `klausur serve`.
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refusal(&state.metrics, &headers) {
        return refusal;
    }
    let (refused_unwritable, refused_unreachable) = crate::storage_fault::refused_totals();
    let mut snapshot = Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        node: state.cluster.as_ref().map(|c| c.node_id().to_string()),
        process: ProcessFigures::read(),
        meetings_running: state.registry.running(),
        draining: state.registry.draining(),
        websockets: state.connections.len(),
        workers: state.media.worker_stats().await,
        database_reachable: crate::storage_fault::database_reachable(),
        refused_unwritable,
        refused_unreachable,
        audit_write_failures: state.audit.failures(),
        cluster: state.cluster.as_ref().map(|c| ClusterFigures {
            heartbeat_ok: c.heartbeat_ok(),
            leases_kept: c.leases_kept(),
        }),
        ..Snapshot::default()
    };
    state.metrics.fill(&mut snapshot);
    reply(metrics::render(&snapshot))
}

/// The only route of a remote `klausur sip-gateway`'s `--metrics-listen`: `GET /metrics` with
/// the gateway's calls ([`metrics::render_gateway`]); anything else is a 404.
pub fn gateway_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape_gateway))
        .with_state(metrics)
}

async fn scrape_gateway(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refusal(&metrics, &headers) {
        return refusal;
    }
    let mut snapshot = Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        process: ProcessFigures::read(),
        ..Snapshot::default()
    };
    metrics.fill(&mut snapshot);
    reply(metrics::render_gateway(&snapshot))
}
