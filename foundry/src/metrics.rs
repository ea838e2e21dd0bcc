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
//!
//! Each histogram records through handles bound to its attribute sets ([`BoundHistograms`]):
//! the SDK hashes and looks up an attribute set once, when a handle is bound, where an unbound
//! `record` does it at every measurement.

use std::{
    borrow::Cow,
    hash::Hash,
    sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, Weak},
    thread::JoinHandle,
    time::Duration,
};

use opentelemetry::{
    KeyValue, StringValue,
    metrics::{BoundHistogram, Histogram, Meter},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, Pipeline, Temporality, data::ResourceMetrics, exporter::PushMetricExporter,
        reader::MetricReader,
    },
};
use rustc_hash::FxHashMap;

use crate::telemetry::METRICS_REGISTRY;

/// The bucket boundaries the HTTP semantic conventions recommend for request durations.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The HTTP duration histograms shared by every server layer and client in the process.
#[derive(Debug)]
pub(crate) struct HttpInstruments {
    pub(crate) server_duration: BoundHistograms<ServerKey>,
    pub(crate) client_duration: BoundHistograms<ClientKey>,
}

/// What tells the attribute sets of `http.server.request.duration` apart: the method, the
/// status (which also gives `error.type`; `None` for a request cancelled before its response)
/// and the route; `url.scheme` is always `http`.
pub(crate) type ServerKey = (&'static str, Option<u16>, Option<StringValue>);

/// What tells the attribute sets of `http.client.request.duration` apart: the method, the
/// server's address and port, the status, and `error.type`.
pub(crate) type ClientKey = (
    &'static str,
    StringValue,
    Option<i64>,
    Option<u16>,
    Option<Cow<'static, str>>,
);

/// A histogram that records through a bound handle per attribute set, bound the first time the
/// set is seen and kept for the life of the process.
///
/// An unbound `record` hashes the whole attribute list (keys and values, with SipHash), compares
/// it with the stored one and locks its aggregator: about 2 000 instructions for these sets in
/// `make profile`, paid eleven times per request of the benchmark's chain, sampled or not. A
/// bound handle goes straight to its aggregator (the SDK's bound instruments, behind its
/// `experimental_metrics_bound_instruments` feature); what is left here is to find the handle
/// by a small key, without building the attribute list. The sets are few (methods, routes and
/// statuses; a client's few downstream services); past `MAX_BOUND` (1000) of them, records go
/// unbound, and the SDK's own cardinality limit applies as before.
#[derive(Debug)]
pub(crate) struct BoundHistograms<K> {
    histogram: Histogram<f64>,
    /// Keyed with rustc-hash's FxHash: the keys are a few short strings and numbers that a
    /// client cannot choose freely (a matched route template, not the path), and SipHash took
    /// about 600 instructions a lookup.
    bound: RwLock<FxHashMap<K, BoundHistogram<f64>>>,
    max_bound: usize,
}

impl<K: Hash + Eq> BoundHistograms<K> {
    /// Attribute sets bound at most; well under the SDK's default cardinality limit (2000).
    const MAX_BOUND: usize = 1000;

    fn new(histogram: Histogram<f64>) -> Self {
        Self::with_max_bound(histogram, Self::MAX_BOUND)
    }

    fn with_max_bound(histogram: Histogram<f64>, max_bound: usize) -> Self {
        Self {
            histogram,
            bound: RwLock::new(FxHashMap::default()),
            max_bound,
        }
    }

    /// Records `value` for the attribute set `key` stands for; `attributes` builds that set from
    /// the key, called only the first time the key is seen (or once the bound sets are at their
    /// limit).
    pub(crate) fn record(&self, key: K, value: f64, attributes: impl FnOnce(&K) -> Vec<KeyValue>) {
        {
            let bound = self.bound.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handle) = bound.get(&key) {
                handle.record(value);
                return;
            }
            // Full: record unbound, without taking the write lock from every other record.
            if bound.len() >= self.max_bound {
                drop(bound);
                self.histogram.record(value, &attributes(&key));
                return;
            }
        }
        let attributes = attributes(&key);
        let mut bound = self.bound.write().unwrap_or_else(PoisonError::into_inner);
        if bound.len() >= self.max_bound && !bound.contains_key(&key) {
            drop(bound);
            self.histogram.record(value, &attributes);
            return;
        }
        bound
            .entry(key)
            .or_insert_with(|| self.histogram.bind(&attributes))
            .record(value);
    }
}

