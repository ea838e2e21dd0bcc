//! `POST /search`: nearest stored embeddings by cosine similarity, by text or by vector, and the
//! `hermes.embed` / `hermes.milvus` (`search`) spans.

use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, assert_manual_child, oversized_text_body};

/// Embeds each text in order and returns the embedding ids.
async fn store(app: &TestApp, texts: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for text in texts {
        let response = app.post("/embed_text", &json!({"text": text})).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        ids.push(response.body["embedding_id"].as_str().unwrap().to_owned());
    }
    ids
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().unwrap()
}

#[tokio::test]
async fn search_by_text_ranks_the_identical_text_first_with_score_one() {
    // Arrange
    let app = TestApp::new();
    let ids = store(
        &app,
        &[
            "quarterly revenue forecast meeting notes",
            "pick up the red block",
            "pick up the blue block",
        ],
    )
    .await;

    // Act
    let response = app
        .post(
            "/search",
            &json!({"text": "pick up the red block", "top_k": 2}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let hits = results(&response.body);
    assert_eq!(hits.len(), 2);
    let mut keys: Vec<&str> = hits[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["embedding_id", "score", "text"]);
    assert_eq!(hits[0]["embedding_id"], ids[1].as_str());
    assert_eq!(hits[0]["text"], "pick up the red block");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(hits[1]["embedding_id"], ids[2].as_str());
    assert!(hits[1]["score"].as_f64().unwrap() < hits[0]["score"].as_f64().unwrap());
}

#[tokio::test]
async fn search_by_embedding_finds_the_stored_vector() {
    // Arrange
    let app = TestApp::new();
    store(&app, &["open the door"]).await;
    let stored = app
        .post("/embed_text", &json!({"text": "report the result"}))
        .await;

    // Act
    let (response, trace) = app
        .post_traced(
            "/search",
            &json!({"embedding": stored.body["embedding"], "top_k": 1}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let hits = results(&response.body);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["embedding_id"], stored.body["embedding_id"]);
    assert!(
        !trace.has("hermes.embed"),
        "a vector query embeds nothing: {:?}",
        trace.names()
    );
}

#[tokio::test]
async fn top_k_defaults_to_five_and_caps_at_what_is_stored() {
    // Arrange
    let app = TestApp::new();
    store(&app, &["a b", "c d", "e f", "g h", "i j", "k l", "m n"]).await;

    // Act
    let default = app.post("/search", &json!({"text": "a b"})).await;
    let all = app
        .post("/search", &json!({"text": "a b", "top_k": 100}))
        .await;

    // Assert
    assert_eq!(results(&default.body).len(), 5, "{}", default.text);
    assert_eq!(results(&all.body).len(), 7, "{}", all.text);
}

#[tokio::test]
async fn search_by_text_is_traced_with_embed_and_search_spans_under_the_server_span() {
    // Arrange
    let app = TestApp::new();
    store(&app, &["pick up the red block", "place it on the table"]).await;

    // Act
    let (response, trace) = app
        .post_traced("/search", &json!({"text": "red block", "top_k": 3}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        trace.names(),
        ["POST /search", "hermes.embed", "hermes.milvus"]
    );
    let server = trace.server("POST /search");
    assert_eq!(server.int("http.response.status_code"), Some(200));
    let embed = trace.one("hermes.embed");
    assert_manual_child(embed, server);
    assert_eq!(embed.str("embedding.model"), Some("feature-hash-384"));
    assert_eq!(embed.int("embedding.dimension"), Some(384));
    assert_eq!(embed.int("embedding.text_length"), Some(9));
    let milvus = trace.one("hermes.milvus");
    assert_manual_child(milvus, server);
    assert_eq!(
        milvus.attributes.get("db.operation.name"),
        Some(&AttributeValue::String("search".into()))
    );
    assert_eq!(milvus.str("db.system.name"), Some("memory"));
    assert_eq!(milvus.int("db.response.returned_rows"), Some(2));
    assert_eq!(milvus.status, Status::Unset);
}

#[tokio::test]
async fn an_out_of_range_top_k_is_named_on_the_search_span_without_failing_it() {
    // Arrange
    let app = TestApp::new();

    // Act
    let (response, trace) = app
        .post_traced("/search", &json!({"text": "red block", "top_k": 0}))
        .await;

    // Assert
    assert_error(&response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_top_k");
    let server = trace.server("POST /search");
    assert_eq!(server.int("http.response.status_code"), Some(422));
    assert_eq!(server.status, Status::Unset);
    let milvus = trace.one("hermes.milvus");
    assert_manual_child(milvus, server);
    assert_eq!(milvus.str("error.type"), Some("invalid_top_k"));
    assert_eq!(
        milvus.status,
        Status::Unset,
        "the caller's error, not the store's"
    );
}

#[tokio::test]
async fn bad_search_requests_get_their_error_codes() {
    // Arrange
    let app = TestApp::new();
    let cases: [(&str, Value, StatusCode, &str); 9] = [
        (
            "top_k 0",
            json!({"text": "x", "top_k": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_top_k",
        ),
        (
            "top_k 101",
            json!({"text": "x", "top_k": 101}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_top_k",
        ),
        (
            "negative top_k",
            json!({"text": "x", "top_k": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_top_k",
        ),
        (
            "top_k a string",
            json!({"text": "x", "top_k": "3"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "neither text nor embedding",
            json!({"top_k": 3}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "both text and embedding",
            json!({"text": "x", "embedding": vec![0.1; 384]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "embedding of the wrong dimension",
            json!({"embedding": [1.0, 0.0, 0.0]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dimension_mismatch",
        ),
        (
            "zero embedding",
            json!({"embedding": vec![0.0; 384]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_vector",
        ),
        (
            "blank text",
            json!({"text": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_text",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app.post("/search", &body).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
        if case.contains("top_k") && code == "invalid_top_k" {
            let message = response.body["error"]["message"]
                .as_str()
                .unwrap_or_default();
            let sent = body["top_k"].to_string();
            assert!(message.ends_with(&format!("got {sent}")), "{message}");
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_search_bodies_are_rejected() {
    // Arrange
    let app = TestApp::new();

    // Act
    let invalid = app.post_raw("/search", "{\"text\": \"x\",}").await;
    let oversized = app.post_raw("/search", oversized_text_body()).await;

    // Assert
    assert_error(&invalid, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(
        &oversized,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}
