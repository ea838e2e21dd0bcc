//! `POST /embed_text`: deterministic 384-dimensional unit vectors, stored in the vector store, and
//! the `hermes.embed` and `hermes.milvus` spans.

use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_child_of, assert_error, assert_manual_child, oversized_text_body,
};

fn vector(body: &Value) -> Vec<f64> {
    body["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn embed_text_answers_a_stored_unit_vector_of_384_dimensions() {
    // Arrange
    let app = TestApp::new();

    // Act
    let response = app
        .post("/embed_text", &json!({"text": "Pick up the red block"}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let mut keys: Vec<&str> = response
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["dimension", "embedding", "embedding_id", "model"]);
    assert_eq!(response.body["dimension"], 384);
    assert_eq!(response.body["model"], "feature-hash-384");
    let embedding = vector(&response.body);
    assert_eq!(embedding.len(), 384);
    let norm = embedding.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "L2 norm {norm}");
    let id = uuid::Uuid::parse_str(response.body["embedding_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    // Stored: searching for the same text finds this very id.
    let found = app
        .post(
            "/search",
            &json!({"text": "Pick up the red block", "top_k": 1}),
        )
        .await;
    assert_eq!(found.body["results"][0]["embedding_id"], id.to_string());
}

#[tokio::test]
async fn the_same_text_gets_the_same_vector_and_a_new_id() {
    // Arrange
    let app = TestApp::new();
    let request = json!({"text": "place it on the table", "model": "feature-hash-384"});

    // Act
    let first = app.post("/embed_text", &request).await;
    let second = app.post("/embed_text", &request).await;

    // Assert
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(vector(&first.body), vector(&second.body));
    assert_ne!(first.body["embedding_id"], second.body["embedding_id"]);
}

#[tokio::test]
async fn embed_text_is_traced_with_embed_and_insert_spans_under_the_server_span() {
    // Arrange
    let app = TestApp::new();
    // Six characters, nine bytes: the length attribute counts characters.
    let text = "Café ☕";

    // Act
    let (response, trace) = app.post_traced("/embed_text", &json!({"text": text})).await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        trace.names(),
        ["POST /embed_text", "hermes.embed", "hermes.milvus"]
    );
    let server = trace.server("POST /embed_text");
    assert_eq!(server.str("http.route"), Some("/embed_text"));
    assert_eq!(server.str("http.request.method"), Some("POST"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.status, Status::Unset);

    let embed = trace.one("hermes.embed");
    assert_manual_child(embed, server);
    assert_eq!(
        embed.attributes.get("embedding.model"),
        Some(&AttributeValue::String("feature-hash-384".into()))
    );
    assert_eq!(
        embed.attributes.get("embedding.dimension"),
        Some(&AttributeValue::Int(384))
    );
    assert_eq!(
        embed.attributes.get("embedding.text_length"),
        Some(&AttributeValue::Int(6))
    );

    let milvus = trace.one("hermes.milvus");
    assert_manual_child(milvus, server);
    assert_eq!(
        milvus.attributes.get("db.operation.name"),
        Some(&AttributeValue::String("insert".into()))
    );
    assert_eq!(
        milvus.attributes.get("db.system.name"),
        Some(&AttributeValue::String("memory".into()))
    );
    assert_eq!(milvus.status, Status::Unset);
}

#[tokio::test]
async fn a_rejected_text_is_not_stored_and_does_not_mark_the_server_span_as_failed() {
    // Arrange
    let app = TestApp::new();

    // Act
    let (response, trace) = app
        .post_traced("/embed_text", &json!({"text": "hi", "model": "ada-002"}))
        .await;

    // Assert
    assert_error(&response, StatusCode::UNPROCESSABLE_ENTITY, "unknown_model");
    assert!(!trace.has("hermes.milvus"), "{:?}", trace.names());
    let server = trace.server("POST /embed_text");
    assert_eq!(server.int("http.response.status_code"), Some(422));
    assert_eq!(server.status, Status::Unset, "a 4xx is the caller's error");
    let embed = trace.one("hermes.embed");
    assert_child_of(embed, server);
    assert_eq!(embed.int("embedding.text_length"), Some(2));
    assert_eq!(embed.str("embedding.model"), None, "no model was resolved");
}

#[tokio::test]
async fn bad_embed_requests_get_their_error_codes() {
    // Arrange
    let app = TestApp::new();
    let too_long = json!({"text": "a".repeat(100_001)}).to_string();
    let cases: [(&str, String, StatusCode, &str); 8] = [
        (
            "invalid JSON",
            "{\"text\": ".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing text",
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "text not a string",
            "{\"text\": 42}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "not an object",
            "[\"text\"]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "blank text",
            "{\"text\": \" \\n\\t \"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_text",
        ),
        (
            "unknown model",
            "{\"text\": \"x\", \"model\": \"text-embedding-3-small\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_model",
        ),
        (
            "text over 100 000 characters",
            too_long,
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_too_long",
        ),
        (
            "body over 1 MiB",
            oversized_text_body(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app.post_raw("/embed_text", body).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
    }
}
