//! Test support (feature `testing`): see the spans a test produced, in-process or over OTLP.
//!
//! - [`capture`] installs the production pipeline (`telemetry::init_with_sink`) with the
//!   receiver's sink in memory and no exporter, so a crate's tests can drive its router with
//!   `oneshot` and assert on the spans of one trace.
//! - [`TestRouter`] drives a service's router with those: requests in, answers and the
//!   request's [`Trace`] out.
//! - [`OtlpReceiver`] is a real OTLP receiver, gRPC and HTTP/protobuf, for tests that run
//!   services as separate processes. It is a tonic server over opentelemetry-proto rather than
//!   fake-opentelemetry-collector, which turns every attribute value into a string and drops the
//!   resource: tests here assert attribute types and `service.name`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
    metrics::v1::metric,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;

use crate::{config::TelemetryConfig, otlp::LocalSink as _};

mod router;

pub use router::{TestRouter, Trace, json_post};

// The parts that the tests, the benchmarks and the instruction counter reach into, which the
// services do not use.
pub use crate::{
    http::server::ServerLayer,
    metrics::{DURATION_BUCKETS, render_prometheus},
    openapi::coverage::{Route, document_routes, router_routes, served_document},
    propagation::{W3cBaggagePropagator, W3cTraceContextPropagator},
    span_export::Encoded,
};

/// Where OTLP/gRPC goes when no variable says otherwise.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = crate::config::DEFAULT_OTLP_GRPC_ENDPOINT;
/// Where OTLP/HTTP goes when no variable says otherwise.
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = crate::config::DEFAULT_OTLP_HTTP_ENDPOINT;
/// The instrumentation scope of every span and instrument foundry makes.
pub const INSTRUMENTATION_SCOPE: &str = crate::telemetry::INSTRUMENTATION_SCOPE;
/// The request body limit `http::instrument` sets.
pub const MAX_BODY_BYTES: usize = crate::http::MAX_BODY_BYTES;
/// The profiles' file, looked for in the working directory.
pub const CONFIG_FILE: &str = crate::profile::CONFIG_FILE;

/// Every setting the profiles cover, as (service, variable, default); the service is `None` for
/// the settings of every service (telemetry).
pub fn settings() -> impl Iterator<Item = (Option<&'static str>, &'static str, Option<&'static str>)>
{
    crate::profile::SETTINGS
        .iter()
        .map(|setting| (setting.service, setting.variable, setting.default))
}

/// An attribute value with its OTLP type, so tests can tell `200` from `"200"`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// An array, map or bytes: not used by LOGOS spans.
    Other,
}

/// A span's kind, as OTLP names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SPAN_KIND_INTERNAL (and unspecified).
    Internal,
    /// SPAN_KIND_SERVER
    Server,
    /// SPAN_KIND_CLIENT
    Client,
    /// SPAN_KIND_PRODUCER
    Producer,
    /// SPAN_KIND_CONSUMER
    Consumer,
}

/// A span's status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Unset.
    Unset,
    /// Ok.
    Ok,
    /// Error.
    Error,
}

/// One span as a receiver saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the span's resource.
    pub service_name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id, or empty for a root span.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// The span kind.
    pub kind: Kind,
    /// Attributes with their types.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The status code.
    pub status: Status,
    /// The status description (an error's), empty when there is none.
    pub status_message: String,
    /// The W3C tracestate the span carried.
    pub trace_state: String,
    /// The names of its events (for an event from `tracing`, its message).
    pub events: Vec<String>,
    /// How many attributes each event kept, in the order of `events`.
    pub event_attribute_counts: Vec<usize>,
    /// How many attributes each of its links kept, one entry a link.
    pub link_attribute_counts: Vec<usize>,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(AttributeValue::String(value)) => Some(value),
            _ => None,
        }
    }

    /// An integer attribute (`None` if absent or of another type).
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(AttributeValue::Int(value)) => Some(*value),
            _ => None,
        }
    }

    /// A double attribute.
    pub fn double(&self, key: &str) -> Option<f64> {
        match self.attributes.get(key) {
            Some(AttributeValue::Double(value)) => Some(*value),
            _ => None,
        }
    }

    /// A boolean attribute.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attributes.get(key) {
            Some(AttributeValue::Bool(value)) => Some(*value),
            _ => None,
        }
    }

    /// True for a span without a parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// A fresh sampled `traceparent` header and its trace id, for a test to tag its request with.
