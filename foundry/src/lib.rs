//! foundry: the one place where LOGOS services get their traces, metrics and logs.
//!
//! Every OpenTelemetry dependency of the workspace lives here. A service wires it in a few lines:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//!
//! let config = foundry::config::TelemetryConfig::from_env("sophia", env!("CARGO_PKG_VERSION"))?;
//! let _telemetry = foundry::telemetry::init(config)?; // flush + shutdown on drop
//! let routes = Router::new().route("/plan", get(|| async { "a plan" }));
//! let app = foundry::http::instrument(routes, "sophia", env!("CARGO_PKG_VERSION"));
//! let hermes = foundry::http::client(std::time::Duration::from_secs(10))?; // injects traceparent
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(foundry::shutdown_signal())
//!     .await?;
//! # let _ = hermes;
//! # Ok(())
//! # }
//! ```

pub mod config;
mod console;
mod context;
pub mod http;
mod log_export;
mod logging;
pub mod metrics;
pub mod openapi;
pub mod otlp;
pub mod profile;
pub mod propagation;
mod propagators;
mod sampling;
mod shutdown;
mod span_export;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod value_limit;

pub use shutdown::shutdown_signal;
