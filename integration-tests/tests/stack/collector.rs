//! The collector configs are complete: every component a pipeline names is defined, every signal
//! has a pipeline, the span_metrics connector links a traces pipeline to a metrics pipeline with
//! exemplars on, memory_limiter comes first and batch last. Checked for the development config as
//! compose runs it (with the trace-exporter override of compose and of each make target, and
//! Apollo's feed off or on) and for the production variant, whose traces are tail-sampled after the
//! span metrics are taken. The Prometheus exporter gets the span metrics only: the services'
//! metrics reach Prometheus by its scrape of their `/metrics`, one path.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::{Mapping, Value};

use crate::ports;
use crate::support::{
    self, COLLECTOR_CONFIG, COLLECTOR_PRODUCTION_CONFIG, COLLECTOR_SERVICE, STACK_MK, at, keys,
    str_at, strings,
};

/// The compose variable that narrows the traces pipeline's exporters.
const EXPORTERS_VAR: &str = "OTEL_COLLECTOR_TRACES_EXPORTERS";
/// The compose variable that turns Apollo's feed on.
const APOLLO_VAR: &str = "OTEL_COLLECTOR_APOLLO";
/// The exporter of Apollo's feed.
const APOLLO_EXPORTER: &str = "otlp_grpc/apollo";
/// Where the collector's container finds the file it merges for Apollo's feed.
const APOLLO_MOUNT: &str = "/etc/otelcol-contrib/apollo.yaml";
const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

/// The type of a component id: `otlp` for `otlp_grpc/jaeger`.
pub fn kind(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// Everything wrong with a collector config, as sentences (empty: well formed): its pipelines and
/// a span_metrics connector that feeds a metrics pipeline with exemplars.
fn problems(config: &Value) -> Vec<String> {
    let mut out = pipeline_problems(config);
    out.extend(span_metrics_problems(config));
    out
}

/// What is wrong with a collector config's pipelines: components a pipeline names but nobody
/// defines, a signal without a pipeline, a connector used on one side only, memory_limiter not
/// first or batch not last, an extension enabled but not defined.
pub fn pipeline_problems(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let defined =
        |section: &str| -> BTreeSet<String> { keys(config.get(section)).into_iter().collect() };
    let (receivers, processors, exporters, connectors, extensions) = (
        defined("receivers"),
        defined("processors"),
        defined("exporters"),
        defined("connectors"),
        defined("extensions"),
    );
    let Some(pipelines) = config
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(Value::as_mapping)
    else {
        return vec!["no service.pipelines".to_owned()];
    };

    let mut connector_out: BTreeSet<(String, String)> = BTreeSet::new(); // (connector, signal)
    let mut connector_in: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, pipeline) in pipelines {
        let name = name.as_str().unwrap_or_default();
        let signal = kind(name);
        if !SIGNALS.contains(&signal) {
            out.push(format!("pipeline {name}: unknown signal {signal}"));
        }
        let list = |role: &str| strings(pipeline.get(role));
        let (ins, procs, outs) = (list("receivers"), list("processors"), list("exporters"));
        if ins.is_empty() || outs.is_empty() {
            out.push(format!("pipeline {name}: needs receivers and exporters"));
        }
        for r in &ins {
            if connectors.contains(r) {
                connector_in.insert((r.clone(), signal.to_owned()));
            } else if !receivers.contains(r) {
                out.push(format!("pipeline {name}: receiver {r} is not defined"));
            }
        }
        for p in &procs {
            if !processors.contains(p) {
                out.push(format!("pipeline {name}: processor {p} is not defined"));
            }
        }
        for e in &outs {
            if connectors.contains(e) {
                connector_out.insert((e.clone(), signal.to_owned()));
            } else if !exporters.contains(e) {
                out.push(format!("pipeline {name}: exporter {e} is not defined"));
            }
        }
        if procs.first().map(String::as_str) != Some("memory_limiter") {
            out.push(format!(
                "pipeline {name}: memory_limiter must come first, has {procs:?}"
            ));
        }
        if procs.last().map(|p| kind(p)) != Some("batch") {
            out.push(format!(
                "pipeline {name}: batch must come last, has {procs:?}"
            ));
        }
    }
    for signal in SIGNALS {
        if !pipelines
            .keys()
            .filter_map(Value::as_str)
            .any(|n| kind(n) == signal)
        {
            out.push(format!("no {signal} pipeline"));
        }
    }
    for c in &connectors {
        let used_out = connector_out.iter().any(|(id, _)| id == c);
        let used_in = connector_in.iter().any(|(id, _)| id == c);
        if used_out != used_in {
            out.push(format!(
                "connector {c} must be both an exporter and a receiver"
            ));
        }
    }
    for e in strings(config.get("service").and_then(|s| s.get("extensions"))) {
        if !extensions.contains(&e) {
            out.push(format!("extension {e} is enabled but not defined"));
        }
    }
    out
}

