//! The diagnostics API, its WebSocket and its page: what the window holds, for people and tools.
//!
//! These routes are not traced: watching the window must not fill it with the watcher's own
//! requests (a page polling every few seconds would push the system's traces out).

use std::time::Duration;

use axum::{
    Json,
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use foundry::{
    http::{ErrorResponse, PathParam, QueryParams},
    openapi::{ErrorBody, PathErrors, QueryErrors},
};
use http::{StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::diagnostics::{
    Diagnostics, MAX_WEBSOCKETS, WebSocketGuard,
    window::{TraceFilter, TraceSummary, parse_trace_id},
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

/// The API, the WebSocket and the page, over `diagnostics`, with their documentation.
pub fn router(diagnostics: Diagnostics, links: Links) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(traces))
        .routes(routes!(trace))
        .routes(routes!(metrics))
        .routes(routes!(logs))
        .routes(routes!(links_of))
        .routes(routes!(websocket))
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
        .routes(routes!(favicon))
        .with_state(Viewer { diagnostics, links })
}

/// `?service=&name=&error=&min_duration_ms=&limit=`
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TracesQuery {
    /// Only traces with a span of this service.
    service: Option<String>,
    /// Only traces with a span of this name.
    name: Option<String>,
    /// Only traces with (`true`) or without (`false`) an error.
    error: Option<bool>,
    /// Only traces that lasted at least this long.
    #[param(minimum = 0)]
    min_duration_ms: Option<f64>,
    /// At most this many, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The answer of `GET /api/diagnostics/traces`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TracesAnswer {
    /// Newest first.
    pub traces: Vec<TraceSummary>,
}

/// The answer of `GET /api/diagnostics/traces/{trace_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceAnswer {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Its spans in start order (the README gives their shape).
    #[schema(value_type = Vec<Object>)]
    pub spans: Vec<Value>,
}

/// The answer of `GET /api/diagnostics/metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsAnswer {
    /// A row per service and route (the README gives its shape).
    #[schema(value_type = Vec<Object>)]
    pub metrics: Vec<Value>,
}

/// The answer of `GET /api/diagnostics/logs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsAnswer {
    /// The latest log records, oldest first (the README gives their shape).
    #[schema(value_type = Vec<Object>)]
    pub logs: Vec<Value>,
}

/// The answer of `GET /api/diagnostics/links`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinksAnswer {
    /// Jaeger's base URL, or null.
    pub jaeger: Option<String>,
    /// Grafana's base URL, or null.
    pub grafana: Option<String>,
}

/// `GET /api/diagnostics/traces`: `{"traces": [...]}`, newest first.
#[utoipa::path(
    get,
    path = "/api/diagnostics/traces",
    tag = "diagnostics",
    params(TracesQuery),
    responses(
        (status = 200, description = "The traces in the window that match", body = TracesAnswer),
        QueryErrors,
    )
)]
async fn traces(
    State(viewer): State<Viewer>,
    QueryParams(query): QueryParams<TracesQuery>,
) -> Result<Json<TracesAnswer>, ErrorResponse> {
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
    Ok(Json(TracesAnswer { traces }))
}

/// `GET /api/diagnostics/traces/{trace_id}`: `{"trace_id", "spans": [...]}` in start order.
#[utoipa::path(
    get,
    path = "/api/diagnostics/traces/{trace_id}",
    tag = "diagnostics",
    params(("trace_id" = String, Path, pattern = "^[0-9a-fA-F]{32}$", description = "32 hex digits, not all zero")),
    responses(
        (status = 200, description = "The trace's spans", body = TraceAnswer),
        PathErrors,
        (status = 400, description = "`invalid_trace_id`: not 32 hex digits, or all zero", body = ErrorBody),
        (status = 404, description = "`not_found`: the trace is not in the window", body = ErrorBody),
    )
)]
async fn trace(
    State(viewer): State<Viewer>,
    PathParam(trace_id): PathParam<String>,
) -> Result<Json<TraceAnswer>, ErrorResponse> {
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
    Ok(Json(TraceAnswer {
        trace_id: trace_id.to_ascii_lowercase(),
        spans,
    }))
}

/// `GET /api/diagnostics/metrics`: `{"metrics": [...]}`, a row per service and route.
#[utoipa::path(
    get,
    path = "/api/diagnostics/metrics",
    tag = "diagnostics",
    responses((status = 200, description = "Rate, error rate and latency per service and route", body = MetricsAnswer))
)]
async fn metrics(State(viewer): State<Viewer>) -> Json<MetricsAnswer> {
    Json(MetricsAnswer {
        metrics: viewer.diagnostics.metrics(),
    })
}

