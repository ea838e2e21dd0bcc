//! Telemetry configuration, read from the standard `OTEL_*` environment variables.
//!
//! Every variable is parsed here, once, at startup: a bad value is a [`ConfigError`] that names the
//! variable, never a silent default and never a panic. The fields are public so a binary's CLI can
//! override what the environment said.

pub(crate) mod propagators;
pub(crate) mod signals;

use std::{collections::HashMap, fmt, time::Duration};

use opentelemetry_sdk::trace::SpanLimits;

use crate::url::without_userinfo;

/// The collector endpoint documented for OTLP over gRPC (the stack's collector, docs/architecture.md section 6).
pub(crate) const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// The collector endpoint documented for OTLP over HTTP/protobuf.
pub(crate) const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// The span queue when `OTEL_BSP_MAX_QUEUE_SIZE` is unset. The spec's 2048 drops spans when a
/// service handles a few thousand requests a second of ~10 spans each before the exporter's next
/// batch leaves; 16384 spans hold a few megabytes.
pub(crate) const DEFAULT_SPAN_QUEUE_SIZE: usize = 16_384;

/// Everything [`crate::telemetry::init`] needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// `service.name`: the service's own name unless `OTEL_SERVICE_NAME` says otherwise.
    pub(crate) service_name: String,
    /// `service.version`.
    pub(crate) service_version: String,
    /// `OTEL_SDK_DISABLED=true`: install no provider, propagator or exporter at all.
    pub(crate) sdk_disabled: bool,
    /// Where to export over OTLP; `None` (no `OTEL_EXPORTER_OTLP_ENDPOINT`) exports nothing.
    pub(crate) otlp: Option<OtlpConfig>,
    /// `OTEL_EXPORT_CONSOLE=true`: also print finished spans to stderr (as `console` in
    /// `OTEL_TRACES_EXPORTER`).
    pub(crate) console: bool,
    /// The per-signal variables (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_TRACES_*`, ...);
    /// [`TelemetryConfig::export`] says what a signal exports to.
    pub(crate) signals: signals::Signals,
    /// Extra resource attributes from `OTEL_RESOURCE_ATTRIBUTES`, in their given order.
    pub(crate) resource_attributes: Vec<(String, String)>,
    /// `OTEL_PROPAGATORS`: the context formats read and written, in order.
    pub(crate) propagators: Vec<crate::config::propagators::Propagator>,
    /// The head sampler, from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub(crate) sampler: SamplerConfig,
    /// `OTEL_METRIC_EXPORT_INTERVAL`: time between OTLP metric exports.
    pub(crate) metric_export_interval: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export before new ones are dropped.
    pub(crate) span_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export (at most the queue size).
    pub(crate) span_batch_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY`: how often a batch leaves when fewer spans than a full batch
    /// end in between.
    pub(crate) span_schedule_delay: Duration,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: the bound on one span export, beside the OTLP timeout (the
    /// smaller applies).
    pub(crate) span_export_timeout: Duration,
    /// `OTEL_METRIC_EXPORT_TIMEOUT`: the bound on one metric export, beside the OTLP timeout
    /// (the smaller applies).
    pub(crate) metric_export_timeout: Duration,
    /// What a span keeps (past each limit, new ones are dropped): attributes
    /// (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, else `OTEL_ATTRIBUTE_COUNT_LIMIT`), events
    /// (`OTEL_SPAN_EVENT_COUNT_LIMIT`), links (`OTEL_SPAN_LINK_COUNT_LIMIT`), and attributes of an
    /// event or a link (`OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`).
    pub(crate) span_limits: SpanCountLimits,
    /// The longest string attribute value a span keeps, in characters, longer ones truncated
    /// (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`);
    /// `None`: no limit.
    pub(crate) span_attribute_value_length_limit: Option<usize>,
    /// What a log record keeps: attributes (`OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`, else
    /// `OTEL_ATTRIBUTE_COUNT_LIMIT`), and characters of a string attribute value
    /// (`OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub(crate) log_record_limits: crate::value_limit::LogRecordLimits,
    /// The log record processor's queue, batch and schedule (`OTEL_BLRP_*`).
    pub(crate) log_batch: LogBatch,
    /// `LOGOS_TELEMETRY_PIPELINE`: foundry's export path, or the SDK's.
    pub(crate) pipeline: Pipeline,
    /// `RUST_LOG`: the filter for log output (not for spans).
    pub log_filter: String,
    /// `LOG_FORMAT`: human text or JSON lines.
    pub(crate) log_format: LogFormat,
    /// Whether export errors are held back and said in one line at shutdown (a one-shot
    /// command's), instead of logged as they happen.
    pub(crate) export_errors_at_exit: bool,
}

