//! The window: the most recent traces, with their spans and events, and the most recent log
//! records, held in memory under a cap on spans; the oldest traces go first.
//!
//! Spans arrive as OTLP (from the receiver, or from Apollo itself in-process) and are kept in a
//! compact form: ids as bytes, attribute values as JSON values of their OTLP type (an integer
//! stays a number). Every value a span can carry is bounded ([`MAX_VALUE_BYTES`],
//! [`MAX_ATTRIBUTES`], [`MAX_EVENTS`]), and the window counts the bytes it holds as well as the
//! spans: past [`BYTES_PER_SPAN`] times the cap on spans, the oldest traces go too, so a flood of
//! large spans cannot take more memory than the same number of ordinary ones may.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use foundry::otlp::proto::{
    common::v1::{AnyValue, KeyValue, any_value},
    logs::v1::LogRecord,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value, json};

/// The longest string value kept, in bytes; a longer one is cut and ends with `…`.
pub const MAX_VALUE_BYTES: usize = 4096;
/// The most attributes kept per span, event or log record.
pub const MAX_ATTRIBUTES: usize = 128;
/// The most events kept per span.
pub const MAX_EVENTS: usize = 128;
/// The most a span's or a log record's values (its attributes, its events' attributes, a record's
/// body) may take together, in bytes as the window counts them: each value is bounded above, but a
/// nested one may hold thousands of others. What does not fit is left out.
pub const MAX_RECORD_VALUE_BYTES: usize = 64 * 1024;
/// The memory budget of the window per span (and per log record) of its cap, in bytes.
pub const BYTES_PER_SPAN: usize = 2048;
/// What a stored span or log record takes besides its strings: the struct, the map, the ids.
const RECORD_OVERHEAD: usize = 256;

/// A trace id: 16 bytes.
pub type TraceId = [u8; 16];
/// A span id: 8 bytes.
pub type SpanId = [u8; 8];

/// One span as the window keeps it.
#[derive(Debug)]
pub struct StoredSpan {
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    name: String,
    service: Arc<str>,
    kind: &'static str,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    error: bool,
    status: (&'static str, String),
    attributes: Map<String, Value>,
    events: Vec<Value>,
    /// About what it takes in memory.
    bytes: usize,
}

impl StoredSpan {
    /// Converts an OTLP span of `service`; `None` (refused) when its trace or span id is missing,
    /// the wrong length or all zero, as the OTLP specification asks.
    pub fn from_otlp(service: &Arc<str>, span: Span) -> Option<(TraceId, Self)> {
        let trace_id = valid_id::<16>(&span.trace_id)?;
        let span_id = valid_id::<8>(&span.span_id)?;
        let kind = match span.kind() {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal | SpanKind::Unspecified => "internal",
        };
        let (code, message) = match &span.status {
            Some(status) => (
                match status.code() {
                    StatusCode::Error => "error",
                    StatusCode::Ok => "ok",
                    StatusCode::Unset => "unset",
                },
                truncated(status.message.clone()),
            ),
            None => ("unset", String::new()),
        };
        let mut budget = Budget(MAX_RECORD_VALUE_BYTES);
        let attributes = attributes(&span.attributes, &mut budget);
        let events: Vec<Value> = span
            .events
            .into_iter()
            .take(MAX_EVENTS)
            .map(|event| {
                json!({
                    "name": truncated(event.name),
                    "time_unix_nano": event.time_unix_nano,
                    "attributes": self::attributes(&event.attributes, &mut budget),
                })
            })
            .collect();
        let name = truncated(span.name);
        let bytes = RECORD_OVERHEAD
            + name.len()
            + service.len()
            + message.len()
            + events.iter().map(json_bytes).sum::<usize>()
            + attributes
                .iter()
                .map(|(key, value)| key.len() + json_bytes(value))
                .sum::<usize>();
        Some((
            trace_id,
            Self {
                span_id,
                parent_span_id: valid_id::<8>(&span.parent_span_id),
                name,
                service: Arc::clone(service),
                kind,
                start_time_unix_nano: span.start_time_unix_nano,
                end_time_unix_nano: span.end_time_unix_nano.max(span.start_time_unix_nano),
                error: code == "error",
                status: (code, message),
                attributes,
                events,
                bytes,
            },
        ))
    }

