//! `POST /llm`: the echo provider's OpenAI-shaped answers, the range checks, the `hermes.llm` span
//! with its `gen_ai.*` attributes, and an OpenAI-compatible upstream (a fake on loopback) whose
//! failures become 502/504 and whose API key never reaches telemetry.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, extract::Path, response::IntoResponse, routing::post};
use foundry::testing::{AttributeValue, Kind, Status};
use hermes::{
    app::AppState,
    embed::EMBEDDING_DIMENSION,
    llm::{ApiKey, LlmService, OpenAiConfig, OpenAiProvider, Provider},
    vector_store::InstrumentedStore,
};
use http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, Trace, assert_child_of, assert_error, assert_manual_child};

const API_KEY: &str = "sk-test-hermes-0123456789abcdef";

#[tokio::test]
async fn echo_answers_a_prompt_in_the_chat_completion_shape() {
    // Arrange
    let app = TestApp::new();

    // Act
    let response = app
        .post("/llm", &json!({"prompt": "pick up the red block"}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let body = &response.body;
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["choices", "created", "id", "model", "provider", "usage"]
    );
    assert_eq!(body["provider"], "echo");
    assert_eq!(body["model"], "echo");
    assert!(body["created"].as_i64().unwrap() > 1_600_000_000);
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-echo-") && id.len() == 30, "{id}");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "pick up the red block"},
            "finish_reason": "stop"
        }])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
}

#[tokio::test]
async fn echo_answers_the_last_user_message_cut_to_max_tokens() {
    // Arrange
    let app = TestApp::new();
    let request = json!({
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three four"}
        ],
        "provider": "echo",
        "model": "echo-large",
        "temperature": 2.0,
        "max_tokens": 2
    });

    // Act
    let response = app.post("/llm", &request).await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["model"], "echo-large");
    assert_eq!(response.body["choices"][0]["message"]["content"], "one two");
    assert_eq!(response.body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        response.body["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8})
    );
}