/// The SDK's span limits, which can be compared (the SDK's type cannot).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanCountLimits(pub SpanLimits);

impl PartialEq for SpanCountLimits {
    fn eq(&self, other: &Self) -> bool {
        let fields = |limits: &SpanLimits| {
            [
                limits.max_attributes_per_span,
                limits.max_events_per_span,
                limits.max_links_per_span,
                limits.max_attributes_per_event,
                limits.max_attributes_per_link,
            ]
        };
        fields(&self.0) == fields(&other.0)
    }
}

/// The `OTEL_BLRP_*` settings of the log record processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogBatch {
    /// `OTEL_BLRP_MAX_QUEUE_SIZE`: records waiting before new ones are dropped.
    pub max_queue: usize,
    /// `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`: records per export (at most the queue size).
    pub max_batch: usize,
    /// `OTEL_BLRP_SCHEDULE_DELAY`: time between exports.
    pub schedule_delay: Duration,
    /// `OTEL_BLRP_EXPORT_TIMEOUT`: the bound on one export, beside the OTLP timeout.
    pub export_timeout: Duration,
}

/// What carries spans to an OTLP/gRPC collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Pipeline {
    /// foundry's span processor and encoder (OTLP/HTTP, TLS and compression take the SDK's path
    /// all the same).
    #[default]
    Foundry,
    /// The SDK's batch span processor with opentelemetry-otlp's exporter: what a service would
    /// otherwise wire, which `make bench` measures beside foundry's, and a way back to it should
    /// foundry's path misbehave.
    Upstream,
}

