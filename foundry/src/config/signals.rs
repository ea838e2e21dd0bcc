//! Which exporters each signal (traces, metrics, logs) gets, from the specification's per-signal
//! variables: `OTEL_{TRACES,METRICS,LOGS}_EXPORTER` and `OTEL_EXPORTER_OTLP_{SIGNAL}_*`.
//!
//! The rules are the specification's: a signal's own variable beats the generic one, a signal's
//! own HTTP endpoint is used as is while the generic one gets `/v1/<signal>` appended. One
//! departure keeps the services' behaviour when nothing is set: a signal with no
//! `OTEL_<SIGNAL>_EXPORTER` exports over OTLP only when an endpoint applies to it (its own or the
//! generic one), not to the spec's default `localhost` endpoint. An explicit `otlp` does use the
//! spec's default endpoint of its protocol.

use std::{collections::HashMap, time::Duration};

use super::{
    Compression, ConfigError, DEFAULT_OTLP_GRPC_ENDPOINT, DEFAULT_OTLP_HTTP_ENDPOINT, OtlpConfig,
    Protocol, TelemetryConfig, TlsFiles,
};

/// One of the three signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Spans.
    Traces,
    /// Metrics.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// The three signals.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// `traces`, `metrics` or `logs`, as the tests' tables name the signals.
    #[cfg(test)]
    fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// `OTEL_<SIGNAL>_EXPORTER`.
    pub fn exporter_variable(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_TRACES_EXPORTER",
            Signal::Metrics => "OTEL_METRICS_EXPORTER",
            Signal::Logs => "OTEL_LOGS_EXPORTER",
        }
    }

    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_<setting>`; variable names are `'static` in errors, so the
    /// few there are are spelled out.
    fn otlp_variable(self, setting: Setting) -> &'static str {
        use Setting::*;
        match (self, setting) {
            (Signal::Traces, Endpoint) => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            (Signal::Traces, Protocol) => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            (Signal::Traces, Headers) => "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            (Signal::Traces, Timeout) => "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            (Signal::Traces, Compression) => "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            (Signal::Traces, Certificate) => "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            (Signal::Traces, ClientCertificate) => "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            (Signal::Traces, ClientKey) => "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            (Signal::Metrics, Endpoint) => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            (Signal::Metrics, Protocol) => "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            (Signal::Metrics, Headers) => "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            (Signal::Metrics, Timeout) => "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            (Signal::Metrics, Compression) => "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
            (Signal::Metrics, Certificate) => "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            (Signal::Metrics, ClientCertificate) => "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            (Signal::Metrics, ClientKey) => "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
            (Signal::Logs, Endpoint) => "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            (Signal::Logs, Protocol) => "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            (Signal::Logs, Headers) => "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            (Signal::Logs, Timeout) => "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
            (Signal::Logs, Compression) => "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
            (Signal::Logs, Certificate) => "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
            (Signal::Logs, ClientCertificate) => "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
            (Signal::Logs, ClientKey) => "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
        }
    }
}

#[derive(Clone, Copy)]
enum Setting {
    Endpoint,
    Protocol,
    Headers,
    Timeout,
    Compression,
    Certificate,
    ClientCertificate,
    ClientKey,
}

/// The exporters `OTEL_<SIGNAL>_EXPORTER` names (`otlp`, `console`, or `none` alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exporters {
    /// `otlp`.
    pub otlp: bool,
    /// `console`: one line a span on stderr for traces; for logs, the log lines the service
    /// prints anyway.
    pub console: bool,
}

/// One signal's own settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SignalConfig {
    /// `OTEL_<SIGNAL>_EXPORTER`; `None` when unset.
    pub exporters: Option<Exporters>,
    /// The signal's OTLP settings, every field resolved (its own variable, else the generic one,
    /// else the default), when one of its own `OTEL_EXPORTER_OTLP_<SIGNAL>_*` is set or `otlp`
    /// is asked for with no generic endpoint; `None` when the generic settings apply as they are.
    pub otlp: Option<OtlpConfig>,
}

/// The three signals' own settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Signals {
    /// Traces.
    pub traces: SignalConfig,
    /// Metrics.
    pub metrics: SignalConfig,
    /// Logs.
    pub logs: SignalConfig,
}

