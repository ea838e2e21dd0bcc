//! Apollo, the operator's entry to LOGOS: a command line whose every command is one trace across
//! Apollo, Sophia and Hermes, and the same actions as an HTTP API (`apollo serve`).

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod routes;
pub mod services;
pub mod settings;
