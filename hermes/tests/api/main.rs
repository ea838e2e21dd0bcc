//! Hermes' HTTP API, driven through `hermes::app::router` with `tower::ServiceExt::oneshot`: every
//! route's answers and error bodies as docs/architecture.md section 5 gives them, and the spans each request
//! leaves behind, read back from foundry's in-process capture by trace id.
#![allow(clippy::unwrap_used)]

mod embed;
mod helpers;
mod llm;
mod nlp;
mod openapi;
mod search;
mod service;