pub fn new_traceparent(sampled: bool) -> (String, String) {
    let trace_id = TraceId::from_bytes(uuid::Uuid::new_v4().into_bytes()).to_string();
    let span_id = SpanId::from_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([1; 8]),
    )
    .to_string();
    let flags = if sampled { "01" } else { "00" };
    (trace_id.clone(), format!("00-{trace_id}-{span_id}-{flags}"))
}

/// An answer of a service's router, its body decoded as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct TestResponse {
    /// The status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body as JSON, or `Value::Null`.
    pub body: serde_json::Value,
    /// The body as text.
    pub text: String,
}

impl TestResponse {
    /// Sends `request` through the whole `router` (no socket) and reads the whole answer.
    pub async fn of(router: &Router, request: http::Request<axum::body::Body>) -> Self {
        use tower::ServiceExt as _;
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|error| panic!("the body of a {status} answer: {error}"));
        Self {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Asserts the LOGOS error contract: the status, `{"error": {"code", "message"}}` with exactly
/// these two keys, the expected code and a non-empty message.
#[track_caller]
pub fn assert_error(response: &TestResponse, status: http::StatusCode, code: &str) {
    assert_eq!(response.status, status, "{}", response.text);
    assert_eq!(
        response.headers[http::header::CONTENT_TYPE],
        "application/json",
        "{}",
        response.text
    );
    let error = response.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object in {}", response.text));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "{}", response.text);
    assert_eq!(error["code"], code, "{}", response.text);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "empty message: {}",
        response.text
    );
}

/// The span named `name` among `spans` (the first, if several are); panics listing them all
/// when there is none.
#[track_caller]
pub fn span_named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// Asserts that `child` is a direct child of `parent` in the same trace.
#[track_caller]
pub fn assert_child_of(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.trace_id, parent.trace_id,
        "{} vs {}",
        child.name, parent.name
    );
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} should be a child of {}",
        child.name, parent.name
    );
}

/// The in-process span capture of [`capture`].
#[derive(Debug)]
pub struct SpanCapture {
    telemetry: crate::telemetry::Telemetry,
    sink: Sink,
}

impl SpanCapture {
    /// Every finished span of `trace_id`, with the `service.name` of the provider's resource.
    pub fn spans(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        if let Some(provider) = self.telemetry.tracer_provider() {
            let _ = provider.force_flush();
        }
        self.sink
            .lock()
            .spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// Installs, once per process, the production pipeline ([`crate::telemetry::init_with_sink`],
/// as Apollo's window receives its own telemetry) with no exporter but a sink in memory, and
/// returns it. The first `service_name` wins. Tests tag requests with [`new_traceparent`] and
/// read back the spans of that trace, so tests running in parallel do not see each other's.
/// The log output stays quiet unless `TEST_LOG=1` (then at `RUST_LOG`'s level, `info` by
/// default), as a test run's output would otherwise hold every error a test provokes.
///
/// # Panics
///
/// When the pipeline cannot be installed: another `tracing` subscriber is already the global
/// one in this process.
pub fn capture(service_name: &str) -> &'static SpanCapture {
    static CAPTURE: OnceLock<SpanCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let show_logs = std::env::var("TEST_LOG").is_ok_and(|value| value == "1");
        let config = TelemetryConfig::from_lookup(service_name, "test", |name| match name {
            "OTEL_TRACES_EXPORTER" | "OTEL_METRICS_EXPORTER" | "OTEL_LOGS_EXPORTER" => {
                Some("none".to_owned())
            }
            "RUST_LOG" if show_logs => std::env::var(name).ok(),
            "RUST_LOG" => Some("off".to_owned()),
            _ => None,
        })
        .unwrap_or_else(|error| panic!("the capture's config is valid: {error}"));
        let sink = Sink::default();
        let telemetry = crate::telemetry::init_with_sink(config, Arc::new(sink.clone()))
            .unwrap_or_else(|error| panic!("the capture's pipeline starts: {error}"));
        SpanCapture { telemetry, sink }
    })
}

