//! The stack's ports (docs/architecture.md section 6) and the services' (section 5), written down once.
//!
//! The agreement tests compare every stack file with these constants, and the live tests build
//! their URLs from them, so a port that changes in one place and not the others fails a test.

/// OTLP over gRPC, on the collector.
pub const OTLP_GRPC: u16 = 4317;
/// OTLP over HTTP, on the collector.
pub const OTLP_HTTP: u16 = 4318;
/// The collector's own metrics.
pub const COLLECTOR_METRICS: u16 = 8888;
/// The collector's Prometheus exporter (span metrics and the services' OTLP metrics).
pub const COLLECTOR_EXPORTER: u16 = 8889;
/// The collector's health_check extension.
pub const COLLECTOR_HEALTH: u16 = 13133;
/// Jaeger's UI and query API.
pub const JAEGER_UI: u16 = 16686;
/// Jaeger's Thrift-over-HTTP collector endpoint.
pub const JAEGER_THRIFT_HTTP: u16 = 14268;
/// Prometheus.
pub const PROMETHEUS: u16 = 9090;
/// Tempo's HTTP API.
pub const TEMPO: u16 = 3200;
/// Grafana on the host.
pub const GRAFANA: u16 = 3001;
/// Grafana inside its container (the image's default), published as [`GRAFANA`].
pub const GRAFANA_CONTAINER: u16 = 3000;

/// Sophia's default port.
pub const SOPHIA: u16 = 47000;
/// Hermes' default port.
pub const HERMES: u16 = 17000;
/// Apollo's API default port.
pub const APOLLO: u16 = 27000;

/// The host the stack publishes its ports on by default (`OTEL_BIND_ADDRESS`).
pub const BIND_ADDRESS: &str = "127.0.0.1";

/// A URL of the stack as seen from this machine.
pub fn stack_url(port: u16, path: &str) -> String {
    format!("http://localhost:{port}{path}")
}

/// A URL of a service started on its default port on this machine.
pub fn service_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}
