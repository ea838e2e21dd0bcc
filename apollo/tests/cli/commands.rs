//! Every CLI command against real services: output, `--json`, trace ids and exit codes.

use serde_json::Value;

use crate::support::{apollo, apollo_command, closed_url, is_trace_id, run, services, text};

fn json(output: &std::process::Output) -> Value {
    let (stdout, stderr) = text(output);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object: {stdout}\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_steps_and_ends_with_the_trace_id() {
    // Arrange
    let (sophia, hermes) = services().await;

    // Act
    let output = apollo(
        &sophia,
        &hermes,
        &["plan", "Pick up the red block, then place it on the table"],
    )
    .await;

    // Assert
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("plan "), "{stdout}");
    assert_eq!(lines[1], "  1. pick -> red block");
    assert_eq!(lines[2], "  2. place -> it on the table");
    let trace_id = lines.last().unwrap().strip_prefix("trace_id: ").unwrap();
    assert!(is_trace_id(trace_id), "{trace_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_with_trace_id_and_result() {
    let (sophia, hermes) = services().await;

    let plan = json(&apollo(&sophia, &hermes, &["--json", "plan", "Open the door"]).await);
    let plan_id = plan["result"]["plan_id"].as_str().unwrap().to_owned();
    let simulation = json(
        &apollo(
            &sophia,
            &hermes,
            &["--json", "simulate", &plan_id, "--steps", "3"],
        )
        .await,
    );
    let embed = json(&apollo(&sophia, &hermes, &["--json", "embed", "a red block"]).await);
    let search = json(
        &apollo(
            &sophia,
            &hermes,
            &["--json", "search", "red", "block", "--top-k", "1"],
        )
        .await,
    );
    let chat = json(&apollo(&sophia, &hermes, &["--json", "chat", "hello", "there"]).await);
    let state = json(&apollo(&sophia, &hermes, &["--json", "state"]).await);
    let status = json(&apollo(&sophia, &hermes, &["--json", "status"]).await);

    for answer in [&plan, &simulation, &embed, &search, &chat, &state, &status] {
        assert!(
            is_trace_id(answer["trace_id"].as_str().unwrap()),
            "{answer}"
        );
        assert!(answer.get("error").is_none(), "{answer}");
    }
    assert_eq!(plan["result"]["plan"][0]["action_type"], "open");
    assert_eq!(simulation["result"]["k_steps"], 3);
    assert_eq!(
        simulation["result"]["imagined_states"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(embed["result"]["dimension"], 384);
    assert_eq!(search["result"]["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        chat["result"]["choices"][0]["message"]["content"],
        "hello there"
    );
    assert!(state["result"]["state_id"].is_string());
    assert_eq!(status["result"]["sophia"]["status"], "ok");
    assert_eq!(status["result"]["hermes"]["status"], "ok");
    for service in ["sophia", "hermes"] {
        let answer = &status["result"][service];
        assert!(answer["latency_ms"].as_f64().unwrap() > 0.0, "{answer}");
        assert_eq!(answer["version"], env!("CARGO_PKG_VERSION"), "{answer}");
    }
    let ids: std::collections::HashSet<&str> = [&plan, &simulation, &embed, &chat]
        .iter()
        .map(|answer| answer["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "every command is its own trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_one_line_on_stderr_and_exit_code_1() {
    let closed = closed_url();

    let output = apollo(&closed, &closed, &["plan", "Open the door"]).await;

    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("apollo: sophia is unreachable at "),
        "{stderr}"
    );
    assert!(stdout.starts_with("trace_id: "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_refuses_what_is_not_a_trace_id_before_asking_apollo_serve() {
    let closed = closed_url();

    for id in ["../metrics", "", "abc", &"0".repeat(32), &"g".repeat(32)] {
        let output = apollo_command(&closed, &closed, &["trace", id])
            .env("APOLLO_URL", &closed)
            .output()
            .await
            .unwrap();

        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{id:?}: {stdout}");
        assert!(
            stderr.starts_with("apollo: a trace id is 32 hex digits"),
            "{id:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_service_urls_without_their_credentials() {
    let closed = closed_url().replace("http://", "http://admin:s3cret@");

    for flags in [&["status"][..], &["--json", "status"][..]] {
        let output = apollo(&closed, &closed, flags).await;

        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{flags:?}");
        assert!(
            stdout.contains("http://***@127.0.0.1:"),
            "{flags:?}: {stdout}"
        );
        assert!(
            !stdout.contains("s3cret") && !stderr.contains("s3cret"),
            "{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_one_line_on_stderr_beside_the_answer() {
    let (sophia, hermes) = services().await;
    let collector = closed_url();
    // (the protocol, RUST_LOG): the line is an ERROR, so `RUST_LOG=error` shows it too.
    for (protocol, filter) in [
        ("grpc", None),
        ("http/protobuf", None),
        ("grpc", Some("error")),
    ] {
        // Arrange
        let mut command = apollo_command(&sophia, &hermes, &["state"]);
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
        if let Some(filter) = filter {
            command.env("RUST_LOG", filter);
        }

        // Act
        let output = run(command).await;

        // Assert: the answer as usual, and one line for the spans, metrics and logs not exported.
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{protocol}: {stderr}");
        assert!(stdout.contains("trace_id: "), "{protocol}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{protocol}: {stderr}");
        assert!(
            stderr.contains("ERROR foundry::telemetry::shutdown: telemetry was not exported ("),
            "{protocol}: {stderr}"
        );
        let (_, first) = stderr.split_once("the first: ").expect("the first error");
        assert!(
            first.to_ascii_lowercase().contains("export"),
            "{protocol}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_too_the_command_still_ends_on_its_one_error_line() {
    let closed = closed_url();
    let mut command = apollo_command(&closed, &closed, &["plan", "Open the door"]);
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", closed_url());

    let output = run(command).await;

    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("telemetry was not exported"), "{stderr}");
    assert!(
        lines[1].starts_with("apollo: sophia is unreachable at "),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_reported_with_its_code_in_json() {
    let (sophia, hermes) = services().await;

    let output = apollo(&sophia, &hermes, &["--json", "simulate", "no-such-plan"]).await;

    assert_eq!(output.status.code(), Some(1));
    let answer = json(&output);
    assert_eq!(answer["error"]["code"], "plan_not_found");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-plan")
    );
    assert!(is_trace_id(answer["trace_id"].as_str().unwrap()));
    assert!(answer.get("result").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_hermes_down_fails_naming_hermes() {
    let (sophia, _) = services().await;

    let output = apollo(&sophia, &closed_url(), &["status"]).await;

    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("hermes is unreachable"), "{stderr}");
    assert!(!stderr.contains("sophia is unreachable"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("sophia  ok "),
        "the healthy one is shown: {stdout}"
    );
    assert!(lines[1].starts_with("hermes  down "), "{stdout}");
    assert!(lines[2].starts_with("trace_id: "), "{stdout}");

    let json = apollo(&sophia, &closed_url(), &["--json", "status"]).await;
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["error"]["code"], "unhealthy", "{answer}");
    assert_eq!(
        answer["error"]["services"]["sophia"]["status"], "ok",
        "{answer}"
    );
    assert_eq!(
        answer["error"]["services"]["hermes"]["status"], "down",
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_cannot_be_written_is_exit_code_1() {
    let (sophia, hermes) = services().await;
    let mut command = apollo_command(&sophia, &hermes, &["state"]);
    command
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .stderr(std::process::Stdio::piped());

    // Spawned, not run through `output()`, which would capture stdout in a pipe.
    let output = command.spawn().unwrap().wait_with_output().await.unwrap();

    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("apollo: cannot write the output"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_telemetry_disabled_there_is_no_trace_id_to_show() {
    let (sophia, hermes) = services().await;
    let mut human = apollo_command(&sophia, &hermes, &["state"]);
    human.env("OTEL_SDK_DISABLED", "true");
    let mut json = apollo_command(&sophia, &hermes, &["--json", "state"]);
    json.env("OTEL_SDK_DISABLED", "true");

    let (human, json) = (run(human).await, run(json).await);

    assert_eq!(human.status.code(), Some(0));
    let (stdout, _) = text(&human);
    assert_eq!(
        stdout.lines().last(),
        Some("trace_id: none (telemetry is disabled)")
    );
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(answer["trace_id"].is_null(), "{answer}");
    assert!(answer["result"]["state"].is_object(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_with_2() {
    let closed = closed_url();
    for args in [
        &["simulate", "p", "--steps", "0"][..],
        &["search", "x", "--top-k", "101"],
        &["plan"],
        &["fly"],
    ] {
        let output = apollo(&closed, &closed, args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let output = apollo("localhost:47000", &closed, &["state"]).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "a URL without a scheme is refused at once"
    );
}