/// Installs, once per process, the production pipeline, built by [`crate::telemetry::init`] as
/// a service's is: the OTLP/gRPC span processor, which encodes every span as it ends, exporting
/// to a port where nothing listens (no retries), the meter provider behind `/metrics`, and the
/// log output (metrics and logs not exported). For benchmarks of the per-span and per-request
/// cost on the request path; returns the tracer provider, for spans built with the SDK
/// directly.
pub fn install_benchmark_pipeline(service_name: &str) -> &'static SdkTracerProvider {
    static INSTALLED: OnceLock<crate::telemetry::Telemetry> = OnceLock::new();
    let telemetry = INSTALLED.get_or_init(|| {
        let endpoint = format!("http://{}", closed_address());
        let mut config = TelemetryConfig::from_lookup(service_name, "bench", |name| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
            "OTEL_METRICS_EXPORTER" | "OTEL_LOGS_EXPORTER" => Some("none".to_owned()),
            // The export warnings of a collector that is never there stay quiet.
            "RUST_LOG" => Some("error".to_owned()),
            _ => None,
        })
        .unwrap_or_else(|error| panic!("the benchmark's config is valid: {error}"));
        config.disable_retries();
        crate::telemetry::init(config)
            .unwrap_or_else(|error| panic!("the benchmark's pipeline starts: {error}"))
    });
    telemetry
        .tracer_provider()
        .unwrap_or_else(|| panic!("telemetry is on"))
}

#[derive(Default, Debug)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// The gRPC metadata of the last span export.
    trace_metadata: tonic::metadata::MetadataMap,
    span_count: usize,
    metric_names: BTreeSet<String>,
    metric_exports: usize,
    histogram_counts: BTreeMap<String, u64>,
    /// Each histogram's `aggregation_temporality`, as of the last export.
    histogram_temporalities: BTreeMap<String, i32>,
    log_records: usize,
    /// Every log record received, as its protobuf message's debug text (body and attributes).
    log_texts: Vec<String>,
    log_ids: Vec<(String, String)>,
    /// How many log records each log export held, in order.
    log_export_sizes: Vec<usize>,
    /// The resource attributes of the last span export of each service.
    resources: BTreeMap<String, BTreeMap<String, AttributeValue>>,
    /// How every export arrived, in order.
    exports: Vec<ReceivedExport>,
    /// Span exports still to refuse, and those refused so far.
    trace_refusals_left: usize,
    trace_refusals: usize,
    /// How they are refused: the code, and the pause asked for in a `RetryInfo` detail
    /// (`None`: `UNAVAILABLE`, without).
    trace_refusal: Option<(tonic::Code, Option<Duration>)>,
}

/// How one export request arrived at an [`OtlpReceiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedExport {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// The request's path over HTTP (`/v1/traces`, or a signal's own endpoint's path); the gRPC
    /// method's over gRPC.
    pub path: String,
    /// `Content-Encoding` over HTTP, `grpc-encoding` over gRPC; `None` when uncompressed.
    pub encoding: Option<String>,
}

/// What the receiver keeps; shared by its gRPC and HTTP servers.
#[derive(Clone, Default, Debug)]
struct Sink(Arc<Mutex<Received>>);