/// The OTLP exporter's settings.
#[derive(Clone, PartialEq)]
pub(crate) struct OtlpConfig {
    /// The collector's base endpoint, e.g. `http://localhost:4317`; or a signal's own
    /// endpoint, when `signal_endpoint`.
    pub endpoint: String,
    /// `endpoint` came from `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`: over HTTP it is used as is,
    /// where a base endpoint gets `/v1/<signal>` appended, as the spec says.
    pub signal_endpoint: bool,
    /// The wire protocol.
    pub protocol: Protocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, decoded. Often carries credentials, so never printed.
    pub headers: HashMap<String, String>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: the bound on one export call.
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`: `None` sends requests uncompressed.
    pub compression: Option<Compression>,
    /// The certificates of an `https` endpoint's TLS: the server's CA, and this service's own.
    pub tls: TlsFiles,
    /// Whether an export refused for a transient reason is retried with backoff, as the OTLP spec
    /// asks, by the opentelemetry-otlp exporters and foundry's own gRPC span export alike: on for
    /// a service, which rides out a collector's backpressure or restart; off for a one-shot
    /// command, whose final flush would otherwise wait out the whole backoff (up to 1 s a signal,
    /// measured at 1.8 s for a command's spans, metrics and logs together) at every
    /// exit while the collector is down.
    pub retries: bool,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are usually API keys: show only their names.
        let mut header_names: Vec<&String> = self.headers.keys().collect();
        header_names.sort();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("signal_endpoint", &self.signal_endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &header_names)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The PEM files of `OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE` and `_CLIENT_KEY` (or
/// a signal's own), read when the service starts.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct TlsFiles {
    /// The CA that the collector's certificate is checked against, instead of the system's
    /// roots.
    pub certificate: Option<Vec<u8>>,
    /// This service's certificate and private key, for a collector that asks for one (mTLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: only whether there is one.
        f.debug_struct("TlsFiles")
            .field("certificate", &self.certificate.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// The largest certificate or key file read: a CA bundle is a few hundred KiB at most.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

impl TlsFiles {
    /// Reads the files the three variables name (`certificate`, `client_certificate`,
    /// `client_key`, each with its value); a client certificate needs its key and the key its
    /// certificate.
    pub(crate) fn read(
        certificate: Option<(&'static str, String)>,
        client_certificate: Option<(&'static str, String)>,
        client_key: Option<(&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let read = |(variable, path): (&'static str, String)| {
            let path = path.trim().to_owned();
            let cannot = |error: std::io::Error| {
                ConfigError::new(variable, &path, format!("cannot read it: {error}"))
            };
            // Checked before it is opened: a FIFO would block the start, `/dev/zero` fill memory.
            let metadata = std::fs::metadata(&path).map_err(cannot)?;
            if !metadata.is_file() || metadata.len() > MAX_PEM_BYTES {
                return Err(ConfigError::new(
                    variable,
                    &path,
                    "expected a PEM file (a regular file of at most 1 MiB)",
                ));
            }
            let pem = std::fs::read(&path).map_err(cannot)?;
            if !pem.windows(11).any(|window| window == b"-----BEGIN ") {
                return Err(ConfigError::new(variable, &path, "expected a PEM file"));
            }
            Ok((variable, pem))
        };
        let certificate = certificate.map(read).transpose()?.map(|(_, pem)| pem);
        let client = match (
            client_certificate.map(read).transpose()?,
            client_key.map(read).transpose()?,
        ) {
            (Some((_, certificate)), Some((_, key))) => Some((certificate, key)),
            (None, None) => None,
            (Some((variable, _)), None) | (None, Some((variable, _))) => {
                return Err(ConfigError::new(
                    variable,
                    "",
                    "a client certificate and its key are set together",
                ));
            }
        };
        Ok(Self {
            certificate,
            client,
        })
    }

    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.certificate.is_some() || self.client.is_some()
    }
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `grpc` (the default, port 4317).
    Grpc,
    /// `http/protobuf` (port 4318).
    HttpProtobuf,
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION` (`none` is no compression: `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// `gzip`, over gRPC and HTTP alike.
    Gzip,
}

/// `LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, with `trace_id` and `span_id`.
    Json,
}

/// `OTEL_TRACES_SAMPLER` with its argument, as the OpenTelemetry specification names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SamplerConfig {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio`
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default)
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`
    ParentBasedTraceIdRatio(f64),
}

/// A variable whose value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What it held (never printed for variables that may hold secrets).
    pub value: String,
    /// What was expected.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

impl TelemetryConfig {
    /// Reads the process environment. `service_name` and `service_version` are the service's own.
    pub fn from_env(service_name: &str, service_version: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(service_name, service_version, |name| {
            std::env::var(name).ok()
        })
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(
        service_name: &str,
        service_version: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // The spec treats an empty value as unset.
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let protocol = match var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            None => Protocol::Grpc,
            Some(value) => parse_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &value)?,
        };
        let generic = signals::Generic {
            // The generic endpoint is a base for the signals' paths: its trailing slash goes.
            endpoint: match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(endpoint) => Some(
                    parse_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.trim())?
                        .trim_end_matches('/')
                        .to_owned(),
                ),
                None => None,
            },
            protocol,
            headers: match var("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(headers) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &headers, protocol)?,
                None => HashMap::new(),
            },
            timeout: parse_millis("OTEL_EXPORTER_OTLP_TIMEOUT", var, 10_000)?,
            compression: match var("OTEL_EXPORTER_OTLP_COMPRESSION") {
                Some(value) => parse_compression("OTEL_EXPORTER_OTLP_COMPRESSION", &value)?,
                None => None,
            },
            tls: TlsFiles::read(
                var("OTEL_EXPORTER_OTLP_CERTIFICATE")
                    .map(|v| ("OTEL_EXPORTER_OTLP_CERTIFICATE", v)),
                var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
                    .map(|v| ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", v)),
                var("OTEL_EXPORTER_OTLP_CLIENT_KEY").map(|v| ("OTEL_EXPORTER_OTLP_CLIENT_KEY", v)),
            )?,
        };
        let signals = signals::parse(var, &generic)?;
        let otlp = generic.endpoint.map(|endpoint| OtlpConfig {
            endpoint,
            signal_endpoint: false,
            protocol,
            headers: generic.headers,
            timeout: generic.timeout,
            compression: generic.compression,
            tls: generic.tls,
            retries: true,
        });

        let mut resource_attributes = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(value) => parse_key_values("OTEL_RESOURCE_ATTRIBUTES", &value)?,
            None => Vec::new(),
        };
        // OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over
        // the service's own name, as the spec orders them.
        let service_name = var("OTEL_SERVICE_NAME")
            .map(|name| name.trim().to_owned())
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(key, _)| key == "service.name")
                    .map(|(_, value)| value.clone())
            })
            .unwrap_or_else(|| service_name.to_owned());
        resource_attributes.retain(|(key, _)| key != "service.name");

        // opentelemetry-otlp's metric exporter reads this one itself, and would only warn of a
        // bad value: checked here so that it stops the service like any other.
        if let Some(value) = var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            let known = ["cumulative", "delta", "lowmemory"];
            if !known.contains(&value.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                    &value,
                    "expected `cumulative`, `delta` or `lowmemory`",
                ));
            }
        }

        let span_queue_size = parse_count("OTEL_BSP_MAX_QUEUE_SIZE", var, DEFAULT_SPAN_QUEUE_SIZE)?;
        Ok(Self {
            service_name,
            service_version: service_version.to_owned(),
            sdk_disabled: parse_bool("OTEL_SDK_DISABLED", var("OTEL_SDK_DISABLED"))?,
            otlp,
            console: parse_bool("OTEL_EXPORT_CONSOLE", var("OTEL_EXPORT_CONSOLE"))?,
            signals,
            resource_attributes,
            propagators: crate::config::propagators::parse(var("OTEL_PROPAGATORS").as_deref())?,
            sampler: parse_sampler(
                var("OTEL_TRACES_SAMPLER").as_deref(),
                var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            )?,
            metric_export_interval: parse_millis("OTEL_METRIC_EXPORT_INTERVAL", var, 60_000)?,
            span_queue_size,
            span_batch_size: parse_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", var, 512)?
                .min(span_queue_size),
            span_schedule_delay: parse_millis("OTEL_BSP_SCHEDULE_DELAY", var, 5_000)?,
            span_export_timeout: parse_millis("OTEL_BSP_EXPORT_TIMEOUT", var, 30_000)?,
            metric_export_timeout: parse_millis("OTEL_METRIC_EXPORT_TIMEOUT", var, 30_000)?,
            span_limits: SpanCountLimits(SpanLimits {
                max_attributes_per_span: parse_limit(
                    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
                    var,
                    parse_limit("OTEL_ATTRIBUTE_COUNT_LIMIT", var, 128)?,
                )?,
                max_events_per_span: parse_limit("OTEL_SPAN_EVENT_COUNT_LIMIT", var, 128)?,
                max_links_per_span: parse_limit("OTEL_SPAN_LINK_COUNT_LIMIT", var, 128)?,
                max_attributes_per_event: parse_limit(
                    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
                    var,
                    128,
                )?,
                max_attributes_per_link: parse_limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", var, 128)?,
            }),
            span_attribute_value_length_limit: parse_length_limit(
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                var,
            )?,
            log_record_limits: crate::value_limit::LogRecordLimits {
                attributes: parse_limit(
                    "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
                    var,
                    parse_limit("OTEL_ATTRIBUTE_COUNT_LIMIT", var, 128)?,
                )? as usize,
                value_length: parse_length_limit(
                    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                    var,
                )?,
            },
            log_batch: {
                let max_queue = parse_count("OTEL_BLRP_MAX_QUEUE_SIZE", var, 2048)?;
                LogBatch {
                    max_queue,
                    max_batch: parse_count("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", var, 512)?
                        .min(max_queue),
                    schedule_delay: parse_millis("OTEL_BLRP_SCHEDULE_DELAY", var, 1_000)?,
                    export_timeout: parse_millis("OTEL_BLRP_EXPORT_TIMEOUT", var, 30_000)?,
                }
            },
            pipeline: match var("LOGOS_TELEMETRY_PIPELINE") {
                None => Pipeline::Foundry,
                Some(value) => parse_choice(
                    "LOGOS_TELEMETRY_PIPELINE",
                    &value,
                    &[
                        ("foundry", Pipeline::Foundry),
                        ("upstream", Pipeline::Upstream),
                    ],
                )?,
            },
            log_filter: var("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format: match var("LOG_FORMAT") {
                None => LogFormat::Text,
                Some(value) => parse_choice(
                    "LOG_FORMAT",
                    &value,
                    &[("text", LogFormat::Text), ("json", LogFormat::Json)],
                )?,
            },
            export_errors_at_exit: false,
        })
    }
}

/// Checks an endpoint variable and returns it as it is: a signal's own endpoint is used without
/// any change (the spec), a trailing slash included.
pub(crate) fn parse_endpoint(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    match crate::url::parse_service_url(value) {
        Ok(_) => Ok(value.to_owned()),
        Err(reason) => Err(ConfigError::new(
            variable,
            &without_userinfo(value),
            format!("{reason}, such as {DEFAULT_OTLP_GRPC_ENDPOINT}"),
        )),
    }
}

pub(crate) fn parse_protocol(variable: &'static str, value: &str) -> Result<Protocol, ConfigError> {
    parse_choice(
        variable,
        value,
        &[
            ("grpc", Protocol::Grpc),
            ("http/protobuf", Protocol::HttpProtobuf),
        ],
    )
}

pub(crate) fn parse_compression(
    variable: &'static str,
    value: &str,
) -> Result<Option<Compression>, ConfigError> {
    parse_choice(
        variable,
        value,
        &[("gzip", Some(Compression::Gzip)), ("none", None)],
    )
}

/// `value`, trimmed, as one of the named `choices`, or an error that names `variable` and lists
/// them.
fn parse_choice<T: Copy>(
    variable: &'static str,
    value: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let value = value.trim();
    // Enum values are read case-insensitively, as the spec asks.
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<String> = choices
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            ConfigError::new(variable, value, format!("expected {}", names.join(" or ")))
        })
}

fn parse_bool(variable: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ConfigError::new(
            variable,
            other,
            "expected `true` or `false`",
        )),
    }
}

/// A number of spans, from 1 to a million.
fn parse_count(
    variable: &'static str,
    var: impl Fn(&str) -> Option<String>,
    default: usize,
) -> Result<usize, ConfigError> {
    parse_whole(
        variable,
        var,
        u64::try_from(default).unwrap_or(u64::MAX),
        1..=1_000_000,
        "expected a whole number from 1 to 1000000",
    )
    .map(|count| usize::try_from(count).unwrap_or(usize::MAX))
}

pub(crate) fn parse_millis(
    variable: &'static str,
    var: impl Fn(&str) -> Option<String>,
    default_ms: u64,
) -> Result<Duration, ConfigError> {
    parse_whole(
        variable,
        var,
        default_ms,
        1..=u64::MAX,
        "expected a positive number of milliseconds",
    )
    .map(Duration::from_millis)
}

/// A whole number in `range` from `variable`, or `default` when it is unset.
fn parse_whole(
    variable: &'static str,
    var: impl Fn(&str) -> Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    expected: &str,
) -> Result<u64, ConfigError> {
    match var(variable) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|number| range.contains(number))
            .ok_or_else(|| ConfigError::new(variable, &value, expected)),
    }
}

/// A value length limit: `variable`, else `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else none.
fn parse_length_limit(
    variable: &'static str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<usize>, ConfigError> {
    for variable in [variable, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"] {
        if var(variable).is_some() {
            return Ok(Some(parse_limit(variable, &var, 0)? as usize));
        }
    }
    Ok(None)
}

