//! Hermes' state, router and application: what `main` runs and tests drive.

use std::{sync::Arc, time::Duration};

use axum::Router;
pub use foundry::http::Application;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    config::Config,
    embed::EMBEDDING_DIMENSION,
    llm::{ApiKey, LlmService, OpenAiConfig, OpenAiProvider, Provider},
    routes,
    vector_store::InstrumentedStore,
};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The vector store of embeddings.
    pub store: Arc<InstrumentedStore>,
    /// The LLM providers.
    pub llm: Arc<LlmService>,
}

impl AppState {
    /// An in-memory store and the echo provider only.
    pub fn local() -> Self {
        Self {
            store: Arc::new(InstrumentedStore::in_memory(EMBEDDING_DIMENSION)),
            llm: Arc::new(LlmService::echo_only()),
        }
    }

    /// The state `config` asks for; a bad LLM setting is an error naming its variable.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let default_provider: Provider = config
            .llm_provider
            .parse()
            .map_err(|error| anyhow::anyhow!("HERMES_LLM_PROVIDER: {error}"))?;
        let openai = match &config.llm_api_key {
            Some(key) if !key.is_empty() => {
                let timeout = Duration::from_millis(config.llm_timeout_ms);
                let openai = OpenAiConfig::new(
                    &config.llm_base_url,
                    ApiKey::new(key.clone()),
                    &config.llm_model,
                )?;
                // The provider is outside the system: no trace context nor baggage goes to it.
                Some(OpenAiProvider::new(
                    foundry::http::external_client(timeout)?,
                    openai,
                )?)
            }
            _ => None,
        };
        Ok(Self {
            store: Arc::new(InstrumentedStore::in_memory_with_capacity(
                EMBEDDING_DIMENSION,
                usize::try_from(config.vector_capacity)?,
            )),
            llm: Arc::new(LlmService::new(default_provider, openai)?),
        })
    }
}

/// Every route, instrumented, and the document of them all at `/openapi.json`.
pub fn router(state: AppState) -> Router {
    // One call registers each route and its documentation: they cannot drift apart.
    let (routes, api) = OpenApiRouter::new()
        .routes(routes!(routes::embed::embed_text))
        .routes(routes!(routes::embed::search))
        .routes(routes!(routes::nlp::simple_nlp))
        .routes(routes!(routes::llm::complete))
        .with_state(state)
        .split_for_parts();
    let document = foundry::openapi::document(api, "hermes", env!("CARGO_PKG_VERSION"));
    let routes = foundry::openapi::with_document(routes, &document);
    foundry::http::instrument(routes, "hermes", env!("CARGO_PKG_VERSION"))
}

/// Builds Hermes' state and binds its port (0 takes a free port).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let state = AppState::from_config(&config)?;
    Ok(Application::bind(&config.host, config.port, router(state)).await?)
}
