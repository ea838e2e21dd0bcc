//! One call sets up traces, metrics and logs for a service; the guard it returns tears them down.
//!
//! Instrumentation is always on; export is opt-in. Without an OTLP endpoint (generic or a
//! signal's own, or `OTEL_<SIGNAL>_EXPORTER=otlp`; see `config::signals`) no exporter exists
//! and nothing tries to connect anywhere. With it, spans, metrics and logs go over
//! OTLP from a small runtime of their own, so an exporter never waits on the service's runtime and
//! shutdown cannot deadlock on a current-thread runtime (opentelemetry-rust #2583, #3176).

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider},
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SimpleSpanProcessor,
    },
};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{Targets, filter_fn},
    layer::SubscriberExt,
    registry::LookupSpan,
};

use crate::{
    config::signals::Signal,
    config::{Compression, OtlpConfig, Pipeline, Protocol, SamplerConfig, TelemetryConfig},
    export_report::Reported,
    log_export::{NoRetryAtShutdown, ShutdownAwareLogExporter},
    logging,
    metrics::HttpInstruments,
    otlp::{LOCAL_BATCH_DELAY, LOCAL_METRIC_INTERVAL, LocalExporter, LocalSink},
    sampling,
    span_export::{BatchSettings, OtlpSpanProcessor},
    value_limit::{LogRecordLimit, ValueLengthLimit},
};

/// How long [`Telemetry`]'s shutdown may take, collector up or down: with the request drain of
/// [`crate::http::DRAIN_TIMEOUT`] a service exits within 5 s of SIGTERM.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// The target of what shutdown says once the providers are gone: the log output only, since the
/// OTLP log bridge has nowhere left to send it.
const SHUTDOWN_TARGET: &str = "foundry::telemetry::shutdown";

