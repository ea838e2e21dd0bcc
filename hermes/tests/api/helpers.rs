//! What every Hermes API test shares: a fresh router per test, requests sent with
//! `tower::ServiceExt::oneshot` (no socket), the decoded answer, the error-shape assertion, and
//! lookups into the spans of one trace from foundry's in-process capture.

use axum::{Router, body::Body};
use foundry::testing::{Kind, ReceivedSpan, SpanCapture, capture, new_traceparent};
pub use foundry::testing::{TestResponse, assert_child_of, assert_error};
use http::{Request, header::CONTENT_TYPE};
use serde_json::Value;

/// Larger than foundry's 1 MiB body limit.
pub const OVER_LIMIT_BYTES: usize = foundry::http::MAX_BODY_BYTES + 1;

/// Hermes with an in-memory store and the echo provider, behind the span capture.
pub struct TestApp {
    router: Router,
    /// The capture every span of this process lands in.
    pub capture: &'static SpanCapture,
}

impl TestApp {
    /// A fresh Hermes with its own empty vector store.
    pub fn new() -> Self {
        Self::with_state(hermes::app::AppState::local())
    }

    /// Hermes over the given state.
    pub fn with_state(state: hermes::app::AppState) -> Self {
        Self {
            capture: capture("hermes"),
            router: hermes::app::router(state),
        }
    }

    /// Sends one request through the whole router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        TestResponse::of(&self.router, request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.send(json_request(path, body.to_string(), None)).await
    }

    /// `POST path` with a JSON body, in a new sampled trace; returns the trace id too.
    pub async fn post_traced(&self, path: &str, body: &Value) -> (TestResponse, Trace) {
        let (trace_id, traceparent) = new_traceparent(true);
        let response = self
            .send(json_request(path, body.to_string(), Some(&traceparent)))
            .await;
        let trace = Trace {
            spans: self.capture.spans(&trace_id),
            caller_span_id: traceparent[36..52].to_owned(),
        };
        (response, trace)
    }

    /// `POST path` with `body` sent as-is with a JSON content type.
    pub async fn post_raw(&self, path: &str, body: impl Into<Body>) -> TestResponse {
        self.send(json_request(path, body, None)).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

/// A JSON `POST`, tagged with `traceparent` when given.
pub fn json_request(path: &str, body: impl Into<Body>, traceparent: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path).header(CONTENT_TYPE, "application/json");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.body(body.into()).unwrap()
}

/// A JSON document just over the body limit: `{"text": "aaaa..."}`.
pub fn oversized_text_body() -> String {
    format!("{{\"text\": \"{}\"}}", "a".repeat(OVER_LIMIT_BYTES))
}

/// The finished spans of one test's trace, and the span id of the test's own (remote) parent.
#[derive(Debug)]
pub struct Trace {
    pub spans: Vec<ReceivedSpan>,
    pub caller_span_id: String,
}

impl Trace {
    /// The one span called `name`; fails listing what there is when there is none or several.
    #[track_caller]
    pub fn one(&self, name: &str) -> &ReceivedSpan {
        let found: Vec<&ReceivedSpan> = self.spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} in {:?}", self.names());
        found[0]
    }

    /// Whether a span called `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.spans.iter().any(|s| s.name == name)
    }

    /// The names of every span, sorted, for assertions and failure messages.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.spans.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The server span `name`, checked to be Hermes' server span continuing the caller's trace.
    #[track_caller]
    pub fn server(&self, name: &str) -> &ReceivedSpan {
        let server = self.one(name);
        assert_eq!(server.kind, Kind::Server, "{server:#?}");
        assert_eq!(server.service_name, "hermes");
        assert_eq!(server.parent_span_id, self.caller_span_id, "{server:#?}");
        server
    }
}

/// Asserts that a manual span is internal, from Hermes, and a direct child of `server`.
#[track_caller]
pub fn assert_manual_child(span: &ReceivedSpan, server: &ReceivedSpan) {
    assert_eq!(span.kind, Kind::Internal, "{span:#?}");
    assert_eq!(span.service_name, "hermes");
    assert_child_of(span, server);
}
