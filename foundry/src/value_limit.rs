//! The attribute limits the SDK of this release lacks. For spans, `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`:
//! a processor in front of each exporting one truncates the string values of a span's attributes
//! and of its events' attributes, as the specification says (strings and each string of an
//! array, to at most the limit's characters), once the span has ended. For log records, both
//! `OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT` and `OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`: the
//! log SDK lets a processor add attributes but neither change nor remove one, so a record over a
//! limit is given to the exporting processor as a copy that keeps what the limits allow (a record
//! within them, nearly every one, goes as it is).

use std::time::Duration;

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, StringValue, Value,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider},
    trace::{Span, SpanData, SpanProcessor},
};

/// The processor methods both wrappers pass on as they are (the span and the log processor
/// traits have them alike, but share no trait).
macro_rules! forward_to_inner {
    () => {
        fn force_flush(&self) -> OTelSdkResult {
            self.inner.force_flush()
        }

        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.inner.shutdown_with_timeout(timeout)
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.inner.set_resource(resource);
        }
    };
}

/// `inner`, given each ended span with its string values cut to `limit` characters; with no
/// limit, the span as it is.
#[derive(Debug)]
pub(crate) struct ValueLengthLimit<P> {
    inner: P,
    limit: Option<usize>,
}

impl<P> ValueLengthLimit<P> {
    pub(crate) fn new(inner: P, limit: Option<usize>) -> Self {
        Self { inner, limit }
    }
}

impl<P: SpanProcessor> SpanProcessor for ValueLengthLimit<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if let Some(limit) = self.limit {
            truncate_all(&mut span.attributes, limit);
            for event in &mut span.events.events {
                truncate_all(&mut event.attributes, limit);
            }
        }
        self.inner.on_end(span);
    }

    forward_to_inner!();
}

/// What a log record keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogRecordLimits {
    /// Attributes; past it, the later ones are dropped.
    pub(crate) attributes: usize,
    /// Characters of a string value; `None`: no limit.
    pub(crate) value_length: Option<usize>,
}

/// `inner`, given each log record within [`LogRecordLimits`].
#[derive(Debug)]
pub(crate) struct LogRecordLimit<P> {
    inner: P,
    limits: LogRecordLimits,
    /// Makes the copies: the SDK's records are made by a logger only. Its provider has no
    /// processor, so what it makes goes nowhere by itself.
    records: SdkLogger,
}

impl<P> LogRecordLimit<P> {
    pub(crate) fn new(inner: P, limits: LogRecordLimits) -> Self {
        Self {
            inner,
            limits,
            records: SdkLoggerProvider::builder().build().logger("foundry"),
        }
    }

    fn within_limits(&self, record: &SdkLogRecord) -> bool {
        let mut count = 0;
        record.attributes_iter().all(|(_, value)| {
            count += 1;
            count <= self.limits.attributes
                && self
                    .limits
                    .value_length
                    .is_none_or(|limit| !any_value_over(value, limit))
        })
    }

    /// `record` with at most the limits' attributes, their string values cut.
    fn limited(&self, record: &SdkLogRecord) -> SdkLogRecord {
        let mut copy = self.records.create_log_record();
        if let Some(name) = record.event_name() {
            copy.set_event_name(name);
        }
        if let Some(target) = record.target() {
            copy.set_target(target.clone());
        }
        if let Some(timestamp) = record.timestamp() {
            copy.set_timestamp(timestamp);
        }
        if let Some(timestamp) = record.observed_timestamp() {
            copy.set_observed_timestamp(timestamp);
        }
        if let Some(text) = record.severity_text() {
            copy.set_severity_text(text);
        }
        if let Some(number) = record.severity_number() {
            copy.set_severity_number(number);
        }
        if let Some(body) = record.body() {
            copy.set_body(body.clone());
        }
        if let Some(context) = record.trace_context() {
            copy.set_trace_context(context.trace_id, context.span_id, context.trace_flags);
        }
        for (key, value) in record.attributes_iter().take(self.limits.attributes) {
            let mut value = value.clone();
            if let Some(limit) = self.limits.value_length {
                truncate_any_value(&mut value, limit);
            }
            copy.add_attribute(key.clone(), value);
        }
        copy
    }
}

impl<P: LogProcessor> LogProcessor for LogRecordLimit<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.within_limits(record) {
            self.inner.emit(record, scope);
        } else {
            self.inner.emit(&mut self.limited(record), scope);
        }
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    forward_to_inner!();
}

/// Whether a string in `value` (itself, or inside a list or map) is over `limit` characters, or
/// bytes over `limit` bytes.
fn any_value_over(value: &AnyValue, limit: usize) -> bool {
    match value {
        // No more bytes than the limit: no more characters either.
        AnyValue::String(text) => {
            text.as_str().len() > limit && text.as_str().chars().nth(limit).is_some()
        }
        AnyValue::Bytes(bytes) => bytes.len() > limit,
        AnyValue::ListAny(values) => values.iter().any(|value| any_value_over(value, limit)),
        AnyValue::Map(entries) => entries.values().any(|value| any_value_over(value, limit)),
        _ => false,
    }
}

