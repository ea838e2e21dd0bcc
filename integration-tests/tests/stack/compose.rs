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