/// A limit of spans or log records: a whole number of attributes, events, links or characters
/// (0 keeps none).
fn parse_limit(
    variable: &'static str,
    var: impl Fn(&str) -> Option<String>,
    default: u32,
) -> Result<u32, ConfigError> {
    let limit = parse_whole(
        variable,
        var,
        u64::from(default),
        0..=u64::from(u32::MAX),
        "expected a whole number",
    )?;
    Ok(u32::try_from(limit).unwrap_or(u32::MAX))
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerConfig, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match arg.map(str::trim) {
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER_ARG",
                    text,
                    "expected a ratio between 0 and 1",
                )),
            },
        }
    };
    let name = name.map(|name| name.trim().to_ascii_lowercase());
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        Some("traceidratio") => SamplerConfig::TraceIdRatio(ratio()?),
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
        Some(other) => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                other,
                "expected always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

/// Parses the `key=value,key=value` lists of `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS`, with percent-encoded values as the spec says.
pub(crate) fn parse_key_values(
    variable: &'static str,
    value: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some((key, raw)) = member.split_once('=') else {
            return Err(ConfigError::new(
                variable,
                member,
                "expected key=value pairs separated by commas",
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::new(variable, member, "empty key"));
        }
        let decoded = percent_decode(raw.trim())
            .ok_or_else(|| ConfigError::new(variable, member, "bad percent-encoding"))?;
        pairs.push((key.to_owned(), decoded));
    }
    Ok(pairs)
}

