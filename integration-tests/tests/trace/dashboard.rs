//! The Grafana dashboard's PromQL against a real Prometheus (Debian's `prometheus`) that scrapes
//! what the stack's `infra/prometheus.yml` scrapes: its jobs, targets and labels, with each
//! service's host target pointed at the service running here and every other target (the
//! collector, the compose services) at an address where nothing listens, as on a laptop that runs
//! the services with `cargo run`. Every query of the dashboard, with "All" services (its allValue), must
//! succeed and label every series with one of the three services, never a blank one; the
//! services' own metrics must show each of the three, from exactly one source.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value as Json, json};
use serde_yaml::Value;

use crate::{
    harness::{Stack, TempDir, http, workspace_root},
    prometheus::{assert_running, query, required_prometheus, spawn},
    trace::GOAL,
};

const PROMETHEUS_CONFIG: &str = "infra/prometheus.yml";
const DASHBOARD: &str = "infra/grafana/dashboards/logos.json";
/// The metric the services serve on `/metrics` (http.server.request.duration).
const SERVICE_METRIC: &str = "http_server_request_duration_seconds";
const SERVICES: [&str; 3] = ["apollo", "hermes", "sophia"];
/// Several scrapes (one a second here) must fall in a query's rate window.
const RATE_INTERVAL: &str = "15s";
const DEADLINE: Duration = Duration::from_secs(60);

/// The stack's Prometheus config with its targets as described above, scraping every second.
fn scrape_config(real: &BTreeMap<&str, String>) -> String {
    let text = std::fs::read_to_string(workspace_root().join(PROMETHEUS_CONFIG)).unwrap();
    let mut config: Value = serde_yaml::from_str(&text).unwrap();
    let nowhere = foundry::testing::closed_address().to_string();
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["scrape_timeout"] = "1s".into();
    let jobs = config["scrape_configs"].as_sequence_mut().expect("jobs");
    for job in jobs.iter_mut() {
        for group in job["static_configs"].as_sequence_mut().expect("targets") {
            let service = group["labels"]["service"].as_str().map(str::to_owned);
            for target in group["targets"].as_sequence_mut().expect("targets") {
                let on_host = target
                    .as_str()
                    .is_some_and(|t| t.starts_with("host.docker.internal:"));
                *target = match (&service, on_host) {
                    (Some(service), true) => real[service.as_str()].clone().into(),
                    _ => nowhere.clone().into(),
                };
            }
        }
    }
    serde_yaml::to_string(&config).unwrap()
}

/// Every `expr` of the dashboard, with Grafana's variables as "All" services sets them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join(DASHBOARD)).unwrap();
    let dashboard: Json = serde_json::from_str(&text).unwrap();
    let all = dashboard["templating"]["list"]
        .as_array()
        .and_then(|vars| vars.iter().find(|v| v["name"] == "service"))
        .and_then(|v| v["allValue"].as_str())
        .expect("the service variable's allValue")
        .to_owned();
    let mut out = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(node) = stack.pop() {
        match node {
            Json::Object(map) => {
                if let Some(expr) = map.get("expr").and_then(Json::as_str) {
                    out.push(
                        expr.replace("$__rate_interval", RATE_INTERVAL)
                            .replace("$service", &all),
                    );
                }
                stack.extend(map.values());
            }
            Json::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

/// The service each series of a query is about: its `service` or `service_name` label.
fn services_of(samples: &[Json]) -> Vec<String> {
    samples
        .iter()
        .map(|s| {
            let metric = &s["metric"];
            metric["service"]
                .as_str()
                .or_else(|| metric["service_name"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_finds_each_service_once() {
    let Some(prometheus) = required_prometheus() else {
        return;
    };

    // Arrange: the three services (exporting OTLP too, as with the stack), traffic through all.
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let dir = TempDir::new("logos-dashboard");
    let real = BTreeMap::from([
        ("apollo", serve.address().to_owned()),
        ("sophia", stack.sophia.address().to_owned()),
        ("hermes", stack.hermes.address().to_owned()),
    ]);
    let (mut server, base) = spawn(&prometheus, &dir, &scrape_config(&real));
    let queries = dashboard_queries();
    assert!(
        queries
            .iter()
            .filter(|q| q.contains(SERVICE_METRIC))
            .count()
            >= 3,
        "the dashboard's queries of the services' metrics: {queries:?}"
    );
    let client = http();
    let started = Instant::now();

    // Act: keep traffic flowing until every query of the services' metrics sees all three
    // services (a rate needs two scrapes after the first request).
    let mut answers: Vec<(String, Result<Vec<Json>, String>)>;
    loop {
        let response = client
            .post(format!("{}/api/plan", serve.url))
            .json(&json!({"goal": GOAL}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        answers = Vec::new();
        for q in &queries {
            answers.push((q.clone(), query(&base, q).await));
        }
        let complete = answers.iter().all(|(q, answer)| {
            !q.contains(SERVICE_METRIC)
                || q.contains("5..")
                || answer.as_ref().is_ok_and(|samples| {
                    let found: BTreeSet<String> = services_of(samples).into_iter().collect();
                    found.len() == SERVICES.len()
                })
        });
        if complete || started.elapsed() > DEADLINE {
            break;
        }
        assert_running(&mut server).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sources = query(
        &base,
        &format!(
            "count by (service) (count by (service, job, instance) ({SERVICE_METRIC}_count{{service=~\".*\"}}))"
        ),
    )
    .await;

    // Assert: every query answers, every series names a service, and the services' own metrics
    // show each service.
    for (q, answer) in &answers {
        let samples = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("Prometheus refused {q}: {e}"));
        let services = services_of(samples);
        for service in &services {
            assert!(
                SERVICES.contains(&service.as_str()),
                "{q}: a series of service {service:?} in {samples:?}"
            );
        }
        if q.contains(SERVICE_METRIC) && !q.contains("5..") {
            let found: BTreeSet<&str> = services.iter().map(String::as_str).collect();
            assert_eq!(
                found,
                BTreeSet::from(SERVICES),
                "{q} after {:?}",
                started.elapsed()
            );
        }
    }
    // Exactly one source (job and instance) per service: no service is stored twice.
    let sources = sources.expect("the count of sources");
    let mut per_service: Vec<(String, String)> = sources
        .iter()
        .map(|s| {
            (
                s["metric"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                s["value"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    per_service.sort();
    let expected: Vec<(String, String)> = SERVICES
        .iter()
        .map(|s| ((*s).to_owned(), "1".to_owned()))
        .collect();
    assert_eq!(
        per_service, expected,
        "sources of {SERVICE_METRIC} per service"
    );
    let _ = server.kill().await;
}