/// What is wrong with a config's span metrics: none, or a connector that does not link a traces
/// pipeline to a metrics pipeline with exemplars on.
pub fn span_metrics_problems(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let connectors: BTreeSet<String> = keys(config.get("connectors")).into_iter().collect();
    let pipelines = config
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let mut connector_out: BTreeSet<(String, String)> = BTreeSet::new();
    let mut connector_in: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, pipeline) in &pipelines {
        let signal = kind(name.as_str().unwrap_or_default()).to_owned();
        for r in strings(pipeline.get("receivers")) {
            connector_in.insert((r, signal.clone()));
        }
        for e in strings(pipeline.get("exporters")) {
            connector_out.insert((e, signal.clone()));
        }
    }
    let spanmetrics: Vec<&String> = connectors
        .iter()
        .filter(|c| kind(c) == "span_metrics")
        .collect();
    if spanmetrics.is_empty() {
        out.push("no span_metrics connector".to_owned());
    }
    for c in spanmetrics {
        if !connector_out.contains(&(c.clone(), "traces".to_owned())) {
            out.push(format!("{c} is not an exporter of a traces pipeline"));
        }
        if !connector_in.contains(&(c.clone(), "metrics".to_owned())) {
            out.push(format!("{c} is not a receiver of a metrics pipeline"));
        }
        let exemplars = config
            .get("connectors")
            .and_then(|cs| cs.get(c.as_str()))
            .and_then(|cfg| cfg.get("exemplars"))
            .and_then(|e| e.get("enabled"))
            .and_then(Value::as_bool);
        if exemplars != Some(true) {
            out.push(format!("{c}: exemplars.enabled must be true"));
        }
    }
    out
}

pub fn assert_well_formed(what: &str, config: &Value) {
    let found = problems(config);
    assert!(
        found.is_empty(),
        "{what} is not well formed:\n  {}",
        found.join("\n  ")
    );
}

