//! Export end to end: each test runs a small instrumented service in a child process (this test
//! binary, re-run with `FOUNDRY_TEST_CHILD=1`), configured only through the environment, and
//! asserts what reaches a real OTLP receiver over gRPC or HTTP.

use std::{
    collections::HashMap,
    process::Output,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::process::Command;

use axum::{
    Router,
    extract::Path,
    http::{StatusCode, Uri},
    routing::get,
};
use foundry::testing::{
    AttributeValue, Kind, OtlpReceiver, ReservedAddress, closed_address, new_traceparent,
    silent_address,
};

const CHILD: &str = "FOUNDRY_TEST_CHILD";

pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs test `name` of this binary again as a child service with `env`, and returns its output.
/// The receiver runs on the test's runtime, so the wait is asynchronous.
pub(crate) async fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key == "RUST_LOG" || key == "LOG_FORMAT" {
            command.env_remove(key);
        }
    }
    command
        .env(CHILD, "1")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    command.envs(env.iter().copied());
    let output = command.output().await.unwrap();
    assert!(
        output.status.success(),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs test `name` as a child service with `env` until `trace_id` has reached `receiver` (or
/// `bound` has passed), then tells it to stop (`CHILD_STOP_FILE`); returns its output.
pub(crate) async fn run_child_until_trace(
    name: &str,
    env: &[(&str, &str)],
    receiver: &OtlpReceiver,
    trace_id: &str,
    bound: Duration,
) -> Output {
    let stop = std::env::temp_dir().join(format!("foundry-stop-{trace_id}"));
    let stop_file = stop.to_string_lossy().into_owned();
    let mut env = env.to_vec();
    env.push(("CHILD_STOP_FILE", &stop_file));
    let (output, ()) = tokio::join!(run_child(name, &env), async {
        let _ = receiver
            .wait_for_trace(trace_id, bound, |s| !s.is_empty())
            .await;
        std::fs::write(&stop, b"").unwrap();
    });
    let _ = std::fs::remove_file(&stop);
    output
}

/// A `key=value` the child printed on a `CHILD` line.
pub(crate) fn child_value(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| line.split_once("CHILD ").map(|(_, rest)| rest))
        .flat_map(str::split_whitespace)
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("child printed no {key}:\n{stdout}"))
}

/// Waits until `path` exists, 20 s at most: the files by which a test and its child say when.
pub(crate) async fn wait_for_file(path: impl AsRef<std::path::Path>) {
    let started = Instant::now();
    while !path.as_ref().exists() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The two files by which a test and its child say when: the child has produced what the test
/// waits for (`CHILD_PRODUCED_FILE`), and the child may stop (`CHILD_STOP_FILE`). Removed on drop.
struct Handshake {
    produced: std::path::PathBuf,
    stop: std::path::PathBuf,
    produced_file: String,
    stop_file: String,
}

impl Handshake {
    fn new(name: &str) -> Self {
        let files = std::env::temp_dir().join(format!("foundry-{name}-{}", std::process::id()));
        let (produced, stop) = (
            files.with_extension("produced"),
            files.with_extension("stop"),
        );
        Self {
            produced_file: produced.to_string_lossy().into_owned(),
            stop_file: stop.to_string_lossy().into_owned(),
            produced,
            stop,
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let _ = (
            std::fs::remove_file(&self.produced),
            std::fs::remove_file(&self.stop),
        );
    }
}

/// Telemetry for a child, configured from its environment as a service's is; with
/// `CHILD_NO_RETRIES` set, exports are not retried, as in apollo's one-shot commands.
pub(crate) fn init_child_telemetry() -> foundry::telemetry::Telemetry {
    let mut config =
        foundry::config::TelemetryConfig::from_env("foundry-child", "9.9.9").expect("valid env");
    if std::env::var_os("CHILD_NO_RETRIES").is_some() {
        config.disable_retries();
    }
    foundry::telemetry::init(config).expect("telemetry starts")
}

/// The child: a service wired exactly as the LOGOS services are, one request, then shutdown
/// (once the file `CHILD_STOP_FILE` exists, when set).
pub(crate) async fn child_service() {
    let telemetry = init_child_telemetry();
    let routes = Router::new().route(
        "/items/{id}",
        get(|Path(id): Path<String>| async move {
            tracing::info!(item = %id, "serving an item");
            format!("item {id}")
        }),
    );
    let app = foundry::http::instrument(routes, "foundry-child", "9.9.9");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let traceparent = std::env::var("CHILD_TRACEPARENT").unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{address}/items/42"))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    println!(
        "CHILD status={} request_ms={}",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );

    // Running on until the test says so, when asked: exports then happen on schedule, not only
    // in the flush at shutdown.
    if let Some(stop) = std::env::var_os("CHILD_STOP_FILE") {
        wait_for_file(stop).await;
    }
    let started = Instant::now();
    let finished = telemetry.shutdown();
    println!(
        "CHILD shutdown_ms={} finished={finished}",
        started.elapsed().as_millis()
    );
}

async fn assert_export_arrives(name: &str, protocol: &str) {
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    let output = run_child(
        name,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("CHILD_TRACEPARENT", &traceparent),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-logos-tenant=acme"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=staging,team=planner%20core",
            ),
        ],
    )
    .await;

    // Assert: the child flushed on shutdown, so everything is there when it exits.
    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!(child_value(&output, "finished"), "true");
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.service_name, "foundry-child");
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.kind, Kind::Server);
    assert_eq!(span.parent_span_id, &traceparent[36..52]);
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(span.str("http.route"), Some("/items/{id}"));
    let resource = receiver
        .resource("foundry-child")
        .expect("the spans' resource");
    let text = |key: &str| match resource.get(key) {
        Some(AttributeValue::String(value)) => value.clone(),
        other => panic!("{key} is not a string: {other:?} in {resource:?}"),
    };
    assert_eq!(text("service.version"), "9.9.9");
    assert_eq!(text("deployment.environment"), "staging");
    assert_eq!(
        text("team"),
        "planner core",
        "OTEL_RESOURCE_ATTRIBUTES decoded"
    );
    assert_eq!(text("telemetry.sdk.language"), "rust");
    assert_eq!(text("service.instance.id").len(), 36, "a UUID");
    if protocol == "grpc" {
        assert_eq!(
            receiver.trace_export_header("x-logos-tenant").as_deref(),
            Some("acme"),
            "OTEL_EXPORTER_OTLP_HEADERS go with every span export"
        );
    }
    let metrics = receiver.metric_names();
    assert!(
        metrics.contains("http.server.request.duration"),
        "{metrics:?}"
    );
    assert!(
        receiver
            .log_record_ids()
            .contains(&(trace_id.clone(), span.span_id.clone())),
        "the handler's log line is exported with the ids of its request's span: {:?}",
        receiver.log_record_ids()
    );
}

