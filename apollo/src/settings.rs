//! `apollo config`: every service's effective configuration in the chosen environment, and where
//! each value comes from (flag, env, profile, default), secrets redacted. It calls no service: it
//! shows what Sophia, Hermes and Apollo would take from this shell's environment and profile.

use foundry::profile::Loaded;
use serde_json::json;

use crate::{cli::Report, config::Cli};

/// What `apollo config` prints: a table per service for people, or one JSON object
/// `{"trace_id": null, "result": {"profile", "file", "services": {...}}}` with `json`.
pub fn report(loaded: &Loaded<Cli>, json: bool) -> Report {
    let env = |name: &str| std::env::var(name).ok();
    let report = loaded.profile.report("apollo", &loaded.flags, env);
    Report {
        stdout: if json {
            format!(
                "{}\n",
                json!({"trace_id": null, "result": report.to_json()})
            )
        } else {
            format!("{report}trace_id: none (apollo config calls no service)\n")
        },
        stderr: None,
        exit_code: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use foundry::profile::Profile;

    use super::*;

    #[test]
    fn each_service_shows_its_settings_with_their_source() {
        // Arrange
        let flags = BTreeMap::from([("SOPHIA_URL".to_owned(), "http://sophia:1".to_owned())]);
        let env = |name: &str| (name == "SOPHIA_API_KEY").then(|| "k3y".to_owned());
        let report = Profile::default().report("apollo", &flags, env);

        // Act
        let text = report.to_string();
        let json = report.to_json();

        // Assert
        assert!(
            text.starts_with("profile: dev (no logos.toml: built-in defaults)"),
            "{text}"
        );
        let apollo = json["services"]["apollo"].as_array().expect("apollo");
        let find = |variable: &str| {
            apollo
                .iter()
                .find(|s| s["variable"] == variable)
                .unwrap_or_else(|| panic!("no {variable}"))
                .clone()
        };
        assert_eq!(find("SOPHIA_URL")["source"], "flag");
        assert_eq!(find("SOPHIA_API_KEY")["value"], "***");
        assert_eq!(find("SOPHIA_API_KEY")["source"], "env");
        assert_eq!(find("APOLLO_PORT")["value"], "27000");
        assert_eq!(find("APOLLO_PORT")["source"], "default");
        assert_eq!(find("OTEL_SERVICE_NAME")["value"], "apollo");
        assert!(!text.contains("k3y") && !json.to_string().contains("k3y"));
        for service in ["sophia", "hermes", "apollo"] {
            assert!(text.contains(&format!("\n{service}\n")), "{text}");
            assert!(json["services"][service].is_array(), "{json}");
        }
        let sophia = json["services"]["sophia"].as_array().expect("sophia");
        assert!(
            sophia.iter().all(|s| s["source"] != "flag"),
            "Apollo's flags are its own: {json}"
        );
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
            let table: Vec<(String, Option<String>)> = foundry::testing::settings()
                .filter(|(owner, _, _)| *owner == Some(service))
                .map(|(_, variable, default)| (variable.to_owned(), default.map(str::to_owned)))
                .collect();

            // Act
            let flags = flags(&command);

            // Assert: the same variables with the same defaults, both ways.
            let mut table = table;
            table.sort();
            assert_eq!(
                flags, table,
                "{service}: its flags and foundry's settings table"
            );
        }
    }
}