impl Sink {
    fn record_grpc<T>(&self, signal: &'static str, request: &tonic::Request<T>) {
        self.lock().exports.push(ReceivedExport {
            signal,
            transport: "grpc",
            path: String::new(),
            encoding: request
                .metadata()
                .get("grpc-encoding")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiver's sink takes a process's own telemetry too: [`capture`]'s.
impl crate::otlp::LocalSink for Sink {
    fn traces(&self, request: ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        let mut resources = Vec::new();
        for resource_spans in request.resource_spans {
            let resource: BTreeMap<String, AttributeValue> = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .map(|KeyValue { key, value, .. }| (key.clone(), convert(value.as_ref())))
                .collect();
            let service_name = match resource.get("service.name") {
                Some(AttributeValue::String(name)) => name.clone(),
                _ => String::new(),
            };
            resources.push((service_name.clone(), resource));
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                spans.push(from_proto(&service_name, span));
            }
        }
        let mut received = self.lock();
        received.span_count += spans.len();
        received.spans.extend(spans);
        received.resources.extend(resources);
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        let metrics: Vec<_> = request
            .resource_metrics
            .into_iter()
            .flat_map(|resource| resource.scope_metrics)
            .flat_map(|scope| scope.metrics)
            .collect();
        let mut received = self.lock();
        received.metric_exports += 1;
        for metric in metrics {
            if let Some(metric::Data::Histogram(histogram)) = &metric.data {
                let count = histogram.data_points.iter().map(|point| point.count).sum();
                received.histogram_counts.insert(metric.name.clone(), count);
                received
                    .histogram_temporalities
                    .insert(metric.name.clone(), histogram.aggregation_temporality);
            }
            received.metric_names.insert(metric.name);
        }
    }

    fn logs(&self, request: ExportLogsServiceRequest) {
        let records: Vec<String> = request
            .resource_logs
            .iter()
            .flat_map(|resource| &resource.scope_logs)
            .flat_map(|scope| &scope.log_records)
            .map(|record| format!("{record:?}"))
            .collect();
        let ids: Vec<(String, String)> = request
            .resource_logs
            .iter()
            .flat_map(|resource| &resource.scope_logs)
            .flat_map(|scope| &scope.log_records)
            .map(|record| (hex(&record.trace_id), hex(&record.span_id)))
            .collect();
        let mut received = self.lock();
        received.log_records += records.len();
        received.log_export_sizes.push(records.len());
        received.log_texts.extend(records);
        received.log_ids.extend(ids);
    }
}

fn convert(value: Option<&AnyValue>) -> AttributeValue {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => AttributeValue::String(s.clone()),
        Some(any_value::Value::IntValue(i)) => AttributeValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AttributeValue::Double(*d),
        Some(any_value::Value::BoolValue(b)) => AttributeValue::Bool(*b),
        _ => AttributeValue::Other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_proto(
    service_name: &str,
    span: opentelemetry_proto::tonic::trace::v1::Span,
) -> ReceivedSpan {
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    let kind = match span.kind() {
        SpanKind::Server => Kind::Server,
        SpanKind::Client => Kind::Client,
        SpanKind::Producer => Kind::Producer,
        SpanKind::Consumer => Kind::Consumer,
        SpanKind::Internal | SpanKind::Unspecified => Kind::Internal,
    };
    let status = match span.status.as_ref().map(|status| status.code()) {
        Some(StatusCode::Error) => Status::Error,
        Some(StatusCode::Ok) => Status::Ok,
        _ => Status::Unset,
    };
    ReceivedSpan {
        service_name: service_name.to_owned(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name,
        kind,
        attributes: span
            .attributes
            .iter()
            .map(|KeyValue { key, value, .. }| (key.clone(), convert(value.as_ref())))
            .collect(),
        status,
        status_message: span
            .status
            .as_ref()
            .map(|status| status.message.clone())
            .unwrap_or_default(),
        trace_state: span.trace_state,
        event_attribute_counts: span
            .events
            .iter()
            .map(|event| event.attributes.len())
            .collect(),
        events: span.events.into_iter().map(|event| event.name).collect(),
        link_attribute_counts: span
            .links
            .iter()
            .map(|link| link.attributes.len())
            .collect(),
    }
}

impl Sink {
    /// The refusal of a span export while [`OtlpReceiver::refuse_span_exports_with`] asks for
    /// one; else the request's metadata, kept.
    fn refuse_or_keep_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), tonic::Status> {
        let mut received = self.lock();
        if received.trace_refusals_left == 0 {
            received.trace_metadata = metadata.clone();
            return Ok(());
        }
        received.trace_refusals_left -= 1;
        received.trace_refusals += 1;
        let (code, retry_after) = received
            .trace_refusal
            .unwrap_or((tonic::Code::Unavailable, None));
        let message = "the receiver is refusing, as asked";
        Err(match retry_after {
            Some(delay) => {
                use tonic_types::{ErrorDetails, StatusExt as _};
                tonic::Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_retry_info(Some(delay)),
                )
            }
            None => tonic::Status::new(code, message),
        })
    }
}

/// The gRPC service of one signal: its export is recorded, then kept by `$keep`; spans may be
/// refused first.
macro_rules! grpc_service {
    ($service:ident, $request:ty, $response:ty, $signal:literal, $keep:ident $(, $refuse:ident)?) => {
        #[tonic::async_trait]
        impl $service for Sink {
            async fn export(
                &self,
                request: tonic::Request<$request>,
            ) -> Result<tonic::Response<$response>, tonic::Status> {
                $(self.$refuse(request.metadata())?;)?
                self.record_grpc($signal, &request);
                self.$keep(request.into_inner());
                Ok(tonic::Response::new(<$response>::default()))
            }
        }
    };
}

grpc_service!(
    TraceService,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    "traces",
    traces,
    refuse_or_keep_metadata
);
grpc_service!(
    MetricsService,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    "metrics",
    metrics
);
grpc_service!(
    LogsService,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    "logs",
    logs
);

/// The PEM files of a receiver's mTLS: its certificate and key, and the CA of its clients.
struct ServerTls {
    certificate: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
}

impl ServerTls {
    fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.certificate,
                &self.key,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.client_ca))
    }

