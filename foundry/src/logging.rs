//! Log output on stderr: human text, or JSON lines that carry `trace_id` and `span_id`.
//!
//! The event formatter is written here because `tracing-subscriber`'s own formatters cannot
//! reach the OpenTelemetry ids of the current span. Log lines are events only: spans are not
//! formatted for the log (that would format every span's fields on the request path), they go
//! to OpenTelemetry instead.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::trace::TraceContextExt;
use tracing::{
    Event, Subscriber, callsite::Identifier, field::Field, level_filters::LevelFilter,
    subscriber::Interest,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{DynFilterFn, FilterExt},
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::{Context, Filter},
    registry::LookupSpan,
};

use crate::config::LogFormat;

/// The SDK's own warnings (an unreachable collector, a full queue) repeat for every batch: each
/// call site may log once in this interval.
const TELEMETRY_WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// The target of the `tracing` span the server layer opens around each request for span-scoped
/// `RUST_LOG` directives; OpenTelemetry ignores it (the request's span is an SDK span).
pub(crate) const REQUEST_LOG_SPAN_TARGET: &str = "foundry::http::request";

/// Whether `RUST_LOG` has span-scoped directives, which need a `tracing` span per request.
static REQUEST_LOG_SPANS: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_request_log_spans(on: bool) {
    REQUEST_LOG_SPANS.store(on, Ordering::Relaxed);
}

/// Whether the server layer opens a `tracing` span per request for span-scoped directives.
pub(crate) fn request_log_spans() -> bool {
    REQUEST_LOG_SPANS.load(Ordering::Relaxed)
}

/// The export errors held back since [`hold_export_errors`]: how many, and the first in words
/// (the first ERROR, else the first WARN). `None`: they are logged as they happen (a service's
/// way).
static HELD_EXPORT_ERRORS: Mutex<Option<HeldExportErrors>> = Mutex::new(None);

/// Whether export errors are held back: a cheap check for the output's filter.
static HOLDING_EXPORT_ERRORS: AtomicBool = AtomicBool::new(false);

/// The export errors one shutdown says in one line.
#[derive(Default)]
pub(crate) struct HeldExportErrors {
    /// How many were held.
    pub(crate) count: u64,
    /// The first ERROR (else the first WARN), in words.
    pub(crate) first: String,
    /// Whether any was an ERROR.
    pub(crate) error: bool,
}

/// From now on, export errors are counted and the first kept instead of logged, until
/// [`take_held_export_errors`] (a one-shot command's log: see `TelemetryConfig::one_shot`).
pub(crate) fn hold_export_errors() {
    let mut held = HELD_EXPORT_ERRORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *held = Some(HeldExportErrors::default());
    HOLDING_EXPORT_ERRORS.store(true, Ordering::Relaxed);
}

/// The export errors held back, if any, and an end to holding them.
pub(crate) fn take_held_export_errors() -> Option<HeldExportErrors> {
    let mut held = HELD_EXPORT_ERRORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    HOLDING_EXPORT_ERRORS.store(false, Ordering::Relaxed);
    held.take().filter(|held| held.count > 0)
}

/// A warning or error of an export: the SDK's and opentelemetry-otlp's (an event name about an
/// export or a partial success) but those foundry says in their place, and every one of
/// foundry's span export and export reports.
fn is_export_error(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() <= tracing::Level::WARN
        && ((metadata.target().starts_with("opentelemetry")
            && (metadata.name().contains("Export") || metadata.name().contains("PartialSuccess"))
            && !is_replaced(metadata))
            || metadata.target() == "foundry::span_export"
            || metadata.target() == crate::export_report::TARGET)
}

/// An SDK line about a failed export that [`crate::export_report`] says in its place.
fn is_replaced(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("opentelemetry")
        && crate::export_report::REPLACED.contains(&metadata.name())
}

/// The layer that keeps the export errors [`hold_export_errors`] holds back.
pub(crate) struct HoldExportErrors;

