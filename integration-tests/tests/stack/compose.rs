//! The compose file's shape: which profile runs which service (`make otel-up` = collector, Jaeger,
//! Prometheus; `make otel-up-grafana` = collector, Tempo, Grafana, Prometheus), pinned image
//! versions, `restart: unless-stopped`, one named network, and a healthcheck wherever the image
//! has a tool to run one.

use serde_yaml::Value;

use crate::support::{self, COLLECTOR_SERVICE, at, strings};

/// Images without a shell or an HTTP client, so compose cannot health-check them.
const NO_HEALTHCHECK_TOOL: [&str; 1] = [COLLECTOR_SERVICE];

fn running(compose: &Value, profile: &str) -> Vec<String> {
    let mut names: Vec<String> = support::service_names(compose)
        .into_iter()
        .filter(|name| support::runs_in(compose, name, profile))
        .collect();
    names.sort();
    names
}

#[test]
fn each_profile_runs_its_backends_with_the_collector_and_prometheus() {
    let compose = support::compose();
    assert_eq!(
        running(&compose, "jaeger"),
        ["jaeger", COLLECTOR_SERVICE, "prometheus"]
    );
    assert_eq!(
        running(&compose, "grafana"),
        ["grafana", COLLECTOR_SERVICE, "prometheus", "tempo"]
    );
    assert_eq!(
        running(&compose, "services"),
        [
            "apollo",
            "hermes",
            COLLECTOR_SERVICE,
            "prometheus",
            "sophia"
        ]
    );
}

#[test]
fn the_services_run_the_image_of_the_dockerfile_and_export_to_the_collector() {
    let compose = support::compose();
    let collector_ports = support::container_ports(&compose, COLLECTOR_SERVICE);
    for (name, port) in support::SERVICES {
        // Arrange
        let service = support::service(&compose, name);
        let command = strings(service.get("command"));
        let endpoint = support::str_at(service, &["environment", "OTEL_EXPORTER_OTLP_ENDPOINT"]);

        // Act
        let (host, otlp_port) = support::host_port(endpoint);

        // Assert: built here, the binary of its name, listening where compose publishes.
        assert!(
            service.get("build").is_some(),
            "{name}: build from ./Dockerfile"
        );
        assert_eq!(
            command.first().map(String::as_str),
            Some(name),
            "{name}: {command:?}"
        );
        let joined = command.join(" ").replace('=', " ");
        assert!(joined.contains("--host 0.0.0.0"), "{name}: {command:?}");
        assert!(
            joined.contains(&format!("--port {port}")),
            "{name}: {command:?}"
        );
        assert_eq!(host, COLLECTOR_SERVICE, "{name}: {endpoint}");
        assert!(collector_ports.contains(&otlp_port), "{name}: {endpoint}");
    }
    // The calls between them go to the compose services' names and ports.
    for (name, flag, target) in [
        ("sophia", "--hermes-url", "http://hermes:17000"),
        ("apollo", "--sophia-url", "http://sophia:47000"),
        ("apollo", "--hermes-url", "http://hermes:17000"),
    ] {
        let joined = strings(support::service(&compose, name).get("command"))
            .join(" ")
            .replace('=', " ");
        assert!(
            joined.contains(&format!("{flag} {target}")),
            "{name}: {joined}"
        );
    }
}

#[test]
fn grafana_gives_anonymous_visitors_the_viewer_role() {
    // Arrange
    let compose = support::compose();
    let environment = at(support::service(&compose, "grafana"), &["environment"]);

    // Act
    let setting = |name: &str| support::str_at(environment, &[name]).to_owned();

    // Assert: never Admin (nor Editor) without a login.
    assert_eq!(setting("GF_AUTH_ANONYMOUS_ORG_ROLE"), "Viewer");
    assert_eq!(setting("GF_AUTH_ANONYMOUS_ENABLED"), "true");
}

#[test]
fn services_are_pinned_restarted_and_on_one_network() {
    let compose = support::compose();
    let networks = support::keys(compose.get("networks"));
    assert_eq!(networks.len(), 1, "one named network, found {networks:?}");
    for name in support::service_names(&compose) {
        let service = support::service(&compose, &name);
        let image = support::str_at(service, &["image"]);
        let tag = image
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        assert!(
            tag.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == 'v')
                && tag.contains('.'),
            "{name}: pin a released version, not {image:?}"
        );
        assert_eq!(
            support::str_at(service, &["restart"]),
            "unless-stopped",
            "{name}"
        );
        assert_eq!(strings(service.get("networks")), networks, "{name}");
        let has_healthcheck = service.get("healthcheck").is_some();
        assert_eq!(
            has_healthcheck,
            !NO_HEALTHCHECK_TOOL.contains(&name.as_str()),
            "{name}: healthcheck"
        );
    }
}

#[test]
fn grafana_waits_for_healthy_datasources_of_its_profile() {
    let compose = support::compose();
    let depends = at(support::service(&compose, "grafana"), &["depends_on"]);
    for dependency in support::keys(Some(depends)) {
        assert_eq!(
            support::str_at(depends, &[&dependency, "condition"]),
            "service_healthy",
            "grafana -> {dependency}"
        );
        assert!(
            support::runs_in(&compose, &dependency, "grafana"),
            "grafana depends on {dependency}, which its profile does not run"
        );
    }
}