    /// The span's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `service.name` of the resource that sent it.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether its status is ERROR.
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// How long it took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_time_unix_nano - self.start_time_unix_nano)
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// The span as the API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "span_id": hex(&self.span_id),
            "parent_span_id": self.parent_span_id.as_ref().map(|id| hex(id)),
            "name": self.name,
            "service": &*self.service,
            "kind": self.kind,
            "start_time_unix_nano": self.start_time_unix_nano,
            "end_time_unix_nano": self.end_time_unix_nano,
            "status": {"code": self.status.0, "message": self.status.1},
            "attributes": self.attributes,
            "events": self.events,
        })
    }
}

/// One log record as the window keeps it.
#[derive(Debug)]
pub struct StoredLog {
    trace_id: Option<TraceId>,
    json: Value,
    bytes: usize,
}

impl StoredLog {
    /// Converts an OTLP log record of `service`.
    pub fn from_otlp(service: &Arc<str>, record: LogRecord) -> Self {
        let trace_id = valid_id::<16>(&record.trace_id);
        let span_id = valid_id::<8>(&record.span_id);
        let time = if record.time_unix_nano == 0 {
            record.observed_time_unix_nano
        } else {
            record.time_unix_nano
        };
        let mut budget = Budget(MAX_RECORD_VALUE_BYTES);
        let body = record
            .body
            .as_ref()
            .map_or(Value::Null, |body| value(body, &mut budget));
        let json = json!({
            "time_unix_nano": time,
            "service": &**service,
            "severity": truncated(record.severity_text),
            "severity_number": record.severity_number,
            "body": body,
            "trace_id": trace_id.as_ref().map(|id| hex(id)),
            "span_id": span_id.as_ref().map(|id| hex(id)),
            "attributes": attributes(&record.attributes, &mut budget),
        });
        let bytes = RECORD_OVERHEAD + json_bytes(&json);
        Self {
            trace_id,
            json,
            bytes,
        }
    }

    /// The record as the API shows it.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// What a trace in the list shows.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root span's name (the earliest span's, while the root has not arrived).
    pub root_name: String,
    /// The root span's service.
    pub root_service: String,
    /// Every service with a span in it, sorted.
    pub services: Vec<String>,
    /// How many spans it has.
    pub span_count: usize,
    /// From its earliest start to its latest end.
    pub duration_ms: f64,
    /// Whether a span has status ERROR.
    pub error: bool,
    /// When it started (RFC 3339).
    pub start_time: String,
}

/// Which traces the list shows.
#[derive(Clone, Debug, Default)]
pub struct TraceFilter {
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces with a span of this name.
    pub name: Option<String>,
    /// Only traces with (`true`) or without (`false`) an error.
    pub error: Option<bool>,
    /// Only traces at least this long.
    pub min_duration_ms: Option<f64>,
    /// At most this many, newest first.
    pub limit: usize,
}

#[derive(Debug)]
struct Trace {
    /// When it entered the window, for eviction in arrival order.
    arrival: u64,
    spans: Vec<StoredSpan>,
    index: FxHashMap<SpanId, usize>,
    bytes: usize,
    start: u64,
    end: u64,
    error: bool,
    root: Option<usize>,
    /// A span was replaced since the fields above were derived (see [`Trace::recompute`]).
    stale: bool,
}

impl Trace {
    fn new(arrival: u64) -> Self {
        Self {
            arrival,
            spans: Vec::new(),
            index: FxHashMap::default(),
            bytes: 0,
            start: u64::MAX,
            end: 0,
            error: false,
            root: None,
            stale: false,
        }
    }

    /// Adds `span`, or replaces the one of the same id (a span received twice, directly and
    /// through a collector, is kept once). Returns the change in the span count.
    fn insert(&mut self, span: StoredSpan) -> isize {
        if let Some(&position) = self.index.get(&span.span_id) {
            // A resent span: what the replaced copy said may no longer hold, which the batch's
            // end derives again, once however many copies it held.
            self.spans[position] = span;
            self.stale = true;
            return 0;
        }
        self.bytes += span.bytes;
        self.start = self.start.min(span.start_time_unix_nano);
        self.end = self.end.max(span.end_time_unix_nano);
        self.error |= span.error;
        if span.parent_span_id.is_none() {
            self.root = Some(self.spans.len());
        }
        self.index.insert(span.span_id, self.spans.len());
        self.spans.push(span);
        1
    }

