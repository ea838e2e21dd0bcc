//! `deploy/k8s`: each overlay renders with `kubectl kustomize` and every object it renders passes
//! `kubernetes-validate --strict` against the Kubernetes schemas (both skipped without the tools,
//! unless `REQUIRE_STACK_TOOLS=1`). The rendered objects are then checked as a user relies on them:
//! the three services with probes on `/health`, resources, a restricted security context and the
//! downward API's `k8s.*` resource attributes; the collector in two tiers whose configs are
//! complete, whose ports agree with their Services, and whose agent routes by trace id to the
//! gateway's headless Service; and sampling at the tail in `prod` only.

use std::ffi::OsString;

use serde_yaml::Value;

use crate::collector::{assert_well_formed, kind, pipeline_problems};
use crate::support::{self, at, host_port, str_at, strings};
use crate::tools;

const OVERLAYS: [&str; 2] = ["dev", "prod"];
/// The Service the services send OTLP to, and the agents' DaemonSet behind it.
const AGENT: &str = "otel-agent";
/// The gateway's StatefulSet, and the headless Service the agents resolve.
const GATEWAY: &str = "otel-gateway";
const GATEWAY_HEADLESS: &str = "otel-gateway-headless";

fn overlay_dir(overlay: &str) -> String {
    format!("deploy/k8s/overlays/{overlay}")
}

/// An overlay rendered by kubectl, as its objects; `None` when kubectl is missing (skipped).
fn render(overlay: &str) -> Option<(String, Vec<Value>)> {
    let kubectl = tools::tool(
        "kubectl",
        "kubectl 1.22 or later (Debian's kubernetes-client is too old for `labels`)",
    )?;
    let output = tools::run(&kubectl, &["kustomize".into(), overlay_dir(overlay).into()]);
    let text = String::from_utf8(output.stdout).expect("kubectl prints UTF-8");
    let objects = text
        .split("\n---\n")
        .map(|doc| {
            serde_yaml::from_str(doc)
                .unwrap_or_else(|e| panic!("{overlay}: kubectl printed bad YAML: {e}"))
        })
        .collect();
    Some((text, objects))
}

/// The object of `kind` whose name is `name`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o.get("kind").and_then(Value::as_str) == Some(kind)
                && o.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The pod spec of a workload.
fn pod(workload: &Value) -> &Value {
    at(workload, &["spec", "template", "spec"])
}

/// The one container of a workload.
fn container(workload: &Value) -> &Value {
    let containers = at(pod(workload), &["containers"])
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A container port by name.
fn container_port(container: &Value, name: &str) -> u64 {
    at(container, &["ports"])
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// A Service's ports as (port, targetPort name).
fn service_ports(service: &Value) -> Vec<(u64, String)> {
    at(service, &["spec", "ports"])
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                at(p, &["port"]).as_u64().expect("a port number"),
                str_at(p, &["targetPort"]).to_owned(),
            )
        })
        .collect()
}

/// The collector config a workload mounts (the ConfigMap its `config` volume names).
fn collector_config(objects: &[Value], workload: &Value) -> Value {
    let volume = at(pod(workload), &["volumes"])
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("config"))
        .expect("a config volume");
    let map = object(objects, "ConfigMap", str_at(volume, &["configMap", "name"]));
    let arg = strings(container(workload).get("args"))
        .into_iter()
        .find_map(|a| a.strip_prefix("--config=/conf/").map(str::to_owned))
        .expect("--config=/conf/<file>");
    serde_yaml::from_str(str_at(map, &["data", &arg])).expect("the collector config is YAML")
}

/// Every workload's pods are restricted: non-root, no privilege escalation, read-only root,
/// no capabilities, default seccomp; every container has probes and resources.
fn assert_restricted(name: &str, workload: &Value) {
    let pod = pod(workload);
    assert_eq!(
        at(pod, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true),
        "{name}"
    );
    assert_eq!(
        str_at(pod, &["securityContext", "seccompProfile", "type"]),
        "RuntimeDefault",
        "{name}"
    );
    let container = container(workload);
    let security = at(container, &["securityContext"]);
    assert_eq!(
        at(security, &["readOnlyRootFilesystem"]).as_bool(),
        Some(true),
        "{name}"
    );
    assert_eq!(
        at(security, &["allowPrivilegeEscalation"]).as_bool(),
        Some(false),
        "{name}"
    );
    assert_eq!(
        strings(Some(at(security, &["capabilities", "drop"]))),
        ["ALL"],
        "{name}"
    );
    assert!(
        security
            .get("capabilities")
            .and_then(|c| c.get("add"))
            .is_none(),
        "{name}"
    );
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            at(container, &["resources", bound, resource]);
        }
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        at(container, &[probe, "httpGet", "path"]);
    }
}