/// Applies a `yaml:` config source (`a::b::c: value`), as the collector merges a later `--config`:
/// mappings merge, everything else (lists included) is replaced.
fn apply_yaml_source(config: &mut Value, source: &str) {
    let (path, value) = source
        .split_once(": ")
        .unwrap_or_else(|| panic!("yaml source {source:?} is not `key::path: value`"));
    let value: Value =
        serde_yaml::from_str(value).unwrap_or_else(|e| panic!("yaml source {source:?}: {e}"));
    let mut node = config;
    for key in path.split("::") {
        let map = node
            .as_mapping_mut()
            .unwrap_or_else(|| panic!("{path}: {key} is below a non-mapping"));
        node = map
            .entry(Value::from(key))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    *node = value;
}

/// The collector's command-line config sources in compose, with `vars` resolved.
fn compose_config_sources(vars: &BTreeMap<&str, &str>) -> Vec<String> {
    let compose = support::compose();
    strings(support::service(&compose, COLLECTOR_SERVICE).get("command"))
        .into_iter()
        .filter_map(|arg| {
            arg.strip_prefix("--config=")
                .map(|s| support::interpolate(s, vars))
        })
        .collect()
}

/// Merges `other` into `config` as the collector merges a later config file: mappings merge,
/// everything else (lists included) is replaced.
fn merge(config: &mut Value, other: Value) {
    match (config, other) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// The workspace file that compose mounts at `container_path` in the collector, with `vars`.
fn mounted_file(container_path: &str, vars: &BTreeMap<&str, &str>) -> String {
    let compose = support::compose();
    strings(support::service(&compose, COLLECTOR_SERVICE).get("volumes"))
        .iter()
        .map(|v| support::interpolate(v, vars))
        .find_map(|v| {
            let (host, rest) = v.split_once(':')?;
            (rest.trim_end_matches(":ro") == container_path)
                .then(|| host.trim_start_matches("./").to_owned())
        })
        .unwrap_or_else(|| panic!("compose mounts nothing at {container_path}"))
}

/// A collector config file as the collector merges it under compose, with `vars` resolved: the
/// file, then each later `--config` source in order (a `yaml:` one, or a mounted file).
fn effective_config(file: &str, vars: &BTreeMap<&str, &str>) -> Value {
    let mut config = support::yaml(file);
    for source in compose_config_sources(vars).into_iter().skip(1) {
        match source.strip_prefix("yaml:") {
            Some(yaml) => apply_yaml_source(&mut config, yaml),
            None => merge(&mut config, support::yaml(&mounted_file(&source, vars))),
        }
    }
    config
}

/// The pipelines (by name) that export to `exporter`.
fn pipelines_exporting_to(config: &Value, exporter: &str) -> Vec<String> {
    let pipelines = at(config, &["service", "pipelines"]);
    keys(Some(pipelines))
        .into_iter()
        .filter(|p| strings(at(pipelines, &[p]).get("exporters")).contains(&exporter.to_owned()))
        .collect()
}

/// The compose services the `traces` pipeline's exporters send to.
fn trace_backends(config: &Value) -> Vec<String> {
    strings(at(config, &["service", "pipelines", "traces"]).get("exporters"))
        .iter()
        .map(|e| support::host_port(str_at(config, &["exporters", e, "endpoint"])).0)
        .collect()
}

#[test]
fn development_config_is_well_formed() {
    assert_well_formed(COLLECTOR_CONFIG, &support::yaml(COLLECTOR_CONFIG));
}

#[test]
fn production_config_is_well_formed() {
    assert_well_formed(
        COLLECTOR_PRODUCTION_CONFIG,
        &support::yaml(COLLECTOR_PRODUCTION_CONFIG),
    );
}

#[test]
fn compose_mounts_the_config_and_overrides_only_the_trace_exporters() {
    // Arrange
    let compose = support::compose();
    let volumes = strings(support::service(&compose, COLLECTOR_SERVICE).get("volumes"));

    // Act
    let sources = compose_config_sources(&BTreeMap::new());
    let config = effective_config(COLLECTOR_CONFIG, &BTreeMap::new());

    // Assert: the mounted file is the development config, and the override keeps it whole.
    let mounted = volumes
        .iter()
        .map(|v| support::defaults(v))
        .find(|v| v.ends_with(":/etc/otelcol-contrib/config.yaml:ro"))
        .expect("compose mounts a collector config");
    assert_eq!(
        mounted,
        format!("./{COLLECTOR_CONFIG}:/etc/otelcol-contrib/config.yaml:ro")
    );
    assert_eq!(
        sources.first().map(String::as_str),
        Some("/etc/otelcol-contrib/config.yaml")
    );
    assert_eq!(sources.len(), 3, "{sources:?}");
    assert!(
        sources[1].starts_with("yaml:service::pipelines::traces::exporters: "),
        "{sources:?}"
    );
    assert_eq!(sources[2], APOLLO_MOUNT, "{sources:?}");
    assert_eq!(
        mounted_file(APOLLO_MOUNT, &BTreeMap::new()),
        support::collector_apollo_config("off"),
        "Apollo's feed is off unless asked for"
    );
    assert!(pipelines_exporting_to(&config, APOLLO_EXPORTER).is_empty());
    assert_well_formed("the development config under compose's defaults", &config);
    assert_eq!(
        trace_backends(&config),
        ["jaeger", "tempo"],
        "unset, the collector sends traces to both backends"
    );
}

#[test]
fn each_make_target_exports_traces_to_the_backends_its_profile_runs() {
    // Arrange: every `OTEL_COLLECTOR_TRACES_EXPORTERS=... compose --profile P up` line of stack.mk.
    let compose = support::compose();
    let makefile = support::read(STACK_MK);
    let launches: Vec<(String, String)> = makefile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains(" up "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = words
                .iter()
                .find_map(|w| w.strip_prefix(&format!("{EXPORTERS_VAR}=")))
                .unwrap_or_else(|| panic!("stack.mk: `{line}` does not set {EXPORTERS_VAR}"));
            let profile = words
                .windows(2)
                .find(|w| w[0] == "--profile")
                .map(|w| w[1])
                .unwrap_or_else(|| panic!("stack.mk: `{line}` names no profile"));
            (profile.to_owned(), value.to_owned())
        })
        .collect();
    assert_eq!(
        launches.len(),
        3,
        "expected otel-up, otel-up-grafana and otel-up-all, found {launches:?}"
    );

    // Either config file may be mounted (OTEL_COLLECTOR_CONFIG).
    for file in [COLLECTOR_CONFIG, COLLECTOR_PRODUCTION_CONFIG] {
        for (profile, exporters) in &launches {
            // Act
            let vars = BTreeMap::from([(EXPORTERS_VAR, exporters.as_str())]);
            let config = effective_config(file, &vars);

            // Assert
            assert_well_formed(&format!("{file} under `--profile {profile}`"), &config);
            let backends = trace_backends(&config);
            assert!(
                !backends.is_empty(),
                "--profile {profile}: no trace backend"
            );
            for backend in backends {
                assert!(
                    support::runs_in(&compose, &backend, profile),
                    "{file}: --profile {profile} exports traces to {backend}, which that profile does not run"
                );
            }
        }
    }
}

#[test]
fn a_make_target_that_points_the_feed_at_apollo_turns_the_feed_on() {
    let makefile = support::read(STACK_MK);
    let launches: Vec<&str> = makefile
        .lines()
        .filter(|line| line.contains("APOLLO_OTLP_ENDPOINT="))
        .collect();

    assert!(
        !launches.is_empty(),
        "otel-up-all points the feed at apollo"
    );
    for line in launches {
        assert!(
            line.split_whitespace()
                .any(|word| word == format!("{APOLLO_VAR}=on")),
            "stack.mk: `{line}` names Apollo's address without {APOLLO_VAR}=on"
        );
    }
}

#[test]
fn apollos_feed_carries_every_signal_when_on_and_nothing_when_off() {
    for file in [COLLECTOR_CONFIG, COLLECTOR_PRODUCTION_CONFIG] {
        for state in ["off", "on"] {
            // Arrange
            let vars = BTreeMap::from([(APOLLO_VAR, state)]);

            // Act
            let config = effective_config(file, &vars);
            let to_apollo = pipelines_exporting_to(&config, APOLLO_EXPORTER);

            // Assert
            assert_well_formed(&format!("{file} with {APOLLO_VAR}={state}"), &config);
            if state == "off" {
                assert!(to_apollo.is_empty(), "{file}: off, yet {to_apollo:?}");
                continue;
            }
            let pipelines = at(&config, &["service", "pipelines"]);
            for signal in SIGNALS {
                let feed = to_apollo
                    .iter()
                    .find(|p| kind(p) == signal)
                    .unwrap_or_else(|| panic!("{file}: no {signal} pipeline to Apollo"));
                // Straight from the receiver: Apollo sees every span, not the tail-sampled ones.
                assert_eq!(
                    strings(at(pipelines, &[feed]).get("receivers")),
                    ["otlp"],
                    "{file}: {feed}"
                );
                assert!(
                    !strings(at(pipelines, &[feed]).get("processors"))
                        .contains(&"tail_sampling".to_owned()),
                    "{file}: {feed}"
                );
            }
            // The other pipelines are as they were with the feed off.
            let off = effective_config(file, &BTreeMap::from([(APOLLO_VAR, "off")]));
            for pipeline in keys(off.get("service").and_then(|s| s.get("pipelines"))) {
                assert_eq!(
                    at(pipelines, &[&pipeline]),
                    at(&off, &["service", "pipelines", &pipeline]),
                    "{file}: {pipeline} changed with the feed on"
                );
            }
        }
    }
}

#[test]
fn apollos_feed_goes_to_apollos_api_port() {
    // Arrange
    let config = support::yaml(&support::collector_apollo_config("on"));
    let compose = support::compose();
    let collector = support::service(&compose, COLLECTOR_SERVICE);
    let makefile = support::read(STACK_MK);

    // Act
    let endpoint = str_at(&config, &["exporters", APOLLO_EXPORTER, "endpoint"]);
    let compose_default =
        support::defaults(str_at(collector, &["environment", "APOLLO_OTLP_ENDPOINT"]));
    let in_compose = makefile
        .split_whitespace()
        .find_map(|w| w.strip_prefix("APOLLO_OTLP_ENDPOINT="))
        .expect("stack.mk sets APOLLO_OTLP_ENDPOINT for the services profile");

    // Assert: Apollo on the host by default, the compose service when the profile runs it.
    assert_eq!(
        support::host_port(endpoint),
        ("host.docker.internal".to_owned(), ports::APOLLO)
    );
    assert_eq!(
        format!("${{env:APOLLO_OTLP_ENDPOINT:-{compose_default}}}"),
        endpoint
    );
    assert_eq!(
        support::host_port(in_compose),
        ("apollo".to_owned(), ports::APOLLO)
    );
    assert!(support::container_ports(&compose, "apollo").contains(&ports::APOLLO));
    assert_eq!(
        at(&config, &["exporters", APOLLO_EXPORTER, "tls", "insecure"]).as_bool(),
        Some(true)
    );
    assert!(
        strings(collector.get("extra_hosts"))
            .contains(&"host.docker.internal:host-gateway".to_owned()),
        "the collector reaches Apollo on the host through host.docker.internal"
    );
}

#[test]
fn prometheus_exporter_gets_the_span_metrics_only() {
    for file in [COLLECTOR_CONFIG, COLLECTOR_PRODUCTION_CONFIG] {
        // Arrange
        let config = effective_config(file, &BTreeMap::from([(APOLLO_VAR, "on")]));
        let pipelines = at(&config, &["service", "pipelines"]);

        // Act
        let into_prometheus = pipelines_exporting_to(&config, "prometheus");

        // Assert: the services' OTLP metrics never reach it (Prometheus scrapes their /metrics).
        assert!(
            !into_prometheus.is_empty(),
            "{file}: no pipeline to prometheus"
        );
        for pipeline in into_prometheus {
            let receivers = strings(at(pipelines, &[&pipeline]).get("receivers"));
            assert!(
                receivers.iter().all(|r| kind(r) == "span_metrics"),
                "{file}: {pipeline} passes {receivers:?} to Prometheus"
            );
        }
        // And they are still received, so a service's export is not refused.
        let metrics_from_otlp = keys(Some(pipelines))
            .into_iter()
            .filter(|p| kind(p) == "metrics")
            .any(|p| strings(at(pipelines, &[&p]).get("receivers")).contains(&"otlp".to_owned()));
        assert!(
            metrics_from_otlp,
            "{file}: no metrics pipeline receives OTLP"
        );
    }
}

#[test]
fn production_config_tail_samples_after_taking_span_metrics() {
    // Arrange
    let config = support::yaml(COLLECTOR_PRODUCTION_CONFIG);
    let pipelines = at(&config, &["service", "pipelines"]);
    let processors_of = |name: &str| strings(at(pipelines, &[name]).get("processors"));
    let policies = at(&config, &["processors", "tail_sampling", "policies"])
        .as_sequence()
        .expect("tail_sampling.policies is a list");
    let policy = |kind: &str| {
        policies
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} policy"))
    };

    // Act / Assert: the stored traces are sampled, the span metrics are not.
    assert!(processors_of("traces").contains(&"tail_sampling".to_owned()));
    let metrics_pipelines: Vec<String> = keys(Some(pipelines))
        .into_iter()
        .filter(|p| {
            strings(at(pipelines, &[p]).get("exporters"))
                .iter()
                .any(|e| kind(e) == "span_metrics")
        })
        .collect();
    assert!(!metrics_pipelines.is_empty());
    for name in &metrics_pipelines {
        assert!(
            !processors_of(name).contains(&"tail_sampling".to_owned()),
            "{name} must see every span"
        );
    }
    // Every error trace, every slow trace, a share of the rest.
    assert_eq!(
        strings(at(policy("status_code"), &["status_code"]).get("status_codes")),
        ["ERROR"]
    );
    assert_eq!(
        at(policy("latency"), &["latency", "threshold_ms"]).as_u64(),
        Some(500)
    );
    let share = at(
        policy("probabilistic"),
        &["probabilistic", "sampling_percentage"],
    )
    .as_f64();
    assert!(
        share.is_some_and(|s| s > 0.0 && s < 100.0),
        "probabilistic share {share:?}"
    );
}

#[test]
fn the_checker_finds_broken_pipelines() {
    // Arrange: the development config, broken in the ways the checker looks for.
    let mut config = support::yaml(COLLECTOR_CONFIG);
    apply_yaml_source(
        &mut config,
        "service::pipelines::traces::exporters: [otlp_grpc/nowhere]",
    );
    apply_yaml_source(
        &mut config,
        "service::pipelines::metrics::receivers: [otlp]",
    );
    let pipelines = config
        .get_mut("service")
        .and_then(|s| s.get_mut("pipelines"))
        .and_then(Value::as_mapping_mut)
        .expect("pipelines");
    pipelines.remove("logs");

    // Act
    let found = problems(&config);

    // Assert
    let expect = |fragment: &str| {
        assert!(
            found.iter().any(|p| p.contains(fragment)),
            "expected a problem with {fragment:?} in {found:?}"
        );
    };
    expect("exporter otlp_grpc/nowhere is not defined");
    expect("no logs pipeline");
    expect("connector span_metrics must be both");
    expect("span_metrics is not a receiver of a metrics pipeline");
}
