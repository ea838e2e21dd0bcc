//! `GET /state` and `POST /state`: the CWM world state, replaced whole and stamped with a new id,
//! and the `sophia.state.read` / `sophia.state.write` spans carrying that id.

use axum::body::Body;
use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_child_of, assert_error, assert_rfc3339, assert_uuid, json_post, keys,
    oversized_body, oversized_state,
};

#[tokio::test]
async fn the_state_starts_empty_with_an_id_and_a_time() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let response = app.get("/state").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(keys(&response.body), ["state", "state_id", "timestamp"]);
    assert_eq!(response.body["state"], json!({}));
    assert_uuid(&response.body["state_id"]);
    assert_rfc3339(&response.body["timestamp"]);
}

#[tokio::test]
async fn a_posted_state_replaces_the_old_one_under_a_new_id() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let old = app.get("/state").await;
    let new_state = json!({"door": "open", "blocks": [{"color": "red", "on": "table"}]});

    // Act
    let written = app.post("/state", &json!({"state": new_state})).await;
    let read = app.get("/state").await;

    // Assert
    assert_eq!(written.status, StatusCode::OK, "{}", written.text);
    assert_eq!(keys(&written.body), ["state", "state_id", "timestamp"]);
    assert_eq!(written.body["state"], new_state);
    assert_uuid(&written.body["state_id"]);
    assert_ne!(written.body["state_id"], old.body["state_id"]);
    assert_eq!(read.body, written.body);
}

#[tokio::test]
async fn reading_the_state_is_traced_with_its_id() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, trace) = app.get_traced("/state").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK);
    let server = trace.server("GET /state");
    assert_eq!(server.str("http.route"), Some("/state"));
    assert_eq!(server.str("http.request.method"), Some("GET"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    let read = trace.one("sophia.state.read");
    assert_child_of(read, server);
    assert_eq!(
        read.attributes.get("state.id"),
        Some(&AttributeValue::String(
            response.body["state_id"].as_str().unwrap().to_owned()
        ))
    );
}

#[tokio::test]
async fn writing_the_state_is_traced_with_the_new_id() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, trace) = app
        .post_traced("/state", &json!({"state": {"lights": "on"}}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let server = trace.server("POST /state");
    let write = trace.one("sophia.state.write");
    assert_child_of(write, server);
    assert_eq!(
        write.attributes.get("state.id"),
        Some(&AttributeValue::String(
            response.body["state_id"].as_str().unwrap().to_owned()
        ))
    );
    assert_eq!(write.status, Status::Unset);
}

#[tokio::test]
async fn bad_states_are_rejected_and_the_old_state_stays() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let before = app
        .post("/state", &json!({"state": {"door": "closed"}}))
        .await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: [(&str, String, StatusCode, &str); 7] = [
        (
            "invalid JSON",
            "{\"state\": {\"door\": }}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing state",
            "{}".into(),
            unprocessable,
            "invalid_request",
        ),
        (
            "state an array",
            json!({"state": [1, 2]}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "state a string",
            json!({"state": "open"}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "state null",
            json!({"state": null}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "state over 256 KiB",
            json!({"state": oversized_state()}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "body over 1 MiB",
            oversized_body("state"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app
            .send(json_post("/state").body(Body::from(body)).unwrap())
            .await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
    }
    let after = app.get("/state").await;
    assert_eq!(after.body, before.body);
}