#[test]
fn kubernetes_validate_accepts_every_rendered_object() {
    for overlay in OVERLAYS {
        // Arrange
        let Some((text, objects)) = render(overlay) else {
            return;
        };
        let Some(validate) = tools::tool("kubernetes-validate", "PyPI package kubernetes-validate")
        else {
            return;
        };
        let file =
            std::env::temp_dir().join(format!("logos-k8s-{overlay}-{}.yaml", std::process::id()));
        std::fs::write(&file, &text).expect("write the rendered overlay");

        // Act
        let result = std::panic::catch_unwind(|| {
            tools::run(
                &validate,
                &["--strict".into(), "--quiet".into(), OsString::from(&file)],
            )
        });

        // Assert
        std::fs::remove_file(&file).ok();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        assert!(
            objects.len() >= 12,
            "{overlay}: only {} objects",
            objects.len()
        );
        let namespaces: Vec<&Value> = objects
            .iter()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Namespace"))
            .collect();
        assert_eq!(namespaces.len(), 1, "{overlay}: one namespace");
        assert_eq!(
            str_at(
                namespaces[0],
                &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
            ),
            "restricted"
        );
    }
}

#[test]
fn the_services_are_probed_restricted_and_described_by_the_downward_api() {
    for overlay in OVERLAYS {
        let Some((_, objects)) = render(overlay) else {
            return;
        };
        for (name, port) in support::SERVICES {
            // Arrange
            let deployment = object(&objects, "Deployment", name);
            let service = object(&objects, "Service", name);
            let container = container(deployment);
            let env = at(container, &["env"]).as_sequence().expect("env");
            let value_of = |var: &str| {
                env.iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(var))
                    .unwrap_or_else(|| panic!("{overlay}/{name}: no {var}"))
            };

            // Act
            let attributes = str_at(value_of("OTEL_RESOURCE_ATTRIBUTES"), &["value"]);
            let args = strings(container.get("args")).join(" ");

            // Assert
            assert_restricted(&format!("{overlay}/{name}"), deployment);
            assert_eq!(container_port(container, "http"), u64::from(port), "{name}");
            assert_eq!(
                service_ports(service),
                [(u64::from(port), "http".to_owned())]
            );
            assert!(
                args.starts_with(name) && args.contains(&format!("--port {port}")),
                "{args}"
            );
            for probe in ["readinessProbe", "livenessProbe"] {
                assert_eq!(str_at(container, &[probe, "httpGet", "path"]), "/health");
                assert_eq!(str_at(container, &[probe, "httpGet", "port"]), "http");
            }
            for (attribute, field) in [
                ("k8s.pod.name", "metadata.name"),
                ("k8s.namespace.name", "metadata.namespace"),
                ("k8s.node.name", "spec.nodeName"),
            ] {
                let var = attributes
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{attribute}=$(")))
                    .and_then(|rest| rest.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{name}: no {attribute} in {attributes}"));
                assert_eq!(
                    str_at(value_of(var), &["valueFrom", "fieldRef", "fieldPath"]),
                    field,
                    "{name}: {attribute}"
                );
            }
            // OTEL_* from the environment's ConfigMap, pointing at this node's agent.
            let config_map = at(container, &["envFrom"])
                .as_sequence()
                .and_then(|e| e.first())
                .map(|e| str_at(e, &["configMapRef", "name"]).to_owned())
                .expect("envFrom a ConfigMap");
            let data = at(object(&objects, "ConfigMap", &config_map), &["data"]);
            let (host, otlp) = host_port(str_at(data, &["OTEL_EXPORTER_OTLP_ENDPOINT"]));
            assert_eq!(host, AGENT);
            let agent_ports = service_ports(object(&objects, "Service", AGENT));
            assert!(
                agent_ports.iter().any(|(p, _)| *p == u64::from(otlp)),
                "{agent_ports:?}"
            );
            assert_eq!(str_at(data, &["DEPLOYMENT_ENVIRONMENT"]), overlay);
        }
    }
}

#[test]
fn the_collector_runs_in_two_tiers_that_agree_on_ports() {
    for overlay in OVERLAYS {
        let Some((_, objects)) = render(overlay) else {
            return;
        };
        // Arrange
        let agent = object(&objects, "DaemonSet", AGENT);
        let gateway = object(&objects, "StatefulSet", GATEWAY);
        let headless = object(&objects, "Service", GATEWAY_HEADLESS);
        let agent_service = object(&objects, "Service", AGENT);

        // Act
        let agent_config = collector_config(&objects, agent);
        let gateway_config = collector_config(&objects, gateway);

        // Assert: complete pipelines; span metrics at the gateway, where whole traces are.
        let agent_problems = pipeline_problems(&agent_config);
        assert!(
            agent_problems.is_empty(),
            "{overlay} agent: {agent_problems:?}"
        );
        assert_well_formed(&format!("{overlay} gateway"), &gateway_config);
        assert_restricted(&format!("{overlay}/{AGENT}"), agent);
        assert_restricted(&format!("{overlay}/{GATEWAY}"), gateway);

        // The agent's Service reaches its receivers, on the pod's own node.
        assert_eq!(
            str_at(agent_service, &["spec", "internalTrafficPolicy"]),
            "Local"
        );
        let agent_container = container(agent);
        for (port, target) in service_ports(agent_service) {
            let protocol = if target == "otlp-grpc" {
                "grpc"
            } else {
                "http"
            };
            let endpoint = str_at(
                &agent_config,
                &["receivers", "otlp", "protocols", protocol, "endpoint"],
            );
            assert_eq!(
                host_port(endpoint).1,
                u16::try_from(port).unwrap_or(0),
                "{target}"
            );
            assert_eq!(container_port(agent_container, &target), port, "{target}");
        }

        // The agent routes traces by trace id to the gateway's pods, on the gateway's port.
        assert_eq!(
            strings(at(&agent_config, &["service", "pipelines", "traces"]).get("exporters")),
            ["loadbalancing"]
        );
        let balancer = at(&agent_config, &["exporters", "loadbalancing"]);
        assert_eq!(str_at(balancer, &["routing_key"]), "traceID");
        assert_eq!(
            str_at(balancer, &["resolver", "dns", "hostname"]),
            GATEWAY_HEADLESS
        );
        let balanced_port: u64 = str_at(balancer, &["resolver", "dns", "port"])
            .parse()
            .expect("a port");
        assert!(
            headless
                .get("spec")
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                == Some("None")
        );
        assert_eq!(str_at(gateway, &["spec", "serviceName"]), GATEWAY_HEADLESS);
        assert_eq!(
            service_ports(headless),
            [(balanced_port, "otlp-grpc".to_owned())]
        );
        assert_eq!(
            container_port(container(gateway), "otlp-grpc"),
            balanced_port
        );
        let gateway_grpc = str_at(
            &gateway_config,
            &["receivers", "otlp", "protocols", "grpc", "endpoint"],
        );
        assert_eq!(u64::from(host_port(gateway_grpc).1), balanced_port);

        // Both tiers' health check is where their probes ask.
        for (name, workload, config) in [
            (AGENT, agent, &agent_config),
            (GATEWAY, gateway, &gateway_config),
        ] {
            let health = host_port(str_at(config, &["extensions", "health_check", "endpoint"])).1;
            assert_eq!(
                container_port(container(workload), "health"),
                u64::from(health),
                "{name}"
            );
            assert_eq!(
                str_at(container(workload), &["readinessProbe", "httpGet", "port"]),
                "health"
            );
        }

        // The gateway sends traces to Tempo and remote-writes the span metrics to Prometheus.
        let pipelines = at(&gateway_config, &["service", "pipelines"]);
        assert_eq!(
            strings(at(pipelines, &["traces"]).get("exporters")),
            ["otlp_grpc/tempo"]
        );
        let metrics_exporters: Vec<String> = support::keys(Some(pipelines))
            .into_iter()
            .filter(|p| kind(p) == "metrics")
            .flat_map(|p| strings(at(pipelines, &[&p]).get("exporters")))
            .collect();
        assert_eq!(metrics_exporters, ["prometheusremotewrite"]);
        // Every replica's series carry its name: two writers of one series would interleave.
        assert!(
            strings(at(pipelines, &["metrics"]).get("processors"))
                .contains(&"resource/gateway".to_owned()),
            "{overlay}"
        );
        assert_eq!(
            str_at(
                at(
                    &gateway_config,
                    &["processors", "resource/gateway", "attributes"]
                )
                .as_sequence()
                .and_then(|attributes| attributes.first())
                .expect("an attribute"),
                &["value"]
            ),
            "${env:POD_NAME}"
        );
        let env: Vec<String> = at(container(gateway), &["env"])
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|e| str_at(e, &["name"]).to_owned())
            .collect();
        for var in [
            "TEMPO_OTLP_ENDPOINT",
            "PROMETHEUS_REMOTE_WRITE_URL",
            "POD_NAME",
        ] {
            assert!(
                env.contains(&var.to_owned()),
                "{overlay}: the gateway needs {var}"
            );
        }
    }
}