impl Signals {
    /// The settings of `signal`.
    pub fn get(&self, signal: Signal) -> &SignalConfig {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    fn get_mut(&mut self, signal: Signal) -> &mut SignalConfig {
        match signal {
            Signal::Traces => &mut self.traces,
            Signal::Metrics => &mut self.metrics,
            Signal::Logs => &mut self.logs,
        }
    }
}

/// What one signal exports to, as [`crate::telemetry`] builds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SignalExport {
    /// Over OTLP, with these settings.
    pub otlp: Option<OtlpConfig>,
    /// To the console.
    pub console: bool,
}

/// The generic OTLP settings, read whether or not `OTEL_EXPORTER_OTLP_ENDPOINT` is set: a
/// signal's own settings fall back to them.
pub(crate) struct Generic {
    pub(crate) endpoint: Option<String>,
    pub(crate) protocol: Protocol,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) timeout: Duration,
    pub(crate) compression: Option<Compression>,
    pub(crate) tls: TlsFiles,
}

impl TelemetryConfig {
    /// Where `signal` goes: the per-signal variables over the generic ones, `OTEL_EXPORT_CONSOLE`
    /// adding the console to the traces' exporters.
    pub(crate) fn export(&self, signal: Signal) -> SignalExport {
        let own = self.signals.get(signal);
        let wants_otlp = match own.exporters {
            Some(exporters) => exporters.otlp,
            None => {
                self.otlp.is_some() || own.otlp.as_ref().is_some_and(|otlp| otlp.signal_endpoint)
            }
        };
        let mut otlp = wants_otlp
            .then(|| own.otlp.clone().or_else(|| self.otlp.clone()))
            .flatten();
        // OTEL_BSP_EXPORT_TIMEOUT, OTEL_METRIC_EXPORT_TIMEOUT and OTEL_BLRP_EXPORT_TIMEOUT bound
        // the same call as the OTLP timeout: the smaller of the two applies.
        let export_timeout = match signal {
            Signal::Traces => Some(self.span_export_timeout),
            Signal::Metrics => Some(self.metric_export_timeout),
            Signal::Logs => Some(self.log_batch.export_timeout),
        };
        if let (Some(otlp), Some(bound)) = (&mut otlp, export_timeout) {
            otlp.timeout = otlp.timeout.min(bound);
        }
        let console = own.exporters.is_some_and(|exporters| exporters.console)
            || (self.console && signal == Signal::Traces);
        SignalExport { otlp, console }
    }

    /// Whether the generic OTLP export retries a transient failure; `None` when no generic
    /// endpoint is set.
    pub fn retries(&self) -> Option<bool> {
        self.otlp.as_ref().map(|otlp| otlp.retries)
    }

    /// A one-shot command's telemetry: its exports are not retried (with the collector down,
    /// the flush at exit is one refused attempt, not the whole backoff), and their errors are
    /// said in one log line at exit instead of one line per signal, beside the command's own
    /// output.
    pub fn one_shot(&mut self) {
        self.disable_retries();
        self.export_errors_at_exit = true;
    }

    /// Turns off the retries of every signal's OTLP export (see `OtlpConfig::retries`).
    pub fn disable_retries(&mut self) {
        if let Some(otlp) = &mut self.otlp {
            otlp.retries = false;
        }
        for signal in Signal::ALL {
            if let Some(otlp) = &mut self.signals.get_mut(signal).otlp {
                otlp.retries = false;
            }
        }
    }
}

