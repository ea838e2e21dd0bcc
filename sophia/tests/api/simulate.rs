//! `POST /simulate`: a stored plan rolled forward `k_steps` over the world state, recorded in the
//! HCG, never changing the state; the `sophia.simulate` span with `sophia.hcg.read` beneath it.

use foundry::testing::{AttributeValue, Status};
use http::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_child_of, assert_error, assert_names_field, assert_rfc3339, assert_uuid, keys,
    oversized_body, oversized_state,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[tokio::test]
async fn a_plan_is_rolled_forward_k_steps_from_the_given_state() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();

    // Act
    let response = app
        .post(
            "/simulate",
            &json!({"plan_id": plan_id, "k_steps": 4, "initial_state": {"gripper": "empty"}}),
        )
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let body = &response.body;
    assert_eq!(
        keys(body),
        [
            "created_at",
            "imagined_states",
            "k_steps",
            "overall_confidence",
            "plan_id",
            "simulation_id"
        ]
    );
    assert_uuid(&body["simulation_id"]);
    assert_rfc3339(&body["created_at"]);
    assert_eq!(body["plan_id"], plan_id);
    assert_eq!(body["k_steps"], 4);
    let states = body["imagined_states"].as_array().unwrap();
    let walk: Vec<(u64, &str, &str)> = states
        .iter()
        .map(|s| {
            (
                s["step"].as_u64().unwrap(),
                s["action_type"].as_str().unwrap(),
                s["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        walk,
        [
            (1, "pick", "red block"),
            (2, "place", "it on the table"),
            (3, "report", "result"),
            (4, "pick", "red block"),
        ],
        "a short plan repeats"
    );
    for (i, state) in states.iter().enumerate() {
        let expected = 0.95_f64.powi(i32::try_from(i + 1).unwrap());
        let confidence = state["confidence"].as_f64().unwrap();
        assert!(close(confidence, expected), "step {}: {confidence}", i + 1);
    }
    assert!(close(
        body["overall_confidence"].as_f64().unwrap(),
        0.95_f64.powi(4)
    ));
    assert_eq!(
        states[3]["state"],
        json!({
            "gripper": "empty",
            "last_action": "pick",
            "target": "red block",
            "steps_taken": 4,
            "targets": {
                "red block": {"status": "done", "last_action": "pick"},
                "it on the table": {"status": "done", "last_action": "place"},
                "result": {"status": "done", "last_action": "report"}
            }
        })
    );
}

#[tokio::test]
async fn without_k_steps_or_initial_state_it_takes_five_steps_from_the_cwm_state() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();
    let before = app
        .post("/state", &json!({"state": {"door": "open"}}))
        .await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);

    // Act
    let response = app.post("/simulate", &json!({"plan_id": plan_id})).await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.body["k_steps"], 5);
    let states = response.body["imagined_states"].as_array().unwrap();
    assert_eq!(states.len(), 5);
    assert_eq!(states[0]["state"]["door"], "open");
    let after = app.get("/state").await;
    assert_eq!(after.body, before.body, "the CWM state is not changed");
}

#[tokio::test]
async fn the_simulation_is_recorded_in_the_hcg() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();

    // Act
    let response = app
        .post("/simulate", &json!({"plan_id": plan_id, "k_steps": 2}))
        .await;

    // Assert
    let simulation_id = response.body["simulation_id"].as_str().unwrap();
    let stored = app.get(&format!("/hcg/entities/{simulation_id}")).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    assert_eq!(stored.body["type"], "simulation");
    assert_eq!(stored.body["properties"]["plan_id"], plan_id);
    assert_eq!(stored.body["properties"]["k_steps"], 2);
    let snapshot = app.get("/hcg/snapshot?limit=1").await;
    assert_eq!(
        snapshot.body["edge_count"], 7,
        "the plan's six and simulated_by"
    );
}