    fn http(&self) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        use tokio_rustls::rustls::{
            self,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let invalid = |error: &dyn std::fmt::Display| std::io::Error::other(error.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&self.client_ca) {
            roots
                .add(certificate.map_err(|e| invalid(&e))?)
                .map_err(|e| invalid(&e))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| invalid(&e))?;
        let certificates = CertificateDer::pem_slice_iter(&self.certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| invalid(&e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates, key)
            .map_err(|e| invalid(&e))?;
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}

/// The HTTP server's listener under mTLS: a connection whose handshake fails (no client
/// certificate, say) is closed, and the next one is taken.
struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.inner.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            if let Ok(stream) = self.acceptor.accept(stream).await {
                return (stream, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The OTLP trace service of a counting receiver: it walks the protobuf wire format to count
/// spans instead of decoding every span into structs, so a benchmark's receiver takes as little
/// CPU from the services it measures as it can. Hand-written because the generated
/// `TraceServiceServer` always decodes the whole request.
#[derive(Clone, Debug)]
struct CountingTraceServer {
    sink: Sink,
}

impl tonic::server::NamedService for CountingTraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower::Service<http::Request<B>> for CountingTraceServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let sink = self.sink.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                ExportTraceServiceResponse,
                SpanCount,
            >::default());
            Ok(grpc.unary(CountSpans { sink }, request).await)
        })
    }
}

struct CountSpans {
    sink: Sink,
}

impl tonic::server::UnaryService<SpanCount> for CountSpans {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<SpanCount>) -> Self::Future {
        self.sink.lock().span_count += request.into_inner().0;
        std::future::ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
}

/// An `ExportTraceServiceRequest` read only as far as counting its spans: field 1
/// (resource_spans) holds field 2 (scope_spans), which holds field 2 (spans).
#[derive(Clone, Debug, Default, PartialEq)]
struct SpanCount(usize);

