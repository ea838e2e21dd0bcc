//! The OpenAPI contract, checked from outside: schemathesis (PyPI) reads each service's
//! `/openapi.json`, generates requests from it (a fixed seed, a bounded number per operation) and
//! sends them to the real binaries, Sophia with a real Hermes behind it and `apollo serve` with
//! both. No answer may be a 5xx, have a status the document does not list for the operation, or
//! a body or content type outside the document's schema. Without a `schemathesis` on the PATH the
//! test says why and skips, unless `REQUIRE_SCHEMATHESIS=1` (CI).

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::Command;

use crate::harness::{Export, Service, TempDir};

/// The checks that must pass: no server error, and every answer as the document says.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";
/// Requests generated per operation and phase: enough to reach every documented error, few
/// enough for the whole run to take about a minute on two cores.
const MAX_EXAMPLES: &str = "30";
/// The seed: the same requests on every run, so a failure reproduces.
const SEED: &str = "20261206";
/// How long one service's run may take before the test gives up on it.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// `schemathesis` on the PATH, if there is one.
fn schemathesis_binary() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("schemathesis"))
        .find(|path| path.is_file())
}

/// Runs schemathesis against `service`; its report when it found something.
async fn check(schemathesis: &PathBuf, service: &Service, workdir: &TempDir) -> Option<String> {
    let document = format!("{}/openapi.json", service.url);
    let run = Command::new(schemathesis)
        .args(["run", &document, "--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "20"])
        // Hypothesis keeps its example database in the working directory.
        .current_dir(workdir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "schemathesis against {} took over {RUN_DEADLINE:?}",
                service.name
            )
        })
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", schemathesis.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|line| line.contains("generated"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    eprintln!("schemathesis, {}: {summary}", service.name);
    (!output.status.success()).then(|| {
        format!(
            "schemathesis found problems in {} ({}):\n{stdout}\n{}\n{}",
            service.name,
            output.status,
            String::from_utf8_lossy(&output.stderr),
            service.log()
        )
    })
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_documents() {
    let Some(schemathesis) = schemathesis_binary() else {
        let required = std::env::var("REQUIRE_SCHEMATHESIS").as_deref() == Ok("1");
        assert!(
            !required,
            "REQUIRE_SCHEMATHESIS=1 but there is no `schemathesis` on the PATH"
        );
        eprintln!(
            "skipped: no `schemathesis` on the PATH (pip install --only-binary=:all: schemathesis)"
        );
        return;
    };

    // Arrange: the three services, each with what it calls, exporting nothing.
    let export = Export::none();
    let hermes = Service::hermes(&export).await;
    let sophia = Service::sophia(&export, &hermes.url).await;
    let apollo = Service::apollo_serve(&export, &sophia.url, &hermes.url).await;
    let workdir = TempDir::new("schemathesis");

    // Act: one service after the other, so each run has the machine to itself.
    let mut reports = Vec::new();
    for service in [&hermes, &sophia, &apollo] {
        reports.extend(check(&schemathesis, service, &workdir).await);
    }

    // Assert
    assert!(reports.is_empty(), "{}", reports.join("\n\n"));
}
