//! apollo's tests: the CLI binary against Sophia and Hermes served in the test process, and the
//! API through its router with foundry's span capture.
#![allow(clippy::unwrap_used, missing_docs)]

mod api;
mod commands;
mod diagnostics;
mod openapi;
mod support;
