//! Failures are visible: with Hermes stopped, `apollo plan` fails with a clear one-line message,
//! and the trace shows where: Sophia's failed call to Hermes with status ERROR, Sophia's answer
//! a 502, and Apollo's command marked failed.

use foundry::testing::{Kind, Status};

use crate::{
    harness::{Stack, http},
    shape::wait_for_trace,
    trace::GOAL,
};

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

/// Requests sent to Sophia while Hermes is down, and how many are in flight at once.
const FLOOD_REQUESTS: usize = 1500;
const FLOOD_CONCURRENCY: usize = 32;

#[tokio::test]
async fn with_hermes_down_under_load_sophia_logs_each_kind_of_error_once_an_interval() {
    // Arrange: Hermes gone, and one request whose trace is followed.
    let mut stack = Stack::start().await;
    stack.hermes.kill().await;
    let (trace_id, traceparent) = foundry::testing::new_traceparent(true);
    let client = http();
    let url = format!("{}/plan", stack.sophia.url);
    let body = serde_json::json!({"goal": {"description": GOAL}});

    // Act: a burst of failing requests, in bounded batches.
    let started = std::time::Instant::now();
    let traced = client
        .post(&url)
        .header("traceparent", &traceparent)
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut statuses = vec![traced.status().as_u16()];
    for _ in 0..FLOOD_REQUESTS / FLOOD_CONCURRENCY {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..FLOOD_CONCURRENCY {
            batch.spawn(client.post(&url).json(&body).send());
        }
        while let Some(answer) = batch.join_next().await {
            statuses.push(answer.unwrap().unwrap().status().as_u16());
        }
    }
    let elapsed = started.elapsed();

    // Assert: every request failed with 502, each is measured, ...
    assert!(statuses.iter().all(|status| *status == 502), "{statuses:?}");
    let metrics = client
        .get(format!("{}/metrics", stack.sophia.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let measured: usize = metrics
        .lines()
        .filter(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && line.contains("http_response_status_code=\"502\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(measured, statuses.len(), "{metrics}");
    // ... the error stays on the request's span, ...
    let trace = wait_for_trace(&stack.receiver, &trace_id, &["sophia"], None).await;
    let server = trace.one("sophia", "POST /plan");
    assert_eq!(server.status, Status::Error);
    assert!(
        server.status_message.starts_with("hermes_unavailable: "),
        "{server:?}"
    );
    // ... and the log says it once, then at most a summary and a new first line an interval
    // (10 s) for its one kind: route, status and code.
    let log = stack.sophia.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    let intervals = elapsed.as_secs() as usize / 10 + 1;
    assert!(
        !errors.is_empty() && errors.len() <= 1 + 2 * intervals,
        "{} error lines for {} failed requests in {elapsed:?}:\n{}",
        errors.len(),
        statuses.len(),
        errors.join("\n")
    );
    assert!(
        errors[0].contains("code=hermes_unavailable")
            && errors[0].contains(&trace_id)
            && !errors[0].contains("repeated="),
        "the first line names the code and carries its trace id, with no count: {}",
        errors[0]
    );
}
