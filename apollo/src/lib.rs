//! Apollo, the operator's entry to LOGOS: a command line whose every command is one trace across
//! Apollo, Sophia and Hermes, the same actions as an HTTP API (`apollo serve`), and the live
//! window on the system's telemetry (`apollo serve` receives OTLP; `apollo trace`, `apollo
//! traces` and the `/diagnostics` page show it).

pub mod app;
pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod routes;
pub mod services;
pub mod settings;
pub mod waterfall;