/// Cuts every string in `value` (itself, or inside a list or map) to `limit` characters, and bytes
/// to `limit` bytes.
fn truncate_any_value(value: &mut AnyValue, limit: usize) {
    match value {
        AnyValue::String(text) => truncate(text, limit),
        AnyValue::Bytes(bytes) => bytes.truncate(limit),
        AnyValue::ListAny(values) => {
            for value in values.iter_mut() {
                truncate_any_value(value, limit);
            }
        }
        AnyValue::Map(entries) => {
            for value in entries.values_mut() {
                truncate_any_value(value, limit);
            }
        }
        _ => {}
    }
}

fn truncate_all(attributes: &mut [KeyValue], limit: usize) {
    for attribute in attributes {
        match &mut attribute.value {
            Value::String(value) => truncate(value, limit),
            Value::Array(Array::String(values)) => {
                for value in values {
                    truncate(value, limit);
                }
            }
            _ => {}
        }
    }
}

/// Cuts `value` to its first `limit` characters (never inside one).
fn truncate(value: &mut StringValue, limit: usize) {
    if let Some((end, _)) = value.as_str().char_indices().nth(limit) {
        *value = StringValue::from(value.as_str()[..end].to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_string_arrays_are_cut_to_the_limit_in_characters() {
        let mut attributes = vec![
            KeyValue::new("long", "abcdéfgh"),
            KeyValue::new("short", "ab"),
            KeyValue::new("number", 123_456_789i64),
            KeyValue::new(
                "list",
                Value::Array(Array::String(vec!["éééééé".into(), "x".into()])),
            ),
        ];

        truncate_all(&mut attributes, 4);

        let values: Vec<String> = attributes
            .iter()
            .map(|attribute| attribute.value.to_string())
            .collect();
        assert_eq!(values, ["abcd", "ab", "123456789", "[\"éééé\",\"x\"]"]);
    }

    /// Keeps what it is given.
    #[derive(Debug, Default)]
    struct Kept(std::sync::Mutex<Vec<SdkLogRecord>>);

    impl LogProcessor for &'static Kept {
        fn emit(&self, record: &mut SdkLogRecord, _scope: &InstrumentationScope) {
            self.0.lock().expect("not poisoned").push(record.clone());
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn a_log_record_over_a_limit_is_copied_whole_but_for_what_the_limits_cut() {
        use opentelemetry::{
            logs::Severity,
            trace::{SpanId, TraceFlags, TraceId},
        };
        // Arrange
        let kept: &'static Kept = Box::leak(Box::default());
        let limits = LogRecordLimits {
            attributes: 2,
            value_length: Some(3),
        };
        let processor = LogRecordLimit::new(kept, limits);
        let mut record = processor.records.create_log_record();
        record.set_event_name("event");
        record.set_target("target");
        record.set_timestamp(std::time::UNIX_EPOCH + Duration::from_secs(7));
        record.set_observed_timestamp(std::time::UNIX_EPOCH + Duration::from_secs(8));
        record.set_severity_text("WARN");
        record.set_severity_number(Severity::Warn);
        record.set_body("a body longer than the limit".into());
        record.set_trace_context(TraceId::from(1), SpanId::from(2), Some(TraceFlags::SAMPLED));
        record.add_attribute("nested", AnyValue::ListAny(Box::new(vec!["éééé".into()])));
        record.add_attribute("bytes", AnyValue::Bytes(Box::new(vec![1, 2, 3, 4])));
        record.add_attribute("dropped", 1);
        let within = processor.records.create_log_record();

        // Act
        processor.emit(&mut record, &InstrumentationScope::builder("scope").build());
        processor.emit(
            &mut within.clone(),
            &InstrumentationScope::builder("scope").build(),
        );

        // Assert
        let kept = kept.0.lock().expect("not poisoned");
        let copy = &kept[0];
        assert_eq!(copy.event_name(), Some("event"));
        assert_eq!(copy.target().map(|t| t.as_ref()), Some("target"));
        assert_eq!(copy.timestamp(), record.timestamp());
        assert_eq!(copy.observed_timestamp(), record.observed_timestamp());
        assert_eq!(copy.severity_text(), Some("WARN"));
        assert_eq!(copy.severity_number(), Some(Severity::Warn));
        assert_eq!(copy.body(), record.body(), "the body is not an attribute");
        assert_eq!(
            copy.trace_context().map(|c| c.span_id),
            Some(SpanId::from(2))
        );
        let attributes: Vec<(String, AnyValue)> = copy
            .attributes_iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect();
        assert_eq!(
            attributes,
            [
                (
                    "nested".to_owned(),
                    AnyValue::ListAny(Box::new(vec!["ééé".into()]))
                ),
                ("bytes".to_owned(), AnyValue::Bytes(Box::new(vec![1, 2, 3]))),
            ]
        );
        assert_eq!(
            kept[1].attributes_iter().count(),
            0,
            "a record within the limits"
        );
    }
}
