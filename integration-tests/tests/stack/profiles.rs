//! The repository's `logos.toml` agrees with where each environment runs: every profile loads
//! (foundry checks it as the services do), `dev` sets nothing (the services as they always were),
//! `staging` exports to the compose collector and `prod` to the Kubernetes agent, the image carries
//! the file where `LOGOS_CONFIG` says, and each Kubernetes overlay picks the profile of its name.

use foundry::{
    profile::Profile,
    testing::{CONFIG_FILE, settings},
};

use crate::support::{self, COLLECTOR_SERVICE, DOCKERFILE, host_port, workspace_root};

fn profile(name: &str) -> Profile {
    Profile::from_file(&workspace_root().join(CONFIG_FILE), name)
        .unwrap_or_else(|e| panic!("profile {name}: {e}"))
}

#[test]
fn dev_sets_nothing_and_every_profile_loads() {
    // Arrange / Act
    let dev = profile("dev");
    let set: Vec<&str> = settings()
        .map(|(_, variable, _)| variable)
        .filter(|variable| dev.get(variable).is_some())
        .collect();

    // Assert
    assert!(
        set.is_empty(),
        "dev must leave the defaults alone, sets {set:?}"
    );
    for name in ["staging", "prod"] {
        let loaded = profile(name);
        let attributes = loaded
            .get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| v.value.clone())
            .unwrap_or_default();
        assert!(
            attributes.contains(&format!("deployment.environment.name={name}")),
            "{name}: {attributes}"
        );
    }
}

#[test]
fn staging_exports_to_the_compose_collector_and_prod_to_the_kubernetes_agent() {
    // Arrange
    let compose = support::compose();
    let endpoint = |name: &str| {
        let value = profile(name)
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| panic!("{name} exports nowhere"))
            .value
            .clone();
        host_port(&value)
    };

    // Act
    let staging = endpoint("staging");
    let prod = endpoint("prod");
    let agent = support::read("deploy/k8s/base/otel-agent.yaml");

    // Assert
    assert_eq!(staging.0, COLLECTOR_SERVICE);
    assert!(support::container_ports(&compose, COLLECTOR_SERVICE).contains(&staging.1));
    assert_eq!(prod.0, "otel-agent");
    assert!(
        agent.contains("name: otel-agent\n") && agent.contains(&format!("port: {}", prod.1)),
        "the agent's Service listens on {}",
        prod.1
    );
}

#[test]
fn the_image_carries_the_profiles_where_logos_config_says() {
    // Arrange
    let dockerfile = support::read(DOCKERFILE);

    // Act
    let config = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENV LOGOS_CONFIG="))
        .expect("the image sets LOGOS_CONFIG");

    // Assert
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("COPY {CONFIG_FILE} {config}")),
        "the image copies {CONFIG_FILE} to {config}"
    );
    for overlay in ["dev", "prod"] {
        let kustomization =
            support::read(&format!("deploy/k8s/overlays/{overlay}/kustomization.yaml"));
        assert!(
            kustomization.contains(&format!("- LOGOS_ENV={overlay}\n")),
            "overlay {overlay} picks profile {overlay}"
        );
        profile(overlay);
    }
}