#[test]
fn prod_samples_at_the_tail_and_dev_keeps_every_trace() {
    for overlay in OVERLAYS {
        // Arrange
        let Some((_, objects)) = render(overlay) else {
            return;
        };
        let gateway = collector_config(&objects, object(&objects, "StatefulSet", GATEWAY));
        let pipelines = at(&gateway, &["service", "pipelines"]);

        // Act
        let sampled: Vec<String> = support::keys(Some(pipelines))
            .into_iter()
            .filter(|p| {
                strings(at(pipelines, &[p]).get("processors")).contains(&"tail_sampling".to_owned())
            })
            .collect();

        // Assert
        if overlay == "dev" {
            assert!(sampled.is_empty(), "dev keeps every trace, yet {sampled:?}");
            continue;
        }
        assert_eq!(sampled, ["traces"], "prod samples the stored traces only");
        let policies = at(&gateway, &["processors", "tail_sampling", "policies"])
            .as_sequence()
            .expect("policies");
        let types: Vec<&str> = policies.iter().map(|p| str_at(p, &["type"])).collect();
        assert_eq!(types, ["status_code", "latency", "probabilistic"]);
        assert_eq!(
            strings(Some(at(&policies[0], &["status_code", "status_codes"]))),
            ["ERROR"]
        );
        let share = at(&policies[2], &["probabilistic", "sampling_percentage"]).as_f64();
        assert!(share.is_some_and(|s| s > 0.0 && s < 100.0), "{share:?}");
    }
}
