//! What Apollo asks of Sophia and Hermes: every user action, as one traced operation.
//!
//! The CLI and the API share this: each action runs in an `apollo.command` span, and each call
//! to another service in an `apollo.api.sophia` or `apollo.api.hermes` span around its client
//! span.

use std::time::{Duration, Instant};

use foundry::http::{Downstream, DownstreamError};

pub use crate::error::ActionError;
use opentelemetry::trace::TraceContextExt;
use serde_json::{Value, json};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A user action, as the CLI and the API both express it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Health and latency of Sophia and Hermes.
    Status,
    /// Sophia `POST /plan` with this body.
    Plan(Value),
    /// Sophia `POST /simulate` with this body.
    Simulate(Value),
    /// Sophia `GET /state`.
    State,
    /// Hermes `POST /embed_text` with this body.
    Embed(Value),
    /// Hermes `POST /search` with this body.
    Search(Value),
    /// Hermes `POST /llm` with this body.
    Chat(Value),
}

impl Action {
    /// The `command.name` of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Plan(_) => "plan",
            Self::Simulate(_) => "simulate",
            Self::State => "state",
            Self::Embed(_) => "embed",
            Self::Search(_) => "search",
            Self::Chat(_) => "chat",
        }
    }
}

/// The outcome of one action: its trace id, and its result.
#[derive(Debug)]
pub struct Outcome {
    /// 32 hex digits; `None` when telemetry is disabled and there is no trace.
    pub trace_id: Option<String>,
    /// The services' answer.
    pub result: Result<Value, ActionError>,
}

/// Sophia and Hermes, called through foundry's traced client.
#[derive(Clone, Debug)]
pub struct Services {
    sophia: Downstream,
    hermes: Downstream,
}

impl Services {
    /// The services at these URLs; `sophia_api_key` goes to Sophia as a bearer token.
    pub fn new(
        sophia_url: &str,
        hermes_url: &str,
        sophia_api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = foundry::http::client(timeout)?;
        Ok(Self {
            // Apollo forwards the user's input: their mistakes come back to them as they are.
            sophia: Downstream::new("sophia", sophia_url, client.clone())
                .with_bearer_token(sophia_api_key)
                .forwarding_client_errors(),
            hermes: Downstream::new("hermes", hermes_url, client).forwarding_client_errors(),
        })
    }

    /// Runs `action` in its `apollo.command` span (a child of the current span, if any).
    pub async fn perform(&self, action: Action) -> Outcome {
        let span = tracing::info_span!(
            "apollo.command",
            command.name = action.name(),
            command.success = Empty,
            otel.status_code = Empty,
        );
        let trace_id = Some(span.context().span().span_context().clone())
            .filter(opentelemetry::trace::SpanContext::is_valid)
            .map(|span_context| span_context.trace_id().to_string());
        let result = self.dispatch(action).instrument(span.clone()).await;
        span.record("command.success", result.is_ok());
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        Outcome { trace_id, result }
    }

    async fn dispatch(&self, action: Action) -> Result<Value, ActionError> {
        let sophia = &self.sophia;
        let hermes = &self.hermes;
        Ok(match action {
            Action::Status => return self.status().await,
            Action::Plan(body) => call(sophia, "/plan", Some(body)).await?,
            Action::Simulate(body) => call(sophia, "/simulate", Some(body)).await?,
            Action::State => call(sophia, "/state", None).await?,
            Action::Embed(body) => call(hermes, "/embed_text", Some(body)).await?,
            Action::Search(body) => call(hermes, "/search", Some(body)).await?,
            Action::Chat(body) => call(hermes, "/llm", Some(body)).await?,
        })
    }

    async fn status(&self) -> Result<Value, ActionError> {
        let (sophia, hermes) = tokio::join!(health(&self.sophia), health(&self.hermes));
        let down: Vec<String> = [&sophia, &hermes]
            .iter()
            .filter_map(|answer| answer.get("error").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let services = json!({"sophia": sophia, "hermes": hermes});
        if down.is_empty() {
            Ok(services)
        } else {
            Err(ActionError::Unhealthy {
                message: down.join("; "),
                services,
            })
        }
    }
}

/// One call to a service inside its `apollo.api.<service>` span: GET without a body, else POST.
async fn call(
    service: &Downstream,
    path: &'static str,
    body: Option<Value>,
) -> Result<Value, DownstreamError> {
    let span = api_span(service);
    let result = match &body {
        Some(body) => service.post_json(path, body).instrument(span.clone()).await,
        None => service.get_json(path).instrument(span.clone()).await,
    };
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

fn api_span(service: &Downstream) -> tracing::Span {
    match service.service() {
        "sophia" => tracing::info_span!("apollo.api.sophia", otel.status_code = Empty),
        _ => tracing::info_span!("apollo.api.hermes", otel.status_code = Empty),
    }
}

/// `GET /health`, with the round trip's latency; an `error` field when it failed.
async fn health(service: &Downstream) -> Value {
    let started = Instant::now();
    let answer = call(service, "/health", None).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok(answer) => json!({
            "status": answer.get("status").cloned().unwrap_or(Value::Null),
            "version": answer.get("version").cloned().unwrap_or(Value::Null),
            "url": service.base_url(),
            "latency_ms": (latency_ms * 100.0).round() / 100.0,
        }),
        Err(error) => json!({
            "status": "down",
            "url": service.base_url(),
            "error": error.to_string(),
        }),
    }
}
