//! `apollo config`: every service's effective configuration in the chosen environment, and where
//! each value comes from (flag, env, profile, default), secrets redacted. It calls no service: it
//! shows what Sophia, Hermes and Apollo would take from this shell's environment and profile.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use foundry::profile::{Effective, Loaded, Profile, SERVICES};
use serde_json::{Value, json};

use crate::{cli::Report, config::Cli};

/// What `apollo config` prints: a table per service for people, or one JSON object
/// `{"trace_id": null, "result": {"profile", "file", "services": {...}}}` with `json`.
pub fn report(loaded: &Loaded<Cli>, json: bool) -> Report {
    let env = |name: &str| std::env::var(name).ok();
    // The flags on this command line are Apollo's own; the other services would take theirs.
    let none = BTreeMap::new();
    let services: Vec<(&str, Vec<Effective>)> = SERVICES
        .iter()
        .map(|service| {
            let flags = if *service == "apollo" {
                &loaded.flags
            } else {
                &none
            };
            (*service, loaded.profile.effective(service, flags, env))
        })
        .collect();
    Report {
        stdout: if json {
            format!(
                "{}\n",
                json!({"trace_id": null, "result": result(&loaded.profile, &services)})
            )
        } else {
            human(&loaded.profile, &services)
        },
        stderr: None,
        exit_code: 0,
    }
}

/// The JSON result: each service's settings in order, as objects.
pub fn result(profile: &Profile, services: &[(&str, Vec<Effective>)]) -> Value {
    let services: serde_json::Map<String, Value> = services
        .iter()
        .map(|(service, settings)| {
            let settings: Vec<Value> = settings
                .iter()
                .map(|e| {
                    json!({
                        "variable": e.setting.variable,
                        "key": e.setting.key,
                        "value": e.value,
                        "source": e.source.to_string(),
                        "profile_key": e.key,
                    })
                })
                .collect();
            ((*service).to_owned(), Value::from(settings))
        })
        .collect();
    json!({
        "profile": profile.name(),
        "file": profile.file().map(|f| f.display().to_string()),
        "services": services,
    })
}

/// One table per service: variable, value, source (and the profile key a value came from).
pub fn human(profile: &Profile, services: &[(&str, Vec<Effective>)]) -> String {
    let mut out = String::new();
    let file = profile.file().map_or_else(
        || "no logos.toml: built-in defaults".to_owned(),
        |f| f.display().to_string(),
    );
    let _ = writeln!(out, "profile: {} ({file})", profile.name());
    for (service, settings) in services {
        let _ = writeln!(out, "\n{service}");
        for e in settings {
            let value = e.value.as_deref().unwrap_or("(unset)");
            let from = match &e.key {
                Some(key) => format!("{} ({key})", e.source),
                None => e.source.to_string(),
            };
            let _ = writeln!(out, "  {:<32} {:<34} {from}", e.setting.variable, value);
        }
    }
    out.push_str("trace_id: none (apollo config calls no service)\n");
    out
}

#[cfg(test)]
mod tests {
    use foundry::profile::{Profile, Source};

    use super::*;

    #[test]
    fn each_service_shows_its_settings_with_their_source() {
        // Arrange
        let profile = Profile::default();
        let flags = BTreeMap::from([("SOPHIA_URL".to_owned(), "http://sophia:1".to_owned())]);
        let env = |name: &str| (name == "SOPHIA_API_KEY").then(|| "k3y".to_owned());
        let services: Vec<(&str, Vec<Effective>)> = SERVICES
            .iter()
            .map(|s| (*s, profile.effective(s, &flags, env)))
            .collect();

        // Act
        let text = human(&profile, &services);
        let json = result(&profile, &services);

        // Assert
        assert!(
            text.starts_with("profile: dev (no logos.toml: built-in defaults)"),
            "{text}"
        );
        assert!(text.ends_with("trace_id: none (apollo config calls no service)\n"));
        let apollo = json["services"]["apollo"].as_array().expect("apollo");
        let find = |variable: &str| {
            apollo
                .iter()
                .find(|s| s["variable"] == variable)
                .unwrap_or_else(|| panic!("no {variable}"))
                .clone()
        };
        assert_eq!(find("SOPHIA_URL")["source"], Source::Flag.to_string());
        assert_eq!(find("SOPHIA_API_KEY")["value"], "***");
        assert_eq!(find("SOPHIA_API_KEY")["source"], "env");
        assert_eq!(find("APOLLO_PORT")["value"], "27000");
        assert_eq!(find("APOLLO_PORT")["source"], "default");
        assert_eq!(find("OTEL_SERVICE_NAME")["value"], "apollo");
        assert!(!text.contains("k3y") && !json.to_string().contains("k3y"));
        for service in SERVICES {
            assert!(text.contains(&format!("\n{service}\n")), "{text}");
            assert!(json["services"][service].is_array(), "{json}");
        }
    }

    /// Every flag with a variable, of each service, as (variable, default).
    fn flags(command: &clap::Command) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = command
            .get_arguments()
            .filter_map(|arg| {
                let variable = arg.get_env()?.to_str()?.to_owned();
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned());
                Some((variable, default))
            })
            .collect();
        for sub in command.get_subcommands() {
            out.extend(flags(sub));
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_settings_table_agrees_with_every_services_flags() {
        use clap::CommandFactory as _;
        for (service, command) in [
            ("sophia", sophia::config::Config::command()),
            ("hermes", hermes::config::Config::command()),
            ("apollo", Cli::command()),
        ] {
            // Arrange
            let table: Vec<(String, Option<String>)> = foundry::profile::SETTINGS
                .iter()
                .filter(|s| s.service == Some(service))
                .map(|s| (s.variable.to_owned(), s.default.map(str::to_owned)))
                .collect();

            // Act
            let flags = flags(&command);

            // Assert: the same variables with the same defaults, both ways.
            let mut table = table;
            table.sort();
            assert_eq!(
                flags, table,
                "{service}: its flags and foundry::profile::SETTINGS"
            );
        }
    }
}