impl<S: Subscriber> Layer<S> for HoldExportErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !HOLDING_EXPORT_ERRORS.load(Ordering::Relaxed) || !is_export_error(event.metadata()) {
            return;
        }
        // In words before the lock is taken: a field's formatting must not run under it.
        let mut fields = Fields::default();
        event.record(&mut fields);
        let fields_lost = fields
            .values
            .get("exports_lost")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let name = fields.values.remove("name");
        let mut text = match name {
            Some(name) if fields.message.is_empty() => name.as_str().unwrap_or_default().to_owned(),
            _ => fields.message,
        };
        for (key, value) in &fields.values {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let space = if text.is_empty() { "" } else { " " };
            let _ = write!(text, "{space}{key}={value}");
        }
        let is_error = *event.metadata().level() == tracing::Level::ERROR;
        let mut held = HELD_EXPORT_ERRORS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(held) = held.as_mut() else {
            return;
        };
        // A report counts the exports it says were lost (its last line may add none); any
        // other line is one error.
        held.count += if event.metadata().target() == crate::export_report::TARGET {
            fields_lost
        } else {
            1
        };
        if held.first.is_empty() || (is_error && !held.error) {
            held.first = text;
            held.error = is_error;
        }
    }
}

/// The stderr log layer: `filter` (from `RUST_LOG`) decides which events print.
pub(crate) fn layer<S>(
    format: LogFormat,
    filter: EnvFilter,
    span_scoped: bool,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    // The rate limit must be asked per event: a plain `filter_fn` caches its first answer for
    // the call site, so it is a dynamic one that never lets its interest be cached.
    // Its level hint says it limits no level: without one, the combined filter would have no
    // hint either, and every DEBUG and TRACE call site would be enabled for nothing.
    let rate_limit = DynFilterFn::new(|metadata, _| rate_limit_telemetry_warnings(metadata))
        .with_callsite_filter(|_| tracing::subscriber::Interest::sometimes())
        .with_max_level_hint(LevelFilter::TRACE);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Formatter { format });
    if span_scoped {
        // `RUST_LOG` directives scoped to spans (`[plan]=debug`) need the filter to see the
        // spans enter and exit: the per-layer filter does that, for a registry lookup per span
        // event, and formats the fields of the spans the directives name.
        output.with_filter(filter.and(rate_limit)).boxed()
    } else {
        EventsOnly::new(output, filter.and(rate_limit)).boxed()
    }
}

/// A layer that takes events alone, behind a filter of its own, at no cost per span.
///
/// `Layer::with_filter` does the same for events, but tracing-subscriber consults every
/// per-layer filter on every span's creation, entry, exit, record and close (a registry lookup
/// each), for layers that never look at spans; on the request path that is several lookups per
/// poll of every instrumented future. This wrapper leaves spans alone and filters in
/// `on_event`. It never disables anything for the other layers: an event it does not want is
/// `sometimes`, not `never`, so another layer may still take it.
pub(crate) struct EventsOnly<L, F> {
    layer: L,
    filter: F,
}

impl<L, F> EventsOnly<L, F> {
    pub(crate) fn new(layer: L, filter: F) -> Self {
        Self { layer, filter }
    }
}

impl<S, L, F> Layer<S> for EventsOnly<L, F>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    L: Layer<S>,
    F: Filter<S> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.layer.on_register_dispatch(subscriber);
    }

    fn register_callsite(&self, metadata: &'static tracing::Metadata<'static>) -> Interest {
        if metadata.is_span() {
            // Spans are not this layer's to judge.
            return Interest::always();
        }
        // An event this layer does not want may be another's: never `never`.
        if self.filter.callsite_enabled(metadata).is_never() {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, _metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.filter.max_level_hint()
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.filter.enabled(event.metadata(), &ctx) && self.filter.event_enabled(event, &ctx) {
            self.layer.on_event(event, ctx);
        }
    }
}

