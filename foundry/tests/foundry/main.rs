//! foundry's own tests: the server layer and client in-process, and export end to end in child
//! processes (each child installs telemetry from real environment variables, once, as a service
//! does).
#![allow(clippy::unwrap_used, missing_docs)]

mod client;
mod export;
mod fuzz;
mod modules;
mod propagators;
mod server;
mod signals;
mod tls;
mod upstream;
mod w3c;