#[tokio::test]
async fn metrics_go_out_on_schedule_with_the_counts_of_metrics_endpoint() {
    if is_child() {
        let telemetry = init_child_telemetry();
        let routes = Router::new().route("/items/{id}", get(|| async { "item" }));
        let app = foundry::http::instrument(routes, "foundry-child", "9.9.9");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for _ in 0..3 {
            client
                .get(format!("http://{address}/items/1"))
                .send()
                .await
                .unwrap();
        }
        // Seven export intervals while running, of which the test asks for three: room for a
        // loaded machine.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let prometheus = foundry::testing::render_prometheus();
        let count = prometheus
            .lines()
            .find(|line| line.starts_with("http_server_request_duration_seconds_count"))
            .and_then(|line| line.rsplit(' ').next())
            .unwrap_or("none")
            .to_owned();
        println!("CHILD prometheus_count={count}");
        let _ = telemetry.shutdown();
        return;
    }
    let receiver = OtlpReceiver::start().await.unwrap();

    let output = run_child(
        "export::metrics_go_out_on_schedule_with_the_counts_of_metrics_endpoint",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await;

    // One aggregation behind both: OTLP carries what /metrics shows.
    assert_eq!(child_value(&output, "prometheus_count"), "3");
    assert_eq!(
        receiver.histogram_count("http.server.request.duration"),
        Some(3)
    );
    assert!(
        receiver.metric_export_count() >= 3,
        "exports on schedule, not only at shutdown: {}",
        receiver.metric_export_count()
    );
}

#[tokio::test]
async fn spans_metrics_and_logs_arrive_over_grpc() {
    if is_child() {
        return child_service().await;
    }
    assert_export_arrives("export::spans_metrics_and_logs_arrive_over_grpc", "grpc").await;
}

#[tokio::test]
async fn spans_metrics_and_logs_arrive_over_http_protobuf() {
    if is_child() {
        return child_service().await;
    }
    assert_export_arrives(
        "export::spans_metrics_and_logs_arrive_over_http_protobuf",
        "http/protobuf",
    )
    .await;
}

#[tokio::test]
async fn console_exporter_prints_spans() {
    if is_child() {
        return child_service().await;
    }
    let (_, traceparent) = new_traceparent(true);

    let output = run_child(
        "export::console_exporter_prints_spans",
        &[
            ("OTEL_EXPORT_CONSOLE", "true"),
            ("CHILD_TRACEPARENT", &traceparent),
        ],
    )
    .await;

    // On stderr, one line per span: stdout belongs to the service's `listening on` line.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("\"GET /items/{id}\""))
        .unwrap_or_else(|| panic!("the server span is printed:\n{stderr}"));
    assert!(line.starts_with("span foundry-child "), "{line}");
    assert!(
        line.contains(&format!("trace_id={}", &traceparent[3..35])),
        "{line}"
    );
    assert!(line.contains("http.response.status_code=200"), "{line}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("items/{id}"),
        "nothing on stdout: {stdout}"
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_requests_work() {
    if is_child() {
        return child_service().await;
    }
    let (_, traceparent) = new_traceparent(true);

    let output = run_child(
        "export::without_an_endpoint_nothing_is_exported_and_requests_work",
        &[("CHILD_TRACEPARENT", &traceparent)],
    )
    .await;

    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!(child_value(&output, "finished"), "true");
    let shutdown_ms: u64 = child_value(&output, "shutdown_ms").parse().unwrap();
    assert!(
        shutdown_ms <= 3_500,
        "shutdown is bounded: {shutdown_ms} ms"
    );
}

#[tokio::test]
async fn unreachable_collector_never_blocks_a_request_and_shutdown_is_bounded() {
    if is_child() {
        return child_service().await;
    }
    let closed = closed_address();
    let (_, traceparent) = new_traceparent(true);

    let output = run_child(
        "export::unreachable_collector_never_blocks_a_request_and_shutdown_is_bounded",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}")),
            ("CHILD_TRACEPARENT", &traceparent),
        ],
    )
    .await;

    assert_eq!(child_value(&output, "status"), "200");
    let shutdown_ms: u64 = child_value(&output, "shutdown_ms").parse().unwrap();
    assert!(shutdown_ms <= 3_500, "shutdown took {shutdown_ms} ms");
}

#[tokio::test]
async fn an_https_endpoint_starts_for_both_protocols() {
    if is_child() {
        return child_service().await;
    }
    let closed = closed_address();
    let (_, traceparent) = new_traceparent(true);

    for protocol in ["grpc", "http/protobuf"] {
        // Act: `run_child` fails the test if telemetry does not start.
        let output = run_child(
            "export::an_https_endpoint_starts_for_both_protocols",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("https://{closed}")),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("CHILD_TRACEPARENT", &traceparent),
            ],
        )
        .await;

        // Assert
        assert_eq!(child_value(&output, "status"), "200", "{protocol}");
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_holds_shutdown_only_for_the_bound() {
    if is_child() {
        return child_service().await;
    }
    // Accepts connections and never says a word: the worst case for an exporter.
    let address = silent_address();
    let (_, traceparent) = new_traceparent(true);

    // The child runs on a current-thread runtime (tokio::test's default), where an exporter
    // that shares the service's runtime would deadlock its own shutdown.
    let output = run_child(
        "export::a_collector_that_never_answers_holds_shutdown_only_for_the_bound",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{address}")),
            ("CHILD_TRACEPARENT", &traceparent),
        ],
    )
    .await;

    assert_eq!(child_value(&output, "status"), "200");
    let request_ms: u64 = child_value(&output, "request_ms").parse().unwrap();
    assert!(
        request_ms < 5_000,
        "the request did not wait for the export timeout (10 s): {request_ms} ms"
    );
    let shutdown_ms: u64 = child_value(&output, "shutdown_ms").parse().unwrap();
    assert!(shutdown_ms <= 3_500, "shutdown took {shutdown_ms} ms");
}