fn rate_limit_telemetry_warnings(metadata: &tracing::Metadata<'_>) -> bool {
    static LAST_SEEN: Mutex<Option<HashMap<Identifier, Instant>>> = Mutex::new(None);
    if HOLDING_EXPORT_ERRORS.load(Ordering::Relaxed) && is_export_error(metadata) {
        return false;
    }
    if !metadata.target().starts_with("opentelemetry") {
        return true;
    }
    if is_replaced(metadata) {
        return false;
    }
    // The SDK's own INFO lines ("global tracer provider is set") are telemetry about telemetry.
    if *metadata.level() > tracing::Level::WARN {
        return false;
    }
    let now = Instant::now();
    let mut last_seen = LAST_SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    let last_seen = last_seen.get_or_insert_with(HashMap::new);
    match last_seen.get(&metadata.callsite()) {
        Some(at) if now.duration_since(*at) < TELEMETRY_WARNING_INTERVAL => false,
        _ => {
            last_seen.insert(metadata.callsite(), now);
            true
        }
    }
}

struct Formatter {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        crate::panics::written(metadata);
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now());
        let mut fields = Fields::default();
        event.record(&mut fields);
        // OpenTelemetry's internal events carry their text in `name`, not in a message.
        if fields.message.is_empty()
            && let Some(serde_json::Value::String(name)) = fields.values.remove("name")
        {
            fields.message = name;
        }
        let ids = current_trace_ids();
        match self.format {
            LogFormat::Json => {
                let mut line = serde_json::Map::new();
                line.insert("timestamp".into(), timestamp.to_string().into());
                line.insert("level".into(), metadata.level().as_str().into());
                line.insert("target".into(), metadata.target().into());
                line.insert("message".into(), fields.message.into());
                if !fields.values.is_empty() {
                    line.insert("fields".into(), fields.values.into());
                }
                if let Some((trace_id, span_id)) = ids {
                    line.insert("trace_id".into(), trace_id.into());
                    line.insert("span_id".into(), span_id.into());
                }
                writeln!(writer, "{}", serde_json::Value::Object(line))
            }
            LogFormat::Text => {
                write!(
                    writer,
                    "{timestamp} {:>5} {}: {}",
                    metadata.level(),
                    metadata.target(),
                    fields.message
                )?;
                for (key, value) in &fields.values {
                    match value {
                        serde_json::Value::String(text) => write!(writer, " {key}={text}")?,
                        other => write!(writer, " {key}={other}")?,
                    }
                }
                if let Some((trace_id, _)) = ids {
                    write!(writer, " trace_id={trace_id}")?;
                }
                writeln!(writer)
            }
        }
    }
}

/// The OpenTelemetry ids of the span the event happened in, if it has a valid context (see
/// [`crate::context::current_context`]).
fn current_trace_ids() -> Option<(String, String)> {
    let context = crate::context::current_context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[derive(Default)]
struct Fields {
    message: String,
    values: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_value(field, text.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_value(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_value(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_value(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_value(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_value(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_value(field, value.to_string().into());
    }
}

impl Fields {
    fn record_value(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.values.insert(field.name().to_owned(), value);
        }
    }
}

/// Runs a layer's `on_event` with the OpenTelemetry context of the event's span active, so the
/// OTLP log bridge (which reads the active context) stamps log records with their trace and span
/// ids, without activating contexts on every span entry for everyone else. Written here because
/// opentelemetry-appender-tracing (0.33) reads only the active context.
pub(crate) struct WithSpanContext<L> {
    inner: L,
}

impl<L> WithSpanContext<L> {
    pub(crate) fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<S, L> Layer<S> for WithSpanContext<L>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    L: Layer<S>,
{
    fn on_event(&self, event: &Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        // Outside `tracing` spans (or in one OpenTelemetry does not see) the active context is
        // already the right one: the server span's.
        let span = tracing::Span::current();
        let context = (!span.is_none())
            .then(|| span.context())
            .filter(|context| context.span().span_context().is_valid());
        let _active = context.map(opentelemetry::Context::attach);
        self.inner.on_event(event, ctx);
    }
}
