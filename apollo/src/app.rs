//! The Apollo API (`apollo serve`): router and application.

use std::net::SocketAddr;

use axum::{
    Router,
    routing::{get, post},
};
use foundry::http::ErrorResponse;

use crate::{
    diagnostics::{Diagnostics, receiver},
    routes::{api, diagnostics::Links},
    services::Services,
};

/// Every route of `apollo serve`: the API (instrumented), the diagnostics views and the OTLP
/// receiver (neither traced: they would fill the window they show).
pub fn router(services: Services, diagnostics: Diagnostics, links: Links) -> Router {
    let routes = Router::new()
        .route("/api/plan", post(api::plan))
        .route("/api/simulate", post(api::simulate))
        .route("/api/state", get(api::state))
        .route("/api/embed", post(api::embed))
        .route("/api/search", post(api::search))
        .route("/api/chat", post(api::chat))
        .with_state(services);
    foundry::http::instrument(routes, "apollo", env!("CARGO_PKG_VERSION"))
        .merge(crate::routes::diagnostics::router(
            diagnostics.clone(),
            links,
        ))
        .merge(receiver::router(diagnostics))
        // For the merged routes too: the same JSON answer to a wrong method everywhere.
        .method_not_allowed_fallback(|| async {
            ErrorResponse::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
}

/// The Apollo API bound to its port, ready to run.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Application {
    /// Binds the listener (port 0 takes a free port).
    pub async fn build(
        host: &str,
        port: u16,
        services: Services,
        diagnostics: Diagnostics,
        links: Links,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: foundry::http::bind(host, port).await?,
            router: router(services, diagnostics, links),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until Ctrl-C or SIGTERM, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        foundry::http::serve(self.listener, self.router).await
    }
}