#[tokio::test]
async fn a_span_export_refused_for_a_moment_is_sent_again_unless_retries_are_off() {
    if is_child() {
        return child_service().await;
    }
    let name = "export::a_span_export_refused_for_a_moment_is_sent_again_unless_retries_are_off";
    for retries in [true, false] {
        // Arrange: foundry's own gRPC span export, to a collector that refuses twice.
        let receiver = OtlpReceiver::start().await.unwrap();
        receiver.refuse_span_exports(2);
        let (trace_id, traceparent) = new_traceparent(true);
        let endpoint = receiver.grpc_endpoint();
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("CHILD_TRACEPARENT", traceparent.as_str()),
        ];
        if !retries {
            env.push(("CHILD_NO_RETRIES", "1"));
        }

        // Act: the child runs until the batch has arrived, or has had time to (no retries).
        let wait = Duration::from_secs(if retries { 10 } else { 1 });
        let output = run_child_until_trace(name, &env, &receiver, &trace_id, wait).await;

        // Assert: the one batch arrives on the third attempt, or is lost after the first.
        assert_eq!(child_value(&output, "status"), "200");
        if retries {
            assert_eq!(receiver.refused_span_exports(), 2);
            let spans = receiver
                .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
                .await;
            assert_eq!(spans.len(), 1, "{spans:#?}");
        } else {
            assert_eq!(receiver.refused_span_exports(), 1);
            assert_eq!(receiver.span_count(), 0, "no second attempt");
        }
    }
}

#[tokio::test]
async fn resource_exhausted_is_retried_only_when_the_collector_says_when() {
    if is_child() {
        return child_service().await;
    }
    let name = "export::resource_exhausted_is_retried_only_when_the_collector_says_when";
    for retry_after in [Some(Duration::from_millis(300)), None] {
        // Arrange: a collector that sheds the first export, with or without a RetryInfo.
        let receiver = OtlpReceiver::start().await.unwrap();
        receiver.refuse_span_exports_with(1, tonic::Code::ResourceExhausted, retry_after);
        let (trace_id, traceparent) = new_traceparent(true);
        let endpoint = receiver.grpc_endpoint();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("CHILD_TRACEPARENT", traceparent.as_str()),
        ];

        // Act
        let wait = Duration::from_secs(if retry_after.is_some() { 10 } else { 1 });
        let output = run_child_until_trace(name, &env, &receiver, &trace_id, wait).await;

        // Assert: sent again after the pause asked for; without one, lost (as the OTLP spec says).
        assert_eq!(child_value(&output, "status"), "200");
        assert_eq!(receiver.refused_span_exports(), 1, "{retry_after:?}");
        let expected = usize::from(retry_after.is_some());
        assert_eq!(receiver.span_count(), expected, "{retry_after:?}");
    }
}

#[tokio::test]
async fn a_retry_waits_as_long_as_the_collector_asks() {
    if is_child() {
        return child_service().await;
    }
    let name = "export::a_retry_waits_as_long_as_the_collector_asks";
    // Arrange: a collector that sheds the first export and asks for 20 s: more than one export
    // may take, so the batch waits in the queue for that long rather than the usual 100 ms.
    let receiver = OtlpReceiver::start().await.unwrap();
    receiver.refuse_span_exports_with(1, tonic::Code::Unavailable, Some(Duration::from_secs(20)));
    let (trace_id, traceparent) = new_traceparent(true);
    let endpoint = receiver.grpc_endpoint();
    let stop = std::env::temp_dir().join(format!("foundry-stop-{trace_id}"));
    let stop_file = stop.to_string_lossy().into_owned();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("CHILD_TRACEPARENT", traceparent.as_str()),
        ("CHILD_STOP_FILE", stop_file.as_str()),
    ];

    // Act: two seconds after the refusal, the child is stopped.
    let (output, (refused, arrived)) = tokio::join!(run_child(name, &env), async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.refused_span_exports() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = (receiver.refused_span_exports(), receiver.span_count());
        std::fs::write(&stop, b"").unwrap();
        seen
    });
    let _ = std::fs::remove_file(&stop);

    // Assert: nothing was sent again within the pause; the shutdown's last attempt sends it.
    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!((refused, arrived), (1, 0));
    assert_eq!(receiver.span_count(), 1, "sent at shutdown");
}

