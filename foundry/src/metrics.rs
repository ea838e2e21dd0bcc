//! The HTTP metrics of the OpenTelemetry semantic conventions, and the `/metrics` rendering.
//!
//! `http.server.request.duration` and `http.client.request.duration` are histograms in seconds
//! with the low-cardinality attributes the conventions name. The instruments are created once,
//! when telemetry starts, and read by the server layer and the client middleware.
//!
//! Every measurement is aggregated once, for `/metrics` and OTLP alike: the SDK aggregates once
//! per reader, so the Prometheus reader and the SDK's `PeriodicReader` side by side made each
//! measurement on the request path cost twice (hashing its attributes included). The Prometheus
//! reader is the only one ([`SharedReader`]); [`OtlpMetricExport`] reads it on a schedule and
//! sends what it holds over OTLP (cumulative, as Prometheus keeps it).

use std::{
    sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak},
    thread::JoinHandle,
    time::Duration,
};

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, Pipeline, Temporality, data::ResourceMetrics, exporter::PushMetricExporter,
        reader::MetricReader,
    },
};

use crate::telemetry::METRICS_REGISTRY;

/// The bucket boundaries the HTTP semantic conventions recommend for request durations.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The HTTP duration histograms shared by every server layer and client in the process.
#[derive(Debug)]
pub(crate) struct HttpInstruments {
    pub(crate) server_duration: Histogram<f64>,
    pub(crate) client_duration: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<HttpInstruments> = OnceLock::new();

impl HttpInstruments {
    /// Creates the instruments from `meter`; the first call in a process wins.
    pub(crate) fn install(meter: &Meter) {
        INSTRUMENTS.get_or_init(|| Self {
            server_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
        });
    }

    /// The instruments, or `None` when telemetry is disabled or not started.
    pub(crate) fn get() -> Option<&'static Self> {
        INSTRUMENTS.get()
    }
}

/// Renders every metric of this process in the Prometheus text format (empty when disabled).
pub fn render_prometheus() -> String {
    let registry = METRICS_REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(registry) = registry else {
        return String::new();
    };
    let mut text = String::new();
    if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    text
}

/// The one metric reader of the meter provider, shared by `/metrics` (through the Prometheus
/// registry) and by [`OtlpMetricExport`].
#[derive(Clone, Debug)]
pub(crate) struct SharedReader(Arc<opentelemetry_prometheus::PrometheusExporter>);

impl SharedReader {
    pub(crate) fn new(reader: opentelemetry_prometheus::PrometheusExporter) -> Self {
        Self(Arc::new(reader))
    }
}

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, metrics: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(metrics)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Sends the shared reader's metrics over OTLP every interval, from a thread of its own, and
/// once more at shutdown: what the SDK's `PeriodicReader` does, without a second aggregation.
pub(crate) struct OtlpMetricExport {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpMetricExport {
    /// Starts the export thread.
    pub(crate) fn start<E>(
        reader: SharedReader,
        exporter: E,
        interval: Duration,
    ) -> std::io::Result<Self>
    where
        E: PushMetricExporter,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("otel-metrics".into())
            .spawn(move || {
                // What the export itself does (an HTTP client's spans, say) is not measured.
                let _suppressed = opentelemetry::Context::enter_telemetry_suppressed_scope();
                let (stopped, wake) = &*stopping;
                let mut metrics = ResourceMetrics::default();
                loop {
                    let stopped = wake
                        .wait_timeout_while(
                            stopped.lock().unwrap_or_else(PoisonError::into_inner),
                            interval,
                            |stopped| !*stopped,
                        )
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    let last = *stopped;
                    drop(stopped);
                    // No await on a tokio runtime: the HTTP exporter's client blocks.
                    if reader.collect(&mut metrics).is_ok() {
                        let _ = futures_executor::block_on(exporter.export(&metrics));
                    }
                    if last {
                        let _ = exporter.shutdown();
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Exports once more and shuts the exporter down; waits for it (callers bound the wait).
    pub(crate) fn shutdown(mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn stop(&self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }
}

impl Drop for OtlpMetricExport {
    /// Without [`Self::shutdown`] (telemetry failed to start), the thread still ends, unwaited.
    fn drop(&mut self) {
        self.stop();
    }
}