pub(crate) fn parse_headers(
    variable: &'static str,
    value: &str,
    protocol: Protocol,
) -> Result<HashMap<String, String>, ConfigError> {
    let var = variable;
    // The value may hold credentials: errors name the variable but do not echo it.
    let pairs = parse_key_values(var, value)
        .map_err(|error| ConfigError::new(var, "<redacted>", error.reason))?;
    for (index, (name, value)) in pairs.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            // Not echoed: `Authorization: Basic c2VjcmV0=` puts the credential in the name.
            return Err(ConfigError::new(
                var,
                "<redacted>",
                format!(
                    "the name of header {} is not a valid header name (write `name=value`, \
                     e.g. `authorization=Basic%20...`)",
                    index + 1
                ),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(ConfigError::new(
                var,
                "<redacted>",
                format!("the value of {name:?} is not a valid header value"),
            ));
        }
        // gRPC reserves `-bin` names for binary metadata, which would be dropped on the way.
        if protocol == Protocol::Grpc && name.to_ascii_lowercase().ends_with("-bin") {
            return Err(ConfigError::new(
                var,
                "<redacted>",
                format!("{name:?} names binary gRPC metadata, which OTLP headers cannot carry"),
            ));
        }
    }
    // Header names are case-insensitive (and gRPC metadata keys lower-case): of two that differ
    // only in case, the last one listed wins.
    Ok(pairs
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect())
}

