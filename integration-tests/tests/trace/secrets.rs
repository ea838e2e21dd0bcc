//! Secrets stay out of telemetry: the token Apollo sends Sophia and the key Hermes sends its LLM
//! provider appear in no log line (at DEBUG, as JSON), no exported log record, no span and no
//! error body, also when a call is refused or fails.

use std::time::Duration;

use foundry::testing::{OtlpReceiver, new_traceparent};
use serde_json::json;

use crate::{
    harness::{Export, Service, http},
    shape::wait_for_trace,
    trace::GOAL,
};

const TOKEN: &str = "sophia-token-7f3a9c2e";
const KEY: &str = "sk-llm-key-51b2e8d4";

#[tokio::test]
async fn tokens_and_keys_reach_no_log_line_span_or_error_body() {
    // Arrange: every service logs at DEBUG; Hermes' provider is a port where nothing listens.
    let receiver = OtlpReceiver::start().await.unwrap();
    let export = Export::to(&receiver.grpc_endpoint())
        .with("RUST_LOG", "debug")
        .with("LOG_FORMAT", "json");
    let provider = format!("http://{}/v1", foundry::testing::closed_address());
    let mut hermes = Service::hermes(
        &export
            .clone()
            .with("HERMES_LLM_PROVIDER", "openai")
            .with("HERMES_LLM_API_KEY", KEY)
            .with("HERMES_LLM_BASE_URL", &provider),
    )
    .await;
    let mut sophia =
        Service::sophia(&export.clone().with("SOPHIA_API_TOKEN", TOKEN), &hermes.url).await;
    let mut apollo = Service::apollo_serve(
        &export.clone().with("SOPHIA_API_KEY", TOKEN),
        &sophia.url,
        &hermes.url,
    )
    .await;
    let (trace_id, traceparent) = new_traceparent(true);

    // Act: a plan through Apollo (the token travels), a wrong token straight to Sophia, and a
    // chat whose provider call fails (the key travels).
    let plan = http()
        .post(format!("{}/api/plan", apollo.url))
        .header("traceparent", &traceparent)
        .json(&json!({"goal": GOAL}))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status(), 201, "{:?}", plan.text().await);
    let denied = http()
        .post(format!("{}/plan", sophia.url))
        .bearer_auth(format!("{TOKEN}-wrong"))
        .json(&json!({"goal": GOAL}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let denied_body = denied.text().await.unwrap();
    let chat = http()
        .post(format!("{}/api/chat", apollo.url))
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(chat.status().is_server_error(), "{}", chat.status());
    let chat_body = chat.text().await.unwrap();
    let plan_trace = wait_for_trace(
        &receiver,
        &trace_id,
        &["apollo", "sophia", "hermes"],
        Some(&traceparent[36..52]),
    )
    .await;
    plan_trace.assert_well_formed("apollo", "POST /api/plan", Some(&traceparent[36..52]));
    // Stopped, each flushes what it still holds: spans, log records, its last lines.
    for service in [&mut apollo, &mut sophia, &mut hermes] {
        let (status, _) = service.terminate(Duration::from_secs(5)).await;
        assert!(
            status.is_some_and(|status| status.success()),
            "{} stops",
            service.name
        );
    }

    // Assert
    for (what, text) in [("401 body", &denied_body), ("chat error body", &chat_body)] {
        assert!(
            !text.contains(TOKEN) && !text.contains(KEY),
            "{what}: {text}"
        );
    }
    for service in [&hermes, &sophia, &apollo] {
        let log = service.log();
        assert!(
            log.contains("\"level\":\"DEBUG\""),
            "{} logs at DEBUG",
            service.name
        );
        for secret in [TOKEN, KEY] {
            assert!(
                !log.contains(secret),
                "{} logged a secret:\n{log}",
                service.name
            );
        }
    }
    let records = receiver.log_records();
    assert!(!records.is_empty(), "log records were exported");
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|span| span.name.contains("llm")),
        "the failed chat was traced"
    );
    for secret in [TOKEN, KEY] {
        assert!(
            records.iter().all(|record| !record.contains(secret)),
            "an exported log record holds a secret"
        );
        for span in &spans {
            assert!(!format!("{span:?}").contains(secret), "{span:#?}");
        }
    }
}
