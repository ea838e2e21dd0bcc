//! `OTEL_EXPORT_CONSOLE=true`: one line per finished span, on stderr.
//!
//! Written here because opentelemetry-stdout prints to stdout, where a service's only line is
//! `listening on ...` and `apollo --json` prints exactly one JSON object: spans there would break
//! both contracts. One line per span also reads better in a terminal than its multi-line dump.

use std::{fmt::Write as _, io::Write as _};

use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};

/// Prints `service name trace_id span_id parent kind duration attributes` per span.
#[derive(Debug, Default)]
pub(crate) struct ConsoleExporter {
    service_name: String,
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = String::new();
        for span in &batch {
            let duration_us = span
                .end_time
                .duration_since(span.start_time)
                .unwrap_or_default()
                .as_micros();
            let _ = write!(
                out,
                "span {} {:?} trace_id={} span_id={} parent={} kind={:?} duration_us={duration_us} status={:?}",
                self.service_name,
                span.name,
                span.span_context.trace_id(),
                span.span_context.span_id(),
                span.parent_span_id,
                span.span_kind,
                span.status,
            );
            for attribute in &span.attributes {
                let _ = write!(out, " {}={}", attribute.key, attribute.value);
            }
            out.push('\n');
        }
        // A closed stderr is no reason to fail the pipeline.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.service_name = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|value| value.to_string())
            .unwrap_or_default();
    }
}