    /// Derives the index, size, extent, error and root again from the spans held.
    fn recompute(&mut self) {
        let mut fresh = Self::new(self.arrival);
        for span in std::mem::take(&mut self.spans) {
            fresh.insert(span);
        }
        *self = fresh;
    }

    fn summary(&self, trace_id: &TraceId) -> TraceSummary {
        let root = self
            .root
            .and_then(|position| self.spans.get(position))
            .or_else(|| {
                self.spans
                    .iter()
                    .min_by_key(|span| span.start_time_unix_nano)
            });
        let mut services: Vec<String> = Vec::new();
        for span in &self.spans {
            if !services.iter().any(|known| **known == *span.service) {
                services.push(span.service.to_string());
            }
        }
        services.sort_unstable();
        TraceSummary {
            trace_id: hex(trace_id),
            root_name: root.map(|span| span.name.clone()).unwrap_or_default(),
            root_service: root
                .map(|span| span.service.to_string())
                .unwrap_or_default(),
            services,
            span_count: self.spans.len(),
            duration_ms: self.duration_ms(),
            error: self.error,
            start_time: rfc3339(self.start),
        }
    }

    fn duration_ms(&self) -> f64 {
        self.end.saturating_sub(self.start) as f64 / 1e6
    }

    fn matches(&self, filter: &TraceFilter) -> bool {
        filter.error.is_none_or(|error| error == self.error)
            && filter
                .min_duration_ms
                .is_none_or(|min| self.duration_ms() >= min)
            && filter
                .service
                .as_deref()
                .is_none_or(|service| self.spans.iter().any(|span| &*span.service == service))
            && filter
                .name
                .as_deref()
                .is_none_or(|name| self.spans.iter().any(|span| span.name == name))
    }
}

/// What one ingest did, for the window's counters and for the live messages.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The traces that were received or grew, in order of arrival; [`Window::summaries`] says
    /// what they are now, when a live viewer is there to be told.
    pub traces: Vec<TraceId>,
    /// Spans stored.
    pub accepted: u64,
    /// Spans evicted to stay under the cap.
    pub evicted: u64,
}

/// The bounded window of recent traces and log records.
#[derive(Debug)]
pub struct Window {
    max_spans: usize,
    max_logs: usize,
    max_bytes: usize,
    traces: FxHashMap<TraceId, Trace>,
    /// Trace ids in arrival order, each with its arrival number (stale entries are skipped).
    arrivals: VecDeque<(TraceId, u64)>,
    next_arrival: u64,
    span_count: usize,
    /// What the spans take, about.
    bytes: usize,
    logs: VecDeque<StoredLog>,
    log_bytes: usize,
}

impl Window {
    /// A window of at most `max_spans` spans and `max_logs` log records, each taking at most
    /// [`BYTES_PER_SPAN`] on average.
    pub fn new(max_spans: usize, max_logs: usize) -> Self {
        let (max_spans, max_logs) = (max_spans.max(1), max_logs.max(1));
        Self {
            max_spans,
            max_logs,
            max_bytes: max_spans.saturating_mul(BYTES_PER_SPAN),
            traces: FxHashMap::default(),
            arrivals: VecDeque::new(),
            next_arrival: 0,
            span_count: 0,
            bytes: 0,
            logs: VecDeque::new(),
            log_bytes: 0,
        }
    }

