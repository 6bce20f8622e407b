//! `GET /metrics`: the monitoring figures ([`crate::metrics`]) for a scraper that presents the
//! `[metrics] token_file` token as `Authorization: Bearer`.
//!
//! Without a configured token the route answers 404 as if it did not exist; with a missing or
//! wrong token 401. Reading the figures touches neither the database nor Redis (a scrape during
//! their outage reports it instead of failing with it); each media worker answers a stats
//! command, as for `GET /api/status`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::http_error::{ApiError, Refusal};
use crate::metrics::{self, Access, ClusterFigures, ProcessFigures, Snapshot};
use crate::state::AppState;

pub async fn scrape(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.metrics.access(authorization) {
        Access::Off => {
            return Err(Refusal::NotFound(
                "metrics are off on this server (set [metrics] token_file to serve them)".into(),
            )
            .into())
        }
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
            return Ok(response);
        }
        Access::Granted => {}
    }
    let (refused_unwritable, refused_unreachable) = crate::storage_fault::refused_totals();
    let mut snapshot = Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        node: state.cluster.as_ref().map(|c| c.node_id().to_string()),
        process: ProcessFigures::read(),
        meetings_running: state.registry.running(),
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
    let body = metrics::render(&snapshot);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}