/// `?trace_id=&limit=`
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Only the log records of this trace (32 hex digits, not all zero).
    #[param(pattern = "^([0-9a-fA-F]{32})?$")]
    trace_id: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /api/diagnostics/logs`: `{"logs": [...]}`, the latest, oldest first.
#[utoipa::path(
    get,
    path = "/api/diagnostics/logs",
    tag = "diagnostics",
    params(LogsQuery),
    responses(
        (status = 200, description = "The latest log records, oldest first", body = LogsAnswer),
        QueryErrors,
    )
)]
async fn logs(
    State(viewer): State<Viewer>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> Result<Json<LogsAnswer>, ErrorResponse> {
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
    Ok(Json(LogsAnswer { logs }))
}

/// `GET /api/diagnostics/links`: the Jaeger and Grafana base URLs (null when unset).
#[utoipa::path(
    get,
    path = "/api/diagnostics/links",
    tag = "diagnostics",
    responses((status = 200, description = "Where else a trace can be seen", body = LinksAnswer))
)]
async fn links_of(State(viewer): State<Viewer>) -> Json<LinksAnswer> {
    Json(LinksAnswer {
        jaeger: viewer.links.jaeger,
        grafana: viewer.links.grafana,
    })
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
/// arrive, `pong` for each `ping`. A request that is not a WebSocket upgrade gets the JSON error
/// shape (axum's own rejection is plain text).
#[utoipa::path(
    get,
    path = "/ws/diagnostics",
    tag = "diagnostics",
    responses(
        (status = 101, description = "The WebSocket: JSON messages of type `telemetry`, `trace`, `log`, `pong` and `error` (the README gives their shapes)"),
        (status = 400, description = "`websocket_upgrade_required`: the request is not a WebSocket upgrade", body = ErrorBody),
        (status = 426, description = "`websocket_upgrade_required`: the connection cannot be upgraded", body = ErrorBody),
        (status = 503, description = "`too_many_viewers`: as many WebSockets as Apollo serves at once are open", body = ErrorBody),
    )
)]
async fn websocket(
    State(viewer): State<Viewer>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(open) = viewer.diagnostics.websocket_opened() else {
        return ErrorResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("{MAX_WEBSOCKETS} WebSockets are open, as many as Apollo serves at once"),
        )
        .into_response();
    };
    match upgrade {
        // A client's messages are pings: a frame, like a message, is small.
        Ok(upgrade) => upgrade
            .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
            .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
            .on_upgrade(move |socket| live(socket, viewer.diagnostics, open)),
        Err(rejection) => ErrorResponse::new(
            rejection.status(),
            "websocket_upgrade_required",
            format!("/ws/diagnostics is a WebSocket: {}", rejection.body_text()),
        )
        .into_response(),
    }
}

/// The largest message or frame a viewer may send.
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

async fn live(mut socket: WebSocket, diagnostics: Diagnostics, _open: WebSocketGuard) {
    let mut arrivals = diagnostics.subscribe();
    let mut tick = tokio::time::interval(TELEMETRY_INTERVAL);
    loop {
        let outgoing: String = tokio::select! {
            _ = tick.tick() => diagnostics.telemetry_text().to_string(),
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
                Some(Err(error)) => return close_after(socket, error).await,
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(outgoing.into())));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Ends a socket whose client broke the protocol with the close code that says how (1009 for a
/// message over the limit, 1007 for text that is not UTF-8, 1002 for anything else the protocol
/// forbids), so the client learns why instead of seeing the connection drop. A connection that
/// failed (reset, closed) gets nothing more.
async fn close_after(mut socket: WebSocket, error: axum::Error) {
    let (code, reason) = match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => (
            close_code::SIZE,
            format!("a message may be at most {MAX_CLIENT_MESSAGE_BYTES} bytes"),
        ),
        Some(tungstenite::Error::Utf8(_)) => (
            close_code::INVALID,
            "a text message must be UTF-8".to_owned(),
        ),
        // A client that hung up without a close frame: nothing can reach it.
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => return,
        Some(tungstenite::Error::Protocol(_)) => (
            close_code::PROTOCOL,
            "not a valid WebSocket frame".to_owned(),
        ),
        _ => return,
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    // Briefly: a client that does not read must not hold one of the viewers' places.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close)).await;
}

/// How long the close frame to a client that broke the protocol may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
#[utoipa::path(
    get,
    path = "/diagnostics",
    tag = "diagnostics",
    params(("trace" = Option<String>, Query, description = "A trace to open, read by the page's script")),
    responses((status = 200, description = "The diagnostics page", content_type = "text/html", body = String))
)]
async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/diagnostics.html"),
    )
}

/// The page's script.
#[utoipa::path(
    get,
    path = "/diagnostics/app.js",
    tag = "diagnostics",
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String))
)]
async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/diagnostics.js"),
    )
}

/// The page's style.
#[utoipa::path(
    get,
    path = "/diagnostics/app.css",
    tag = "diagnostics",
    responses((status = 200, description = "The page's style", content_type = "text/css", body = String))
)]
async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/diagnostics.css"),
    )
}

/// Browsers ask for it with every page; unanswered, it would be a traced 404 each time.
#[utoipa::path(
    get,
    path = "/favicon.ico",
    tag = "diagnostics",
    responses((status = 204, description = "No icon"))
)]
async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}