    /// About what the spans and log records held take in memory, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes + self.log_bytes
    }

    fn over(&self) -> bool {
        self.span_count > self.max_spans || self.bytes > self.max_bytes
    }

    /// The cap on spans.
    pub fn max_spans(&self) -> usize {
        self.max_spans
    }

    /// Spans held now.
    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// Traces held now.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Log records held now.
    pub fn log_count(&self) -> usize {
        self.logs.len()
    }

    /// Stores `spans`, then evicts the oldest traces until the window is under its cap again.
    pub fn insert_spans(&mut self, spans: Vec<(TraceId, StoredSpan)>) -> Ingested {
        let mut ingested = Ingested::default();
        // In order of arrival, and a set beside it: a batch may hold thousands of traces.
        let (mut touched, mut seen) = (Vec::new(), FxHashSet::default());
        for (trace_id, span) in spans {
            let trace = self.traces.entry(trace_id).or_insert_with(|| {
                let arrival = self.next_arrival;
                self.next_arrival += 1;
                self.arrivals.push_back((trace_id, arrival));
                Trace::new(arrival)
            });
            let before = trace.bytes;
            let added = trace.insert(span);
            self.span_count = self.span_count.saturating_add_signed(added);
            self.bytes = self.bytes - before + trace.bytes;
            ingested.accepted += 1;
            if seen.insert(trace_id) {
                touched.push(trace_id);
            }
        }
        for trace_id in &touched {
            if let Some(trace) = self.traces.get_mut(trace_id)
                && trace.stale
            {
                let before = trace.bytes;
                trace.recompute();
                self.bytes = self.bytes - before + trace.bytes;
            }
        }
        ingested.evicted = self.evict();
        ingested.traces = touched;
        ingested
    }

    /// The summaries of `ids` that the window still holds (an evicted one has none).
    pub fn summaries(&self, ids: &[TraceId]) -> Vec<TraceSummary> {
        ids.iter()
            .filter_map(|id| self.traces.get(id).map(|trace| trace.summary(id)))
            .collect()
    }

    fn evict(&mut self) -> u64 {
        let mut evicted = 0;
        while self.over() {
            let Some((trace_id, arrival)) = self.arrivals.pop_front() else {
                break;
            };
            let current = self.traces.get(&trace_id).map(|trace| trace.arrival);
            if current != Some(arrival) {
                continue;
            }
            if self.arrivals.is_empty() {
                // The one trace left is over the whole cap: keep its latest spans, or none.
                evicted += self.trim_last(&trace_id);
                if self
                    .traces
                    .get(&trace_id)
                    .is_some_and(|trace| trace.spans.is_empty())
                {
                    self.traces.remove(&trace_id);
                } else {
                    self.arrivals.push_back((trace_id, arrival));
                }
                break;
            }
            if let Some(trace) = self.traces.remove(&trace_id) {
                self.span_count -= trace.spans.len();
                self.bytes -= trace.bytes;
                evicted += trace.spans.len() as u64;
            }
        }
        evicted
    }

    /// Drops the earliest received spans of the one trace left until the window is under its
    /// caps; returns how many went.
    fn trim_last(&mut self, trace_id: &TraceId) -> u64 {
        let Some(trace) = self.traces.get_mut(trace_id) else {
            return 0;
        };
        let mut excess = 0;
        let (mut spans, mut bytes) = (self.span_count, self.bytes);
        while (spans > self.max_spans || bytes > self.max_bytes) && excess < trace.spans.len() {
            spans -= 1;
            bytes -= trace.spans[excess].bytes;
            excess += 1;
        }
        trace.spans.drain(..excess);
        trace.recompute();
        self.span_count = spans;
        self.bytes = bytes;
        excess as u64
    }

    /// Stores `logs`, dropping the oldest beyond the cap; returns how many were dropped.
    pub fn insert_logs(&mut self, logs: Vec<StoredLog>) -> u64 {
        let mut dropped = 0;
        let max_bytes = self.max_logs.saturating_mul(BYTES_PER_SPAN);
        for log in logs {
            self.log_bytes += log.bytes;
            self.logs.push_back(log);
            while self.logs.len() > self.max_logs || self.log_bytes > max_bytes {
                let Some(oldest) = self.logs.pop_front() else {
                    break;
                };
                self.log_bytes -= oldest.bytes;
                dropped += 1;
            }
        }
        dropped
    }

    /// The traces `filter` asks for, newest (latest start) first.
    pub fn traces(&self, filter: &TraceFilter) -> Vec<TraceSummary> {
        let mut matching: Vec<(&TraceId, &Trace)> = self
            .traces
            .iter()
            .filter(|(_, trace)| trace.matches(filter))
            .collect();
        matching.sort_unstable_by(|a, b| b.1.start.cmp(&a.1.start).then(b.0.cmp(a.0)));
        matching
            .into_iter()
            .take(filter.limit)
            .map(|(id, trace)| trace.summary(id))
            .collect()
    }

    /// Every span of one trace, in start order; `None` when the window does not hold it.
    pub fn trace(&self, trace_id: &TraceId) -> Option<Vec<&StoredSpan>> {
        let trace = self.traces.get(trace_id)?;
        let mut spans: Vec<&StoredSpan> = trace.spans.iter().collect();
        spans.sort_by_key(|span| span.start_time_unix_nano);
        Some(spans)
    }

    /// The last `limit` log records (of `trace_id`, when given), oldest first.
    pub fn logs(&self, trace_id: Option<&TraceId>, limit: usize) -> Vec<&Value> {
        let mut logs: Vec<&Value> = self
            .logs
            .iter()
            .rev()
            .filter(|log| trace_id.is_none_or(|id| log.trace_id.as_ref() == Some(id)))
            .take(limit)
            .map(StoredLog::json)
            .collect();
        logs.reverse();
        logs
    }
}

