//! foundry: the one place where LOGOS services get their traces, metrics and logs.
//!
//! Every OpenTelemetry dependency of the workspace lives here. A service wires it in a few lines:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! #[derive(clap::Parser)]
//! struct Config {
//!     #[arg(long, default_value = "127.0.0.1")]
//!     host: String,
//!     #[arg(long, default_value_t = 8001)]
//!     port: u16,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Flags over environment over the `logos.toml` profile, telemetry, then the application
//! // until SIGTERM, telemetry flushed at the end.
//! foundry::http::run_service("sophia", env!("CARGO_PKG_VERSION"), |config: Config| async move {
//!     let routes = Router::new().route("/plan", get(|| async { "a plan" }));
//!     let app = foundry::http::instrument(routes, "sophia", env!("CARGO_PKG_VERSION"));
//!     foundry::http::Application::bind(&config.host, config.port, app).await
//! })
//! .await
//! # }
//! ```

pub mod config;
mod console;
mod context;
mod error_log;
mod export_report;
pub mod http;
mod log_export;
mod logging;
mod metrics;
pub mod openapi;
pub mod otlp;
mod panics;
pub mod profile;
mod propagation;
mod sampling;
mod shutdown;
mod span_export;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
mod value_limit;

pub(crate) use shutdown::shutdown_signal;
