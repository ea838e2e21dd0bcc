//! `POST /plan`: a goal becomes a stored plan with Hermes' clauses and embeddings; the trace runs
//! server span → `sophia.plan` → client spans → Hermes' server and manual spans, and
//! `sophia.hcg.write`.

use foundry::testing::{AttributeValue, Kind, Status};
use http::StatusCode;
use serde_json::json;

use crate::helpers::{
    GOAL, TestApp, assert_child_of, assert_error, assert_names_field, assert_rfc3339, assert_uuid,
    keys, oversized_body, oversized_state,
};

#[tokio::test]
async fn a_goal_becomes_a_plan_of_one_step_per_clause() {
    // Arrange
    let app = TestApp::with_hermes().await;

    // Act
    let response = app
        .post("/plan", &json!({"goal": {"description": GOAL}}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let body = &response.body;
    assert_eq!(
        keys(body),
        ["created_at", "goal", "plan", "plan_id", "priority"]
    );
    assert_uuid(&body["plan_id"]);
    assert_eq!(body["goal"], json!({"description": GOAL}));
    assert_eq!(body["priority"], "normal");
    assert_rfc3339(&body["created_at"]);
    let steps = body["plan"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["type"].as_str().unwrap(),
                s["action_type"].as_str().unwrap(),
                s["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Pick up the red block", "action", "pick", "red block"),
            (
                "place it on the table",
                "action",
                "place",
                "it on the table"
            ),
            ("report the result", "action", "report", "result"),
        ]
    );
    let mut ids: Vec<String> = steps.iter().map(|s| assert_uuid(&s["id"])).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct step ids");
    for step in steps {
        assert_uuid(&step["embedding_id"]);
    }
}

#[tokio::test]
async fn the_plan_is_stored_in_the_hcg_with_its_goal_and_steps() {
    // Arrange
    let app = TestApp::with_hermes().await;

    // Act
    let plan = app.create_plan().await;

    // Assert
    let plan_id = plan["plan_id"].as_str().unwrap();
    let stored = app.get(&format!("/hcg/entities/{plan_id}")).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    assert_eq!(stored.body["type"], "plan");
    assert_eq!(stored.body["properties"]["plan"], plan["plan"]);
    assert_eq!(stored.body["properties"]["step_count"], 3);
    let snapshot = app.get("/hcg/snapshot").await;
    assert_eq!(snapshot.body["entity_count"], 5, "goal, plan, three steps");
    assert_eq!(
        snapshot.body["edge_count"], 6,
        "has_plan, three has_step, two precedes"
    );
}

#[tokio::test]
async fn priority_and_target_state_are_kept() {
    // Arrange
    let app = TestApp::with_hermes().await;
    let goal = json!({"description": "  Open the door.  ", "target_state": {"door": "open"}});

    // Act
    let response = app
        .post("/plan", &json!({"goal": goal, "priority": "HIGH"}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(
        response.body["goal"],
        json!({"description": "Open the door.", "target_state": {"door": "open"}})
    );
    assert_eq!(response.body["priority"], "high");
    assert_eq!(response.body["plan"][0]["action_type"], "open");
    assert_eq!(response.body["plan"][0]["target"], "door");
}

#[tokio::test]
async fn a_plan_is_one_trace_from_sophia_through_hermes() {
    // Arrange
    let app = TestApp::with_hermes().await;

    // Act
    let (response, trace) = app
        .post_traced("/plan", &json!({"goal": {"description": GOAL}}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let server = trace.server("POST /plan");
    assert_eq!(server.str("http.route"), Some("/plan"));
    assert_eq!(server.int("http.response.status_code"), Some(201));
    assert_eq!(server.status, Status::Unset);

    let plan = trace.one("sophia.plan");
    assert_child_of(plan, server);
    assert_eq!(
        plan.attributes.get("plan.id"),
        Some(&AttributeValue::String(
            response.body["plan_id"].as_str().unwrap().to_owned()
        ))
    );
    assert_eq!(
        plan.attributes.get("plan.goal"),
        Some(&AttributeValue::String(GOAL.to_owned()))
    );
    assert_eq!(
        plan.attributes.get("plan.step_count"),
        Some(&AttributeValue::Int(3))
    );

    let write = trace.one("sophia.hcg.write");
    assert_child_of(write, plan);
    assert_eq!(write.int("hcg.entity_count"), Some(5));
    assert_eq!(write.int("hcg.edge_count"), Some(6));

    let nlp_call = trace.one_of("POST /simple_nlp", Kind::Client);
    let embed_calls = trace.all("POST /embed_text", Kind::Client);
    assert_eq!(embed_calls.len(), 3, "{:?}", trace.described());
    for call in embed_calls.iter().copied().chain([nlp_call]) {
        assert_child_of(call, plan);
        assert_eq!(call.str("http.request.method"), Some("POST"));
        assert_eq!(call.int("http.response.status_code"), Some(200));
        assert_eq!(call.str("server.address"), Some("127.0.0.1"));
        assert_eq!(call.status, Status::Unset);
    }
    assert_eq!(
        nlp_call.str("url.full"),
        Some(format!("{}/simple_nlp", app.hermes_url).as_str())
    );
}

#[tokio::test]
async fn hermes_server_spans_are_children_of_sophias_client_spans() {
    // Arrange
    let app = TestApp::with_hermes().await;

    // Act
    let (response, trace) = app
        .post_traced("/plan", &json!({"goal": {"description": GOAL}}))
        .await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let nlp_server = trace.one_of("POST /simple_nlp", Kind::Server);
    assert_child_of(nlp_server, trace.one_of("POST /simple_nlp", Kind::Client));
    let nlp = trace.one("hermes.nlp");
    assert_child_of(nlp, nlp_server);
    assert_eq!(nlp.str("nlp.operations"), Some("sentences"));

    let mut callers: Vec<&str> = Vec::new();
    for embed_server in trace.all("POST /embed_text", Kind::Server) {
        let caller = trace.by_id(&embed_server.parent_span_id);
        assert_eq!(
            (caller.kind, caller.name.as_str()),
            (Kind::Client, "POST /embed_text")
        );
        callers.push(&caller.span_id);
    }
    callers.sort_unstable();
    callers.dedup();
    assert_eq!(callers.len(), 3, "one Hermes server span per call");
    assert_eq!(trace.all("hermes.embed", Kind::Internal).len(), 3);
    assert_eq!(trace.all("hermes.milvus", Kind::Internal).len(), 3);

    // No orphans: every span but Sophia's server span has its parent in the trace.
    let server = trace.server("POST /plan");
    for span in &trace.spans {
        if span.span_id != server.span_id {
            trace.by_id(&span.parent_span_id);
        }
    }
    assert_eq!(trace.spans.len(), 18, "{:?}", trace.described());
}

#[tokio::test]
async fn bad_goals_are_rejected_before_hermes_is_called() {
    // Arrange: nothing listens at Hermes' URL, so a request that got that far would be a 502.
    let app = TestApp::with_hermes_down();
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: [(&str, String, StatusCode, &str); 11] = [
        (
            "invalid JSON",
            "{\"goal\": {".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing goal",
            "{}".into(),
            unprocessable,
            "invalid_request",
        ),
        (
            "goal a string",
            json!({"goal": "stack the blocks"}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "missing description",
            json!({"goal": {}}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "description a number",
            json!({"goal": {"description": 7}}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "blank description",
            json!({"goal": {"description": "  "}}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "description over 4096 characters",
            json!({"goal": {"description": "go ".repeat(1366)}}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "unknown priority",
            json!({"goal": {"description": GOAL}, "priority": "urgent"}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "target_state not an object",
            json!({"goal": {"description": GOAL, "target_state": [1, 2]}}).to_string(),
            unprocessable,
            "invalid_request",
        ),
        (
            "target_state over 256 KiB",
            json!({"goal": {"description": GOAL, "target_state": oversized_state()}}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "body over 1 MiB",
            oversized_body("goal"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];

    for (case, body, status, code) in cases {
        // Act
        let response = app.post_raw("/plan", body).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
        if case.starts_with("target_state") {
            assert_names_field(&response, "target_state");
        }
    }
}

#[tokio::test]
async fn a_goal_without_an_action_is_422_and_stores_nothing() {
    // Arrange
    let app = TestApp::with_hermes().await;

    // Act
    let (response, trace) = app
        .post_traced("/plan", &json!({"goal": {"description": "..."}}))
        .await;

    // Assert
    assert_error(
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    );
    assert!(!trace.has("sophia.hcg.write"), "{:?}", trace.described());
    let snapshot = app.get("/hcg/snapshot").await;
    assert_eq!(snapshot.body["entity_count"], 0);
}
