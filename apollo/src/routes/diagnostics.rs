//! The diagnostics API, its WebSocket and its page: what the window holds, for people and tools.
//!
//! These routes are not traced: watching the window must not fill it with the watcher's own
//! requests (a page polling every few seconds would push the system's traces out).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use foundry::http::{ErrorResponse, PathParam, QueryParams};
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::diagnostics::{
    Diagnostics,
    window::{TraceFilter, parse_trace_id},
};

/// How often a WebSocket client gets a `telemetry` snapshot.
pub const TELEMETRY_INTERVAL: Duration = Duration::from_secs(2);

/// How long one message may take to reach a client before the client is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The most traces or log records one answer lists.
const MAX_LIMIT: usize = 1000;

/// Where else a trace can be seen: Jaeger's and Grafana's base URLs, when set.
#[derive(Clone, Debug, Default)]
pub struct Links {
    /// `APOLLO_JAEGER_URL`, e.g. `http://localhost:16686`.
    pub jaeger: Option<String>,
    /// `APOLLO_GRAFANA_URL`, e.g. `http://localhost:3001`.
    pub grafana: Option<String>,
}

#[derive(Clone, Debug)]
struct Viewer {
    diagnostics: Diagnostics,
    links: Links,
}

/// The API, the WebSocket and the page, over `diagnostics`.
pub fn router(diagnostics: Diagnostics, links: Links) -> Router {
    Router::new()
        .route("/api/diagnostics/traces", get(traces))
        .route("/api/diagnostics/traces/{trace_id}", get(trace))
        .route("/api/diagnostics/metrics", get(metrics))
        .route("/api/diagnostics/logs", get(logs))
        .route("/api/diagnostics/links", get(links_of))
        .route("/ws/diagnostics", get(websocket))
        .route("/diagnostics", get(page))
        .route("/diagnostics/app.js", get(script))
        .route("/diagnostics/app.css", get(style))
        // Browsers ask for it with every page; unanswered, it would be a traced 404 each time.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .with_state(Viewer { diagnostics, links })
}

/// `?service=&name=&error=&min_duration_ms=&limit=`
#[derive(Debug, serde::Deserialize)]
struct TracesQuery {
    service: Option<String>,
    name: Option<String>,
    error: Option<bool>,
    min_duration_ms: Option<f64>,
    limit: Option<usize>,
}

/// `GET /api/diagnostics/traces`: `{"traces": [...]}`, newest first.
async fn traces(
    State(viewer): State<Viewer>,
    QueryParams(query): QueryParams<TracesQuery>,
) -> Result<Json<Value>, ErrorResponse> {
    if let Some(min) = query.min_duration_ms
        && !(min.is_finite() && min >= 0.0)
    {
        return Err(invalid_query(
            "min_duration_ms must be a number of 0 or more",
        ));
    }
    let filter = TraceFilter {
        service: query.service.filter(|service| !service.is_empty()),
        name: query.name.filter(|name| !name.is_empty()),
        error: query.error,
        min_duration_ms: query.min_duration_ms,
        limit: limit(query.limit, 50)?,
    };
    let traces = viewer.diagnostics.read(|window| window.traces(&filter));
    Ok(Json(json!({"traces": traces})))
}

/// `GET /api/diagnostics/traces/{trace_id}`: `{"trace_id", "spans": [...]}` in start order.
async fn trace(
    State(viewer): State<Viewer>,
    PathParam(trace_id): PathParam<String>,
) -> Result<Json<Value>, ErrorResponse> {
    let id = parse_trace_id(&trace_id).ok_or_else(|| {
        ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "invalid_trace_id",
            format!("a trace id is 32 hex digits, not all zero: {trace_id:?}"),
        )
    })?;
    let spans = viewer
        .diagnostics
        .read(|window| {
            window
                .trace(&id)
                .map(|spans| spans.iter().map(|span| span.to_json()).collect::<Vec<_>>())
        })
        .ok_or_else(|| {
            ErrorResponse::not_found(format!(
                "trace {} is not in the window (never received, or evicted)",
                trace_id.to_ascii_lowercase()
            ))
        })?;
    Ok(Json(
        json!({"trace_id": trace_id.to_ascii_lowercase(), "spans": spans}),
    ))
}

/// `GET /api/diagnostics/metrics`: `{"metrics": [...]}`, a row per service and route.
async fn metrics(State(viewer): State<Viewer>) -> Json<Value> {
    Json(json!({"metrics": viewer.diagnostics.metrics()}))
}

/// `?trace_id=&limit=`
#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    trace_id: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/diagnostics/logs`: `{"logs": [...]}`, the latest, oldest first.
async fn logs(
    State(viewer): State<Viewer>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> Result<Json<Value>, ErrorResponse> {
    let trace_id = match query.trace_id.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            parse_trace_id(text)
                .ok_or_else(|| invalid_query("trace_id must be 32 hex digits, not all zero"))?,
        ),
    };
    let limit = limit(query.limit, 100)?;
    let logs: Vec<Value> = viewer.diagnostics.read(|window| {
        window
            .logs(trace_id.as_ref(), limit)
            .into_iter()
            .cloned()
            .collect()
    });
    Ok(Json(json!({"logs": logs})))
}

/// `GET /api/diagnostics/links`: the Jaeger and Grafana base URLs (null when unset).
async fn links_of(State(viewer): State<Viewer>) -> Json<Value> {
    Json(json!({"jaeger": viewer.links.jaeger, "grafana": viewer.links.grafana}))
}

fn limit(given: Option<usize>, default: usize) -> Result<usize, ErrorResponse> {
    match given {
        None => Ok(default),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(_) => Err(invalid_query(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        ))),
    }
}

fn invalid_query(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// `GET /ws/diagnostics`: `telemetry` every [`TELEMETRY_INTERVAL`], `trace` and `log` as they
/// arrive, `pong` for each `ping`.
async fn websocket(State(viewer): State<Viewer>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| live(socket, viewer.diagnostics))
}

async fn live(mut socket: WebSocket, diagnostics: Diagnostics) {
    let _open = diagnostics.websocket_opened();
    let mut arrivals = diagnostics.subscribe();
    let mut tick = tokio::time::interval(TELEMETRY_INTERVAL);
    loop {
        let outgoing: String = tokio::select! {
            _ = tick.tick() => diagnostics.telemetry().to_string(),
            arrival = arrivals.recv() => match arrival {
                Ok(text) => text.to_string(),
                // A client that fell behind skips what it missed; Apollo never waits for it.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match reply(&text) {
                    Some(answer) => answer.to_string(),
                    None => continue,
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(outgoing.into())));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
    }
}

/// The answer to a client's message: `pong` to `{"type": "ping"}`, an `error` to anything else.
fn reply(text: &str) -> Option<Value> {
    let message: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match message.get("type").and_then(Value::as_str) {
        Some("ping") => Some(json!({"type": "pong"})),
        Some("pong") => None,
        _ => Some(json!({
            "type": "error",
            "error": {"code": "invalid_message", "message": "send {\"type\": \"ping\"}; other messages are not understood"},
        })),
    }
}

/// Only this server's own script, style and WebSocket; nothing inline, nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /diagnostics` (and `?trace=<id>`): the page.
async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/diagnostics.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/diagnostics.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/diagnostics.css"),
    )
}