/// Decodes `%XX` escapes; `None` for a malformed one. Hand-written because percent-encoding's
/// decoder passes a malformed escape through as text, where a bad value here must be an error.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // `from_str_radix` alone would take a sign, as in `%+1`.
            let hex = text
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup("sophia", "1.2.3", |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_export_nothing_and_sample_parent_based() {
        let config = config(&[]).expect("empty environment is valid");
        assert_eq!(config.service_name, "sophia");
        assert_eq!(config.otlp, None);
        assert!(!config.sdk_disabled && !config.console);
        assert_eq!(config.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(config.metric_export_interval, Duration::from_secs(60));
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn reads_every_variable() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret, x=1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORT_CONSOLE", "TRUE"),
            ("OTEL_SERVICE_NAME", "sophia-eu"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,deployment.environment.name=dev",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ])
        .expect("valid");
        let otlp = config.otlp.expect("endpoint set");
        assert_eq!(otlp.endpoint, "http://collector:4318");
        assert_eq!(otlp.protocol, Protocol::HttpProtobuf);
        assert_eq!(otlp.headers["api-key"], "s=cret");
        assert_eq!(otlp.timeout, Duration::from_millis(2500));
        assert!(
            !format!("{otlp:?}").contains("s=cret"),
            "header values never printed"
        );
        assert!(config.console);
        assert_eq!(config.service_name, "sophia-eu");
        assert_eq!(
            config.resource_attributes,
            vec![("deployment.environment.name".into(), "dev".into())]
        );
        assert_eq!(config.sampler, SamplerConfig::ParentBasedTraceIdRatio(0.25));
        assert_eq!(config.metric_export_interval, Duration::from_secs(1));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "debug");
    }

    #[test]
    fn limits_read_the_span_variables_over_the_general_ones() {
        let limits = |vars: &[(&str, &str)]| {
            let config = config(vars).expect("valid");
            let limits = config.span_limits.0;
            (
                [
                    limits.max_attributes_per_span,
                    limits.max_events_per_span,
                    limits.max_links_per_span,
                    limits.max_attributes_per_event,
                    limits.max_attributes_per_link,
                ],
                config.span_attribute_value_length_limit,
            )
        };
        assert_eq!(limits(&[]), ([128; 5], None));
        assert_eq!(
            limits(&[
                ("OTEL_ATTRIBUTE_COUNT_LIMIT", "10"),
                ("OTEL_SPAN_EVENT_COUNT_LIMIT", "2"),
                ("OTEL_SPAN_LINK_COUNT_LIMIT", "0"),
                ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "3"),
                ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "4"),
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100"),
            ]),
            ([10, 2, 0, 3, 4], Some(100))
        );
        assert_eq!(
            limits(&[
                ("OTEL_ATTRIBUTE_COUNT_LIMIT", "10"),
                ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "20"),
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100"),
                ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "50"),
            ]),
            ([20, 128, 128, 128, 128], Some(50))
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORT_CONSOLE", "1"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "many"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k=%+1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k=%zz"),
            ("LOG_FORMAT", "xml"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "0"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "later"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "-1"),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "many"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_TRACES_EXPORTER", "otlp,none"),
            ("OTEL_METRICS_EXPORTER", "console"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_LOGS_EXPORTER", "logging"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://collector"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad name=x"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "br"),
            ("LOGOS_TELEMETRY_PIPELINE", "sdk"),
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "-5"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "lots"),
            ("OTEL_SPAN_LINK_COUNT_LIMIT", "1.5"),
            ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "x"),
            ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "99999999999"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "short"),
            ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "many"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BLRP_EXPORT_TIMEOUT", "0"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
        ];
        for (variable, value) in cases {
            let error = config(&[(variable, value)]).expect_err(value);
            assert_eq!(error.variable, *variable, "{error}");
            assert!(error.to_string().contains(variable));
        }
        let error = config(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .expect_err("ratio over 1");
        assert_eq!(error.variable, "OTEL_TRACES_SAMPLER_ARG");
        let error = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ])
        .expect_err("zero timeout");
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_TIMEOUT");
    }

    #[test]
    fn invalid_header_names_and_values_are_errors() {
        for headers in ["bad name=x", "key=line%0Abreak", "key=%+1", "token-bin=x"] {
            let error = config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", headers),
            ])
            .expect_err(headers);
            assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_HEADERS");
        }
    }

    #[test]
    fn endpoint_errors_hide_credentials() {
        let error = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:s3cret@collector")])
            .expect_err("ftp");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn header_errors_do_not_echo_secrets() {
        let error = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%ZZtoken"),
        ])
        .expect_err("bad escape");
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(!error.to_string().contains("token"));
        // A header written the curl way: its "name" is the credential.
        let error = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x=1,Authorization: Basic dXNlcjpodW50ZXIy==",
            ),
        ])
        .expect_err("a curl-style header");
        assert!(!error.to_string().contains("dXNlcjpodW50ZXIy"), "{error}");
        assert!(error.to_string().contains("header 2"), "{error}");
    }

    #[test]
    fn enum_values_are_read_whatever_their_case() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "HTTP/Protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_TRACES_SAMPLER", "Always_Off"),
            ("OTEL_TRACES_EXPORTER", "OTLP,Console"),
            ("OTEL_PROPAGATORS", "TraceContext,B3"),
        ])
        .expect("valid");
        let otlp = config.otlp.as_ref().expect("endpoint set");
        assert_eq!(otlp.protocol, Protocol::HttpProtobuf);
        assert_eq!(otlp.compression, Some(Compression::Gzip));
        assert_eq!(config.sampler, SamplerConfig::AlwaysOff);
        assert!(config.export(signals::Signal::Traces).console);
        assert_eq!(
            config.propagators,
            [
                propagators::Propagator::TraceContext,
                propagators::Propagator::B3
            ]
        );
    }

    #[test]
    fn header_names_differing_in_case_are_one_header_and_the_last_wins() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Api-Key=a,api-key=b,API-KEY=c",
            ),
        ])
        .expect("valid");
        let headers = &config.otlp.as_ref().expect("endpoint set").headers;
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers.get("api-key").map(String::as_str), Some("c"));
    }
}
