//! `GET /hcg/entities/{id}`, `GET /hcg/entities?type=&limit=` and `GET /hcg/snapshot?limit=`: the
//! graph a plan leaves behind, read newest first, and the `sophia.hcg.read` span with
//! `hcg.entity_type` and `hcg.count`.

use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_child_of, assert_error, keys};

/// A Sophia whose graph holds one plan of [`crate::helpers::GOAL`]; returns it with the plan.
async fn app_with_plan() -> (TestApp, Value) {
    let app = TestApp::with_hermes().await;
    let plan = app.create_plan().await;
    (app, plan)
}

fn names(entities: &Value) -> Vec<&str> {
    entities
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_entity_is_read_by_id() {
    // Arrange
    let (app, plan) = app_with_plan().await;
    let step = &plan["plan"][1];

    // Act
    let (response, trace) = app
        .get_traced(&format!("/hcg/entities/{}", step["id"].as_str().unwrap()))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        keys(&response.body),
        ["created_at", "id", "name", "properties", "type"]
    );
    assert_eq!(response.body["id"], step["id"]);
    assert_eq!(response.body["type"], "step");
    assert_eq!(response.body["name"], "place it on the table");
    assert_eq!(
        response.body["properties"],
        json!({
            "index": 1,
            "action_type": "place",
            "target": "it on the table",
            "embedding_id": step["embedding_id"]
        })
    );
    assert_eq!(response.body["created_at"], plan["created_at"]);
    let server = trace.server("GET /hcg/entities/{id}");
    assert_eq!(server.str("http.route"), Some("/hcg/entities/{id}"));
    let read = trace.one("sophia.hcg.read");
    assert_child_of(read, server);
    assert_eq!(
        read.attributes.get("hcg.count"),
        Some(&AttributeValue::Int(1))
    );
    assert_eq!(read.str("hcg.entity_type"), None, "no type filter");
}

#[tokio::test]
async fn an_unknown_id_is_404_not_found() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, trace) = app.get_traced("/hcg/entities/no-such-entity").await;

    // Assert
    assert_error(&response, StatusCode::NOT_FOUND, "not_found");
    let server = trace.server("GET /hcg/entities/{id}");
    assert_eq!(server.int("http.response.status_code"), Some(404));
    assert_eq!(server.status, Status::Unset);
    assert_eq!(trace.one("sophia.hcg.read").int("hcg.count"), None);
}

#[tokio::test]
async fn an_id_that_is_not_utf8_is_400_invalid_path_in_json() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, _) = app.get_traced("/hcg/entities/%FF").await;

    // Assert
    assert_error(&response, StatusCode::BAD_REQUEST, "invalid_path");
}

#[tokio::test]
async fn entities_of_a_type_are_listed_newest_first_up_to_the_limit() {
    // Arrange
    let (app, _) = app_with_plan().await;

    // Act
    let (response, trace) = app.get_traced("/hcg/entities?type=step&limit=2").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(keys(&response.body), ["count", "entities"]);
    assert_eq!(response.body["count"], 2);
    assert_eq!(
        names(&response.body["entities"]),
        ["report the result", "place it on the table"]
    );
    let server = trace.server("GET /hcg/entities");
    assert_eq!(server.str("http.route"), Some("/hcg/entities"));
    assert_eq!(server.str("url.path"), Some("/hcg/entities"));
    let read = trace.one("sophia.hcg.read");
    assert_child_of(read, server);
    assert_eq!(
        read.attributes.get("hcg.entity_type"),
        Some(&AttributeValue::String("step".into()))
    );
    assert_eq!(
        read.attributes.get("hcg.count"),
        Some(&AttributeValue::Int(2))
    );
}

#[tokio::test]
async fn without_a_filter_every_entity_is_listed() {
    // Arrange
    let (app, plan) = app_with_plan().await;

    // Act
    let response = app.get("/hcg/entities").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.body["count"], 5);
    let types: Vec<&str> = response.body["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["step", "step", "step", "plan", "goal"]);
    assert_eq!(response.body["entities"][3]["id"], plan["plan_id"]);
}

#[tokio::test]
async fn a_snapshot_holds_the_newest_entities_the_edges_among_them_and_the_totals() {
    // Arrange
    let (app, plan) = app_with_plan().await;
    let step_ids: Vec<&Value> = plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();

    // Act
    let (response, trace) = app.get_traced("/hcg/snapshot?limit=3").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(
        keys(&response.body),
        ["edge_count", "edges", "entities", "entity_count"]
    );
    assert_eq!(
        names(&response.body["entities"]),
        [
            "report the result",
            "place it on the table",
            "Pick up the red block"
        ]
    );
    assert_eq!(
        response.body["edges"],
        json!([
            {"from": step_ids[0], "to": step_ids[1], "relation": "precedes"},
            {"from": step_ids[1], "to": step_ids[2], "relation": "precedes"}
        ])
    );
    assert_eq!(response.body["entity_count"], 5);
    assert_eq!(response.body["edge_count"], 6);
    let read = trace.one("sophia.hcg.read");
    assert_child_of(read, trace.server("GET /hcg/snapshot"));
    assert_eq!(read.int("hcg.count"), Some(3));
}

#[tokio::test]
async fn bad_query_strings_are_400_invalid_query() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let paths = [
        "/hcg/entities?limit=abc",
        "/hcg/entities?limit=0",
        "/hcg/entities?limit=1001",
        "/hcg/entities?limit=-1",
        "/hcg/entities?type=step&limit=2.5",
        "/hcg/snapshot?limit=many",
        "/hcg/snapshot?limit=0",
    ];

    for path in paths {
        // Act
        let response = app.get(path).await;

        // Assert
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            response.text
        );
        assert_error(&response, StatusCode::BAD_REQUEST, "invalid_query");
    }
}