/// Reads the per-signal variables through `var` (which treats empty values as unset).
pub(crate) fn parse(
    var: impl Fn(&str) -> Option<String>,
    generic: &Generic,
) -> Result<Signals, ConfigError> {
    let mut signals = Signals::default();
    for signal in Signal::ALL {
        let exporters = parse_exporters(signal, var(signal.exporter_variable()))?;
        let own = |setting| {
            let name = signal.otlp_variable(setting);
            var(name).map(|value| (name, value))
        };
        let endpoint = match own(Setting::Endpoint) {
            Some((name, value)) => Some(super::parse_endpoint(name, value.trim())?),
            None => None,
        };
        let protocol = match own(Setting::Protocol) {
            Some((name, value)) => Some(super::parse_protocol(name, &value)?),
            None => None,
        };
        let resolved_protocol = protocol.unwrap_or(generic.protocol);
        let headers = match own(Setting::Headers) {
            Some((name, value)) => Some(super::parse_headers(name, &value, resolved_protocol)?),
            None => None,
        };
        let timeout = match own(Setting::Timeout) {
            Some((name, _)) => Some(super::parse_millis(name, &var, 10_000)?),
            None => None,
        };
        let compression = match own(Setting::Compression) {
            Some((name, value)) => Some(super::parse_compression(name, &value)?),
            None => None,
        };
        // A signal's own CA replaces the generic one, and its own client pair the generic pair;
        // what it does not set of them falls back to the generic files.
        let tls = [
            Setting::Certificate,
            Setting::ClientCertificate,
            Setting::ClientKey,
        ]
        .map(own);
        let tls = if tls.iter().any(Option::is_some) {
            let [certificate, client_certificate, client_key] = tls;
            Some(TlsFiles::read(certificate, client_certificate, client_key)?)
        } else {
            None
        };
        let explicit_otlp_without_endpoint =
            exporters.is_some_and(|e| e.otlp) && generic.endpoint.is_none();
        let any_own = endpoint.is_some()
            || protocol.is_some()
            || headers.is_some()
            || timeout.is_some()
            || compression.is_some()
            || tls.is_some();
        if !(any_own || explicit_otlp_without_endpoint) {
            signals.get_mut(signal).exporters = exporters;
            continue;
        }
        let (endpoint, signal_endpoint) = match endpoint {
            Some(endpoint) => (endpoint, true),
            None => (
                generic.endpoint.clone().unwrap_or_else(|| {
                    match resolved_protocol {
                        Protocol::Grpc => DEFAULT_OTLP_GRPC_ENDPOINT,
                        Protocol::HttpProtobuf => DEFAULT_OTLP_HTTP_ENDPOINT,
                    }
                    .to_owned()
                }),
                false,
            ),
        };
        *signals.get_mut(signal) = SignalConfig {
            exporters,
            otlp: Some(OtlpConfig {
                endpoint,
                signal_endpoint,
                protocol: resolved_protocol,
                headers: headers.unwrap_or_else(|| generic.headers.clone()),
                timeout: timeout.unwrap_or(generic.timeout),
                compression: compression.unwrap_or(generic.compression),
                tls: match tls {
                    Some(own) => TlsFiles {
                        certificate: own.certificate.or_else(|| generic.tls.certificate.clone()),
                        client: own.client.or_else(|| generic.tls.client.clone()),
                    },
                    None => generic.tls.clone(),
                },
                retries: true,
            }),
        };
    }
    Ok(signals)
}