/// A proxy in front of `target` that reads the first `cuts` connections for a moment and then
/// closes them, as a collector that stops in the middle of a call does; later connections are
/// passed through. Returns its address and the count of connections cut.
async fn cutting_proxy(
    target: std::net::SocketAddr,
    cuts: usize,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&cut);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if counted.load(Ordering::SeqCst) < cuts {
                counted.fetch_add(1, Ordering::SeqCst);
                // The request arrives (preface, headers, the batch), then the connection ends
                // with no answer.
                let mut buffer = vec![0; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    while matches!(inbound.read(&mut buffer).await, Ok(read) if read > 0) {}
                })
                .await;
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, cut)
}

#[tokio::test]
async fn a_span_export_cut_off_mid_call_is_sent_again() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: foundry's own gRPC span export, through a proxy that cuts the first two
    // connections after the request has gone out, with no gRPC status.
    let name = "export::a_span_export_cut_off_mid_call_is_sent_again";
    let receiver = OtlpReceiver::start().await.unwrap();
    let target = receiver
        .grpc_endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (proxy, cut) = cutting_proxy(target, 2).await;
    let (trace_id, traceparent) = new_traceparent(true);
    let endpoint = format!("http://{proxy}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("CHILD_TRACEPARENT", traceparent.as_str()),
    ];

    // Act: the child runs until the batch has arrived (or a bound passes).
    let output =
        run_child_until_trace(name, &env, &receiver, &trace_id, Duration::from_secs(10)).await;

    // Assert: both cut calls were tried again, the batch arrived, and nothing was lost.
    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!(cut.load(std::sync::atomic::Ordering::SeqCst), 2);
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("spans_lost"), "{stderr}");
}

#[tokio::test]
async fn a_batch_whose_retries_are_spent_waits_in_the_queue_for_the_collector() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: a collector that refuses nine exports in a row, more than two rounds of retries
    // (four attempts each).
    let name = "export::a_batch_whose_retries_are_spent_waits_in_the_queue_for_the_collector";
    let receiver = OtlpReceiver::start().await.unwrap();
    receiver.refuse_span_exports(9);
    let (trace_id, traceparent) = new_traceparent(true);
    let endpoint = receiver.grpc_endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("CHILD_TRACEPARENT", traceparent.as_str()),
    ];

    // Act: the child runs until the batch has arrived (or a bound passes).
    let output =
        run_child_until_trace(name, &env, &receiver, &trace_id, Duration::from_secs(15)).await;

    // Assert: the batch arrived once the refusals were over, and nothing was reported lost.
    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!(receiver.refused_span_exports(), 9);
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("spans_lost"), "{stderr}");
    assert!(
        stderr.contains("SpanExport.Waiting"),
        "the wait is said: {stderr}"
    );
    assert!(
        stderr.contains(&format!("OTLP span export to {endpoint} failing since")),
        "the line names the collector: {stderr}"
    );
}

/// An OTLP/HTTP collector that answers every export 503 Service Unavailable, which the OTLP spec
/// says to retry, and counts the attempts at each path.
async fn refusing_collector() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let counted = Arc::clone(&attempts);
    let app = Router::new().fallback(move |uri: Uri| {
        let counted = Arc::clone(&counted);
        async move {
            *counted
                .lock()
                .unwrap()
                .entry(uri.path().to_owned())
                .or_default() += 1;
            StatusCode::SERVICE_UNAVAILABLE
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, attempts)
}

#[tokio::test]
async fn a_refused_export_is_retried_unless_retries_are_off() {
    if is_child() {
        return child_service().await;
    }
    let name = "export::a_refused_export_is_retried_unless_retries_are_off";
    let (_, traceparent) = new_traceparent(true);
    let mut span_exports = Vec::new();
    for retries in [true, false] {
        // Arrange
        let (endpoint, attempts) = refusing_collector().await;
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("CHILD_TRACEPARENT", &traceparent),
        ];
        if !retries {
            env.push(("CHILD_NO_RETRIES", "1"));
        }

        // Act: one request, so one span and one batch, then the flush at shutdown.
        let output = run_child(name, &env).await;

        // Assert
        assert_eq!(child_value(&output, "status"), "200");
        let shutdown_ms: u64 = child_value(&output, "shutdown_ms").parse().unwrap();
        assert!(shutdown_ms <= 3_500, "shutdown took {shutdown_ms} ms");
        span_exports.push(attempts.lock().unwrap().get("/v1/traces").copied());
    }
    let [with_retries, without] = span_exports[..] else {
        unreachable!("two runs")
    };
    assert!(
        with_retries > Some(1),
        "a service retries a refused batch: {with_retries:?} attempts"
    );
    assert_eq!(without, Some(1), "a one-shot command tries once");
}

#[tokio::test]
async fn logs_flushed_at_shutdown_are_sent_once_even_with_retries_on() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: a service with retries on, and a collector that refuses every export with a
    // status the OTLP spec says to retry; logs wait for the flush at shutdown.
    let name = "export::logs_flushed_at_shutdown_are_sent_once_even_with_retries_on";
    let (_, traceparent) = new_traceparent(true);
    let (endpoint, attempts) = refusing_collector().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "60000"),
        ("CHILD_TRACEPARENT", &traceparent),
    ];

    // Act: one request, which logs one line, then shutdown.
    let output = run_child(name, &env).await;

    // Assert
    assert_eq!(child_value(&output, "status"), "200");
    assert_eq!(
        attempts.lock().unwrap().get("/v1/logs").copied(),
        Some(1),
        "the log batch is sent once at shutdown, not retried"
    );
}

