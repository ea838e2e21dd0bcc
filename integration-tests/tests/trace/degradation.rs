//! Telemetry never holds up the system: with nothing listening where the services export, the
//! chain still answers and `apollo` exits 0 promptly; when a receiver appears on that port, the
//! running services start exporting to it without a restart.

use std::time::Duration;

use foundry::testing::OtlpReceiver;

use crate::{
    harness::{Export, Service, apollo},
    shape::wait_for_trace,
    trace::{Entry, GOAL, apollo_rows, assert_action, plan_rows},
};

/// A hang guard for a command whose telemetry cannot be delivered: foundry bounds its flush at
/// 3 s, and a refused connection should not even take that long.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn with_the_receiver_down_the_chain_works_and_export_starts_when_it_appears() {
    // Arrange: the services export to a port held for the receiver, which refuses connections
    // until the receiver starts there.
    let reserved = foundry::testing::ReservedAddress::new();
    let export = Export::to(&format!("http://{}", reserved.address()));
    let hermes = Service::hermes(&export).await;
    let sophia = Service::sophia(&export, &hermes.url).await;

    // Act
    let unexported = apollo(&export, &sophia.url, &hermes.url, &["plan", GOAL]).await;

    // Assert: the answer is there, and quickly.
    assert_eq!(unexported.code, Some(0), "{unexported:#?}");
    assert_eq!(unexported.result()["goal"]["description"], GOAL);
    assert!(
        unexported.elapsed < PROMPTLY,
        "apollo exited promptly: {:?}",
        unexported.elapsed
    );

    // Act: a receiver appears where they export; the same services, not restarted.
    let receiver = OtlpReceiver::start_on(reserved)
        .await
        .expect("a receiver on the held port");
    let exported = apollo(&export, &sophia.url, &hermes.url, &["plan", GOAL]).await;

    // Assert: the whole trace arrives, from all three processes.
    let trace = wait_for_trace(
        &receiver,
        &exported.trace_id(),
        &["apollo", "sophia", "hermes"],
        None,
    )
    .await;
    let steps = exported.result()["plan"].as_array().expect("steps").len();
    assert_action(
        &trace,
        Entry::Cli,
        "plan",
        &[
            apollo_rows(Entry::Cli, "apollo.api.sophia", "POST /plan"),
            plan_rows(steps, Some(("apollo", "POST /plan"))),
        ]
        .concat(),
        None,
    );
}
