//! Sophia's state, router and application: what `main` runs and tests drive.

use std::time::Duration;

use axum::{Router, middleware};
pub use foundry::http::Application;
use foundry::http::Downstream;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{config::Config, hcg::Hcg, hermes::Hermes, routes, state::Cwm};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The language services.
    pub hermes: Hermes,
    /// The graph of goals, plans, steps and simulations.
    pub hcg: Hcg,
    /// The world state.
    pub cwm: Cwm,
    /// When set, every route but `/health` and `/metrics` requires `Authorization: Bearer` it.
    pub api_token: Option<String>,
}

impl AppState {
    /// In-memory graph and state, Hermes at `hermes_url`.
    pub fn new(hermes_url: &str, hermes_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = foundry::http::client(hermes_timeout)?;
        Ok(Self {
            hermes: Hermes::new(Downstream::new("hermes", hermes_url, client)),
            hcg: Hcg::in_memory(),
            cwm: Cwm::in_memory(),
            api_token: None,
        })
    }

    /// An in-memory graph of at most `capacity` entities instead of the default.
    #[must_use]
    pub fn with_hcg_capacity(mut self, capacity: usize) -> Self {
        self.hcg = Hcg::in_memory_with_capacity(capacity);
        self
    }

    /// Requires `Authorization: Bearer <token>` on every route but `/health` and `/metrics`;
    /// `None` or an empty token requires nothing.
    #[must_use]
    pub fn with_api_token(mut self, token: Option<String>) -> Self {
        self.api_token = token.filter(|token| !token.is_empty());
        self
    }
}

/// Every route, instrumented, behind the bearer token when one is set.
pub fn router(state: AppState) -> Router {
    let api_token = state.api_token.clone();
    // One call registers each route and its documentation: they cannot drift apart.
    let (routes, api) = OpenApiRouter::new()
        .routes(routes!(routes::plan::create))
        .routes(routes!(routes::simulate::create))
        .routes(routes!(routes::state::read, routes::state::replace))
        .routes(routes!(routes::hcg::entities))
        .routes(routes!(routes::hcg::entity))
        .routes(routes!(routes::hcg::snapshot))
        .with_state(state)
        .split_for_parts();
    let mut document = foundry::openapi::document(api, "sophia", env!("CARGO_PKG_VERSION"));
    crate::auth::document(&mut document);
    let routes = foundry::openapi::with_document(routes, &document);
    let routes = match api_token {
        Some(token) => routes.route_layer(middleware::from_fn_with_state(
            token,
            crate::auth::require_token,
        )),
        None => routes,
    };
    foundry::http::instrument(routes, "sophia", env!("CARGO_PKG_VERSION"))
}

/// Builds Sophia's state and binds its port (0 takes a free port).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let state = AppState::new(
        &config.hermes_url,
        Duration::from_millis(config.hermes_timeout_ms),
    )?
    .with_api_token(config.api_token.clone())
    .with_hcg_capacity(usize::try_from(config.hcg_capacity)?);
    Ok(Application::bind(&config.host, config.port, router(state)).await?)
}