fn parse_exporters(
    signal: Signal,
    value: Option<String>,
) -> Result<Option<Exporters>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let variable = signal.exporter_variable();
    let mut exporters = Exporters::default();
    let names: Vec<String> = value
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in &names {
        match name.as_str() {
            "otlp" => exporters.otlp = true,
            "console" if signal == Signal::Metrics => {
                return Err(ConfigError::new(
                    variable,
                    &value,
                    "foundry has no console exporter for metrics: read them on /metrics, \
                     or use `otlp` or `none`",
                ));
            }
            "console" => exporters.console = true,
            "none" if names.len() == 1 => {}
            "none" => {
                return Err(ConfigError::new(
                    variable,
                    &value,
                    "`none` cannot be listed with other exporters",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    variable,
                    &value,
                    "expected `otlp`, `console` or `none` (or a comma-separated list)",
                ));
            }
        }
    }
    Ok(Some(exporters))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> TelemetryConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup("sophia", "1.2.3", |name| vars.get(name).cloned())
            .expect("valid")
    }

    /// (signal, OTLP endpoint or none, OTLP protocol, console) for each signal.
    fn exports(config: &TelemetryConfig) -> Vec<(&'static str, Option<String>, bool)> {
        Signal::ALL
            .iter()
            .map(|&signal| {
                let export = config.export(signal);
                let endpoint = export.otlp.map(|otlp| {
                    let path = if otlp.signal_endpoint { "" } else { "+path" };
                    format!("{}{path}", otlp.endpoint)
                });
                (signal.name(), endpoint, export.console)
            })
            .collect()
    }

    /// Variables, and per signal: the OTLP endpoint (`+path` when the signal's path is
    /// appended) and whether the console gets it.
    type Case<'a> = (Vec<(&'a str, &'a str)>, [(Option<String>, bool); 3]);

    #[test]
    fn a_signal_s_own_endpoint_is_kept_to_the_letter() {
        for endpoint in [
            "http://own:9/v1/traces/",
            "http://own:9/",
            "http://own:9/x?t=1",
        ] {
            let config = config(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)]);
            let otlp = config.export(Signal::Traces).otlp.expect("traces export");
            assert_eq!(
                (otlp.endpoint.as_str(), otlp.signal_endpoint),
                (endpoint, true)
            );
        }
    }

    #[test]
    fn each_signal_follows_the_spec_s_precedence() {
        let g = "http://generic:4318";
        let own = "http://own:9/custom";
        let some = |text: &str| Some(text.to_owned());
        // (variables, then per signal: endpoint, `+path` when the signal's path is appended,
        // and whether the console gets it)
        let cases: Vec<Case> = vec![
            // Nothing set: nothing exported, as before these variables.
            (vec![], [(None, false), (None, false), (None, false)]),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", g)],
                [
                    (some("http://generic:4318+path"), false),
                    (some("http://generic:4318+path"), false),
                    (some("http://generic:4318+path"), false),
                ],
            ),
            // A signal's own endpoint beats the generic one and is used as is.
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", g),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", own),
                ],
                [
                    (some(own), false),
                    (some("http://generic:4318+path"), false),
                    (some("http://generic:4318+path"), false),
                ],
            ),
            // Only one signal's endpoint: only that signal exports.
            (
                vec![("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", own)],
                [(None, false), (None, false), (some(own), false)],
            ),
            // `none` turns a signal off; `console` adds the console.
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", g),
                    ("OTEL_TRACES_EXPORTER", "console, otlp"),
                    ("OTEL_METRICS_EXPORTER", "none"),
                    ("OTEL_LOGS_EXPORTER", "console"),
                ],
                [
                    (some("http://generic:4318+path"), true),
                    (None, false),
                    (None, true),
                ],
            ),
            // An explicit `otlp` with no endpoint: the spec's default for the protocol.
            (
                vec![
                    ("OTEL_TRACES_EXPORTER", "otlp"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                    ("OTEL_METRICS_EXPORTER", "otlp"),
                ],
                [
                    (some("http://localhost:4318+path"), false),
                    (some("http://localhost:4317+path"), false),
                    (None, false),
                ],
            ),
            // The seed's OTEL_EXPORT_CONSOLE keeps printing spans beside the new variables.
            (
                vec![
                    ("OTEL_EXPORT_CONSOLE", "true"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                [(None, true), (None, false), (None, false)],
            ),
        ];
        for (vars, expected) in cases {
            // Arrange
            let config = config(&vars);

            // Act
            let actual = exports(&config);

            // Assert
            let expected: Vec<_> = Signal::ALL
                .iter()
                .zip(expected)
                .map(|(signal, (endpoint, console))| (signal.name(), endpoint, console))
                .collect();
            assert_eq!(actual, expected, "{vars:?}");
        }
    }

    #[test]
    fn a_signal_s_own_settings_beat_the_generic_ones_field_by_field() {
        // Arrange
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "tenant=all"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "tenant=metrics"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
        ]);

        // Act
        let traces = config.export(Signal::Traces).otlp.expect("traces");
        let metrics = config.export(Signal::Metrics).otlp.expect("metrics");

        // Assert
        assert_eq!(
            (
                traces.protocol,
                traces.headers["tenant"].as_str(),
                traces.timeout,
                traces.compression
            ),
            (
                Protocol::Grpc,
                "all",
                Duration::from_secs(3),
                Some(Compression::Gzip)
            )
        );
        assert_eq!(
            (
                metrics.protocol,
                metrics.headers["tenant"].as_str(),
                metrics.timeout,
                metrics.compression
            ),
            (
                Protocol::HttpProtobuf,
                "metrics",
                Duration::from_millis(700),
                None
            )
        );
        assert_eq!(metrics.endpoint, "http://generic:4317");
        assert!(
            !metrics.signal_endpoint,
            "the generic endpoint gets the signal's path"
        );
    }

    #[test]
    fn disabling_retries_reaches_every_signal() {
        // Arrange
        let mut config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ]);

        // Act
        config.disable_retries();

        // Assert
        for signal in Signal::ALL {
            assert!(
                !config.export(signal).otlp.expect("exporting").retries,
                "{signal:?}"
            );
        }
    }
}