/// An id of `N` bytes that is not all zero.
fn valid_id<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let id: [u8; N] = bytes.try_into().ok()?;
    id.iter().any(|byte| *byte != 0).then_some(id)
}

/// Lowercase hex, as W3C Trace Context writes ids.
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Parses 32 hex digits into a trace id; `None` for anything else (or all zeros).
pub fn parse_trace_id(text: &str) -> Option<TraceId> {
    // 32 digits exactly: const-hex would also take them after a `0x`.
    if text.len() != 32 {
        return None;
    }
    valid_id::<16>(&const_hex::decode_to_array::<_, 16>(text).ok()?)
}

/// Nanoseconds since the epoch as RFC 3339, to the microsecond.
pub fn rfc3339(unix_nano: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(unix_nano)).to_string()
}

/// About what a JSON value takes in memory: its strings and a word or so per node.
fn json_bytes(value: &Value) -> usize {
    match value {
        Value::String(text) => 24 + text.len(),
        Value::Array(values) => 24 + values.iter().map(json_bytes).sum::<usize>(),
        Value::Object(map) => {
            24 + map
                .iter()
                .map(|(key, value)| 48 + key.len() + json_bytes(value))
                .sum::<usize>()
        }
        _ => 16,
    }
}

fn truncated(text: String) -> String {
    cut(text, MAX_VALUE_BYTES)
}

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when it was.
pub(super) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// What is left of a record's [`MAX_RECORD_VALUE_BYTES`].
struct Budget(usize);

impl Budget {
    /// Takes `bytes`, if they fit; once something does not, nothing more does.
    fn take(&mut self, bytes: usize) -> bool {
        match self.0.checked_sub(bytes) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => {
                self.0 = 0;
                false
            }
        }
    }
}

/// OTLP attributes as a JSON object: at most [`MAX_ATTRIBUTES`], keys cut, within `budget`.
fn attributes(attributes: &[KeyValue], budget: &mut Budget) -> Map<String, Value> {
    let mut map = Map::new();
    for KeyValue { key, value, .. } in attributes.iter().take(MAX_ATTRIBUTES) {
        let key = truncated(key.clone());
        if !budget.take(48 + key.len()) {
            break;
        }
        let value = value
            .as_ref()
            .map_or(Value::Null, |value| self::value(value, budget));
        map.insert(key, value);
    }
    map
}

