//! Grafana's provisioning holds together: the dashboard is valid JSON whose panels use datasources
//! that are provisioned, it covers the three services (HTTP metrics, span metrics, TraceQL tables),
//! Tempo and Prometheus link to each other, and the dashboard provider reads the directory that
//! compose mounts.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value;

use crate::support::{
    self, GRAFANA_DASHBOARD, GRAFANA_DASHBOARD_PROVIDER, GRAFANA_DATASOURCES, at, str_at, strings,
};

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: Option<&'a Json>, out: &mut Vec<&'a Json>) {
        for panel in list.and_then(Json::as_array).into_iter().flatten() {
            out.push(panel);
            walk(panel.get("panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard.get("panels"), &mut out);
    out
}

fn datasource_uid(value: &Json) -> Option<&str> {
    value.get("datasource")?.get("uid")?.as_str()
}

/// (type, uid) of every provisioned datasource.
fn provisioned() -> Vec<(String, String)> {
    let file = support::yaml(GRAFANA_DATASOURCES);
    at(&file, &["datasources"])
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                str_at(d, &["type"]).to_owned(),
                str_at(d, &["uid"]).to_owned(),
            )
        })
        .collect()
}

fn datasource(kind: &str) -> Value {
    let file = support::yaml(GRAFANA_DATASOURCES);
    at(&file, &["datasources"])
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|d| d.get("type").and_then(Value::as_str) == Some(kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} datasource"))
}

#[test]
fn dashboard_panels_use_provisioned_datasources() {
    // Arrange
    let dashboard = support::json(GRAFANA_DASHBOARD);
    let uids: BTreeSet<String> = provisioned().into_iter().map(|(_, uid)| uid).collect();
    let all = panels(&dashboard);
    assert!(!all.is_empty(), "the dashboard has no panels");

    // Act / Assert
    let mut ids = BTreeSet::new();
    for panel in all {
        let title = panel.get("title").and_then(Json::as_str).unwrap_or("?");
        let id = panel.get("id").and_then(Json::as_u64);
        assert!(
            id.is_some_and(|id| ids.insert(id)),
            "panel {title}: missing or repeated id"
        );
        if panel.get("type").and_then(Json::as_str) == Some("row") {
            continue;
        }
        let uid = datasource_uid(panel)
            .unwrap_or_else(|| panic!("panel {title} names no datasource uid"));
        assert!(
            uids.contains(uid),
            "panel {title}: datasource {uid} is not provisioned ({uids:?})"
        );
        let targets = panel.get("targets").and_then(Json::as_array);
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {title} has no query"
        );
        for target in targets.into_iter().flatten() {
            if let Some(uid) = datasource_uid(target) {
                assert!(
                    uids.contains(uid),
                    "panel {title}: query datasource {uid} is not provisioned"
                );
            }
        }
    }
}

#[test]
fn dashboard_shows_red_metrics_and_traces_of_the_three_services() {
    // Arrange
    let dashboard = support::json(GRAFANA_DASHBOARD);
    let queries: Vec<String> = panels(&dashboard)
        .into_iter()
        .flat_map(|p| {
            p.get("targets")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|t| {
            t.get("expr")
                .or_else(|| t.get("query"))
                .and_then(Json::as_str)
                .map(str::to_owned)
        })
        .collect();
    let has = |fragment: &str| queries.iter().any(|q| q.contains(fragment));

    // Act / Assert: rate, errors and p50/p95/p99 from both metric sources...
    for histogram in [
        "http_server_request_duration_seconds_bucket",
        "traces_span_metrics_duration_seconds_bucket",
    ] {
        for quantile in ["0.5", "0.95", "0.99"] {
            let prefix = format!("histogram_quantile({quantile}, ");
            assert!(
                queries
                    .iter()
                    .any(|q| q.starts_with(&prefix) && q.contains(histogram)),
                "no {quantile} quantile of {histogram}"
            );
        }
    }
    assert!(
        has("http_server_request_duration_seconds_count")
            && has("http_response_status_code=~\"5..\"")
    );
    assert!(has("traces_span_metrics_calls_total") && has("status_code=\"STATUS_CODE_ERROR\""));
    assert!(has("http_route"), "HTTP panels break down by route");
    // ...and recent traces of the three services' main spans.
    for span in ["sophia.plan", "hermes.llm", "apollo.command"] {
        assert!(
            queries.contains(&format!("{{name=\"{span}\"}}")),
            "no TraceQL table for {span}"
        );
    }
}

#[test]
fn tempo_and_prometheus_datasources_link_to_each_other() {
    // Arrange
    let uid_of = |kind: &str| {
        provisioned()
            .into_iter()
            .find(|(k, _)| k == kind)
            .map(|(_, uid)| uid)
            .unwrap_or_else(|| panic!("no {kind} datasource"))
    };
    let (prometheus_uid, tempo_uid) = (uid_of("prometheus"), uid_of("tempo"));
    let tempo = datasource("tempo");
    let prometheus = datasource("prometheus");

    // Act
    let traces_to_metrics = str_at(&tempo, &["jsonData", "tracesToMetrics", "datasourceUid"]);
    let service_map = str_at(&tempo, &["jsonData", "serviceMap", "datasourceUid"]);
    let exemplar_targets: Vec<String> =
        at(&prometheus, &["jsonData", "exemplarTraceIdDestinations"])
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|d| str_at(d, &["datasourceUid"]).to_owned())
            .collect();

    // Assert
    assert_eq!(traces_to_metrics, prometheus_uid);
    assert_eq!(service_map, prometheus_uid);
    assert_eq!(exemplar_targets, [tempo_uid]);
}

#[test]
fn dashboard_provider_reads_the_directory_compose_mounts() {
    // Arrange
    let provider = support::yaml(GRAFANA_DASHBOARD_PROVIDER);
    let compose = support::compose();
    let volumes = strings(support::service(&compose, "grafana").get("volumes"));
    let dashboards_dir = GRAFANA_DASHBOARD
        .rsplit_once('/')
        .map(|(dir, _)| dir)
        .unwrap_or_default();

    // Act
    let path = at(&provider, &["providers"])
        .as_sequence()
        .and_then(|p| p.first())
        .map(|p| str_at(p, &["options", "path"]).to_owned())
        .expect("a dashboard provider");

    // Assert
    let mount = format!("./{dashboards_dir}:{path}:ro");
    assert!(
        volumes.contains(&mount),
        "grafana must mount {mount}, has {volumes:?}"
    );
    for file in [GRAFANA_DATASOURCES, GRAFANA_DASHBOARD_PROVIDER] {
        let (dir, _) = file.rsplit_once('/').unwrap_or_default();
        let kind = dir.rsplit('/').next().unwrap_or_default();
        let provisioning = format!("./{dir}:/etc/grafana/provisioning/{kind}:ro");
        assert!(
            volumes.contains(&provisioning),
            "grafana must mount {provisioning}, has {volumes:?}"
        );
    }
}

#[test]
fn all_services_never_match_a_series_without_a_service() {
    // Arrange
    let dashboard = support::json(GRAFANA_DASHBOARD);
    let variable = dashboard["templating"]["list"]
        .as_array()
        .and_then(|vars| vars.iter().find(|v| v["name"] == "service"))
        .expect("the service variable")
        .clone();

    // Act
    let all = variable["allValue"].as_str().unwrap_or_default();

    // Assert: `.*` also matches a missing label, which drew a blank-service line per panel.
    assert_eq!(variable["includeAll"], true);
    assert_eq!(all, ".+", "\"All\" must match a non-empty service only");
}