#[tokio::test]
async fn always_off_sampler_exports_no_spans() {
    if is_child() {
        return child_service().await;
    }
    let receiver = OtlpReceiver::start().await.unwrap();
    let (trace_id, traceparent) = new_traceparent(true);

    run_child(
        "export::always_off_sampler_exports_no_spans",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("CHILD_TRACEPARENT", &traceparent),
        ],
    )
    .await;

    // Metrics made it, so export worked: the absence of spans is the sampler's doing.
    assert!(
        receiver
            .metric_names()
            .contains("http.server.request.duration")
    );
    assert_eq!(receiver.span_count(), 0, "{:#?}", receiver.spans());
    assert!(receiver.spans().iter().all(|s| s.trace_id != trace_id));
}

#[tokio::test]
async fn bad_configuration_is_an_error_naming_the_variable() {
    if is_child() {
        let error = foundry::config::TelemetryConfig::from_env("foundry-child", "9.9.9")
            .expect_err("udp is not a protocol");
        println!("CHILD error={}", error.variable);
        return;
    }
    let output = run_child(
        "export::bad_configuration_is_an_error_naming_the_variable",
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")],
    )
    .await;
    assert_eq!(child_value(&output, "error"), "OTEL_EXPORTER_OTLP_PROTOCOL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_receiver_counts_every_span_it_gets() {
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_otlp::WithExportConfig;

    let receiver = OtlpReceiver::start_counting().await.unwrap();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.grpc_endpoint())
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("counting-test");
    for i in 0..1500 {
        tracer.in_span(format!("span {i}"), |_| {});
    }

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();

    assert_eq!(receiver.span_count(), 1500);
    assert!(
        receiver.spans().is_empty(),
        "a counting receiver keeps no spans"
    );
}

#[tokio::test]
async fn export_errors_are_logged_once_not_once_per_batch() {
    if is_child() {
        let telemetry = init_child_telemetry();
        // Many spans and many export attempts against a collector that is not there.
        for round in 0..8 {
            for i in 0..50 {
                tracing::info_span!("work", round = round as i64, item = i as i64).in_scope(|| {});
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let _ = telemetry.shutdown();
        return;
    }
    let closed = closed_address();

    let output = run_child(
        "export::export_errors_are_logged_once_not_once_per_batch",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ],
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    let export_errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ExportError"))
        .collect();
    assert!(
        !export_errors.is_empty(),
        "the failure is logged:\n{stderr}"
    );
    // 40 batches of spans failed: their error is logged once, and once more with the total
    // lost when the service stops; so are the logs' and metrics'.
    let mut kinds: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for line in &export_errors {
        if let Some(kind) = line
            .split_whitespace()
            .find(|word| word.ends_with("ExportError"))
        {
            *kinds.entry(kind).or_default() += 1;
        }
    }
    for (kind, count) in &kinds {
        assert!(
            *count <= 2,
            "{kind} is logged {count} times, not once per batch:\n{stderr}"
        );
    }
    assert!(
        kinds.keys().any(|kind| kind.contains("SpanExport")),
        "span export failures are logged:\n{stderr}"
    );
    let lost: u64 = export_errors
        .iter()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("spans_lost="))
        })
        .filter_map(|count| count.parse::<u64>().ok())
        .sum();
    assert_eq!(lost, 400, "every lost span is counted:\n{stderr}");
    assert!(
        !stderr.contains("Global tracer provider is set"),
        "no telemetry about telemetry"
    );
}

