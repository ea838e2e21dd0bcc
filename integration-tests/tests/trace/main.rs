//! The whole system as its users run it: the real `hermes`, `sophia` and `apollo` binaries as
//! separate processes on free ports, all exporting OTLP/gRPC to a receiver inside the test
//! (docs/architecture.md section 7). One user action must be one correct trace across the three
//! processes; context must survive both hops (and a bad or unsampled one must be handled);
//! telemetry must never hold up a request or a shutdown; failures must show in the trace; no
//! token or key may reach a log line, a log record or a span; and the services' metrics must
//! reach a real Prometheus. Children's logs show with `TEST_LOG=1`.
#![cfg(unix)]
#![allow(clippy::unwrap_used, missing_docs)]

mod browser;
mod dashboard;
mod degradation;
mod diagnostics;
mod errors;
mod harness;
mod profiles;
mod prometheus;
mod propagation;
mod schemathesis;
mod secrets;
mod shape;
mod shutdown;
mod trace;