/// The instrumentation scope of every span foundry and the services create.
pub(crate) const INSTRUMENTATION_SCOPE: &str = "logos";

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` is not a valid filter.
    #[error("invalid RUST_LOG={value:?}: {reason}")]
    LogFilter {
        /// The filter as given.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// An exporter could not be built from the configuration.
    #[error("cannot build the OTLP {signal} exporter for OTEL_EXPORTER_OTLP_ENDPOINT: {reason}")]
    Exporter {
        /// traces, metrics or logs.
        signal: &'static str,
        /// The exporter's complaint.
        reason: String,
    },
    /// The runtime that drives OTLP export could not start.
    #[error("cannot start the telemetry export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// Another global `tracing` subscriber is already installed in this process.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and shuts down the providers when dropped: tracer first, then logs, then metrics.
///
/// Hold it for the life of the service: `let _telemetry = foundry::telemetry::init(config)?;`.
#[must_use = "telemetry shuts down when this guard is dropped"]
pub struct Telemetry {
    providers: Option<Providers>,
}

struct Providers {
    tracer: SdkTracerProvider,
    logger: Option<SdkLoggerProvider>,
    /// Tells the log exporter that shutdown has begun, so that it stops retrying.
    log_shutdown: NoRetryAtShutdown,
    meter: SdkMeterProvider,
    /// Drives the gRPC exporters; kept apart from the service's runtime on purpose.
    export_runtime: Option<ExportRuntime>,
}

/// The export runtime, shut down in the background when dropped: dropping a runtime the usual
/// way blocks, which tokio forbids (with a panic) inside the service's own runtime, where `init`
/// and the guard's drop run.
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl ExportRuntime {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(tokio::runtime::Runtime::enter)
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|runtime| runtime.handle().clone())
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.providers.is_some())
            .finish()
    }
}

impl Telemetry {
    /// The tracer provider, for spans built with the SDK directly (the benchmark's) and for the
    /// capture's flush; `None` with `OTEL_SDK_DISABLED=true`.
    #[cfg(feature = "testing")]
    pub(crate) fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.providers.as_ref().map(|providers| &providers.tracer)
    }

    /// Flushes what was recorded and shuts the providers down, within 3 s.
    /// Returns `false` if the bound was hit (the collector did not answer in time).
    pub fn shutdown(mut self) -> bool {
        self.shutdown_bounded()
    }

    fn shutdown_bounded(&mut self) -> bool {
        // What the error log and the panic hook held back is said first, with telemetry off too,
        // and before the logs are flushed; a second call finds nothing more to say.
        crate::error_log::log_summaries(true);
        crate::panics::log_held_back();
        let Some(providers) = self.providers.take() else {
            return true;
        };
        let Providers {
            tracer,
            logger,
            log_shutdown,
            meter,
            export_runtime,
        } = providers;
        log_shutdown.begin();
        // The signal being flushed, then `None` once all are: a timeout can say where it stuck.
        let (progress_tx, progress_rx) = mpsc::channel::<Option<&'static str>>();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        // What is left of the one budget: a collector that never answers the traces must not
        // leave logs and metrics no time at all, nor stretch the whole beyond the bound.
        let remaining = move || deadline.saturating_duration_since(Instant::now());
        // On its own thread, so that neither a current-thread runtime of the caller nor a
        // collector that accepts and never answers can hold the process beyond the bound.
        let spawned = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                let _ = progress_tx.send(Some("traces"));
                let _ = tracer.shutdown_with_timeout(remaining() / 2);
                if let Some(logger) = logger {
                    let _ = progress_tx.send(Some("logs"));
                    let _ = logger.shutdown_with_timeout(remaining() / 2);
                }
                // The periodic readers export once more as they shut down.
                let _ = progress_tx.send(Some("metrics"));
                let _ = meter.shutdown_with_timeout(remaining());
                let _ = progress_tx.send(None);
            });
        let mut stuck_at = "traces";
        let finished = spawned.is_ok()
            && loop {
                match progress_rx.recv_timeout(remaining()) {
                    Ok(Some(signal)) => stuck_at = signal,
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
        drop(export_runtime);
        if let Some(held) = logging::take_held_export_errors() {
            let plural = if held.count == 1 { "" } else { "s" };
            let message = format!(
                "telemetry was not exported ({} export error{plural}); the first: {}",
                held.count, held.first
            );
            // At the level of the worst held, so that `RUST_LOG=error` still shows an error.
            if held.error {
                tracing::error!(target: SHUTDOWN_TARGET, name = "Telemetry.NotExported", "{message}");
            } else {
                tracing::warn!(target: SHUTDOWN_TARGET, name = "Telemetry.NotExported", "{message}");
            }
        }
        if !finished {
            // What was dropped is lost for good: an ERROR, which `RUST_LOG=error` keeps.
            tracing::error!(
                target: SHUTDOWN_TARGET,
                timeout_ms = SHUTDOWN_TIMEOUT.as_millis() as i64,
                "telemetry shutdown timed out flushing the {stuck_at}; what was not exported by then was dropped"
            );
        }
        finished
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown_bounded();
    }
}

/// `$builder` with gzip when `$otlp` asks for it; the gRPC and HTTP builders each have their own
/// `with_compression`, from traits of their own.
macro_rules! with_compression {
    ($builder:ident, $otlp:expr) => {
        match $otlp.compression {
            Some(Compression::Gzip) => {
                $builder.with_compression(opentelemetry_otlp::Compression::Gzip)
            }
            None => $builder,
        }
    };
}

/// Builds the OTLP exporter `$kind` (`SpanExporter`, `MetricExporter`, `LogExporter`) for the
/// configured protocol. A macro because the three builders share no trait to be generic over.
macro_rules! otlp_exporter {
    ($kind:ident, $otlp:expr, $path:literal, $signal:literal) => {
        match $otlp.protocol {
            Protocol::Grpc => {
                let builder = opentelemetry_otlp::$kind::builder()
                    .with_tonic()
                    .with_endpoint(&$otlp.endpoint)
                    .with_timeout($otlp.timeout)
                    .with_metadata(grpc_metadata(&$otlp.headers))
                    .with_retry_policy(retry_policy($otlp));
                let builder = match grpc_tls(&$otlp) {
                    Some(tls) => builder.with_tls_config(tls),
                    None => builder,
                };
                with_compression!(builder, $otlp).build()
            }
            Protocol::HttpProtobuf => {
                let builder = opentelemetry_otlp::$kind::builder()
                    .with_http()
                    .with_endpoint(export_url($otlp, $path))
                    .with_timeout($otlp.timeout)
                    .with_headers($otlp.headers.clone())
                    .with_retry_policy(retry_policy($otlp));
                let builder = match http_tls_client(&$otlp)
                    .map_err(|error| exporter_error($signal, error))?
                {
                    Some(client) => builder.with_http_client(client),
                    None => builder,
                };
                with_compression!(builder, $otlp).build()
            }
        }
        .map_err(|error| exporter_error($signal, error))
    };
}

/// Where a signal's export goes. The HTTP exporter takes the signal's full URL: a signal's own
/// endpoint as is, the base endpoint with the signal's path; gRPC takes the endpoint as it is.
fn export_url(otlp: &OtlpConfig, path: &str) -> String {
    match otlp.protocol {
        Protocol::HttpProtobuf if !otlp.signal_endpoint => {
            crate::url::with_signal_path(&otlp.endpoint, path)
        }
        _ => otlp.endpoint.clone(),
    }
}

/// The TLS of a gRPC export to an `https` endpoint with certificates set: the CA given instead
/// of the system's roots, and the service's own certificate for mTLS; `None` keeps the
/// exporter's default (the system's roots).
fn grpc_tls(otlp: &OtlpConfig) -> Option<tonic::transport::ClientTlsConfig> {
    if !otlp.tls.is_set() || !is_https(&otlp.endpoint) {
        return None;
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match &otlp.tls.certificate {
        Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    };
    if let Some((certificate, key)) = &otlp.tls.client {
        tls = tls.identity(tonic::transport::Identity::from_pem(certificate, key));
    }
    Some(tls)
}

/// The HTTP client of an OTLP/HTTP export with certificates set (see [`grpc_tls`]); `None`
/// keeps the exporter's own client. A blocking client is built off any async runtime.
fn http_tls_client(otlp: &OtlpConfig) -> Result<Option<reqwest::blocking::Client>, String> {
    if !otlp.tls.is_set() || !is_https(&otlp.endpoint) {
        return Ok(None);
    }
    let tls = otlp.tls.clone();
    let timeout = otlp.timeout;
    let build = move || -> Result<reqwest::blocking::Client, String> {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(pem) = &tls.certificate {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|error| format!("the CA certificate: {error}"))?;
            builder = builder.tls_certs_only([certificate]);
        }
        if let Some((certificate, key)) = &tls.client {
            let mut pem = certificate.clone();
            pem.extend_from_slice(key);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|error| format!("the client certificate and key: {error}"))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|error| error.to_string())
    };
    std::thread::spawn(build)
        .join()
        .map_err(|_| "building the HTTP client panicked".to_owned())?
        .map(Some)
}

fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:"))
}

/// Installs the global tracer, meter and logger providers, the propagators of `OTEL_PROPAGATORS`
/// and the `tracing` subscriber, from `config`. With `OTEL_SDK_DISABLED=true` only log output is
/// installed.
pub fn init(config: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    install(config, None)
}

/// [`init`], and every span, log record and metric of this process also goes to `sink`,
/// in-process (Apollo's diagnostics window: see [`crate::otlp`]).
pub fn init_with_sink(
    config: TelemetryConfig,
    sink: std::sync::Arc<dyn LocalSink>,
) -> Result<Telemetry, TelemetryError> {
    install(config, Some(sink))
}

fn install(
    config: TelemetryConfig,
    sink: Option<std::sync::Arc<dyn LocalSink>>,
) -> Result<Telemetry, TelemetryError> {
    // Before anything global changes: a second call must leave the running setup as it was.
    if tracing::dispatcher::has_been_set() {
        return Err(TelemetryError::AlreadyInstalled);
    }
    let log_filter =
        EnvFilter::try_new(&config.log_filter).map_err(|error| TelemetryError::LogFilter {
            value: config.log_filter.clone(),
            reason: error.to_string(),
        })?;
    let span_scoped = config.log_filter.contains('[');
    logging::set_request_log_spans(span_scoped);

    if config.sdk_disabled {
        // Log lines only: no span is created, as nothing would record it (unless span-scoped
        // RUST_LOG directives need them).
        let subscriber = tracing_subscriber::registry()
            .with(logging::layer(config.log_format, log_filter, span_scoped))
            .with((!span_scoped).then(|| filter_fn(|metadata| metadata.is_event())));
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        // The spec: the setting has no effect on the propagators, so the trace goes on through.
        crate::config::propagators::install(&config.propagators);
        crate::panics::install();
        return Ok(Telemetry { providers: None });
    }

    let resource = resource(&config);
    let [traces, metrics, logs] = Signal::ALL.map(|signal| config.export(signal));
    let export_runtime = if [&traces, &metrics, &logs].iter().any(|export| {
        export
            .otlp
            .as_ref()
            .is_some_and(|otlp| otlp.protocol == Protocol::Grpc)
    }) {
        Some(ExportRuntime::start()?)
    } else {
        None
    };
    // tonic spawns its connection tasks on the runtime current at build time: make it ours.
    let entered = export_runtime.as_ref().and_then(ExportRuntime::enter);

    let mut tracer_builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(sampler(config.sampler))
        .with_span_limits(config.span_limits.0);
    let limit = config.span_attribute_value_length_limit;
    if let Some(otlp) = &traces.otlp {
        // The span queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE): when the collector is slow or
        // gone, spans are dropped rather than memory growing.
        let runtime = export_runtime.as_ref().and_then(ExportRuntime::handle);
        tracer_builder = match (otlp.protocol, runtime) {
            // Plain-text gRPC, the collector next door: the lean path of `span_export`. TLS and
            // compression stay with the upstream exporter and its features.
            (Protocol::Grpc, Some(runtime))
                if config.pipeline == Pipeline::Foundry
                    && otlp.compression.is_none()
                    && !is_https(&otlp.endpoint) =>
            {
                let processor = OtlpSpanProcessor::new(
                    &otlp.endpoint,
                    otlp.timeout,
                    grpc_metadata(&otlp.headers),
                    BatchSettings {
                        max_queue: config.span_queue_size,
                        max_batch: config.span_batch_size,
                        schedule_delay: config.span_schedule_delay,
                        retries: otlp.retries,
                    },
                    runtime,
                )
                .map_err(|error| exporter_error("traces", error))?;
                tracer_builder.with_span_processor(ValueLengthLimit::new(processor, limit))
            }
            _ => {
                let exporter = Reported::new(
                    otlp_exporter!(SpanExporter, otlp, "v1/traces", "traces")?,
                    "span",
                    &export_url(otlp, "v1/traces"),
                );
                let batch = BatchConfigBuilder::default()
                    .with_max_queue_size(config.span_queue_size)
                    .with_max_export_batch_size(config.span_batch_size)
                    .with_scheduled_delay(config.span_schedule_delay)
                    .build();
                tracer_builder.with_span_processor(ValueLengthLimit::new(
                    BatchSpanProcessor::builder(exporter)
                        .with_batch_config(batch)
                        .build(),
                    limit,
                ))
            }
        };
    }
    if let Some(sink) = &sink {
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.span_queue_size)
            .with_scheduled_delay(LOCAL_BATCH_DELAY)
            .build();
        tracer_builder = tracer_builder.with_span_processor(ValueLengthLimit::new(
            BatchSpanProcessor::builder(LocalExporter::new(sink.clone(), &resource))
                .with_batch_config(batch)
                .build(),
            limit,
        ));
    }
    if traces.console {
        tracer_builder = tracer_builder.with_span_processor(ValueLengthLimit::new(
            SimpleSpanProcessor::new(crate::console::ConsoleExporter::default()),
            limit,
        ));
    }
    let tracer_provider = tracer_builder.build();

    // Each reader aggregates on its own: Prometheus behind `/metrics`, and the SDK's periodic
    // reader for OTLP and for the local sink.
    let (mut meter_builder, registry) = meter_provider(resource.clone())?;
    if let Some(otlp) = &metrics.otlp {
        let exporter = Reported::new(
            otlp_exporter!(MetricExporter, otlp, "v1/metrics", "metrics")?,
            "metric",
            &export_url(otlp, "v1/metrics"),
        );
        meter_builder = meter_builder.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(config.metric_export_interval)
                .build(),
        );
    }
    if let Some(sink) = &sink {
        meter_builder = meter_builder.with_reader(
            PeriodicReader::builder(LocalExporter::new(sink.clone(), &resource))
                .with_interval(LOCAL_METRIC_INTERVAL)
                .build(),
        );
    }
    let meter_provider = meter_builder.build();

    let log_shutdown = NoRetryAtShutdown::default();
    let logger_provider = if logs.otlp.is_some() || sink.is_some() {
        let mut builder = SdkLoggerProvider::builder().with_resource(resource.clone());
        if let Some(otlp) = &logs.otlp {
            // Two exporters, one that retries and one that does not: the flush at shutdown
            // is not retried (see `log_export`).
            let retrying = if otlp.retries {
                Some(otlp_exporter!(LogExporter, otlp, "v1/logs", "logs")?)
            } else {
                None
            };
            let once = OtlpConfig {
                retries: false,
                ..otlp.clone()
            };
            let once = otlp_exporter!(LogExporter, &once, "v1/logs", "logs")?;
            let batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
                .with_max_queue_size(config.log_batch.max_queue)
                .with_max_export_batch_size(config.log_batch.max_batch)
                .with_scheduled_delay(config.log_batch.schedule_delay)
                .build();
            builder = builder.with_log_processor(LogRecordLimit::new(
                opentelemetry_sdk::logs::BatchLogProcessor::builder(Reported::new(
                    ShutdownAwareLogExporter::new(retrying, once, log_shutdown.clone()),
                    "log",
                    &export_url(otlp, "v1/logs"),
                ))
                .with_batch_config(batch)
                .build(),
                config.log_record_limits,
            ));
        }
        if let Some(sink) = &sink {
            let batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
                .with_scheduled_delay(LOCAL_BATCH_DELAY)
                .build();
            builder = builder.with_log_processor(LogRecordLimit::new(
                opentelemetry_sdk::logs::BatchLogProcessor::builder(LocalExporter::new(
                    sink.clone(),
                    &resource,
                ))
                .with_batch_config(batch)
                .build(),
                config.log_record_limits,
            ));
        }
        Some(builder.build())
    } else {
        None
    };

    // Span-scoped RUST_LOG directives must see every span, unsampled or not.
    if !span_scoped {
        sampling::skip_unsampled_spans(config.sampler);
    }
    // The span filter goes right above the registry: there, its level (INFO, for spans) is the
    // one the next layers' levels add to; further out, tracing-subscriber would take the outer
    // layer's level alone.
    let subscriber = tracing_subscriber::registry()
        .with(span_filter(span_scoped))
        .with(logging::layer(config.log_format, log_filter, span_scoped))
        .with(
            config
                .export_errors_at_exit
                .then_some(logging::HoldExportErrors),
        )
        .with(span_layer(&tracer_provider))
        .with(logger_provider.as_ref().map(|provider| {
            logging::EventsOnly::new(
                logging::WithSpanContext::new(
                    opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                        provider,
                    ),
                ),
                no_telemetry_about_telemetry(),
            )
        }));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    if config.export_errors_at_exit {
        logging::hold_export_errors();
    }

    install_globals(&tracer_provider, &meter_provider, registry);
    crate::config::propagators::install(&config.propagators);
    crate::panics::install();
    drop(entered);
    Ok(Telemetry {
        providers: Some(Providers {
            tracer: tracer_provider,
            logger: logger_provider,
            log_shutdown,
            meter: meter_provider,
            export_runtime,
        }),
    })
}

/// The meter provider's builder, with the Prometheus reader behind `/metrics` (see
/// [`crate::metrics`]), and that reader's registry; the OTLP readers are added to it.
fn meter_provider(
    resource: Resource,
) -> Result<(MeterProviderBuilder, prometheus::Registry), TelemetryError> {
    let registry = prometheus::Registry::new();
    let reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .map_err(|error| exporter_error("metrics", error))?;
    let provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader);
    Ok((provider, registry))
}

/// Sets the global providers and the registry behind `/metrics` (the propagators are
/// `OTEL_PROPAGATORS`'s, installed by [`crate::config::propagators::install`]).
fn install_globals(
    tracer_provider: &SdkTracerProvider,
    meter_provider: &SdkMeterProvider,
    registry: prometheus::Registry,
) {
    global::set_tracer_provider(tracer_provider.clone());
    crate::context::set_tracer(tracer_provider.tracer(INSTRUMENTATION_SCOPE));
    global::set_meter_provider(meter_provider.clone());
    HttpInstruments::install(&global::meter(INSTRUMENTATION_SCOPE));
    crate::metrics::install_registry(registry);
}

/// The global filter of which `tracing` spans exist (see [`sampling::SpanFilter`]): INFO and
/// above without the HTTP, gRPC and telemetry crates' own; every span with span-scoped
/// `RUST_LOG` directives, which must see them all. It goes right above the registry.
fn span_filter(span_scoped: bool) -> sampling::SpanFilter {
    sampling::SpanFilter::new((!span_scoped).then(no_telemetry_about_telemetry))
}

/// The `tracing` → OpenTelemetry bridge, with the per-span work cut to what is exported.
///
/// Location, thread and timing attributes are off: they are noise on every span
/// (`code.file.path` is an absolute path into the cargo registry) and cost per span. So is
/// context activation, a thread-local context switch on every poll of every instrumented
/// future: only the OTLP log bridge reads the active context, and [`logging::WithSpanContext`]
/// activates it for log events alone. Which spans exist is decided by [`span_filter`], apart
/// from `RUST_LOG`, so a quiet log level never disables spans. The bridge keeps a filter of its
/// own for the events it turns into span events: without it, every event some layer enables
/// (a `debug` directive for one crate enables DEBUG call sites everywhere) would reach it, and
/// an ERROR event of hyper or h2 inside a span would mark the span failed. The filter costs a
/// registry lookup at every span event (tracing-subscriber has no event-only per-layer filter,
/// and a wrapper of our own could not pass tracing-opentelemetry's context lookup through
/// without `unsafe`).
fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(INSTRUMENTATION_SCOPE))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(no_telemetry_about_telemetry())
}

/// INFO and above, without the internals of the HTTP, gRPC and telemetry crates themselves.
fn no_telemetry_about_telemetry() -> Targets {
    Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
        .with_target("tower", tracing::level_filters::LevelFilter::OFF)
        .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            logging::REQUEST_LOG_SPAN_TARGET,
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(SHUTDOWN_TARGET, tracing::level_filters::LevelFilter::OFF)
        // Their reports are about the export itself, and may come after the logs' own shutdown.
        .with_target(
            "foundry::span_export",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            crate::export_report::TARGET,
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry-otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
}

fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build()
}

fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

fn grpc_metadata(
    headers: &std::collections::HashMap<String, String>,
) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (key, value) in headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
    metadata
}

/// The exporters' recommended backoff (three retries after 100, 200 and 400 ms, with jitter,
/// within the export timeout), or none.
fn retry_policy(otlp: &OtlpConfig) -> opentelemetry_otlp::RetryPolicy {
    if otlp.retries {
        opentelemetry_otlp::RetryPolicy::recommended()
    } else {
        opentelemetry_otlp::RetryPolicy::disabled()
    }
}

fn exporter_error(signal: &'static str, error: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Exporter {
        signal,
        reason: error.to_string(),
    }
}