#[tokio::test]
async fn a_panic_is_one_json_log_line_with_the_trace_id_of_its_request_not_one_per_request() {
    if is_child() {
        let telemetry = init_child_telemetry();
        let app = crate::server::panicking_app("foundry-child");
        // The same panic twenty times: one line says it.
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let request = http::Request::get("/panics")
                .header("traceparent", std::env::var("CHILD_TRACEPARENT").unwrap())
                .body(axum::body::Body::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(app.clone(), request)
                .await
                .unwrap();
            statuses.push(response.status().as_u16().to_string());
        }
        println!("CHILD statuses={}", statuses.join(","));
        // A panic outside the server layer, in a connection's task, twenty times: one line.
        let outer = app.layer(axum::middleware::map_request(
            |_: http::Request<axum::body::Body>| async move {
                if true {
                    panic!("a connection gave up");
                }
                Err::<http::Request<axum::body::Body>, http::StatusCode>(http::StatusCode::OK)
            },
        ));
        let application = foundry::http::Application::bind("127.0.0.1", 0, outer)
            .await
            .unwrap();
        let address = application.local_addr().unwrap();
        tokio::spawn(application.run_until_stopped());
        for _ in 0..20 {
            let answer = reqwest::get(format!("http://{address}/panics")).await;
            assert!(answer.is_err(), "{answer:?}");
        }
        // A panic outside a handler ends its thread: each is said.
        for _ in 0..2 {
            let ended = std::thread::spawn(|| -> () { panic!("a worker gave up") }).join();
            assert!(ended.is_err());
        }
        let _ = telemetry.shutdown();
        return;
    }
    let (trace_id, traceparent) = new_traceparent(true);

    let output = run_child(
        "export::a_panic_is_one_json_log_line_with_the_trace_id_of_its_request_not_one_per_request",
        &[("LOG_FORMAT", "json"), ("CHILD_TRACEPARENT", &traceparent)],
    )
    .await;

    // Assert: 500 each time, and stderr is JSON lines only, the panic's once among them.
    assert_eq!(child_value(&output, "statuses"), ["500"; 20].join(","));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}\n{stderr}"))
        })
        .collect();
    let panics: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["message"] == "A panic occurred")
        .collect();
    let payloads: Vec<&str> = panics
        .iter()
        .map(|panic| {
            panic["fields"]["panic.payload"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        payloads,
        [
            "the index was out of range",
            "a connection gave up",
            "a worker gave up",
            "a worker gave up"
        ],
        "{stderr}"
    );
    // The nineteen of each place held back are counted at shutdown.
    let held_back: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| !line["fields"]["panics_held_back"].is_null())
        .collect();
    assert_eq!(held_back.len(), 2, "{stderr}");
    assert!(
        held_back
            .iter()
            .all(|line| line["fields"]["panics_held_back"] == 19),
        "{stderr}"
    );
    let panic = panics[0];
    assert_eq!(panic["level"], "ERROR");
    assert_eq!(
        panic["fields"]["panic.payload"], "the index was out of range",
        "{panic}"
    );
    assert!(
        panic["fields"]["panic.location"]
            .as_str()
            .is_some_and(|location| location.contains("server.rs")),
        "{panic}"
    );
    assert_eq!(panic["trace_id"], trace_id.as_str(), "{panic}");

    // Where the log filter keeps no such line, Rust's own hook still prints the panic.
    let output = run_child(
        "export::a_panic_is_one_json_log_line_with_the_trace_id_of_its_request_not_one_per_request",
        &[
            ("RUST_LOG", "foundry=info"),
            ("CHILD_TRACEPARENT", &traceparent),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The handler's and the connection's panics once, the workers' each time.
    assert_eq!(stderr.matches("panicked at").count(), 4, "{stderr}");
    assert_eq!(stderr.matches("a worker gave up").count(), 2, "{stderr}");
    assert!(stderr.contains("the index was out of range"), "{stderr}");
}

#[tokio::test]
async fn json_logs_carry_the_trace_and_span_ids() {
    if is_child() {
        return child_service().await;
    }
    let (trace_id, traceparent) = new_traceparent(true);

    let output = run_child(
        "export::json_logs_carry_the_trace_and_span_ids",
        &[("LOG_FORMAT", "json"), ("CHILD_TRACEPARENT", &traceparent)],
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("serving an item"))
        .unwrap_or_else(|| panic!("the handler's log line:\n{stderr}"));
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["message"], "serving an item");
    assert_eq!(log["fields"]["item"], "42");
    assert_eq!(log["trace_id"], trace_id.as_str());
    assert_eq!(log["span_id"].as_str().map(str::len), Some(16));
}

#[tokio::test]
async fn a_failed_init_is_an_error_not_a_panic() {
    if is_child() {
        let config =
            foundry::config::TelemetryConfig::from_env("foundry-child", "9.9.9").expect("valid");
        let _telemetry = foundry::telemetry::init(config.clone()).expect("first init");
        // The second one is refused before it changes anything global or starts an export
        // runtime (which it could not drop inside this one without blocking).
        let error = foundry::telemetry::init(config).expect_err("already installed");
        println!(
            "CHILD error={}",
            matches!(error, foundry::telemetry::TelemetryError::AlreadyInstalled)
        );
        return;
    }

    let output = run_child(
        "export::a_failed_init_is_an_error_not_a_panic",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
    )
    .await;

    assert_eq!(child_value(&output, "error"), "true");
}

/// Runs test `name` as the child service, its one request carrying `traceparent`, exporting to
/// `receiver` under `RUST_LOG=rust_log`; returns what it wrote on stderr.
async fn run_child_service(
    name: &str,
    receiver: &OtlpReceiver,
    traceparent: &str,
    rust_log: &str,
) -> String {
    let output = run_child(
        name,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("CHILD_TRACEPARENT", traceparent),
            ("RUST_LOG", rust_log),
        ],
    )
    .await;
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_quiet_rust_log_hides_log_lines_but_never_spans_or_exported_logs() {
    if is_child() {
        return child_service().await;
    }
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    let stderr = run_child_service(
        "export::a_quiet_rust_log_hides_log_lines_but_never_spans_or_exported_logs",
        &receiver,
        &traceparent,
        "warn",
    )
    .await;

    // Assert
    assert!(!stderr.contains("serving an item"), "{stderr}");
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert!(
        receiver.log_record_count() >= 1,
        "the OTLP log bridge has a filter of its own"
    );
}

#[tokio::test]
async fn span_scoped_rust_log_directives_still_work() {
    if is_child() {
        return child_service().await;
    }
    // Only events inside a span with an `http.route` field print, sampled request or not.
    let receiver = OtlpReceiver::start().await.unwrap();
    for sampled in [true, false] {
        let (trace_id, traceparent) = new_traceparent(sampled);
        let stderr = run_child_service(
            "export::span_scoped_rust_log_directives_still_work",
            &receiver,
            &traceparent,
            "error,[{http.route}]=info",
        )
        .await;

        assert!(
            stderr.contains("serving an item"),
            "sampled={sampled}: {stderr}"
        );
        // The `tracing` span the directives match is not exported: the request's span is.
        if sampled {
            let spans = receiver
                .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
                .await;
            let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
            assert_eq!(names, ["GET /items/{id}"]);
            assert_eq!(spans[0].parent_span_id, &traceparent[36..52]);
        }
    }
}

#[tokio::test]
async fn debug_and_trace_call_sites_stay_disabled() {
    if is_child() {
        let _telemetry = init_child_telemetry();
        println!(
            "CHILD level={} debug_span_disabled={} h2_trace_span_disabled={} info_span_disabled={}",
            tracing::level_filters::LevelFilter::current(),
            tracing::debug_span!("detail").is_disabled(),
            tracing::trace_span!(target: "h2::proto", "frame").is_disabled(),
            tracing::info_span!("sophia.plan").is_disabled(),
        );
        return;
    }
    // With and without export, and with telemetry off: the max level is the logs' (INFO), so
    // below it nothing is even asked about, whatever the layers. With telemetry off no span is
    // created at all, as nothing would record it.
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.grpc_endpoint();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "false"),
        (&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], "false"),
        // A quiet log does not lower the spans' level.
        (&[("RUST_LOG", "warn")], "false"),
        (&[("OTEL_SDK_DISABLED", "true")], "true"),
    ];
    for (env, info_span_disabled) in cases {
        let output = run_child("export::debug_and_trace_call_sites_stay_disabled", env).await;
        assert_eq!(child_value(&output, "level"), "info", "{env:?}");
        assert_eq!(child_value(&output, "debug_span_disabled"), "true");
        assert_eq!(child_value(&output, "h2_trace_span_disabled"), "true");
        assert_eq!(
            child_value(&output, "info_span_disabled"),
            info_span_disabled,
            "{env:?}"
        );
    }
}

