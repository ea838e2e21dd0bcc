//! Sophia's HTTP API, driven through `sophia::app::router` with `tower::ServiceExt::oneshot`,
//! calling a real Hermes served on loopback inside the test: every route's answers and error
//! bodies as docs/architecture.md section 5 gives them, Hermes down or slow, the bearer token, and the spans
//! of each request (Sophia's and, in the same trace, Hermes') read back by trace id.
#![allow(clippy::unwrap_used)]

mod auth;
mod downstream;
mod hcg;
mod helpers;
mod openapi;
mod plan;
mod service;
mod simulate;
mod state;
