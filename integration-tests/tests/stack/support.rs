//! Reading the stack's files: paths from the workspace root, YAML and JSON values, the `${VAR:-default}`
//! interpolation that compose and the collector apply, endpoints split into host and port, and the
//! ports that compose publishes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value;

/// The compose file, relative to the workspace root.
pub const COMPOSE_FILE: &str = "docker-compose.otel.yml";
/// The development collector config.
pub const COLLECTOR_CONFIG: &str = "infra/otel-collector-config.yaml";
/// The production-leaning collector config.
pub const COLLECTOR_PRODUCTION_CONFIG: &str = "infra/otel-collector-config.production.yaml";
/// Prometheus' config.
pub const PROMETHEUS_CONFIG: &str = "infra/prometheus.yml";
/// Tempo's config.
pub const TEMPO_CONFIG: &str = "infra/tempo.yaml";
/// Grafana's provisioned datasources.
pub const GRAFANA_DATASOURCES: &str = "infra/grafana/provisioning/datasources/datasources.yaml";
/// Grafana's dashboard provider.
pub const GRAFANA_DASHBOARD_PROVIDER: &str =
    "infra/grafana/provisioning/dashboards/dashboards.yaml";
/// The dashboard of the three services.
pub const GRAFANA_DASHBOARD: &str = "infra/grafana/dashboards/logos.json";
/// The make targets of the stack.
pub const STACK_MK: &str = "infra/stack.mk";
/// What the collector merges after its config for Apollo's feed, by `OTEL_COLLECTOR_APOLLO`
/// (`off`, the default, or `on`).
pub fn collector_apollo_config(state: &str) -> String {
    format!("infra/otel-collector-apollo-{state}.yaml")
}
/// The image of the three services.
pub const DOCKERFILE: &str = "Dockerfile";

/// The three services, as compose, Prometheus and Kubernetes name them, with their ports.
pub const SERVICES: [(&str, u16); 3] = [
    ("sophia", crate::ports::SOPHIA),
    ("hermes", crate::ports::HERMES),
    ("apollo", crate::ports::APOLLO),
];

/// The compose service names the other files refer to.
pub const COLLECTOR_SERVICE: &str = "otel-collector";

/// The workspace root: this crate's parent directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_path_buf()
}

/// A file of the workspace, as text.
pub fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A YAML file of the workspace.
pub fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
}

/// A JSON file of the workspace.
pub fn json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

/// The value at `path` below `value`, or a panic naming the path.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut current = value;
    for (i, key) in path.iter().enumerate() {
        current = current
            .get(*key)
            .unwrap_or_else(|| panic!("missing key {}", path[..=i].join(".")));
    }
    current
}

/// The string at `path`, or a panic naming the path.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

/// The keys of a mapping (empty when `value` is not one, e.g. absent or null).
pub fn keys(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The strings of a sequence (empty when `value` is not one).
pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces each `${NAME:-default}` and `${env:NAME:-default}` (the compose and collector forms) by
/// `vars[NAME]` when given, else by the default. The machine's environment is ignored on purpose,
/// so the tests read the files as a fresh checkout runs them. A reference without a default and
/// without a value panics: every variable of the stack files has a default.
pub fn interpolate(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
        let reference = &after[..end];
        let reference = reference.strip_prefix("env:").unwrap_or(reference);
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        match (vars.get(name), default) {
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => panic!("${{{name}}} in {text:?} has no default"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// [`interpolate`] with every variable at its default.
pub fn defaults(text: &str) -> String {
    interpolate(text, &BTreeMap::new())
}

/// Host and port of `host:port`, `scheme://host:port[/path]` or a `${...}` form of them.
pub fn host_port(endpoint: &str) -> (String, u16) {
    let resolved = defaults(endpoint);
    let without_scheme = resolved
        .split_once("://")
        .map_or(resolved.as_str(), |(_, r)| r);
    let authority = without_scheme.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in endpoint {endpoint:?}"));
    let port = port
        .parse()
        .unwrap_or_else(|e| panic!("bad port in endpoint {endpoint:?}: {e}"));
    (host.to_owned(), port)
}

/// One published port of a compose service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    /// The host address it binds to.
    pub host_ip: String,
    /// The port on the host.
    pub host: u16,
    /// The port inside the container.
    pub container: u16,
}

/// The compose file as written (variables unresolved), with its `<<` merge keys applied as
/// compose applies them.
pub fn compose() -> Value {
    let mut compose = yaml(COMPOSE_FILE);
    compose
        .apply_merge()
        .unwrap_or_else(|e| panic!("{COMPOSE_FILE}: bad merge key: {e}"));
    compose
}

/// A service of a compose document.
pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    at(compose, &["services", name])
}

/// The names of a compose document's services.
pub fn service_names(compose: &Value) -> Vec<String> {
    keys(compose.get("services"))
}

/// The profiles of a compose service (empty: it runs in every profile).
pub fn profiles(compose: &Value, name: &str) -> Vec<String> {
    strings(service(compose, name).get("profiles"))
}

/// Whether a compose service runs when `profile` is enabled.
pub fn runs_in(compose: &Value, name: &str, profile: &str) -> bool {
    let profiles = profiles(compose, name);
    profiles.is_empty() || profiles.iter().any(|p| p == profile)
}

/// The ports a compose service publishes, in either the short (`IP:HOST:CONTAINER[/proto]`) or the
/// long (`{target, published, host_ip}`) syntax, variables at their defaults.
pub fn published(compose: &Value, name: &str) -> Vec<Published> {
    let Some(ports) = service(compose, name)
        .get("ports")
        .and_then(Value::as_sequence)
    else {
        return Vec::new();
    };
    let mut out: Vec<Published> = ports.iter().map(|p| parse_published(name, p)).collect();
    out.sort();
    out
}

fn parse_published(service: &str, port: &Value) -> Published {
    let number = |v: &Value| -> u16 {
        match v {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => defaults(s).parse().ok(),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{service}: bad port number {v:?}"))
    };
    match port {
        Value::String(short) => {
            let short = defaults(short);
            let short = short.split('/').next().unwrap_or_default();
            let parts: Vec<&str> = short.rsplitn(3, ':').collect();
            let [container, host, host_ip] = parts[..] else {
                panic!("{service}: publish {short:?} as IP:HOST:CONTAINER");
            };
            Published {
                host_ip: host_ip.to_owned(),
                host: number(&Value::String(host.to_owned())),
                container: number(&Value::String(container.to_owned())),
            }
        }
        Value::Mapping(_) => Published {
            host_ip: port
                .get("host_ip")
                .and_then(Value::as_str)
                .map(defaults)
                .unwrap_or_else(|| panic!("{service}: a published port without host_ip")),
            host: number(at(port, &["published"])),
            container: number(at(port, &["target"])),
        },
        other => panic!("{service}: unexpected port entry {other:?}"),
    }
}

/// The container ports a compose service listens on that the files refer to: the published ones.
pub fn container_ports(compose: &Value, name: &str) -> Vec<u16> {
    published(compose, name)
        .into_iter()
        .map(|p| p.container)
        .collect()
}
