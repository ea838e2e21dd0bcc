//! `POST /simple_nlp`: the clauses Sophia plans with, the other analyses on request only, and the
//! `hermes.nlp` span.

use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, assert_manual_child, oversized_text_body};

const GOAL: &str = "Pick up the red block, then place it on the table and report the result.";

#[tokio::test]
async fn sentences_split_a_goal_into_its_clauses_and_nothing_else_is_answered() {
    // Arrange
    let app = TestApp::new();

    // Act
    let response = app
        .post(
            "/simple_nlp",
            &json!({"text": GOAL, "operations": ["sentences"]}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        response.body,
        json!({"sentences": [
            "Pick up the red block",
            "place it on the table",
            "report the result"
        ]})
    );
}

#[tokio::test]
async fn ner_finds_numbers_and_proper_nouns_with_character_offsets() {
    // Arrange
    let app = TestApp::new();

    // Act
    let response = app
        .post(
            "/simple_nlp",
            &json!({
                "text": "Bring 3 cups to Ada Lovelace in the Main Hall.",
                "operations": ["ner"]
            }),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        response.body,
        json!({"entities": [
            {"text": "3", "label": "NUMBER", "start": 6, "end": 7},
            {"text": "Ada Lovelace", "label": "PROPER_NOUN", "start": 16, "end": 28},
            {"text": "Main Hall", "label": "PROPER_NOUN", "start": 36, "end": 45}
        ]})
    );
}

#[tokio::test]
async fn every_operation_answers_under_its_own_key() {
    // Arrange
    let app = TestApp::new();
    let operations = ["sentences", "tokenize", "lemmatize", "ner", "pos"];

    // Act
    let response = app
        .post(
            "/simple_nlp",
            &json!({"text": "She went home.", "operations": operations}),
        )
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
    assert_eq!(
        keys,
        ["entities", "lemmas", "pos_tags", "sentences", "tokens"]
    );
    assert_eq!(
        response.body["tokens"][0],
        json!({"text": "She", "kind": "word", "start": 0, "end": 3})
    );
    assert_eq!(response.body["lemmas"][1]["lemma"], "go");
}

#[tokio::test]
async fn simple_nlp_is_traced_with_the_operations_and_text_length() {
    // Arrange
    let app = TestApp::new();

    // Act
    let (response, trace) = app
        .post_traced(
            "/simple_nlp",
            &json!({"text": GOAL, "operations": ["sentences", "NER", "sentences"]}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(trace.names(), ["POST /simple_nlp", "hermes.nlp"]);
    let server = trace.server("POST /simple_nlp");
    assert_eq!(server.str("http.route"), Some("/simple_nlp"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    let nlp = trace.one("hermes.nlp");
    assert_manual_child(nlp, server);
    assert_eq!(
        nlp.attributes.get("nlp.operations"),
        Some(&AttributeValue::String("sentences,ner".into())),
        "deduplicated, canonical names, in request order"
    );
    assert_eq!(
        nlp.attributes.get("nlp.text_length"),
        Some(&AttributeValue::Int(
            i64::try_from(GOAL.chars().count()).unwrap()
        ))
    );
    assert_eq!(nlp.status, Status::Unset);
}

#[tokio::test]
async fn bad_nlp_requests_get_their_error_codes() {
    // Arrange
    let app = TestApp::new();
    let long = "a ".repeat(50_001);
    let cases: [(&str, Value, StatusCode, &str); 7] = [
        (
            "no operations",
            json!({"text": GOAL, "operations": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_operations",
        ),
        (
            "unknown operation",
            json!({"text": GOAL, "operations": ["sentences", "parse"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_operation",
        ),
        (
            "blank text",
            json!({"text": " \n", "operations": ["ner"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_text",
        ),
        (
            "text over 100 000 characters",
            json!({"text": long, "operations": ["ner"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_too_long",
        ),
        (
            "missing operations",
            json!({"text": GOAL}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "operations not a list",
            json!({"text": GOAL, "operations": "sentences"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "missing text",
            json!({"operations": ["ner"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app.post("/simple_nlp", &body).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
    }
}

#[tokio::test]
async fn malformed_and_oversized_nlp_bodies_are_rejected() {
    // Arrange
    let app = TestApp::new();

    // Act
    let invalid = app.post_raw("/simple_nlp", "not json").await;
    let oversized = app.post_raw("/simple_nlp", oversized_text_body()).await;

    // Assert
    assert_error(&invalid, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(
        &oversized,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}
