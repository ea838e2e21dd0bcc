//! OTLP as data: the protocol's message types, and a process's own telemetry handed to a
//! [`LocalSink`] in the same shape, without a round trip through the network.
//!
//! Apollo's diagnostics window receives OTLP from the other services and must show Apollo's own
//! spans too; exporting to itself over a socket would trace its own receiver (a feedback loop)
//! and cost a hop. With [`crate::telemetry::init_with_sink`], the SDK's batch processors hand
//! their batches to the sink as the very `Export*ServiceRequest` messages a receiver decodes,
//! converted by opentelemetry-proto's own transforms, so one ingest path serves both.

use std::{fmt, sync::Arc, time::Duration};

use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

/// The generated OTLP messages and services (opentelemetry-proto's `tonic` module), re-exported
/// so that a receiver builds on the same release family as the exporters.
pub use opentelemetry_proto::tonic as proto;

use proto::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};

/// Where a process's own telemetry goes, in-process, as OTLP export requests.
pub trait LocalSink: Send + Sync + fmt::Debug + 'static {
    /// A batch of finished spans.
    fn traces(&self, request: ExportTraceServiceRequest);
    /// The process's metrics, cumulative, at each export interval.
    fn metrics(&self, request: ExportMetricsServiceRequest);
    /// A batch of log records.
    fn logs(&self, request: ExportLogsServiceRequest);
}

/// How often the process's own metrics reach its sink.
pub(crate) const LOCAL_METRIC_INTERVAL: Duration = Duration::from_secs(5);

/// How long finished spans and log records wait before they reach the sink: short, since the
/// window is live, and batched, since a hand-over per span would contend on the sink's lock.
pub(crate) const LOCAL_BATCH_DELAY: Duration = Duration::from_millis(200);

/// The SDK exporter (spans, logs and metrics alike) that hands batches to a [`LocalSink`].
#[derive(Debug)]
pub(crate) struct LocalExporter {
    sink: Arc<dyn LocalSink>,
    resource: ResourceAttributesWithSchema,
}

impl LocalExporter {
    pub(crate) fn new(sink: Arc<dyn LocalSink>, resource: &Resource) -> Self {
        Self {
            sink,
            resource: resource.into(),
        }
    }
}

impl SpanExporter for LocalExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
        self.sink.traces(ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        });
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

impl LogExporter for LocalExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
        self.sink.logs(ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(&batch, &self.resource),
        });
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

impl PushMetricExporter for LocalExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.sink
            .metrics(ExportMetricsServiceRequest::from(metrics));
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}
