//! The services' image (`Dockerfile`): built in one stage, run from a small one as a non-root user,
//! with the three binaries and a health check; and compose's "services" profile runs that image.
//! hadolint's own check is in `tools`.

use crate::support::{self, DOCKERFILE};

/// The Dockerfile's instructions as (keyword, arguments), continuation lines joined.
fn instructions() -> Vec<(String, String)> {
    let text = support::read(DOCKERFILE).replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            (keyword.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_image_builds_the_three_binaries_and_runs_them_as_non_root() {
    // Arrange
    let instructions = instructions();
    let all = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    };

    // Act
    let stages = all("FROM");
    let runtime_start = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a FROM");
    let runtime = &instructions[runtime_start..];
    let users: Vec<&str> = runtime
        .iter()
        .filter(|(k, _)| k == "USER")
        .map(|(_, a)| a.as_str())
        .collect();

    // Assert: a build stage and a slim runtime stage.
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[1].contains("slim"), "runtime stage {:?}", stages[1]);
    let build = all("RUN").join(" ");
    for (service, _) in support::SERVICES {
        assert!(
            build.contains(&format!("-p {service}")),
            "{service} is not built"
        );
    }
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    // Non-root by number, so Kubernetes' runAsNonRoot can verify it.
    let user = users.last().expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("USER {user} is not numeric"));
    assert!(uid >= 1000, "USER {user}");
    // The health check asks /health, directly or through HEALTH_URL (which compose and
    // Kubernetes may point at another service's port).
    let healthcheck = all("HEALTHCHECK").join(" ");
    let health_url = all("ENV")
        .iter()
        .find_map(|e| e.strip_prefix("HEALTH_URL="))
        .unwrap_or_default()
        .to_owned();
    let asks = healthcheck.replace("$HEALTH_URL", &health_url);
    assert!(asks.contains("/health"), "HEALTHCHECK {healthcheck:?}");
    assert!(asks.contains("CMD"), "HEALTHCHECK {healthcheck:?}");
}

#[test]
fn compose_runs_the_image_of_this_dockerfile() {
    let compose = support::compose();
    let images: Vec<String> = support::SERVICES
        .iter()
        .map(|(name, _)| support::str_at(support::service(&compose, name), &["image"]).to_owned())
        .collect();
    assert!(
        images.windows(2).all(|w| w[0] == w[1]),
        "one image for the three services: {images:?}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        images[0],
        format!("logos:{version}"),
        "tagged with the workspace version"
    );
    for (name, _) in support::SERVICES {
        let build = support::service(&compose, name)
            .get("build")
            .unwrap_or_else(|| panic!("{name}: no build"));
        let context = build
            .as_str()
            .or_else(|| build.get("context").and_then(|c| c.as_str()))
            .unwrap_or_default();
        assert_eq!(context, ".", "{name}: build context");
        assert!(
            support::workspace_root()
                .join(context)
                .join(DOCKERFILE)
                .is_file()
        );
    }
}
