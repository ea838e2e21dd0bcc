//! A service's router driven in-process for its API tests: requests through `oneshot` (no
//! socket), the decoded answers, and the spans of each request's trace from [`capture`].

use axum::{Router, body::Body};
use http::{Request, header::CONTENT_TYPE};
use serde_json::Value;

use super::{Kind, ReceivedSpan, SpanCapture, TestResponse, capture, new_traceparent};

/// A service's whole router, behind the process's span capture.
pub struct TestRouter {
    router: Router,
    service: &'static str,
    /// The capture every span of this process lands in.
    pub capture: &'static SpanCapture,
}

impl TestRouter {
    /// `router` of `service` (its `service.name`, which the capture takes on first use).
    pub fn new(service: &'static str, router: Router) -> Self {
        Self {
            capture: capture(service),
            router,
            service,
        }
    }

    /// Sends one request through the whole router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        TestResponse::of(&self.router, request).await
    }

    /// Sends `request` tagged with a new sampled `traceparent`, and reads back that trace.
    pub async fn send_traced(
        &self,
        request: http::request::Builder,
        body: Body,
    ) -> (TestResponse, Trace) {
        let (trace_id, traceparent) = new_traceparent(true);
        let request = request
            .header("traceparent", &traceparent)
            .body(body)
            .unwrap_or_else(|error| panic!("a valid request: {error}"));
        let response = self.send(request).await;
        let trace = Trace {
            spans: self.capture.spans(&trace_id),
            caller_span_id: traceparent[36..52].to_owned(),
            service: self.service,
        };
        (response, trace)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(empty(Request::get(path))).await
    }

    /// `GET path` in a new trace.
    pub async fn get_traced(&self, path: &str) -> (TestResponse, Trace) {
        self.send_traced(Request::get(path), Body::empty()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.post_raw(path, body.to_string()).await
    }

    /// `POST path` with `body` sent as it is, with a JSON content type.
    pub async fn post_raw(&self, path: &str, body: impl Into<Body>) -> TestResponse {
        let request = json_post(path)
            .body(body.into())
            .unwrap_or_else(|error| panic!("a valid request: {error}"));
        self.send(request).await
    }

    /// `POST path` with a JSON body in a new trace.
    pub async fn post_traced(&self, path: &str, body: &Value) -> (TestResponse, Trace) {
        self.send_traced(json_post(path), Body::from(body.to_string()))
            .await
    }

    /// Asserts that `/health` answers the service's name and `version`, and is not traced even
    /// in a sampled trace.
    pub async fn assert_health(&self, version: &str) {
        let (response, trace) = self.get_traced("/health").await;
        assert_eq!(response.status, http::StatusCode::OK, "{}", response.text);
        assert_eq!(
            response.body,
            serde_json::json!({"status": "ok", "service": self.service, "version": version})
        );
        assert!(trace.spans.is_empty(), "{:?}", trace.described());
    }

    /// `GET /metrics`, checked to be Prometheus text: the whole text, and the request count of
    /// `route` answered with `status` in it (0 when it has none).
    pub async fn request_count(&self, route: &str, status: u16) -> (String, f64) {
        let response = self.get("/metrics").await;
        assert_eq!(response.status, http::StatusCode::OK, "{}", response.text);
        let content_type = response.headers.get(CONTENT_TYPE).map(|v| v.to_str());
        assert!(
            matches!(content_type, Some(Ok(value)) if value.starts_with("text/plain")),
            "{:?}",
            response.headers
        );
        let count = response
            .text
            .lines()
            .find(|line| {
                line.starts_with("http_server_request_duration_seconds_count")
                    && line.contains(&format!("http_route=\"{route}\""))
                    && line.contains(&format!("http_response_status_code=\"{status}\""))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        (response.text, count)
    }

    /// Asserts that a `GET` of `unknown` is a JSON 404 `not_found` and one of `post_only` a
    /// JSON 405 `method_not_allowed`.
    pub async fn assert_unknown_route_and_method(&self, unknown: &str, post_only: &str) {
        let missing = self.get(unknown).await;
        super::assert_error(&missing, http::StatusCode::NOT_FOUND, "not_found");
        let wrong_method = self.get(post_only).await;
        super::assert_error(
            &wrong_method,
            http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }
}

/// A `POST` with a JSON content type.
pub fn json_post(path: &str) -> http::request::Builder {
    Request::post(path).header(CONTENT_TYPE, "application/json")
}

fn empty(request: http::request::Builder) -> Request<Body> {
    request
        .body(Body::empty())
        .unwrap_or_else(|error| panic!("a valid request: {error}"))
}

/// The finished spans of one request's trace, and the span id of the test's own (remote)
/// parent.
#[derive(Debug)]
pub struct Trace {
    /// Every span of the trace.
    pub spans: Vec<ReceivedSpan>,
    /// The parent span id the test's `traceparent` carried.
    pub caller_span_id: String,
    service: &'static str,
}

impl Trace {
    /// Every span called `name` of `kind`.
    pub fn all(&self, name: &str, kind: Kind) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| s.name == name && s.kind == kind)
            .collect()
    }

    /// The one span called `name` of `kind`; fails listing what there is otherwise.
    #[track_caller]
    pub fn one_of(&self, name: &str, kind: Kind) -> &ReceivedSpan {
        let found = self.all(name, kind);
        assert_eq!(
            found.len(),
            1,
            "one {kind:?} {name:?} in {:?}",
            self.described()
        );
        found[0]
    }

    /// The one internal (manual) span called `name`.
    #[track_caller]
    pub fn one(&self, name: &str) -> &ReceivedSpan {
        self.one_of(name, Kind::Internal)
    }

    /// Whether any span is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.spans.iter().any(|s| s.name == name)
    }

    /// The names of every span, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.spans.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// `kind name` of every span, sorted, for failure messages.
    pub fn described(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .spans
            .iter()
            .map(|s| format!("{:?} {}", s.kind, s.name))
            .collect();
        names.sort_unstable();
        names
    }

    /// The service's server span `name`: kind Server, the service's `service.name`, and the
    /// child of the test's `traceparent`.
    #[track_caller]
    pub fn server(&self, name: &str) -> &ReceivedSpan {
        let server = self.one_of(name, Kind::Server);
        assert_eq!(server.service_name, self.service);
        assert_eq!(server.parent_span_id, self.caller_span_id, "{server:#?}");
        server
    }

    /// The span with this id.
    #[track_caller]
    pub fn by_id(&self, span_id: &str) -> &ReceivedSpan {
        self.spans
            .iter()
            .find(|s| s.span_id == span_id)
            .unwrap_or_else(|| panic!("no span {span_id} in {:?}", self.described()))
    }
}