static INSTRUMENTS: OnceLock<HttpInstruments> = OnceLock::new();

impl HttpInstruments {
    /// Creates the instruments from `meter`; the first call in a process wins.
    pub(crate) fn install(meter: &Meter) {
        INSTRUMENTS.get_or_init(|| Self {
            server_duration: BoundHistograms::new(
                meter
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Duration of HTTP server requests.")
                    .with_boundaries(DURATION_BUCKETS.to_vec())
                    .build(),
            ),
            client_duration: BoundHistograms::new(
                meter
                    .f64_histogram("http.client.request.duration")
                    .with_unit("s")
                    .with_description("Duration of HTTP client requests.")
                    .with_boundaries(DURATION_BUCKETS.to_vec())
                    .build(),
            ),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry::metrics::MeterProvider as _;

    use super::*;

    /// The `_count` of each series of `name` in the registry's text, by its `code` label.
    fn counts(registry: &prometheus::Registry, name: &str) -> BTreeMap<String, u64> {
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .expect("valid in this test");
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}_count")))
            .filter_map(|line| {
                let code = line.split("code=\"").nth(1)?.split('"').next()?;
                let count = line.rsplit(' ').next()?.parse().ok()?;
                Some((code.to_owned(), count))
            })
            .collect()
    }

    /// The histograms, the registry `/metrics` would render, and the provider, which must live
    /// as long as they are read.
    fn histograms(
        max_bound: usize,
    ) -> (
        BoundHistograms<u16>,
        prometheus::Registry,
        opentelemetry_sdk::metrics::SdkMeterProvider,
    ) {
        let (provider, _reader, registry) = crate::telemetry::meter_provider(
            opentelemetry_sdk::Resource::builder_empty().build(),
            None,
        )
        .expect("valid in this test");
        let histogram = provider
            .meter("test")
            .f64_histogram("test.duration")
            .build();
        (
            BoundHistograms::with_max_bound(histogram, max_bound),
            registry,
            provider,
        )
    }

    fn set(code: &u16) -> Vec<KeyValue> {
        vec![KeyValue::new("code", i64::from(*code))]
    }

    #[test]
    fn each_attribute_set_counts_apart_through_its_bound_handle() {
        // Arrange
        let (histograms, registry, _provider) = histograms(10);
        let mut built = 0;

        // Act
        for code in [200, 200, 500, 200, 500] {
            histograms.record(code, 0.01, |code| {
                built += 1;
                set(code)
            });
        }

        // Assert
        let counts = counts(&registry, "test_duration");
        assert_eq!(counts.get("200"), Some(&3), "{counts:?}");
        assert_eq!(counts.get("500"), Some(&2), "{counts:?}");
        assert_eq!(built, 2, "each set is built once, when it is bound");
    }

    #[test]
    fn past_the_bound_limit_records_still_count_unbound() {
        // Arrange
        let (histograms, registry, _provider) = histograms(2);

        // Act: the third and fourth sets find the limit reached.
        for code in [200, 201, 202, 202, 203, 200] {
            histograms.record(code, 0.01, set);
        }

        // Assert
        let counts = counts(&registry, "test_duration");
        for (code, count) in [("200", 2), ("201", 1), ("202", 2), ("203", 1)] {
            assert_eq!(counts.get(code), Some(&count), "{code}: {counts:?}");
        }
        assert_eq!(
            histograms
                .bound
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            2
        );
    }
}
