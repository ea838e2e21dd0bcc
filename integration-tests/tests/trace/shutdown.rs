//! Shutdown: SIGTERM makes Sophia and Hermes export the spans they still hold (the batch delay
//! is a minute, so only the shutdown flush can deliver them) and exit within 5 s; with the
//! receiver down, or hanging, they still exit within 5 s, and a hanging one's loss is said.

use std::time::Duration;

use foundry::testing::{OtlpReceiver, new_traceparent};
use serde_json::json;

use crate::{
    harness::{Export, Service, http},
    shape::{span_total, wait_for_trace},
    trace::{GOAL, plan_rows},
};

/// docs/architecture.md section 5 and foundry: a service exits within 5 s of SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(5);
/// How long the test waits before calling a service stuck (longer than the bound, to measure).
const EXIT_WAIT: Duration = Duration::from_secs(15);
/// Long enough that no periodic export happens during a test.
const NO_PERIODIC_EXPORT_MS: &str = "60000";

/// Starts Hermes and Sophia exporting to `endpoint` with a long batch delay, plans one goal with
/// a sampled traceparent, and returns them with the trace id, the parent id and the step count.
async fn plan_once(endpoint: &str) -> (Service, Service, String, String, usize) {
    let export = Export::to(endpoint).with("OTEL_BSP_SCHEDULE_DELAY", NO_PERIODIC_EXPORT_MS);
    let hermes = Service::hermes(&export).await;
    let sophia = Service::sophia(&export, &hermes.url).await;
    let (trace_id, traceparent) = new_traceparent(true);
    let response = http()
        .post(format!("{}/plan", sophia.url))
        .header("traceparent", &traceparent)
        .json(&json!({"goal": {"description": GOAL}}))
        .send()
        .await
        .expect("sophia answers");
    assert_eq!(response.status().as_u16(), 201);
    let plan: serde_json::Value = response.json().await.unwrap();
    let steps = plan["plan"].as_array().expect("steps").len();
    (
        hermes,
        sophia,
        trace_id,
        traceparent[36..52].to_owned(),
        steps,
    )
}

/// SIGTERM to both at once; asserts each exits successfully within [`EXIT_BOUND`].
async fn terminate_both(hermes: &mut Service, sophia: &mut Service) {
    let (sophia_exit, hermes_exit) =
        tokio::join!(sophia.terminate(EXIT_WAIT), hermes.terminate(EXIT_WAIT));
    for (name, (status, took), service) in [
        ("sophia", sophia_exit, &*sophia),
        ("hermes", hermes_exit, &*hermes),
    ] {
        let log = service.log();
        let status = status.unwrap_or_else(|| panic!("{name} exited after SIGTERM:\n{log}"));
        assert!(status.success(), "{name} exited cleanly: {status}\n{log}");
        assert!(
            took < EXIT_BOUND,
            "{name} exited within 5 s: {took:?}\n{log}"
        );
    }
}

#[tokio::test]
async fn sigterm_exports_every_remaining_span_and_exits_within_5_s() {
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();
    let (mut hermes, mut sophia, trace_id, parent, steps) =
        plan_once(&receiver.grpc_endpoint()).await;
    assert_eq!(
        receiver.span_count(),
        0,
        "nothing is exported before shutdown: {:#?}",
        receiver.spans()
    );

    // Act
    terminate_both(&mut hermes, &mut sophia).await;

    // Assert: every span of the request, from both processes, none lost.
    let trace = wait_for_trace(&receiver, &trace_id, &["sophia", "hermes"], Some(&parent)).await;
    trace.assert_well_formed("sophia", "POST /plan", Some(&parent));
    trace.assert_spans(&plan_rows(steps, None));
}

#[tokio::test]
async fn with_the_receiver_down_sigterm_still_exits_within_5_s() {
    // Arrange: nothing listens where they export.
    let (mut hermes, mut sophia, ..) =
        plan_once(&format!("http://{}", foundry::testing::closed_address())).await;

    // Act and Assert
    terminate_both(&mut hermes, &mut sophia).await;
}

#[tokio::test]
async fn with_a_receiver_that_never_answers_sigterm_still_exits_within_5_s() {
    // Arrange
    // Accepts connections and never answers: the worst receiver an exporter can meet.
    let black_hole = foundry::testing::silent_address();
    let endpoint = format!("http://{black_hole}");
    let (mut hermes, mut sophia, _, _, steps) = plan_once(&endpoint).await;

    // Act
    terminate_both(&mut hermes, &mut sophia).await;

    // Assert: each says, as an error, how many of the request's spans it did not export, and
    // where they were going; together, all of them, each counted once.
    let mut lost_in_all = 0;
    for service in [&sophia, &hermes] {
        let log = service.log();
        let line = log
            .lines()
            .find(|line| line.contains("did not finish within"))
            .unwrap_or_else(|| panic!("the loss is said:\n{log}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains(&format!("OTLP span export to {endpoint} ")),
            "{line}"
        );
        for line in log.lines() {
            if let Some(rest) = line.split("spans_lost=").nth(1) {
                let count = rest.split(|c: char| !c.is_ascii_digit()).next();
                lost_in_all += count
                    .and_then(|count| count.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("a count: {line}"));
            }
        }
    }
    assert_eq!(lost_in_all, span_total(&plan_rows(steps, None)) as u64);
}

#[tokio::test]
async fn a_request_still_running_when_the_drain_ends_is_counted_in_the_log() {
    // Arrange: Sophia's Hermes accepts connections and never answers, so a plan waits on it.
    let hermes_url = format!("http://{}", foundry::testing::silent_address());
    let mut sophia = Service::sophia(&Export::none(), &hermes_url).await;
    let plan = tokio::spawn(
        http()
            .post(format!("{}/plan", sophia.url))
            .json(&json!({"goal": {"description": GOAL}}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    let (status, took) = sophia.terminate(EXIT_WAIT).await;

    // Assert: it stopped within the bound and said how many requests it cut off.
    let log = sophia.log();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(took < EXIT_BOUND, "{took:?}\n{log}");
    assert!(
        log.contains(
            "1 connection still has a request in flight 1500 ms after the shutdown signal"
        ),
        "{log}"
    );
    assert!(plan.await.unwrap().is_err(), "the request was cut off");
}