#[tokio::test]
async fn llm_is_traced_with_gen_ai_attributes_under_the_server_span() {
    // Arrange
    let app = TestApp::new();

    // Act
    let (response, trace) = app
        .post_traced(
            "/llm",
            &json!({"prompt": "where is the red block", "model": "echo-small"}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(trace.names(), ["POST /llm", "hermes.llm"]);
    let server = trace.server("POST /llm");
    assert_eq!(server.int("http.response.status_code"), Some(200));
    let llm = trace.one("hermes.llm");
    assert_manual_child(llm, server);
    assert_eq!(
        llm.attributes.get("gen_ai.system"),
        Some(&AttributeValue::String("echo".into()))
    );
    assert_eq!(
        llm.attributes.get("gen_ai.request.model"),
        Some(&AttributeValue::String("echo-small".into()))
    );
    assert_eq!(llm.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(
        llm.attributes.get("gen_ai.usage.input_tokens"),
        Some(&AttributeValue::Int(5))
    );
    assert_eq!(
        llm.attributes.get("gen_ai.usage.output_tokens"),
        Some(&AttributeValue::Int(5))
    );
    assert_eq!(llm.status, Status::Unset);
}

#[tokio::test]
async fn bad_llm_requests_get_their_error_codes() {
    // Arrange
    let app = TestApp::new();
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: [(&str, Value, &str); 12] = [
        (
            "temperature 3.0",
            json!({"prompt": "x", "temperature": 3.0}),
            "invalid_request",
        ),
        (
            "negative temperature",
            json!({"prompt": "x", "temperature": -0.1}),
            "invalid_request",
        ),
        (
            "max_tokens 0",
            json!({"prompt": "x", "max_tokens": 0}),
            "invalid_request",
        ),
        (
            "max_tokens 4097",
            json!({"prompt": "x", "max_tokens": 4097}),
            "invalid_request",
        ),
        (
            "negative max_tokens",
            json!({"prompt": "x", "max_tokens": -1}),
            "invalid_request",
        ),
        ("neither prompt nor messages", json!({}), "invalid_request"),
        (
            "prompt and messages",
            json!({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}),
            "invalid_request",
        ),
        ("blank prompt", json!({"prompt": "  "}), "invalid_request"),
        ("empty messages", json!({"messages": []}), "invalid_request"),
        (
            "unknown role",
            json!({"messages": [{"role": "tool", "content": "y"}]}),
            "invalid_request",
        ),
        (
            "unknown provider",
            json!({"prompt": "x", "provider": "anthropic"}),
            "unknown_provider",
        ),
        (
            "provider not configured",
            json!({"prompt": "x", "provider": "openai"}),
            "provider_not_configured",
        ),
    ];

    for (case, body, code) in cases {
        // Act
        let response = app.post("/llm", &body).await;

        // Assert
        assert_eq!(response.status, unprocessable, "{case}: {}", response.text);
        assert_error(&response, unprocessable, code);
    }
}

#[tokio::test]
async fn a_rejected_request_leaves_the_llm_span_without_error_or_usage() {
    // Arrange
    let app = TestApp::new();

    // Act
    let (response, trace) = app
        .post_traced("/llm", &json!({"prompt": "x", "max_tokens": 0}))
        .await;

    // Assert
    assert_error(
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let llm = trace.one("hermes.llm");
    assert_child_of(llm, trace.server("POST /llm"));
    assert_eq!(llm.status, Status::Unset);
    assert_eq!(llm.int("gen_ai.usage.input_tokens"), None);
    assert_eq!(llm.str("error.type"), None);
}

#[tokio::test]
async fn malformed_and_oversized_llm_bodies_are_rejected() {
    // Arrange
    let app = TestApp::new();
    let oversized = format!(
        "{{\"prompt\": \"{}\"}}",
        "a".repeat(foundry::testing::MAX_BODY_BYTES)
    );

    // Act
    let invalid = app.post_raw("/llm", "{\"prompt\": 'x'}").await;
    let too_large = app.post_raw("/llm", oversized).await;

    // Assert
    assert_error(&invalid, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

/// A fake OpenAI-compatible API on loopback; the first path segment picks its behaviour. The
/// failing scenario echoes the `Authorization` header back, as a careless upstream might.
async fn fake_openai() -> SocketAddr {
    async fn completions(
        Path(scenario): Path<String>,
        headers: http::HeaderMap,
    ) -> impl IntoResponse {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match scenario.as_str() {
            "ok" => Json(json!({
                "id": "chatcmpl-fake",
                "created": 1_700_000_000,
                "model": "gpt-test",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "The block is on the table."},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
            }))
            .into_response(),
            "fail" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("upstream broke while handling {auth}"),
            )
                .into_response(),
            _ => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::OK.into_response()
            }
        }
    }
    let app = Router::new().route("/{scenario}/v1/chat/completions", post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Hermes whose `openai` provider is the fake upstream at `base_url`, with a short timeout.
fn with_openai(base_url: &str) -> TestApp {
    let client = foundry::http::client(Duration::from_millis(500)).unwrap();
    let config = OpenAiConfig::new(base_url, ApiKey::new(API_KEY), "gpt-test").unwrap();
    let provider = OpenAiProvider::new(client, config).unwrap();
    TestApp::with_state(AppState {
        store: Arc::new(InstrumentedStore::in_memory(EMBEDDING_DIMENSION)),
        llm: Arc::new(LlmService::new(Provider::Echo, Some(provider)).unwrap()),
    })
}

#[track_caller]
fn assert_key_absent(trace: &Trace) {
    for span in &trace.spans {
        for (key, value) in &span.attributes {
            if let AttributeValue::String(value) = value {
                assert!(
                    !value.contains(API_KEY),
                    "{key} of {} leaks the key",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn an_openai_answer_is_traced_with_its_usage_and_a_client_span_without_the_key() {
    // Arrange
    let upstream = fake_openai().await;
    let app = with_openai(&format!("http://{upstream}/ok/v1"));

    // Act
    let (response, trace) = app
        .post_traced(
            "/llm",
            &json!({"prompt": "Where is the block?", "provider": "openai"}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["provider"], "openai");
    assert_eq!(
        response.body["choices"][0]["message"]["content"],
        "The block is on the table."
    );
    assert_eq!(
        response.body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})
    );
    let llm = trace.one("hermes.llm");
    assert_manual_child(llm, trace.server("POST /llm"));
    assert_eq!(llm.str("gen_ai.system"), Some("openai"));
    assert_eq!(llm.str("gen_ai.request.model"), Some("gpt-test"));
    assert_eq!(llm.int("gen_ai.usage.input_tokens"), Some(12));
    assert_eq!(llm.int("gen_ai.usage.output_tokens"), Some(7));
    let client = trace
        .spans
        .iter()
        .find(|s| s.kind == Kind::Client)
        .unwrap_or_else(|| panic!("no client span in {:?}", trace.names()));
    assert_child_of(client, llm);
    assert_eq!(client.int("http.response.status_code"), Some(200));
    assert_key_absent(&trace);
}

#[tokio::test]
async fn a_failing_upstream_is_a_502_whose_message_and_spans_hide_the_key() {
    // Arrange
    let upstream = fake_openai().await;
    let app = with_openai(&format!("http://{upstream}/fail/v1"));

    // Act
    let (response, trace) = app
        .post_traced("/llm", &json!({"prompt": "hi", "provider": "openai"}))
        .await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "llm_upstream_error");
    assert!(!response.text.contains(API_KEY), "{}", response.text);
    let server = trace.server("POST /llm");
    assert_eq!(server.int("http.response.status_code"), Some(502));
    assert_eq!(server.status, Status::Error);
    let llm = trace.one("hermes.llm");
    assert_eq!(llm.status, Status::Error);
    assert_eq!(llm.str("error.type"), Some("llm_upstream_error"));
    assert_key_absent(&trace);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    // Arrange
    let upstream = fake_openai().await;
    let app = with_openai(&format!("http://{upstream}/slow/v1"));

    // Act
    let (response, trace) = app
        .post_traced("/llm", &json!({"prompt": "hi", "provider": "openai"}))
        .await;

    // Assert
    assert_error(&response, StatusCode::GATEWAY_TIMEOUT, "llm_timeout");
    assert_eq!(
        trace.one("hermes.llm").str("error.type"),
        Some("llm_timeout")
    );
    assert_eq!(trace.server("POST /llm").status, Status::Error);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // Arrange
    let address = foundry::testing::closed_address();
    let app = with_openai(&format!("http://{address}/v1"));

    // Act
    let response = app
        .post("/llm", &json!({"prompt": "hi", "provider": "openai"}))
        .await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "llm_unreachable");
}
