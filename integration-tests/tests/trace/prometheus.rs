//! A real Prometheus (Debian's `prometheus`) scrapes the `/metrics` of Hermes, Sophia and
//! `apollo serve`, and its query API answers `http_server_request_duration_seconds_count` by
//! job (the service) and `http_route` with exactly the requests the test made. Without a
//! `prometheus` binary the test says why and skips, unless `REQUIRE_PROMETHEUS=1`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{
    harness::{Stack, TempDir, http, test_log},
    trace::GOAL,
};

/// Prometheus needs a few scrapes after its start; generous for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(250);
const QUERY: &str = "sum by (job, http_route) (http_server_request_duration_seconds_count)";

/// `prometheus` on the PATH, if there is one.
fn prometheus_binary() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
}

/// The scrape config: one job per service, every second.
fn config(targets: &[(&str, &str)]) -> String {
    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, address) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
        ));
    }
    config
}

/// Every byte but the unreserved ones as `%XX` (reqwest's `query` needs a feature the workspace
/// does not enable, and one query string is not worth a dependency).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The samples of an instant query, or why not (yet).
pub async fn query(base: &str, query: &str) -> Result<Vec<Value>, String> {
    let response = http()
        .get(format!(
            "{base}/api/v1/query?query={}",
            percent_encode(query)
        ))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// `(job, http_route) -> count` of [`QUERY`].
async fn counts(base: &str) -> Result<BTreeMap<(String, String), f64>, String> {
    let mut counts = BTreeMap::new();
    for sample in query(base, QUERY).await? {
        let label = |name: &str| {
            sample["metric"][name]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let value = sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        counts.insert((label("job"), label("http_route")), value);
    }
    Ok(counts)
}

#[tokio::test]
async fn prometheus_scrapes_request_durations_by_service_and_route() {
    let Some(prometheus) = required_prometheus() else {
        return;
    };

    // Arrange: the three services, and traffic through all of them.
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let client = http();
    let mut embeds_via_sophia = 0;
    for _ in 0..2 {
        let response = client
            .post(format!("{}/api/plan", serve.url))
            .json(&json!({"goal": GOAL}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let plan: Value = response.json().await.unwrap();
        embeds_via_sophia += plan["plan"].as_array().expect("steps").len();
    }
    let response = client
        .post(format!("{}/api/embed", serve.url))
        .json(&json!({"text": "a blue cup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let dir = TempDir::new("logos-prometheus");
    let config = config(&[
        ("apollo", serve.address()),
        ("sophia", stack.sophia.address()),
        ("hermes", stack.hermes.address()),
    ]);
    let (mut server, base) = spawn(&prometheus, &dir, &config);

    // Act: ask Prometheus until it has scraped what the services counted.
    let expected: BTreeMap<(String, String), f64> = [
        ("apollo", "/api/plan", 2.0),
        ("apollo", "/api/embed", 1.0),
        ("sophia", "/plan", 2.0),
        ("hermes", "/simple_nlp", 2.0),
        ("hermes", "/embed_text", embeds_via_sophia as f64 + 1.0),
    ]
    .into_iter()
    .map(|(job, route, count)| ((job.to_owned(), route.to_owned()), count))
    .collect();
    let started = Instant::now();
    let last = loop {
        let answer = counts(&base).await;
        if answer.as_ref().is_ok_and(|counts| *counts == expected) {
            break answer;
        }
        if started.elapsed() > DEADLINE {
            break answer;
        }
        assert_running(&mut server).await;
        tokio::time::sleep(POLL_EVERY).await;
    };

    // Assert: one series per service and route, each with the exact number of requests; no
    // /health or /metrics (the scrapes themselves) among them.
    assert_eq!(
        last,
        Ok(expected),
        "Prometheus' {QUERY} after {:?}",
        started.elapsed()
    );
    // Each job is the service it claims to be: its resource says so.
    let mut services: Vec<(String, String)> = query(&base, "target_info")
        .await
        .unwrap()
        .iter()
        .map(|sample| {
            let label = |name: &str| {
                sample["metric"][name]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            (label("job"), label("service_name"))
        })
        .collect();
    services.sort();
    let jobs = ["apollo", "hermes", "sophia"].map(|job| (job.to_owned(), job.to_owned()));
    assert_eq!(services, jobs, "target_info by job");
    let _ = server.kill().await;
}

/// `prometheus`, or `None` after saying why the test skips; a failure with `REQUIRE_PROMETHEUS=1`.
pub fn required_prometheus() -> Option<PathBuf> {
    let found = prometheus_binary();
    if found.is_none() {
        let required = std::env::var("REQUIRE_PROMETHEUS").as_deref() == Ok("1");
        assert!(
            !required,
            "REQUIRE_PROMETHEUS=1 but there is no `prometheus` on the PATH"
        );
        eprintln!("skipped: no `prometheus` on the PATH (apt-get install prometheus)");
    }
    found
}

/// Starts `prometheus` with `config` on a free loopback port, its data in `dir`; the child (killed
/// on drop) and its base URL.
pub fn spawn(prometheus: &Path, dir: &TempDir, config: &str) -> (Child, String) {
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let listen = foundry::testing::closed_address();
    let server = Command::new(prometheus)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if test_log() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    (server, format!("http://{listen}"))
}

/// Panics with Prometheus' stderr when it has exited.
pub async fn assert_running(server: &mut Child) {
    if let Ok(Some(status)) = server.try_wait() {
        let mut stderr = String::new();
        if let Some(mut pipe) = server.stderr.take() {
            use tokio::io::AsyncReadExt as _;
            let _ = pipe.read_to_string(&mut stderr).await;
        }
        panic!("prometheus exited ({status}):\n{stderr}");
    }
}
