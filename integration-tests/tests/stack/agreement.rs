//! Every stack file agrees on the ports of docs/architecture.md section 6 (held in [`crate::ports`]): what
//! compose publishes, where the collector listens and exports, what Prometheus scrapes, where
//! Grafana's datasources and Tempo point, and foundry's documented default endpoints.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::ports;
use crate::support::{
    self, COLLECTOR_CONFIG, COLLECTOR_PRODUCTION_CONFIG, COLLECTOR_SERVICE, GRAFANA_DATASOURCES,
    PROMETHEUS_CONFIG, Published, TEMPO_CONFIG, at, host_port, str_at,
};

fn published(host: u16, container: u16) -> Published {
    Published {
        host_ip: ports::BIND_ADDRESS.to_owned(),
        host,
        container,
    }
}

#[test]
fn compose_publishes_the_section_6_ports_from_the_right_services() {
    // Arrange
    let compose = support::compose();
    let expected: BTreeMap<&str, Vec<Published>> = BTreeMap::from([
        (
            COLLECTOR_SERVICE,
            vec![
                published(ports::OTLP_GRPC, ports::OTLP_GRPC),
                published(ports::OTLP_HTTP, ports::OTLP_HTTP),
                published(ports::COLLECTOR_METRICS, ports::COLLECTOR_METRICS),
                published(ports::COLLECTOR_EXPORTER, ports::COLLECTOR_EXPORTER),
                published(ports::COLLECTOR_HEALTH, ports::COLLECTOR_HEALTH),
            ],
        ),
        (
            "jaeger",
            vec![
                published(ports::JAEGER_UI, ports::JAEGER_UI),
                published(ports::JAEGER_THRIFT_HTTP, ports::JAEGER_THRIFT_HTTP),
            ],
        ),
        (
            "prometheus",
            vec![published(ports::PROMETHEUS, ports::PROMETHEUS)],
        ),
        ("tempo", vec![published(ports::TEMPO, ports::TEMPO)]),
        (
            "grafana",
            vec![published(ports::GRAFANA, ports::GRAFANA_CONTAINER)],
        ),
        ("sophia", vec![published(ports::SOPHIA, ports::SOPHIA)]),
        ("hermes", vec![published(ports::HERMES, ports::HERMES)]),
        ("apollo", vec![published(ports::APOLLO, ports::APOLLO)]),
    ]);

    // Act
    let actual: BTreeMap<String, Vec<Published>> = support::service_names(&compose)
        .into_iter()
        .map(|name| {
            let ports = support::published(&compose, &name);
            (name, ports)
        })
        .collect();

    // Assert: exactly these services, each publishing exactly its ports (sorted like `published`).
    let expected: BTreeMap<String, Vec<Published>> = expected
        .into_iter()
        .map(|(name, mut ports)| {
            ports.sort();
            (name.to_owned(), ports)
        })
        .collect();
    assert_eq!(actual, expected);
}

