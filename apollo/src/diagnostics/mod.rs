//! Apollo's diagnostics: a live window on the OpenTelemetry data of the whole system.
//!
//! The services export OTLP to `apollo serve` ([`receiver`]), Apollo's own telemetry arrives
//! in-process (it is the [`foundry::otlp::LocalSink`]), and both land in one bounded
//! [`window::Window`] and [`red::RedTable`]. Each arrival is also told to the WebSocket clients,
//! through a broadcast channel that drops a slow client's oldest messages instead of waiting.

pub mod receiver;
pub mod red;
pub mod window;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use foundry::otlp::proto::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry::{KeyValue, metrics::Counter};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use self::{
    red::RedTable,
    window::{StoredLog, StoredSpan, Window},
};

/// The default cap on spans (`APOLLO_DIAGNOSTICS_MAX_SPANS`).
pub const DEFAULT_MAX_SPANS: usize = 100_000;

/// Messages a WebSocket client may fall behind by before it skips the oldest.
const LIVE_BACKLOG: usize = 1024;

/// The most WebSockets open at once: each costs a task and a share of the live channel.
pub const MAX_WEBSOCKETS: usize = 64;

/// How long a `telemetry` message is reused: every WebSocket asks for one each interval, and
/// building it reads the whole RED table under the window's lock.
const TELEMETRY_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The LLM figures of the `telemetry` message, from Hermes' `hermes.llm` spans.
#[derive(Debug, Default)]
struct LlmStats {
    calls: u64,
    errors: u64,
    total_ms: f64,
    last_ms: Option<f64>,
    input_tokens: i64,
    output_tokens: i64,
}

#[derive(Debug)]
struct State {
    window: Window,
    red: RedTable,
    llm: LlmStats,
}

/// Apollo's own measurements of its window.
#[derive(Debug)]
struct Counters {
    received: Counter<u64>,
    refused: Counter<u64>,
    evicted: Counter<u64>,
}

/// The shared handle of the window, its table and its live channel.
#[derive(Clone, Debug)]
pub struct Diagnostics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<str>>,
    websockets: AtomicUsize,
    /// The last `telemetry` message, and when it was made.
    telemetry: Mutex<Option<(std::time::Instant, Arc<str>)>>,
    /// Made at first use: the global meter provider is set after the window exists.
    counters: std::sync::OnceLock<Counters>,
}

/// How many items of an export were stored and refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Stored.
    pub accepted: u64,
    /// Refused (a missing or all-zero trace or span id).
    pub refused: u64,
}

impl Diagnostics {
    /// An empty window of at most `max_spans` spans (and a tenth as many log records, at least
    /// 1 000).
    pub fn new(max_spans: usize) -> Self {
        Self(Arc::new(Inner {
            state: Mutex::new(State {
                window: Window::new(max_spans, (max_spans / 10).max(1000)),
                red: RedTable::default(),
                llm: LlmStats::default(),
            }),
            live: broadcast::channel(LIVE_BACKLOG).0,
            websockets: AtomicUsize::new(0),
            telemetry: Mutex::new(None),
            counters: std::sync::OnceLock::new(),
        }))
    }

    fn counters(&self) -> &Counters {
        self.0.counters.get_or_init(|| {
            let meter = opentelemetry::global::meter("apollo.diagnostics");
            Counters {
                received: meter
                    .u64_counter("apollo.diagnostics.received")
                    .with_description("Spans, log records and metric exports the window received")
                    .build(),
                refused: meter
                    .u64_counter("apollo.diagnostics.refused")
                    .with_description("Spans refused for a missing or all-zero trace or span id")
                    .build(),
                evicted: meter
                    .u64_counter("apollo.diagnostics.evicted")
                    .with_description(
                        "Spans and log records evicted to keep the window under its cap",
                    )
                    .build(),
            }
        })
    }

    /// Runs `read` on the window.
    pub fn read<T>(&self, read: impl FnOnce(&Window) -> T) -> T {
        read(&self.0.state.lock().window)
    }

    /// The RED table's rows.
    pub fn metrics(&self) -> Vec<Value> {
        self.0.state.lock().red.rows()
    }