impl prost::Message for SpanCount {
    fn encode_raw(&self, _buf: &mut impl prost::bytes::BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != 1 || wire_type != prost::encoding::WireType::LengthDelimited {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let resource_spans = length_delimited(buf)?;
        for scope_spans in fields(resource_spans, 2)? {
            self.0 += fields(scope_spans, 2)?.len();
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        self.0 = 0;
    }
}

fn length_delimited(
    buf: &mut impl prost::bytes::Buf,
) -> Result<prost::bytes::Bytes, prost::DecodeError> {
    let mut value = prost::bytes::Bytes::new();
    prost::encoding::bytes::merge(
        prost::encoding::WireType::LengthDelimited,
        &mut value,
        buf,
        prost::encoding::DecodeContext::default(),
    )?;
    Ok(value)
}

/// The length-delimited fields numbered `wanted` of one message.
fn fields(
    mut message: prost::bytes::Bytes,
    wanted: u32,
) -> Result<Vec<prost::bytes::Bytes>, prost::DecodeError> {
    use prost::bytes::Buf;
    let mut found = Vec::new();
    while message.has_remaining() {
        let (tag, wire_type) = prost::encoding::decode_key(&mut message)?;
        if tag == wanted && wire_type == prost::encoding::WireType::LengthDelimited {
            found.push(length_delimited(&mut message)?);
        } else {
            prost::encoding::skip_field(
                wire_type,
                tag,
                &mut message,
                prost::encoding::DecodeContext::default(),
            )?;
        }
    }
    Ok(found)
}

/// A loopback address where nothing listens: a port the system gave out and took back, for a
/// service that is down (for a receiver that appears there later, see [`ReservedAddress`]).
///
/// # Panics
/// When no loopback port can be had.
pub fn closed_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("a free loopback port: {error}"))
}

/// A loopback port held, bound but not listening: connections to it are refused, as to a
/// collector that is down, and no other socket can take it before a receiver starts there
/// ([`OtlpReceiver::start_on`]).
#[derive(Debug)]
pub struct ReservedAddress {
    socket: tokio::net::TcpSocket,
    address: SocketAddr,
}

impl ReservedAddress {
    /// Holds a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be had.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4()
            .and_then(|socket| {
                socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                Ok(socket)
            })
            .unwrap_or_else(|error| panic!("a free loopback port: {error}"));
        let address = socket
            .local_addr()
            .unwrap_or_else(|error| panic!("a bound address: {error}"));
        Self { socket, address }
    }

    /// The address held.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Default for ReservedAddress {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a receiver's gRPC server listens.
enum GrpcPort {
    At(SocketAddr),
    Reserved(ReservedAddress),
}

impl From<SocketAddr> for GrpcPort {
    fn from(address: SocketAddr) -> Self {
        Self::At(address)
    }
}

/// The address of a peer that accepts connections and never says a word, for as long as the
/// process runs: the worst case for a client or an exporter.
///
/// # Panics
/// When no loopback port can be had.
pub fn silent_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("a free loopback port: {error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("a bound address: {error}"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    address
}

