//! What every Hermes API test shares: a fresh router per test behind foundry's `TestRouter`
//! (requests through `oneshot`, answers decoded, the spans of each request's trace), and the
//! assertions of Hermes' own spans.

use std::ops::Deref;

use foundry::testing::{Kind, ReceivedSpan, TestRouter};
pub use foundry::testing::{Trace, assert_child_of, assert_error};

/// Larger than foundry's 1 MiB body limit.
pub const OVER_LIMIT_BYTES: usize = foundry::testing::MAX_BODY_BYTES + 1;

/// Hermes with an in-memory store and the echo provider, behind the span capture; requests go
/// through foundry's [`TestRouter`].
pub struct TestApp(TestRouter);

impl TestApp {
    /// A fresh Hermes with its own empty vector store.
    pub fn new() -> Self {
        Self::with_state(hermes::app::AppState::local())
    }

    /// Hermes over the given state.
    pub fn with_state(state: hermes::app::AppState) -> Self {
        Self(TestRouter::new("hermes", hermes::app::router(state)))
    }
}

impl Deref for TestApp {
    type Target = TestRouter;

    fn deref(&self) -> &TestRouter {
        &self.0
    }
}

/// A JSON document just over the body limit: `{"text": "aaaa..."}`.
pub fn oversized_text_body() -> String {
    format!("{{\"text\": \"{}\"}}", "a".repeat(OVER_LIMIT_BYTES))
}

/// Asserts that a manual span is internal, from Hermes, and a direct child of `server`.
#[track_caller]
pub fn assert_manual_child(span: &ReceivedSpan, server: &ReceivedSpan) {
    assert_eq!(span.kind, Kind::Internal, "{span:#?}");
    assert_eq!(span.service_name, "hermes");
    assert_child_of(span, server);
}