/// Where a collector config listens, and where its trace exporters send.
fn check_collector_ports(file: &str) {
    let config = support::yaml(file);
    let listen = |path: &[&str], port: u16| {
        let (host, actual) = host_port(str_at(&config, path));
        assert_eq!(actual, port, "{file}: {}", path.join("."));
        assert_eq!(
            host,
            "0.0.0.0",
            "{file}: {} must listen on every interface of the container",
            path.join(".")
        );
    };
    listen(
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
        ports::OTLP_GRPC,
    );
    listen(
        &["receivers", "otlp", "protocols", "http", "endpoint"],
        ports::OTLP_HTTP,
    );
    listen(
        &["exporters", "prometheus", "endpoint"],
        ports::COLLECTOR_EXPORTER,
    );
    listen(
        &["extensions", "health_check", "endpoint"],
        ports::COLLECTOR_HEALTH,
    );
    assert!(
        support::strings(at(&config, &["service"]).get("extensions"))
            .contains(&"health_check".to_owned()),
        "{file}: health_check is defined but not enabled in service.extensions"
    );

    let readers = at(&config, &["service", "telemetry", "metrics", "readers"])
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: service.telemetry.metrics.readers is not a list"));
    let own_metrics: Vec<(String, u64)> = readers
        .iter()
        .filter_map(|r| r.get("pull")?.get("exporter")?.get("prometheus"))
        .map(|p| {
            let host = p
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (
                host,
                p.get("port").and_then(Value::as_u64).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        own_metrics,
        vec![("0.0.0.0".to_owned(), u64::from(ports::COLLECTOR_METRICS))],
        "{file}: the collector's own metrics must be served for Prometheus"
    );

    // Jaeger is configured by its image only; its OTLP port is the standard one.
    let (host, port) = host_port(str_at(
        &config,
        &["exporters", "otlp_grpc/jaeger", "endpoint"],
    ));
    assert_eq!(
        (host.as_str(), port),
        ("jaeger", ports::OTLP_GRPC),
        "{file}: otlp_grpc/jaeger"
    );

    let tempo = support::yaml(TEMPO_CONFIG);
    let tempo_otlp = host_port(str_at(
        &tempo,
        &[
            "distributor",
            "receivers",
            "otlp",
            "protocols",
            "grpc",
            "endpoint",
        ],
    ))
    .1;
    let (host, port) = host_port(str_at(
        &config,
        &["exporters", "otlp_grpc/tempo", "endpoint"],
    ));
    assert_eq!(
        (host.as_str(), port),
        ("tempo", tempo_otlp),
        "{file}: otlp_grpc/tempo must reach Tempo's OTLP receiver"
    );

    let compose = support::compose();
    for backend in ["jaeger", "tempo"] {
        support::service(&compose, backend);
    }
}

#[test]
fn collector_listens_and_exports_on_the_section_6_ports() {
    check_collector_ports(COLLECTOR_CONFIG);
}

#[test]
fn production_collector_listens_and_exports_on_the_section_6_ports() {
    check_collector_ports(COLLECTOR_PRODUCTION_CONFIG);
}

/// (job, target, labels) for every static target of the Prometheus config.
fn scrape_targets() -> Vec<(String, String, BTreeMap<String, String>)> {
    let config = support::yaml(PROMETHEUS_CONFIG);
    let mut out = Vec::new();
    for job in at(&config, &["scrape_configs"])
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let name = str_at(job, &["job_name"]).to_owned();
        for group in job
            .get("static_configs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let labels: BTreeMap<String, String> = group
                .get("labels")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect();
            for target in support::strings(group.get("targets")) {
                out.push((name.clone(), target, labels.clone()));
            }
        }
    }
    out
}

#[test]
fn prometheus_scrapes_the_collector_and_the_three_services() {
    // Arrange
    let compose = support::compose();
    let collector_ports = support::container_ports(&compose, COLLECTOR_SERVICE);
    let targets = scrape_targets();
    let target_of = |host: &str, port: u16| {
        targets
            .iter()
            .find(|(_, t, _)| *t == format!("{host}:{port}"))
            .unwrap_or_else(|| {
                panic!("Prometheus does not scrape {host}:{port}; it scrapes {targets:?}")
            })
    };

    // Act / Assert: the collector, by its compose service name and container ports.
    for port in [ports::COLLECTOR_METRICS, ports::COLLECTOR_EXPORTER] {
        assert!(
            collector_ports.contains(&port),
            "compose's collector does not listen on {port}"
        );
        target_of(COLLECTOR_SERVICE, port);
    }
    // Each service twice under one label: on the host, or as the compose service of that name
    // listening on its port (profile "services"); only one of the two runs at a time.
    for (service, port) in support::SERVICES {
        for host in ["host.docker.internal", service] {
            let (job, _, labels) = target_of(host, port);
            assert_eq!(job, "logos-services", "{host}:{port}");
            assert_eq!(
                labels.get("service").map(String::as_str),
                Some(service),
                "label of {host}:{port}"
            );
        }
        assert!(
            support::container_ports(&compose, service).contains(&port),
            "compose's {service} does not listen on {port}"
        );
        assert!(
            support::runs_in(&compose, service, "services")
                && !support::runs_in(&compose, service, "jaeger"),
            "{service} runs in the services profile only"
        );
    }
    assert_eq!(targets.len(), 8, "unexpected scrape targets: {targets:?}");
    // host.docker.internal resolves on Linux only with this mapping.
    let extra_hosts = support::strings(support::service(&compose, "prometheus").get("extra_hosts"));
    assert!(
        extra_hosts.contains(&"host.docker.internal:host-gateway".to_owned()),
        "prometheus needs extra_hosts host.docker.internal:host-gateway, has {extra_hosts:?}"
    );
}

#[test]
fn grafana_and_tempo_point_at_the_compose_services_ports() {
    // Arrange
    let compose = support::compose();
    let datasources = support::yaml(GRAFANA_DATASOURCES);
    let tempo = support::yaml(TEMPO_CONFIG);
    let url_of = |kind: &str| -> String {
        at(&datasources, &["datasources"])
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|d| d.get("type").and_then(Value::as_str) == Some(kind))
            .map(|d| str_at(d, &["url"]).to_owned())
            .unwrap_or_else(|| panic!("no {kind} datasource"))
    };

    // Act
    let prometheus = host_port(&url_of("prometheus"));
    let tempo_url = host_port(&url_of("tempo"));
    let tempo_http = at(&tempo, &["server", "http_listen_port"]).as_u64();
    let remote_write = at(&tempo, &["metrics_generator", "storage", "remote_write"])
        .as_sequence()
        .and_then(|s| s.first())
        .map(|w| host_port(str_at(w, &["url"])))
        .expect("Tempo remote-writes its service graph");

    // Assert
    assert_eq!(prometheus, ("prometheus".to_owned(), ports::PROMETHEUS));
    assert!(support::container_ports(&compose, "prometheus").contains(&ports::PROMETHEUS));
    assert_eq!(tempo_url, ("tempo".to_owned(), ports::TEMPO));
    assert!(support::container_ports(&compose, "tempo").contains(&ports::TEMPO));
    assert_eq!(
        tempo_http,
        Some(u64::from(ports::TEMPO)),
        "tempo.yaml server.http_listen_port"
    );
    assert_eq!(
        remote_write,
        ("prometheus".to_owned(), ports::PROMETHEUS),
        "Tempo's remote write"
    );
}