#[tokio::test]
async fn simulate_is_traced_with_steps_confidence_and_the_plan_read() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();

    // Act
    let (response, trace) = app
        .post_traced("/simulate", &json!({"plan_id": plan_id, "k_steps": 4}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let server = trace.server("POST /simulate");
    assert_eq!(server.str("http.route"), Some("/simulate"));
    assert_eq!(server.int("http.response.status_code"), Some(201));
    let simulate = trace.one("sophia.simulate");
    assert_child_of(simulate, server);
    assert_eq!(
        simulate.attributes.get("simulation.k_steps"),
        Some(&AttributeValue::Int(4))
    );
    let confidence = simulate.double("simulation.confidence").unwrap();
    assert!(close(confidence, 0.95_f64.powi(4)), "{confidence}");
    assert_eq!(simulate.str("plan.id"), plan_id.as_str());
    let read = trace.one("sophia.hcg.read");
    assert_child_of(read, simulate);
    assert_eq!(
        read.attributes.get("hcg.count"),
        Some(&AttributeValue::Int(1))
    );
    assert_child_of(trace.one("sophia.hcg.write"), simulate);
    let state = trace.one("sophia.state.read");
    assert_child_of(state, simulate);
    assert_eq!(state.status, Status::Unset);
}

#[tokio::test]
async fn an_unknown_plan_is_404_plan_not_found() {
    // Arrange
    let app = TestApp::with_hermes().await;
    app.create_plan().await;
    // A goal's id names an entity, but not a plan.
    let goal_id = app.get("/hcg/entities?type=goal").await.body["entities"][0]["id"].clone();
    assert_uuid(&goal_id);

    for plan_id in [json!("no-such-plan"), goal_id] {
        // Act
        let (response, trace) = app
            .post_traced("/simulate", &json!({"plan_id": plan_id}))
            .await;

        // Assert
        assert_error(&response, StatusCode::NOT_FOUND, "plan_not_found");
        let server = trace.server("POST /simulate");
        assert_eq!(server.int("http.response.status_code"), Some(404));
        assert_eq!(server.status, Status::Unset);
        assert_eq!(
            trace.one("sophia.simulate").double("simulation.confidence"),
            None
        );
    }
}

#[tokio::test]
async fn bad_simulation_requests_get_their_error_codes() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: [(&str, String, StatusCode, &str); 12] = [
        (
            "invalid JSON",
            "{\"plan_id\" \"x\"}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "k_steps 0",
            json!({"plan_id": plan_id, "k_steps": 0}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "k_steps 101",
            json!({"plan_id": plan_id, "k_steps": 101}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "negative k_steps",
            json!({"plan_id": plan_id, "k_steps": -3}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "k_steps a string",
            json!({"plan_id": plan_id, "k_steps": "five"}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "fractional k_steps",
            json!({"plan_id": plan_id, "k_steps": 2.5}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "missing plan_id",
            json!({"k_steps": 3}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "plan_id a number",
            json!({"plan_id": 12}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "initial_state not an object",
            json!({"plan_id": plan_id, "initial_state": "sunny"}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "initial_state over 256 KiB",
            json!({"plan_id": plan_id, "initial_state": oversized_state()}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "100 steps of a 40 KiB state",
            json!({"plan_id": plan_id, "k_steps": 100, "initial_state": {"readings": vec![1_000_000; 5_000]}}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "body over 1 MiB",
            oversized_body("plan_id"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app.post_raw("/simulate", body).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
        if case.starts_with("initial_state") {
            assert_names_field(&response, "initial_state");
        }
    }
    let simulations = app.get("/hcg/entities?type=simulation").await;
    assert_eq!(
        simulations.body["count"], 0,
        "no failed request recorded one"
    );
}

#[tokio::test]
async fn an_out_of_range_k_steps_is_still_on_the_span() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let plan_id = app.create_plan().await["plan_id"].clone();

    // Act
    let (response, trace) = app
        .post_traced("/simulate", &json!({"plan_id": plan_id, "k_steps": 101}))
        .await;

    // Assert
    assert_error(
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    let simulate = trace.one("sophia.simulate");
    assert_eq!(simulate.int("simulation.k_steps"), Some(101));
    assert!(!trace.has("sophia.hcg.read"), "{:?}", trace.described());
}
