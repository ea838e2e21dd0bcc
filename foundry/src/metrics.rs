//! The HTTP metrics of the OpenTelemetry semantic conventions, and the `/metrics` rendering.
//!
//! `http.server.request.duration` and `http.client.request.duration` are histograms in seconds
//! with the low-cardinality attributes the conventions name. The instruments are created once,
//! when telemetry starts, and read by the server layer and the client middleware; they record
//! unbound, and each reader of the SDK (Prometheus behind `/metrics`, the periodic OTLP reader,
//! Apollo's window) aggregates them. A cache of bound handles and one aggregation shared by
//! Prometheus and OTLP were measured against this and removed: they saved about 0.01 of a
//! request's CPU (BENCHMARKS.md, "What each hand-written part saves").

use std::sync::{Mutex, OnceLock, PoisonError};

use opentelemetry::metrics::{Histogram, Meter};

/// The bucket boundaries the HTTP semantic conventions recommend for request durations.
pub const DURATION_BUCKETS: [f64; 14] = [
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

/// The Prometheus registry that `/metrics` renders; `None` until telemetry is initialised.
pub(crate) static METRICS_REGISTRY: Mutex<Option<prometheus::Registry>> = Mutex::new(None);

/// Makes `registry` the one `/metrics` renders (telemetry sets it once it starts).
pub(crate) fn install_registry(registry: prometheus::Registry) {
    *METRICS_REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(registry);
}