#[tokio::test]
async fn a_full_span_queue_drops_new_spans_counts_them_and_never_blocks() {
    if is_child() {
        let telemetry = init_child_telemetry();
        let started = Instant::now();
        for i in 0..100 {
            tracing::info_span!("work", item = i as i64).in_scope(|| {});
        }
        println!("CHILD spans_ms={}", started.elapsed().as_millis());
        // Two failed exports (the queued batch, then the next), and the warning with them.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let _ = telemetry.shutdown();
        return;
    }
    // A collector that accepts connections and never answers: every export waits its timeout.
    let address = silent_address();

    let output = run_child(
        "export::a_full_span_queue_drops_new_spans_counts_them_and_never_blocks",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{address}")),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "400"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;

    // 100 spans, at most 10 in the export thread's hands and 10 queued: 80 or more dropped,
    // all counted (a first warning, the rest when the service stops); ending them never waited
    // for the collector.
    // Waiting for the collector would cost a 400 ms export timeout for every batch of the 80
    // spans over the queue, seconds in all; ending them takes milliseconds. The bound is between,
    // with room for a loaded machine.
    let spans_ms: u64 = child_value(&output, "spans_ms").parse().unwrap();
    assert!(spans_ms < 1_500, "ending spans waited: {spans_ms} ms");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("SpanExport.QueueFull"))
        .collect();
    assert!((1..=2).contains(&warnings.len()), "{stderr}");
    let dropped: u64 = warnings
        .iter()
        .map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("spans_dropped="))
                .and_then(|count| count.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a count of dropped spans: {line}"))
        })
        .sum();
    assert!((80..=90).contains(&dropped), "{dropped} dropped: {stderr}");
}

#[tokio::test]
async fn a_collector_away_for_many_rounds_never_grows_the_queue_beyond_its_size() {
    if is_child() {
        let telemetry = init_child_telemetry();
        // Ten spans every 100 ms for 5 s with the collector away: with retries and the pause
        // between them, about three rounds, each of which grew the queue by its size before.
        for round in 0..50 {
            for i in 0..10 {
                tracing::info_span!("work", round = round as i64, item = i as i64).in_scope(|| {});
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::write(std::env::var("CHILD_PRODUCED_FILE").unwrap(), b"").unwrap();
        wait_for_file(std::env::var("CHILD_STOP_FILE").unwrap()).await;
        // The pause of held batches ends, and what the queue kept goes out.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let _ = telemetry.shutdown();
        return;
    }
    // Arrange: a collector that is down (connections refused) while 500 spans end, and a
    // queue of 10.
    let reserved = ReservedAddress::new();
    let endpoint = format!("http://{}", reserved.address());
    let files = Handshake::new("queue");

    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ("CHILD_PRODUCED_FILE", files.produced_file.as_str()),
        ("CHILD_STOP_FILE", files.stop_file.as_str()),
    ];

    // Act: once the spans have ended, the collector appears where the service exports.
    let (output, receiver) = tokio::join!(
        run_child(
            "export::a_collector_away_for_many_rounds_never_grows_the_queue_beyond_its_size",
            &env,
        ),
        async {
            wait_for_file(&files.produced).await;
            let receiver = OtlpReceiver::start_on(reserved).await.unwrap();
            std::fs::write(&files.stop, b"").unwrap();
            receiver
        }
    );

    // Assert: what waited arrived, and it was never more than the queue holds (ten queued, and
    // ten more in the export thread's hands at most); the rest were dropped and counted.
    let received = receiver.span_count();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        (1..=20).contains(&received),
        "{received} spans arrived: {stderr}"
    );
    assert!(stderr.contains("SpanExport.QueueFull"), "{stderr}");
}