/// An OTLP value as JSON of its type: an integer stays a number, bytes become hex; `null` when
/// the record's budget is spent.
fn value(value: &AnyValue, budget: &mut Budget) -> Value {
    let value = match &value.value {
        Some(any_value::Value::StringValue(text)) => Value::String(truncated(text.clone())),
        Some(any_value::Value::BoolValue(flag)) => Value::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Value::from(*number),
        Some(any_value::Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(array)) => {
            if !budget.take(24) {
                return Value::Null;
            }
            let mut values = Vec::new();
            for item in array.values.iter().take(MAX_ATTRIBUTES) {
                if budget.0 == 0 {
                    break;
                }
                values.push(self::value(item, budget));
            }
            return Value::Array(values);
        }
        Some(any_value::Value::KvlistValue(list)) => {
            if !budget.take(24) {
                return Value::Null;
            }
            return Value::Object(attributes(&list.values, budget));
        }
        Some(any_value::Value::BytesValue(bytes)) => Value::String(truncated(hex(bytes))),
        Some(any_value::Value::StringValueStrindex(_)) | None => Value::Null,
    };
    if budget.take(json_bytes(&value)) {
        value
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use foundry::otlp::proto::trace::v1::Status;

    use super::*;

    fn span(trace: u8, id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
            name: format!("span-{id}"),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Span::default()
        }
    }

    fn stored(service: &str, span: Span) -> (TraceId, StoredSpan) {
        StoredSpan::from_otlp(&Arc::from(service), span).expect("valid ids")
    }

    fn all() -> TraceFilter {
        TraceFilter {
            limit: 100,
            ..TraceFilter::default()
        }
    }

    #[test]
    fn spans_without_a_valid_trace_or_span_id_are_refused() {
        let service: Arc<str> = Arc::from("sophia");
        for (trace_id, span_id) in [
            (vec![], vec![1; 8]),
            (vec![0; 16], vec![1; 8]),
            (vec![1; 15], vec![1; 8]),
            (vec![1; 16], vec![0; 8]),
            (vec![1; 16], vec![]),
        ] {
            let span = Span {
                trace_id: trace_id.clone(),
                span_id: span_id.clone(),
                ..Span::default()
            };
            assert!(
                StoredSpan::from_otlp(&service, span).is_none(),
                "{trace_id:?} {span_id:?}"
            );
        }
    }

    #[test]
    fn a_trace_summary_names_its_root_services_duration_and_error() {
        // Arrange
        let mut window = Window::new(100, 10);
        let mut failing = span(7, 3, Some(2), 3_000_000, 4_000_000);
        failing.status = Some(Status {
            message: "boom".into(),
            code: StatusCode::Error as i32,
        });

        // Act
        window.insert_spans(vec![
            stored("hermes", failing),
            stored("sophia", span(7, 2, Some(1), 2_000_000, 5_000_000)),
            stored("apollo", span(7, 1, None, 1_000_000, 6_000_000)),
        ]);

        // Assert
        let traces = window.traces(&all());
        assert_eq!(
            traces,
            [TraceSummary {
                trace_id: "07".repeat(16),
                root_name: "span-1".into(),
                root_service: "apollo".into(),
                services: vec!["apollo".into(), "hermes".into(), "sophia".into()],
                span_count: 3,
                duration_ms: 5.0,
                error: true,
                start_time: "1970-01-01T00:00:00.001000Z".into(),
            }]
        );
    }

    #[test]
    fn the_oldest_traces_are_evicted_first_and_the_cap_holds() {
        // Arrange
        let mut window = Window::new(10, 10);

        // Act: 8 traces of 3 spans, 24 spans in all, into room for 10.
        let mut evicted = 0;
        for trace in 1..=8u8 {
            let spans = (1..=3u8)
                .map(|id| stored("sophia", span(trace, id, None, u64::from(trace), 100)))
                .collect();
            evicted += window.insert_spans(spans).evicted;
        }

        // Assert
        assert_eq!(window.span_count(), 9);
        assert_eq!(evicted, 15);
        let kept: Vec<String> = window
            .traces(&all())
            .into_iter()
            .map(|trace| trace.trace_id)
            .collect();
        assert_eq!(kept, ["08".repeat(16), "07".repeat(16), "06".repeat(16)]);
    }

    #[test]
    fn a_trace_larger_than_the_cap_keeps_its_latest_spans() {
        let mut window = Window::new(4, 10);

        let spans = (1..=6u8)
            .map(|id| stored("sophia", span(1, id, Some(9), u64::from(id), 100)))
            .collect();
        let ingested = window.insert_spans(spans);

        assert_eq!(ingested.evicted, 2);
        assert_eq!(window.span_count(), 4);
        let names: Vec<&str> = window
            .trace(&[1; 16])
            .expect("kept")
            .iter()
            .map(|span| span.name())
            .collect();
        assert_eq!(names, ["span-3", "span-4", "span-5", "span-6"]);
    }

    #[test]
    fn large_spans_are_evicted_by_their_bytes_before_the_span_cap() {
        // Arrange: room for 100 spans, so 100 * 2 KiB; each span carries about 16 KiB.
        let mut window = Window::new(100, 10);
        let big = |trace: u8| {
            let mut otlp = span(trace, 1, None, u64::from(trace), 100);
            otlp.attributes = (0..4)
                .map(|i| KeyValue {
                    key: format!("blob.{i}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".repeat(4000))),
                    }),
                    ..KeyValue::default()
                })
                .collect();
            stored("sophia", otlp)
        };

        // Act
        let mut evicted = 0;
        for trace in 1..=50u8 {
            evicted += window.insert_spans(vec![big(trace)]).evicted;
        }

        // Assert: 12 of 16 KiB fit in 200 KiB; the newest are kept.
        assert!(window.bytes() <= 100 * BYTES_PER_SPAN, "{}", window.bytes());
        assert_eq!(window.span_count(), 12);
        assert_eq!(evicted, 38);
        assert_eq!(window.traces(&all())[0].trace_id, "32".repeat(16));
    }

    #[test]
    fn a_span_larger_than_the_whole_window_leaves_no_empty_trace() {
        // Room for one span, so 2 KiB; the span carries 3 000 bytes.
        let mut window = Window::new(1, 10);
        let mut otlp = span(1, 1, None, 1, 100_000_000);
        otlp.attributes = vec![KeyValue {
            key: "blob".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("x".repeat(3000))),
            }),
            ..KeyValue::default()
        }];

        let ingested = window.insert_spans(vec![stored("sophia", otlp)]);

        assert_eq!(ingested.evicted, 1);
        assert!(window.summaries(&ingested.traces).is_empty());
        assert_eq!(
            (window.span_count(), window.trace_count(), window.bytes()),
            (0, 0, 0)
        );
        assert!(window.traces(&all()).is_empty());
        assert!(window.trace(&[1; 16]).is_none());
    }

    #[test]
    fn a_resent_span_replaces_what_its_first_copy_said() {
        let mut window = Window::new(10, 10);
        let mut failing = span(1, 1, None, 1_000_000, 6_000_000);
        failing.status = Some(Status {
            message: "boom".into(),
            code: StatusCode::Error as i32,
        });

        window.insert_spans(vec![stored("apollo", failing)]);
        window.insert_spans(vec![stored(
            "apollo",
            span(1, 1, None, 1_000_000, 3_000_000),
        )]);

        let summary = &window.traces(&all())[0];
        assert!(!summary.error);
        assert!(
            (summary.duration_ms - 2.0).abs() < 1e-9,
            "{}",
            summary.duration_ms
        );
    }

    #[test]
    fn nested_values_are_bounded_per_record() {
        // A body of 100 lists of 100 strings of 4 KiB: 40 MB of text, each value within bounds.
        let leaf = AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(MAX_VALUE_BYTES))),
        };
        let list = AnyValue {
            value: Some(any_value::Value::ArrayValue(
                foundry::otlp::proto::common::v1::ArrayValue {
                    values: vec![leaf; 100],
                },
            )),
        };
        let body = AnyValue {
            value: Some(any_value::Value::KvlistValue(
                foundry::otlp::proto::common::v1::KeyValueList {
                    values: (0..100)
                        .map(|i| KeyValue {
                            key: format!("list.{i}"),
                            value: Some(list.clone()),
                            ..KeyValue::default()
                        })
                        .collect(),
                },
            )),
        };
        let record = LogRecord {
            body: Some(body.clone()),
            ..Default::default()
        };
        let mut otlp = span(1, 1, None, 1, 2);
        otlp.attributes = (0..100)
            .map(|i| KeyValue {
                key: format!("nested.{i}"),
                value: Some(body.clone()),
                ..KeyValue::default()
            })
            .collect();

        let log = StoredLog::from_otlp(&Arc::from("hermes"), record);
        let (_, span) = stored("hermes", otlp);

        for (what, bytes) in [("log", log.bytes), ("span", span.bytes)] {
            assert!(
                bytes <= RECORD_OVERHEAD + 1024 + MAX_RECORD_VALUE_BYTES,
                "{what}: {bytes}"
            );
            assert!(
                bytes > MAX_RECORD_VALUE_BYTES / 2,
                "{what} keeps what fits: {bytes}"
            );
        }
        assert!(log.json()["body"]["list.0"][0].is_string());
    }

    #[test]
    fn many_copies_of_a_span_in_one_batch_are_kept_once_and_counted_once() {
        let mut window = Window::new(1000, 10);
        window.insert_spans(
            (1..=100u8)
                .map(|id| stored("sophia", span(1, id, None, 1, 2)))
                .collect(),
        );
        let bytes = window.bytes();

        let copies = (0..500)
            .map(|_| stored("sophia", span(1, 7, None, 1, 2)))
            .collect();
        let ingested = window.insert_spans(copies);

        assert_eq!(ingested.accepted, 500);
        assert_eq!(window.span_count(), 100);
        assert_eq!(window.bytes(), bytes);
        assert_eq!(window.traces(&all())[0].span_count, 100);
    }

    #[test]
    fn a_span_received_twice_is_kept_once() {
        let mut window = Window::new(10, 10);

        window.insert_spans(vec![stored("apollo", span(1, 1, None, 1, 2))]);
        window.insert_spans(vec![stored("apollo", span(1, 1, None, 1, 2))]);

        assert_eq!(window.span_count(), 1);
        assert_eq!(window.traces(&all())[0].span_count, 1);
    }

    #[test]
    fn filters_select_by_service_name_error_and_duration() {
        // Arrange
        let mut window = Window::new(100, 10);
        let mut failing = span(2, 1, None, 0, 50_000_000);
        failing.status = Some(Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        });
        window.insert_spans(vec![
            stored("sophia", span(1, 1, None, 0, 1_000_000)),
            stored("hermes", failing),
        ]);
        let ids = |filter: TraceFilter| -> Vec<String> {
            window
                .traces(&TraceFilter {
                    limit: 10,
                    ..filter
                })
                .into_iter()
                .map(|trace| trace.trace_id[..2].to_owned())
                .collect()
        };

        // Act + Assert
        for (filter, expected) in [
            (
                TraceFilter {
                    service: Some("hermes".into()),
                    ..all()
                },
                vec!["02"],
            ),
            (
                TraceFilter {
                    name: Some("span-1".into()),
                    ..all()
                },
                vec!["02", "01"],
            ),
            (
                TraceFilter {
                    name: Some("other".into()),
                    ..all()
                },
                vec![],
            ),
            (
                TraceFilter {
                    error: Some(true),
                    ..all()
                },
                vec!["02"],
            ),
            (
                TraceFilter {
                    error: Some(false),
                    ..all()
                },
                vec!["01"],
            ),
            (
                TraceFilter {
                    min_duration_ms: Some(10.0),
                    ..all()
                },
                vec!["02"],
            ),
        ] {
            assert_eq!(ids(filter.clone()), expected, "{filter:?}");
        }
    }

    #[test]
    fn attribute_values_keep_their_otlp_types_and_long_strings_are_cut() {
        let mut otlp = span(1, 1, None, 1, 2);
        let kv = |key: &str, value: any_value::Value| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        };
        otlp.attributes = vec![
            kv("http.response.status_code", any_value::Value::IntValue(200)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("ok", any_value::Value::BoolValue(true)),
            kv("long", any_value::Value::StringValue("é".repeat(5000))),
        ];

        let (_, span) = stored("hermes", otlp);
        let json = span.to_json();

        assert_eq!(json["attributes"]["http.response.status_code"], json!(200));
        assert!(json["attributes"]["http.response.status_code"].is_i64());
        assert_eq!(json["attributes"]["ratio"], json!(0.5));
        assert_eq!(json["attributes"]["ok"], json!(true));
        let long = json["attributes"]["long"].as_str().expect("a string");
        assert!(long.len() <= MAX_VALUE_BYTES + '…'.len_utf8());
        assert!(long.ends_with('…'));
        assert_eq!(json["parent_span_id"], Value::Null);
        assert_eq!(json["kind"], "internal");
    }

    #[test]
    fn log_records_are_kept_up_to_their_cap_and_found_by_trace() {
        let mut window = Window::new(10, 3);
        let service: Arc<str> = Arc::from("sophia");
        let record = |trace: u8, text: &str| {
            StoredLog::from_otlp(
                &service,
                LogRecord {
                    trace_id: vec![trace; 16],
                    span_id: vec![1; 8],
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(text.into())),
                    }),
                    ..LogRecord::default()
                },
            )
        };

        let dropped = window.insert_logs(vec![
            record(1, "a"),
            record(2, "b"),
            record(1, "c"),
            record(1, "d"),
        ]);

        assert_eq!(dropped, 1);
        let bodies = |logs: Vec<&Value>| -> Vec<String> {
            logs.iter()
                .map(|log| log["body"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(bodies(window.logs(Some(&[1; 16]), 10)), ["c", "d"]);
        assert_eq!(bodies(window.logs(None, 2)), ["c", "d"]);
        assert_eq!(window.logs(None, 10)[0]["trace_id"], "02".repeat(16));
    }

    #[test]
    fn trace_ids_parse_from_32_hex_digits_only() {
        assert_eq!(parse_trace_id(&"0a".repeat(16)), Some([10; 16]));
        for bad in [
            "",
            "0a",
            &"0".repeat(32),
            &"zz".repeat(16),
            &"0a".repeat(17),
        ] {
            assert_eq!(parse_trace_id(bad), None, "{bad}");
        }
    }
}
