//! `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` for spans: the SDK of this release has no value length
//! limit, so a processor in front of each exporting one truncates the string values of a span's
//! attributes and of its events' attributes, as the specification says (strings and each string
//! of an array, to at most the limit's characters), once the span has ended.

use std::time::Duration;

use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanProcessor},
};

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

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
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
}