#[tokio::test]
async fn metric_and_log_export_failures_name_the_collector_and_count_what_is_lost() {
    if is_child() {
        let telemetry = init_child_telemetry();
        let counter = opentelemetry::global::meter("foundry-test")
            .u64_counter("work.done")
            .build();
        for round in 0..15_i64 {
            counter.add(1, &[]);
            tracing::info!(round, "a round of work");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = telemetry.shutdown();
        return;
    }
    // Arrange: a collector that refuses every connection, exports every 100 ms, no retries.
    let closed = closed_address();

    // Act
    let output = run_child(
        "export::metric_and_log_export_failures_name_the_collector_and_count_what_is_lost",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}")),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            ("CHILD_NO_RETRIES", "1"),
        ],
    )
    .await;

    // Assert: for each signal, a warning naming the collector when exports begin to fail, and
    // an error at shutdown whose total is what the lines counted; none of the SDK's own lines.
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (signal, name) in [
        ("metric", "MetricExport.ExportError"),
        ("log", "LogExport.ExportError"),
    ] {
        let lines: Vec<&str> = stderr.lines().filter(|line| line.contains(name)).collect();
        assert!(lines.len() >= 2, "{signal}: {stderr}");
        let (first, last) = (lines[0], lines[lines.len() - 1]);
        assert!(
            first.contains("WARN")
                && first.contains(&format!(
                    "OTLP {signal} export to http://{closed} failing since"
                )),
            "{first}"
        );
        assert!(
            last.contains("ERROR") && last.contains("at shutdown"),
            "{last}"
        );
        let counted: u64 = lines
            .iter()
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("exports_lost="))
            })
            .map(|count| count.parse::<u64>().unwrap())
            .sum();
        let total: u64 = last
            .split_once("exports lost in all: ")
            .and_then(|(_, rest)| rest.split(';').next())
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no total in {last}"));
        assert_eq!(
            counted, total,
            "{signal}: every failed export is counted once"
        );
        assert!(total >= 3, "{signal}: {total} exports failed in 1.5 s");
    }
    let sdk_lines = sdk_warnings(&stderr);
    assert!(sdk_lines.is_empty(), "{sdk_lines:#?}");
}

/// The warnings and errors the OpenTelemetry crates wrote themselves. Found by their target, not
/// by their event names: an upgrade that renames the events foundry replaces must fail the tests.
fn sdk_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| {
            line.contains(" WARN opentelemetry") || line.contains(" ERROR opentelemetry")
        })
        .collect()
}

#[tokio::test]
async fn export_failures_through_the_sdk_say_when_the_collector_is_back() {
    if is_child() {
        let telemetry = init_child_telemetry();
        let counter = opentelemetry::global::meter("foundry-test")
            .u64_counter("work.done")
            .build();
        let stop = std::env::var("CHILD_STOP_FILE").unwrap();
        for round in 0..200_i64 {
            if std::path::Path::new(&stop).exists() {
                break;
            }
            tracing::info_span!("work", round).in_scope(|| tracing::info!(round, "working"));
            counter.add(1, &[]);
            if round == 10 {
                std::fs::write(std::env::var("CHILD_PRODUCED_FILE").unwrap(), b"").unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = telemetry.shutdown();
        return;
    }
    // Arrange: gzip (the SDK's processors for all three signals) to a collector that is down
    // for the first second.
    let reserved = ReservedAddress::new();
    let endpoint = format!("http://{}", reserved.address());
    let files = Handshake::new("back");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("CHILD_NO_RETRIES", "1"),
        ("CHILD_PRODUCED_FILE", files.produced_file.as_str()),
        ("CHILD_STOP_FILE", files.stop_file.as_str()),
    ];

    // Act: the collector appears, and the child stops once exports have reached it.
    let (output, ()) = tokio::join!(
        run_child(
            "export::export_failures_through_the_sdk_say_when_the_collector_is_back",
            &env,
        ),
        async {
            wait_for_file(&files.produced).await;
            let receiver = OtlpReceiver::start_on(reserved).await.unwrap();
            let started = Instant::now();
            while receiver.span_count() == 0 && started.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::write(&files.stop, b"").unwrap();
        }
    );

    // Assert: for each signal, the failure with the collector's URL, then its end, and no
    // error at shutdown.
    let stderr = String::from_utf8_lossy(&output.stderr);
    for signal in ["span", "metric", "log"] {
        let said = |what: &str| format!("OTLP {signal} export to {endpoint} {what}");
        let began = stderr.find(&said("failing since"));
        let ended = stderr.find(&said("works again after failing since"));
        assert!(
            began.is_some() && ended.is_some() && began < ended,
            "{signal}: {stderr}"
        );
        assert!(
            !stderr.contains("at shutdown") && !stderr.contains("since the last line"),
            "{signal}: {stderr}"
        );
    }
    let sdk_lines = sdk_warnings(&stderr);
    assert!(sdk_lines.is_empty(), "{sdk_lines:#?}");
}

#[tokio::test]
async fn spans_lost_at_shutdown_are_an_error_that_rust_log_error_keeps() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: a collector that refuses every connection, and only errors logged.
    let closed = closed_address();
    let (_, traceparent) = new_traceparent(true);

    // Act
    let output = run_child(
        "export::spans_lost_at_shutdown_are_an_error_that_rust_log_error_keeps",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}")),
            ("CHILD_TRACEPARENT", &traceparent),
            ("RUST_LOG", "error"),
        ],
    )
    .await;

    // Assert: the loss is said, once, as an error, with the count.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lost: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("SpanExport.ExportError"))
        .collect();
    assert_eq!(lost.len(), 1, "{stderr}");
    assert!(
        lost[0].contains("ERROR") && lost[0].contains("spans_lost=1"),
        "{stderr}"
    );
    assert!(
        lost[0].contains(&format!("to http://{closed} ")),
        "{stderr}"
    );
}
