//! Sophia and Hermes on loopback for the tests, and a runner for the apollo binary.

use std::{process::Output, time::Duration};

use tokio::process::Command;

/// Serves `router` on a free loopback port and returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// Hermes and a Sophia that uses it, both real, both in this process.
pub async fn services() -> (String, String) {
    let hermes = serve(hermes::app::router(hermes::app::AppState::local())).await;
    let state = sophia::app::AppState::new(&hermes, Duration::from_secs(5)).unwrap();
    let sophia = serve(sophia::app::router(state)).await;
    (sophia, hermes)
}

/// A URL where nothing listens.
pub fn closed_url() -> String {
    format!("http://{}", foundry::testing::closed_address())
}

/// Runs `apollo --sophia-url S --hermes-url H <args>` with no telemetry configured.
pub async fn apollo(sophia: &str, hermes: &str, args: &[&str]) -> Output {
    run(apollo_command(sophia, hermes, args)).await
}

/// The command [`apollo`] runs, for a test to add to.
pub fn apollo_command(sophia: &str, hermes: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apollo"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("SOPHIA_") || key.starts_with("HERMES_") {
            command.env_remove(key);
        }
    }
    command
        .args(["--sophia-url", sophia, "--hermes-url", hermes])
        .args(args)
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end, within a hang guard.
pub async fn run(mut command: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("apollo finishes")
        .unwrap()
}

/// stdout and stderr as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// True for 32 lowercase hex digits that are not all zero.
pub fn is_trace_id(text: &str) -> bool {
    text.len() == 32
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && text.bytes().any(|b| b != b'0')
}
