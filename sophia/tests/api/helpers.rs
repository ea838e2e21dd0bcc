//! What every Sophia API test shares: Sophia's router behind foundry's `TestRouter` (requests
//! through `oneshot`, answers decoded, the spans of each request's trace), pointed at a real Hermes
//! served on loopback in the same process (or at a closed port, or at a fake Hermes). Hermes'
//! spans land in the same capture under service name "sophia", so spans are told apart by name
//! and kind, never by service name.

use std::{net::SocketAddr, ops::Deref, time::Duration};

use axum::{Router, response::IntoResponse};
use foundry::testing::TestRouter;
pub use foundry::testing::{TestResponse, Trace, assert_child_of, assert_error, json_post};
use http::{StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};

/// Larger than foundry's 1 MiB body limit.
pub const OVER_LIMIT_BYTES: usize = foundry::testing::MAX_BODY_BYTES + 1;

/// The goal most tests plan; Hermes splits it into three clauses.
pub const GOAL: &str = "Pick up the red block, then place it on the table and report the result.";

/// How long a call to Hermes may take in tests that expect it to answer.
const HERMES_TIMEOUT: Duration = Duration::from_secs(10);

/// Sophia with in-memory graph and state, behind the span capture; requests go through
/// foundry's [`TestRouter`].
pub struct TestApp {
    router: TestRouter,
    /// Where this Sophia reaches Hermes.
    pub hermes_url: String,
}

impl Deref for TestApp {
    type Target = TestRouter;

    fn deref(&self) -> &TestRouter {
        &self.router
    }
}

impl TestApp {
    /// Sophia with a real Hermes of its own, served on a free loopback port.
    pub async fn with_hermes() -> Self {
        Self::against(&spawn_hermes().await, HERMES_TIMEOUT, None)
    }

    /// Sophia with a real Hermes, requiring `Authorization: Bearer <token>`.
    pub async fn with_hermes_and_token(token: &str) -> Self {
        Self::against(&spawn_hermes().await, HERMES_TIMEOUT, Some(token))
    }

    /// Sophia whose Hermes is down: nothing listens at its URL.
    pub fn with_hermes_down() -> Self {
        Self::against(&closed_port_url(), HERMES_TIMEOUT, None)
    }

    /// Sophia reaching Hermes at `hermes_url` with the given client timeout and optional token.
    pub fn against(hermes_url: &str, timeout: Duration, token: Option<&str>) -> Self {
        let state = sophia::app::AppState::new(hermes_url, timeout)
            .unwrap()
            .with_api_token(token.map(str::to_owned));
        Self {
            router: TestRouter::new("sophia", sophia::app::router(state)),
            hermes_url: hermes_url.to_owned(),
        }
    }

    /// Plans [`GOAL`] and returns the 201 answer's body.
    pub async fn create_plan(&self) -> Value {
        let response = self
            .post("/plan", &json!({"goal": {"description": GOAL}}))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.body
    }
}

/// A real Hermes (`hermes::app::router` over a local state) served on a free loopback port until
/// the test's runtime ends; returns its base URL.
pub async fn spawn_hermes() -> String {
    serve(hermes::app::router(hermes::app::AppState::local())).await
}

/// A stand-in Hermes whose every route answers `status` with `body` after `delay`.
pub async fn spawn_fake_hermes(status: StatusCode, body: &'static str, delay: Duration) -> String {
    let handler = move || async move {
        tokio::time::sleep(delay).await;
        (status, [(CONTENT_TYPE, "application/json")], body).into_response()
    };
    serve(Router::new().fallback(handler)).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// A loopback URL where nothing listens: the port was free a moment ago and is closed again.
pub fn closed_port_url() -> String {
    format!("http://{}", foundry::testing::closed_address())
}

/// Asserts that an error answer's message starts by naming the request's `field`.
#[track_caller]
pub fn assert_names_field(response: &TestResponse, field: &str) {
    let message = response.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field} ")),
        "names the field: {message}"
    );
}

/// A JSON document just over the body limit, as the value of `key`.
pub fn oversized_body(key: &str) -> String {
    format!("{{\"{key}\": \"{}\"}}", "a".repeat(OVER_LIMIT_BYTES))
}

/// A JSON object over Sophia's 256 KiB state limit yet well under the 1 MiB body limit.
pub fn oversized_state() -> Value {
    json!({"blob": "x".repeat(300 * 1024)})
}

/// The sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Asserts `value` is a UUID v4 string and returns it.
#[track_caller]
pub fn assert_uuid(value: &Value) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let uuid = uuid::Uuid::parse_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(uuid.get_version_num(), 4, "{text}");
    text.to_owned()
}

/// Asserts `value` is an RFC 3339 time.
#[track_caller]
pub fn assert_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(humantime::parse_rfc3339(text).is_ok(), "{text}");
}
