//! Failures are visible: with Hermes stopped, `apollo plan` fails with a clear one-line message,
//! and the trace shows where: Sophia's failed call to Hermes with status ERROR, Sophia's answer
//! a 502, and Apollo's command marked failed.

use foundry::testing::{Kind, Status};

use crate::{harness::Stack, shape::wait_for_trace, trace::GOAL};

#[tokio::test]
async fn with_hermes_stopped_plan_fails_clearly_and_the_trace_shows_where() {
    // Arrange
    let mut stack = Stack::start().await;
    let hermes_url = stack.hermes.url.clone();
    stack.hermes.kill().await;

    // Act
    let run = stack.apollo(&["plan", GOAL]).await;

    // Assert: exit 1, one line on stderr naming the service that is down.
    assert_eq!(run.code, Some(1), "{run:#?}");
    let error = &run.json["error"];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("hermes is unreachable") && message.contains(&hermes_url),
        "the message says Hermes is down: {run:#?}"
    );
    // The code names the service at fault, behind Sophia.
    assert_eq!(error["code"], "hermes_unavailable", "{run:#?}");
    let stderr: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(stderr.len(), 1, "one line on stderr: {:?}", run.stderr);
    assert!(
        stderr[0].starts_with("apollo: ") && stderr[0].contains("hermes is unreachable"),
        "{stderr:?}"
    );

    // The trace: Apollo and Sophia, and the failed call in Sophia.
    let trace = wait_for_trace(
        &stack.receiver,
        &run.trace_id(),
        &["apollo", "sophia"],
        None,
    )
    .await;
    let tree = trace.tree();
    trace.assert_well_formed("apollo", "apollo.command", None);
    assert!(
        trace.spans.iter().all(|s| s.service_name != "hermes"),
        "Hermes is gone:\n{tree}"
    );
    let command = trace.one("apollo", "apollo.command");
    assert_eq!(command.bool("command.success"), Some(false), "{tree}");
    assert_eq!(command.status, Status::Error, "{tree}");
    let apollo_call = trace.one("apollo", "POST /plan");
    assert_eq!(
        apollo_call.int("http.response.status_code"),
        Some(502),
        "{tree}"
    );
    assert_eq!(apollo_call.status, Status::Error, "{tree}");
    let server = trace.one("sophia", "POST /plan");
    assert_eq!(server.kind, Kind::Server, "{tree}");
    assert_eq!(server.int("http.response.status_code"), Some(502), "{tree}");
    assert_eq!(server.status, Status::Error, "{tree}");
    let failed = trace.one("sophia", "POST /simple_nlp");
    assert_eq!(failed.kind, Kind::Client, "{tree}");
    assert_eq!(failed.status, Status::Error, "{tree}");
    assert_eq!(failed.str("error.type"), Some("connect"), "{tree}");
    assert!(
        !failed.attributes.contains_key("http.response.status_code"),
        "no answer, no status code:\n{tree}"
    );
    assert!(
        trace.all("sophia", "POST /embed_text").is_empty(),
        "planning stopped at the first failure:\n{tree}"
    );
}
