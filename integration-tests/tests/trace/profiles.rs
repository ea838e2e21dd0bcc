//! Environment profiles through the real binaries: a service takes its telemetry from the profile
//! of the `logos.toml` that `LOGOS_CONFIG` names, an environment variable or flag still wins, a bad
//! profile stops it with the file, key and line, and `apollo config` says where each value of
//! each service comes from.

use std::{process::Stdio, time::Duration};

use foundry::testing::{AttributeValue, OtlpReceiver};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{Export, Service, TempDir, apollo, binary, http};

const ENVIRONMENT: &str = "deployment.environment.name";
const DEADLINE: Duration = Duration::from_secs(20);

/// A `logos.toml` in `dir` whose `staging` profile exports to `endpoint`.
fn staging_file(dir: &TempDir, endpoint: &str) -> String {
    let path = dir.path().join("logos.toml");
    std::fs::write(
        &path,
        format!(
            "[profiles.dev]\n\n\
             [profiles.staging.telemetry]\n\
             endpoint = \"{endpoint}\"\n\
             resource_attributes = {{ \"{ENVIRONMENT}\" = \"staging\" }}\n\
             batch = {{ schedule_delay_ms = 100 }}\n\n\
             [profiles.staging.hermes]\n\
             port = 1\n\
             url = \"http://hermes.staging:17000\"\n"
        ),
    )
    .expect("write logos.toml");
    path.display().to_string()
}

/// The profile's environment for a child: the file and the profile, and no endpoint of its own.
fn profile_export(file: &str) -> Export {
    Export::to("http://127.0.0.1:9")
        .without("OTEL_EXPORTER_OTLP_ENDPOINT")
        .without("OTEL_BSP_SCHEDULE_DELAY")
        .with("LOGOS_CONFIG", file)
        .with("LOGOS_ENV", "staging")
}

/// The value of `deployment.environment.name` in `service`'s resource, once it exported.
async fn environment_of(receiver: &OtlpReceiver, service: &str) -> Option<String> {
    receiver
        .wait_until(DEADLINE, |r| r.resource(service).is_some())
        .await;
    match receiver.resource(service)?.get(ENVIRONMENT)? {
        AttributeValue::String(value) => Some(value.clone()),
        other => panic!("{ENVIRONMENT} is {other:?}"),
    }
}

async fn embed(hermes: &Service) {
    let response = http()
        .post(format!("{}/embed_text", hermes.url))
        .json(&json!({"text": "a red block"}))
        .send()
        .await
        .expect("hermes answers");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_service_takes_its_telemetry_from_the_profile_under_the_environment() {
    // Arrange: only the profile says where to export; the second hermes overrides its attributes.
    let receiver = OtlpReceiver::start().await.expect("receiver");
    let dir = TempDir::new("logos-profile");
    let file = staging_file(&dir, &receiver.grpc_endpoint());
    let from_profile = Service::hermes(&profile_export(&file)).await;
    let overridden = Service::hermes(
        &profile_export(&file)
            .with("OTEL_SERVICE_NAME", "hermes-env")
            .with(
                "OTEL_RESOURCE_ATTRIBUTES",
                &format!("{ENVIRONMENT}=from-env"),
            ),
    )
    .await;

    // Act
    embed(&from_profile).await;
    embed(&overridden).await;

    // Assert: the profile's endpoint and attributes, the variable over the profile, and the
    // flag (`--port 0`) over the profile's port 1.
    assert_eq!(
        environment_of(&receiver, "hermes").await.as_deref(),
        Some("staging")
    );
    assert_eq!(
        environment_of(&receiver, "hermes-env").await.as_deref(),
        Some("from-env")
    );
    assert!(!from_profile.url.ends_with(":1"), "{}", from_profile.url);
}

#[tokio::test]
async fn a_bad_profile_stops_a_service_naming_the_file_the_key_and_the_line() {
    // Arrange
    let dir = TempDir::new("logos-profile-bad");
    let file = dir.path().join("logos.toml");
    std::fs::write(&file, "[profiles.dev.telemetry]\nsampler = \"sometimes\"\n").unwrap();
    let mut command = Command::new(binary("hermes"));
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("LOGOS_CONFIG", &file)
        .env_remove("LOGOS_ENV")
        .env_remove("OTEL_TRACES_SAMPLER")
        .stdin(Stdio::null())
        .kill_on_drop(true);

    // Act
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("hermes stops at once")
        .expect("hermes runs");

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never listened");
    for part in [
        file.display().to_string().as_str(),
        "line 2",
        "profiles.dev.telemetry.sampler",
        "OTEL_TRACES_SAMPLER",
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
}

#[tokio::test]
async fn apollo_config_says_where_each_value_comes_from() {
    // Arrange
    let dir = TempDir::new("logos-profile-config");
    let file = staging_file(&dir, "http://collector.staging:4317");
    let export = profile_export(&file)
        .with("OTEL_TRACES_SAMPLER", "always_on")
        .with("SOPHIA_API_KEY", "s3cret");

    // Act: the harness gives apollo --sophia-url and --hermes-url as flags.
    let run = apollo(
        &export,
        "http://sophia.flag:47000",
        "http://hermes.flag:17000",
        &["config", "--env", "staging"],
    )
    .await;

    // Assert
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.json["trace_id"], Value::Null);
    let result = run.result();
    assert_eq!(result["profile"], "staging");
    assert_eq!(result["file"], file.as_str());
    let setting = |service: &str, variable: &str| -> (String, Value) {
        let found = result["services"][service]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["variable"] == variable))
            .unwrap_or_else(|| panic!("{service} has no {variable}: {result}"));
        (
            found["source"].as_str().unwrap_or_default().to_owned(),
            found["value"].clone(),
        )
    };
    let cases = [
        (
            "apollo",
            "SOPHIA_URL",
            "flag",
            json!("http://sophia.flag:47000"),
        ),
        ("apollo", "OTEL_TRACES_SAMPLER", "env", json!("always_on")),
        ("apollo", "SOPHIA_API_KEY", "env", json!("***")),
        (
            "hermes",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "profile",
            json!("http://collector.staging:4317"),
        ),
        ("hermes", "HERMES_PORT", "profile", json!("1")),
        (
            "sophia",
            "HERMES_URL",
            "profile",
            json!("http://hermes.staging:17000"),
        ),
        ("sophia", "SOPHIA_PORT", "default", json!("47000")),
        ("sophia", "SOPHIA_API_TOKEN", "default", Value::Null),
    ];
    for (service, variable, source, value) in cases {
        assert_eq!(
            setting(service, variable),
            (source.to_owned(), value),
            "{service} {variable}"
        );
    }
    assert!(!run.json.to_string().contains("s3cret"));
}
