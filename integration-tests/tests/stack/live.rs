//! The live stack (`make otel-up`, then `make test-live`): the collector answers its health check,
//! Prometheus scrapes it, and the trace of `apollo plan` reaches Jaeger with all three services.
//! Skipped unless `OTEL_STACK_LIVE=1`. Hermes and Sophia are started on their default ports
//! (exporting to the collector) unless they already answer there. Every wait polls until a
//! deadline; none sleeps a fixed time before asserting.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ports;
use crate::support::workspace_root;

const DEADLINE: Duration = Duration::from_secs(90);
const POLL_EVERY: Duration = Duration::from_millis(500);
const SERVICES: [&str; 3] = ["apollo", "sophia", "hermes"];

fn enabled() -> bool {
    let on = std::env::var("OTEL_STACK_LIVE").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "skipped: the live-stack tests need `make otel-up` and OTEL_STACK_LIVE=1 (make test-live)"
        );
    }
    on
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// GETs `url` and returns the body of a 2xx answer, or why not.
async fn get(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {url}: {status}: {body}"))
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let body = get(http, url).await?;
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
}

/// Retries `attempt` until it succeeds or [`DEADLINE`] passes; then fails with the last reason.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(reason) if start.elapsed() > DEADLINE => {
                panic!("{what}: not within {DEADLINE:?}; last: {reason}")
            }
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

fn binary(name: &str) -> PathBuf {
    let variable = format!("{}_BIN", name.to_uppercase());
    let path = std::env::var_os(&variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug").join(name));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build -p {name}` (make test-live does) or set {variable}",
        path.display()
    );
    path
}

/// Processes this test started; killed when it ends.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// Sets the variables that make a service or the CLI export to the stack's collector.
fn exporting(command: &mut Command) -> &mut Command {
    command
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            foundry::testing::DEFAULT_OTLP_GRPC_ENDPOINT,
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "5000")
        .env("SOPHIA_URL", ports::service_url(ports::SOPHIA, ""))
        .env("HERMES_URL", ports::service_url(ports::HERMES, ""))
}

/// Starts Hermes and Sophia on their default ports unless they answer there already.
async fn ensure_services(http: &reqwest::Client) -> Started {
    let mut started = Started(Vec::new());
    for (name, port) in [("hermes", ports::HERMES), ("sophia", ports::SOPHIA)] {
        let health = ports::service_url(port, "/health");
        if get(http, &health).await.is_ok() {
            eprintln!("live: using the {name} already running on :{port}");
            continue;
        }
        let output = if std::env::var("TEST_LOG").as_deref() == Ok("1") {
            Stdio::inherit
        } else {
            Stdio::null
        };
        let child = exporting(&mut Command::new(binary(name)))
            .args(["--port", &port.to_string()])
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        started.0.push(child);
        eventually(&format!("{name} answering {health}"), || get(http, &health)).await;
    }
    started
}

/// Runs `apollo --json plan ...` and returns the trace id it printed.
async fn apollo_plan() -> String {
    let output = tokio::process::Command::from({
        let mut command = Command::new(binary("apollo"));
        exporting(&mut command).args([
            "--json",
            "plan",
            "observe the observability stack end to end",
        ]);
        command
    })
    .output()
    .await
    .expect("apollo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "apollo plan failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("apollo --json printed {stdout:?}: {e}"));
    let trace_id = printed["trace_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        trace_id.len() == 32
            && trace_id.chars().all(|c| c.is_ascii_hexdigit())
            && trace_id != "0".repeat(32),
        "apollo printed no valid trace_id: {printed}"
    );
    trace_id
}

/// The service names of a Jaeger `/api/traces/<id>` answer.
fn trace_services(answer: &Value) -> Vec<String> {
    let processes = answer["data"][0]["processes"].as_object();
    let mut names: Vec<String> = processes
        .into_iter()
        .flatten()
        .filter_map(|(_, p)| p["serviceName"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn missing_services(found: &[String]) -> Vec<&'static str> {
    SERVICES
        .into_iter()
        .filter(|s| !found.iter().any(|f| f == s))
        .collect()
}

#[tokio::test]
async fn live_jaeger_shows_the_trace_of_apollo_plan_across_three_services() {
    if !enabled() {
        return;
    }
    // Arrange
    let http = client();
    let health = ports::stack_url(ports::COLLECTOR_HEALTH, "/");
    eventually(
        "the collector's health check (is the stack up? make otel-up)",
        || get(&http, &health),
    )
    .await;
    let _services = ensure_services(&http).await;

    // Act
    let trace_id = apollo_plan().await;
    eprintln!(
        "live: trace {}",
        ports::stack_url(ports::JAEGER_UI, &format!("/trace/{trace_id}"))
    );

    // Assert: Jaeger knows the three services, and the one trace spans them.
    let (http, trace_id) = (&http, trace_id.as_str());
    let services_url = &ports::stack_url(ports::JAEGER_UI, "/api/services");
    eventually(
        "Jaeger listing apollo, sophia and hermes",
        move || async move {
            let answer = get_json(http, services_url).await?;
            let found: Vec<String> = answer["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            let missing = missing_services(&found);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?} among {found:?}"))
            }
        },
    )
    .await;
    let trace_url = &ports::stack_url(ports::JAEGER_UI, &format!("/api/traces/{trace_id}"));
    eventually(
        "the trace in Jaeger with all three services",
        move || async move {
            let found = trace_services(&get_json(http, trace_url).await?);
            let missing = missing_services(&found);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("trace {trace_id} lacks {missing:?}, has {found:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn live_prometheus_scrapes_the_collector() {
    if !enabled() {
        return;
    }
    let http = client();
    get(&http, &ports::stack_url(ports::PROMETHEUS, "/-/healthy"))
        .await
        .unwrap_or_else(|e| {
            panic!("Prometheus is not healthy (is the stack up? make otel-up): {e}")
        });
    let (http, targets_url) = (
        &http,
        &ports::stack_url(ports::PROMETHEUS, "/api/v1/targets"),
    );
    eventually("Prometheus' otel-collector target up", move || async move {
        let answer = get_json(http, targets_url).await?;
        let targets = answer["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let collector: Vec<&Value> = targets
            .iter()
            .filter(|t| t["labels"]["job"] == "otel-collector")
            .collect();
        if !collector.is_empty() && collector.iter().all(|t| t["health"] == "up") {
            Ok(())
        } else {
            Err(format!("otel-collector targets: {collector:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn live_collector_answers_its_health_check() {
    if !enabled() {
        return;
    }
    let http = client();
    let url = ports::stack_url(ports::COLLECTOR_HEALTH, "/");
    get(&http, &url).await.unwrap_or_else(|e| {
        panic!("the collector is not healthy (is the stack up? make otel-up): {e}")
    });
}
