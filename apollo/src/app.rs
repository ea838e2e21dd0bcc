//! The Apollo API (`apollo serve`): router and application.

use axum::Router;
pub use foundry::http::Application;
use foundry::http::ErrorResponse;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    diagnostics::{Diagnostics, receiver},
    routes::{api, diagnostics::Links},
    services::Services,
};

/// Every route of `apollo serve`: the API (instrumented), the diagnostics views and the OTLP
/// receiver (neither traced: they would fill the window they show), and the document of them all
/// at `/openapi.json` (the receiver's gRPC routes, under [`receiver::GRPC_PATH_PREFIX`], are not
/// HTTP/JSON and are left out of it).
pub fn router(services: Services, diagnostics: Diagnostics, links: Links) -> Router {
    // One call registers each route and its documentation: they cannot drift apart.
    let (routes, mut api) = OpenApiRouter::new()
        .routes(routes!(api::plan))
        .routes(routes!(api::simulate))
        .routes(routes!(api::state))
        .routes(routes!(api::embed))
        .routes(routes!(api::search))
        .routes(routes!(api::chat))
        .with_state(services)
        .split_for_parts();
    let (viewer, viewer_api) =
        crate::routes::diagnostics::router(diagnostics.clone(), links).split_for_parts();
    let (receiver, receiver_api) = receiver::router(diagnostics).split_for_parts();
    api.merge(viewer_api);
    api.merge(receiver_api);
    let document = foundry::openapi::document(api, "apollo", env!("CARGO_PKG_VERSION"));
    let routes = foundry::openapi::with_document(routes, &document);
    foundry::http::instrument(routes, "apollo", env!("CARGO_PKG_VERSION"))
        .merge(viewer)
        .merge(receiver)
        // For the merged routes too: the same JSON answer to a wrong method everywhere.
        .method_not_allowed_fallback(|| async {
            ErrorResponse::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
}

/// Binds the Apollo API's port (0 takes a free port).
pub async fn build(
    host: &str,
    port: u16,
    services: Services,
    diagnostics: Diagnostics,
    links: Links,
) -> std::io::Result<Application> {
    Application::bind(host, port, router(services, diagnostics, links)).await
}