    /// A new subscriber to the live messages (JSON text).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.0.live.subscribe()
    }

    /// Counts an open WebSocket until the returned guard is dropped; `None` when
    /// [`MAX_WEBSOCKETS`] are open.
    pub fn websocket_opened(&self) -> Option<WebSocketGuard> {
        self.0
            .websockets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < MAX_WEBSOCKETS).then_some(open + 1)
            })
            .ok()
            .map(|_| WebSocketGuard(self.clone()))
    }

    /// The `telemetry` message as text, made at most once a second however many
    /// viewers ask.
    pub fn telemetry_text(&self) -> Arc<str> {
        let mut cached = self.0.telemetry.lock();
        if let Some((made, text)) = &*cached
            && made.elapsed() < TELEMETRY_REUSE
        {
            return Arc::clone(text);
        }
        let text: Arc<str> = Arc::from(self.telemetry().to_string());
        *cached = Some((std::time::Instant::now(), Arc::clone(&text)));
        text
    }

    /// Stores the spans of one export; tells the live clients which traces grew.
    pub fn ingest_traces(&self, request: ExportTraceServiceRequest) -> Accepted {
        let mut spans = Vec::new();
        let mut refused = 0;
        for resource_spans in request.resource_spans {
            let service: Arc<str> = Arc::from(red::service_name(resource_spans.resource.as_ref()));
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                match StoredSpan::from_otlp(&service, span) {
                    Some(stored) => spans.push(stored),
                    None => refused += 1,
                }
            }
        }
        // A summary per trace that grew, only for live viewers: under the lock, it is the
        // costliest part of an ingest after the insert itself.
        let live = self.0.live.receiver_count() > 0;
        let (ingested, summaries) = {
            let mut state = self.0.state.lock();
            for (_, span) in &spans {
                if span.name() == "hermes.llm" {
                    state.llm.add(span);
                }
            }
            let ingested = state.window.insert_spans(spans);
            let summaries = if live {
                state.window.summaries(&ingested.traces)
            } else {
                Vec::new()
            };
            (ingested, summaries)
        };
        let counters = self.counters();
        counters.received.add(
            ingested.accepted + refused,
            &[KeyValue::new("signal", "spans")],
        );
        if refused > 0 {
            counters.refused.add(refused, &[]);
        }
        if ingested.evicted > 0 {
            counters
                .evicted
                .add(ingested.evicted, &[KeyValue::new("signal", "spans")]);
        }
        for trace in &summaries {
            self.publish(&json!({"type": "trace", "trace": trace}));
        }
        Accepted {
            accepted: ingested.accepted,
            refused,
        }
    }

    /// Stores the log records of one export and sends each to the live clients.
    pub fn ingest_logs(&self, request: ExportLogsServiceRequest) -> Accepted {
        let mut logs = Vec::new();
        for resource_logs in request.resource_logs {
            let service: Arc<str> = Arc::from(red::service_name(resource_logs.resource.as_ref()));
            for record in resource_logs
                .scope_logs
                .into_iter()
                .flat_map(|scope| scope.log_records)
            {
                logs.push(StoredLog::from_otlp(&service, record));
            }
        }
        let count = logs.len() as u64;
        if self.0.live.receiver_count() > 0 {
            for log in &logs {
                self.publish(&json!({"type": "log", "log": log.json()}));
            }
        }
        let dropped = self.0.state.lock().window.insert_logs(logs);
        let counters = self.counters();
        counters
            .received
            .add(count, &[KeyValue::new("signal", "logs")]);
        if dropped > 0 {
            counters
                .evicted
                .add(dropped, &[KeyValue::new("signal", "logs")]);
        }
        Accepted {
            accepted: count,
            refused: 0,
        }
    }

    /// Takes in the server duration histograms of one metrics export.
    pub fn ingest_metrics(&self, request: &ExportMetricsServiceRequest) {
        self.0.state.lock().red.ingest(request);
        self.counters()
            .received
            .add(1, &[KeyValue::new("signal", "metrics")]);
    }

    /// The `telemetry` message: the RED table, open WebSockets, the LLM figures and the window's
    /// size.
    pub fn telemetry(&self) -> Value {
        let state = self.0.state.lock();
        let llm = &state.llm;
        json!({
            "type": "telemetry",
            "time": window::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)),
            ),
            "metrics": state.red.rows(),
            "websockets": self.0.websockets.load(Ordering::Relaxed),
            "llm": {
                "calls": llm.calls,
                "errors": llm.errors,
                "mean_latency_ms": (llm.calls > 0).then(|| llm.total_ms / llm.calls as f64),
                "last_latency_ms": llm.last_ms,
                "input_tokens": llm.input_tokens,
                "output_tokens": llm.output_tokens,
            },
            "window": {
                "spans": state.window.span_count(),
                "traces": state.window.trace_count(),
                "logs": state.window.log_count(),
                "max_spans": state.window.max_spans(),
                "bytes": state.window.bytes(),
            },
        })
    }

    fn publish(&self, message: &Value) {
        // Serialised once for every client; an error only means nobody listens.
        let _ = self.0.live.send(Arc::from(message.to_string()));
    }
}

impl LlmStats {
    fn add(&mut self, span: &StoredSpan) {
        let ms = span.duration().as_secs_f64() * 1000.0;
        self.calls += 1;
        self.total_ms += ms;
        self.last_ms = Some(ms);
        if span.is_error() {
            self.errors += 1;
        }
        let tokens = |key| span.attribute(key).and_then(Value::as_i64).unwrap_or(0);
        self.input_tokens = self
            .input_tokens
            .saturating_add(tokens("gen_ai.usage.input_tokens"));
        self.output_tokens = self
            .output_tokens
            .saturating_add(tokens("gen_ai.usage.output_tokens"));
    }
}

impl foundry::otlp::LocalSink for Diagnostics {
    fn traces(&self, request: ExportTraceServiceRequest) {
        self.ingest_traces(request);
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        self.ingest_metrics(&request);
    }

    fn logs(&self, request: ExportLogsServiceRequest) {
        self.ingest_logs(request);
    }
}

/// Counts one open WebSocket while it lives.
#[derive(Debug)]
pub struct WebSocketGuard(Diagnostics);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}