#[test]
fn foundry_default_endpoints_are_the_collectors_otlp_ports() {
    for (endpoint, port) in [
        (
            foundry::testing::DEFAULT_OTLP_GRPC_ENDPOINT,
            ports::OTLP_GRPC,
        ),
        (
            foundry::testing::DEFAULT_OTLP_HTTP_ENDPOINT,
            ports::OTLP_HTTP,
        ),
    ] {
        assert!(
            endpoint.starts_with("http://"),
            "{endpoint}: the local collector speaks plain HTTP"
        );
        assert_eq!(
            host_port(endpoint),
            ("localhost".to_owned(), port),
            "{endpoint}"
        );
        assert_eq!(
            format!("{endpoint}/"),
            ports::stack_url(port, "/"),
            "the live tests' URL for {endpoint}"
        );
    }
}

#[test]
fn healthchecks_ask_ports_their_service_listens_on() {
    let compose = support::compose();
    for name in support::service_names(&compose) {
        let Some(test) = support::service(&compose, &name)
            .get("healthcheck")
            .map(|h| at(h, &["test"]))
        else {
            continue;
        };
        let url = support::strings(Some(test))
            .into_iter()
            .find(|arg| arg.starts_with("http://"))
            .unwrap_or_else(|| panic!("{name}: healthcheck without a URL"));
        let (host, port) = host_port(&url);
        assert_eq!(host, "localhost", "{name}: healthcheck {url}");
        assert!(
            support::container_ports(&compose, &name).contains(&port),
            "{name}: healthcheck {url} asks a port the service does not publish"
        );
    }
}