/// A real OTLP receiver on loopback: gRPC on one port, HTTP/protobuf on another. It runs on
/// the runtime it was started in and stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    sink: Sink,
    grpc_address: SocketAddr,
    http_address: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts both servers on free ports.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)).into(), true, None).await
    }

    /// Starts the gRPC server on the `reserved` port (a collector that appears where the services
    /// have been exporting all along) and the HTTP server on a free port.
    pub async fn start_on(reserved: ReservedAddress) -> std::io::Result<Self> {
        Self::start_with(GrpcPort::Reserved(reserved), true, None).await
    }

    /// A receiver whose gRPC and HTTP servers speak TLS with the PEM `certificate` and `key`,
    /// and take only clients with a certificate that `client_ca` signed (mTLS): see
    /// [`Self::grpc_tls_endpoint`] and [`Self::http_tls_endpoint`].
    pub async fn start_tls(
        certificate: &[u8],
        key: &[u8],
        client_ca: &[u8],
    ) -> std::io::Result<Self> {
        let tls = ServerTls {
            certificate: certificate.to_vec(),
            key: key.to_vec(),
            client_ca: client_ca.to_vec(),
        };
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            true,
            Some(tls),
        )
        .await
    }

    /// A receiver that only counts spans, for benchmarks: [`Self::spans`] stays empty.
    pub async fn start_counting() -> std::io::Result<Self> {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)).into(), false, None).await
    }

    /// [`Self::start_counting`] with the gRPC server on `grpc_address`: a receiver that stops
    /// and comes back on the same port, for the soak.
    pub async fn start_counting_at(grpc_address: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(grpc_address.into(), false, None).await
    }

    async fn start_with(
        grpc: GrpcPort,
        keep_spans: bool,
        tls: Option<ServerTls>,
    ) -> std::io::Result<Self> {
        let sink = Sink::default();
        let grpc_listener = match grpc {
            GrpcPort::At(address) => tokio::net::TcpListener::bind(address).await?,
            GrpcPort::Reserved(reserved) => reserved.socket.listen(1024)?,
        };
        let grpc_address = grpc_listener.local_addr()?;
        let http_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let http_address = http_listener.local_addr()?;

        let mut routes = tonic::service::Routes::builder();
        // Compressed requests are accepted, as a collector accepts them (OTEL_EXPORTER_OTLP_COMPRESSION).
        let gzip = tonic::codec::CompressionEncoding::Gzip;
        if keep_spans {
            routes.add_service(TraceServiceServer::new(sink.clone()).accept_compressed(gzip));
        } else {
            routes.add_service(CountingTraceServer { sink: sink.clone() });
        }
        routes
            .add_service(MetricsServiceServer::new(sink.clone()).accept_compressed(gzip))
            .add_service(LogsServiceServer::new(sink.clone()).accept_compressed(gzip));
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            server = server
                .tls_config(tls.grpc())
                .map_err(std::io::Error::other)?;
        }
        let grpc = server.add_routes(routes.routes()).serve_with_incoming(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
        );
        // Any path: a signal's own endpoint (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is used as is,
        // and the path it reached is what a test asserts.
        let app = Router::new()
            .fallback(axum::routing::post(http_export))
            .with_state(sink.clone());
        let http = match &tls {
            Some(tls) => {
                let listener = TlsListener {
                    inner: http_listener,
                    acceptor: tls.http()?,
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
            None => tokio::spawn(async move {
                let _ = axum::serve(http_listener, app).await;
            }),
        };
        let tasks = vec![
            tokio::spawn(async move {
                let _ = grpc.await;
            }),
            http,
        ];
        Ok(Self {
            sink,
            grpc_address,
            http_address,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT` for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_address)
    }

    /// `https://localhost:PORT`, the gRPC endpoint of a receiver started with [`Self::start_tls`].
    pub fn grpc_tls_endpoint(&self) -> String {
        format!("https://localhost:{}", self.grpc_address.port())
    }

    /// `https://localhost:PORT`, the HTTP endpoint of a receiver started with [`Self::start_tls`].
    pub fn http_tls_endpoint(&self) -> String {
        format!("https://localhost:{}", self.http_address.port())
    }

    /// `http://127.0.0.1:PORT` for `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.lock().spans.clone()
    }

    /// A header of the last span export over gRPC (its metadata), if it was sent.
    pub fn trace_export_header(&self, name: &str) -> Option<String> {
        self.sink
            .lock()
            .trace_metadata
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    /// How every export request arrived so far (signal, transport, path, compression).
    pub fn exports(&self) -> Vec<ReceivedExport> {
        self.sink.lock().exports.clone()
    }

    /// Answers the next `exports` span exports over gRPC with `UNAVAILABLE`, as a collector does
    /// under backpressure or while it restarts.
    pub fn refuse_span_exports(&self, exports: usize) {
        self.refuse_span_exports_with(exports, tonic::Code::Unavailable, None);
    }

    /// Answers the next `exports` span exports over gRPC with `code`, and with a `RetryInfo`
    /// detail asking for `retry_after` when given, as a collector that sheds load does.
    pub fn refuse_span_exports_with(
        &self,
        exports: usize,
        code: tonic::Code,
        retry_after: Option<Duration>,
    ) {
        let mut received = self.sink.lock();
        received.trace_refusals_left = exports;
        received.trace_refusal = Some((code, retry_after));
    }

    /// How many span exports were refused so far.
    pub fn refused_span_exports(&self) -> usize {
        self.sink.lock().trace_refusals
    }

    /// The resource attributes of `service`'s last span export, with their types.
    pub fn resource(&self, service: &str) -> Option<BTreeMap<String, AttributeValue>> {
        self.sink.lock().resources.get(service).cloned()
    }

    /// How many spans were received so far.
    pub fn span_count(&self) -> usize {
        self.sink.lock().span_count
    }

    /// Forgets the spans received so far (the count stays).
    pub fn clear_spans(&self) {
        self.sink.lock().spans.clear();
    }

    /// The names of every metric received so far.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.sink.lock().metric_names.clone()
    }

    /// How many metric exports were received so far.
    pub fn metric_export_count(&self) -> usize {
        self.sink.lock().metric_exports
    }

    /// The count of histogram `name`, summed over its data points, as of the last export.
    pub fn histogram_count(&self, name: &str) -> Option<u64> {
        self.sink.lock().histogram_counts.get(name).copied()
    }

    /// Whether histogram `name` came as deltas (`Some(true)`) or cumulative (`Some(false)`), as
    /// of the last export.
    pub fn histogram_is_delta(&self, name: &str) -> Option<bool> {
        use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
        self.sink
            .lock()
            .histogram_temporalities
            .get(name)
            .map(|temporality| *temporality == AggregationTemporality::Delta as i32)
    }

    /// How many log records were received so far.
    pub fn log_record_count(&self) -> usize {
        self.sink.lock().log_records
    }

    /// How many log records each log export held, in the order they came.
    pub fn log_export_sizes(&self) -> Vec<usize> {
        self.sink.lock().log_export_sizes.clone()
    }

    /// The trace and span ids (hex; empty when unset) of every log record received so far.
    pub fn log_record_ids(&self) -> Vec<(String, String)> {
        self.sink.lock().log_ids.clone()
    }

    /// Every log record received so far, as the debug text of its protobuf message.
    pub fn log_records(&self) -> Vec<String> {
        self.sink.lock().log_texts.clone()
    }

    /// The spans of `trace_id`, once `done` says they are complete or `timeout` passed
    /// (then whatever arrived, for the test's assertions to judge).
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `done` holds for everything received, or `timeout` passes; returns whether
    /// it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&OtlpReceiver) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An OTLP/HTTP export: its signal is the last segment of the path (`/v1/traces`, or a
/// signal's own endpoint ending `traces`), its body protobuf, gzip-compressed when
/// `Content-Encoding` says so.
async fn http_export(
    State(sink): State<Sink>,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
) -> http::StatusCode {
    let path = uri.path().to_owned();
    let signal = ["traces", "metrics", "logs"]
        .into_iter()
        .find(|signal| path.ends_with(signal));
    let Some(signal) = signal else {
        return http::StatusCode::NOT_FOUND;
    };
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = match encoding.as_deref() {
        None => body,
        Some("gzip") => {
            use std::io::Read as _;
            let mut decoded = Vec::new();
            if flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut decoded)
                .is_err()
            {
                return http::StatusCode::BAD_REQUEST;
            }
            Bytes::from(decoded)
        }
        Some(_) => return http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
    };
    let decoded = match signal {
        "traces" => ExportTraceServiceRequest::decode(body).map(|r| sink.traces(r)),
        "metrics" => ExportMetricsServiceRequest::decode(body).map(|r| sink.metrics(r)),
        _ => ExportLogsServiceRequest::decode(body).map(|r| sink.logs(r)),
    };
    if decoded.is_err() {
        return http::StatusCode::BAD_REQUEST;
    }
    sink.lock().exports.push(ReceivedExport {
        signal,
        transport: "http",
        path,
        encoding,
    });
    http::StatusCode::OK
}
