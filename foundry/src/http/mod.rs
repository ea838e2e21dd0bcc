//! HTTP instrumentation for axum servers and reqwest clients, and the JSON error contract.
//!
//! A service builds its router, then hands it to [`instrument`], which adds the server span and
//! metrics to every route, a 1 MiB body limit, JSON 404/405 answers, and the untraced `/health`
//! and `/metrics` routes. Outbound calls go through [`Downstream`], built on [`client`].

mod client;
mod error;
mod idle;
mod protocol_errors;
mod serve;
pub(crate) mod server;

use axum::{Json, Router, extract::DefaultBodyLimit, routing::get};

pub use crate::url::parse_service_url;
pub use client::{Downstream, DownstreamError, HttpClient, client, external_client, read_at_most};
pub use error::{ErrorResponse, JsonBody, PathParam, QueryParams};
pub use serve::{Application, run_service};
pub(crate) use server::ServerLayer;

/// The largest request body a service accepts; larger ones get 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Instruments every route of `router` and adds `/health` and `/metrics`, which stay untraced.
pub fn instrument(router: Router, service: &'static str, version: &'static str) -> Router {
    router
        .fallback(|| async { ErrorResponse::not_found("no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(ServerLayer::new())
        // Added after the layer on purpose: health checks and scrapes are not traced.
        .route(
            "/health",
            get(move || async move {
                Json(serde_json::json!({"status": "ok", "service": service, "version": version}))
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::metrics::render_prometheus(),
                )
            }),
        )
        // Again for the two routes above: it applies to the routes there are when it is called.
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ErrorResponse {
    ErrorResponse::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
