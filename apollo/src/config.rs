//! Apollo's command line: global flags, the commands, and `serve`.

use clap::{Parser, Subcommand};

/// `apollo [--sophia-url URL] [--hermes-url URL] [--json] <command>`
#[derive(Clone, Parser)]
#[command(
    name = "apollo",
    version,
    about = "The LOGOS operator's command line and API"
)]
pub struct Cli {
    /// Where Sophia answers.
    #[arg(long, env = "SOPHIA_URL", default_value = "http://127.0.0.1:47000", value_parser = foundry::http::parse_service_url, global = true)]
    pub sophia_url: String,
    /// Where Hermes answers.
    #[arg(long, env = "HERMES_URL", default_value = "http://127.0.0.1:17000", value_parser = foundry::http::parse_service_url, global = true)]
    pub hermes_url: String,
    /// Sent to Sophia as `Authorization: Bearer <key>` when set.
    #[arg(long, env = "SOPHIA_API_KEY", hide_env_values = true, global = true)]
    pub sophia_api_key: Option<String>,
    /// How long one call to a service may take, in milliseconds.
    #[arg(long, env = "APOLLO_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=600_000), global = true)]
    pub timeout_ms: u64,
    /// Where `apollo serve` answers, for `trace` and `traces`.
    #[arg(long, env = "APOLLO_URL", default_value = "http://127.0.0.1:27000", value_parser = foundry::http::parse_service_url, global = true)]
    pub apollo_url: String,
    /// Print one JSON object `{"trace_id", "result"}` (or `{"trace_id", "error"}`) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each one is one trace rooted at `apollo.command`.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Health and latency of Sophia and Hermes.
    Status,
    /// Plan a goal with Sophia.
    Plan {
        /// The goal, in words.
        #[arg(required = true, num_args = 1..)]
        goal: Vec<String>,
    },
    /// Roll a plan forward with Sophia.
    Simulate {
        /// The plan's id.
        plan_id: String,
        /// How many states to imagine (1 to 100).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=100))]
        steps: i64,
    },
    /// Sophia's world state.
    State,
    /// Embed a text with Hermes (and store it in its vector store).
    Embed {
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Find the stored embeddings nearest to a text.
    Search {
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// How many results (1 to 100).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=100))]
        top_k: i64,
    },
    /// Ask Hermes' LLM endpoint.
    Chat {
        /// The prompt.
        #[arg(required = true, num_args = 1..)]
        prompt: Vec<String>,
        /// `echo` (local) or `openai`; Hermes' default when absent.
        #[arg(long)]
        provider: Option<String>,
        /// The model name.
        #[arg(long)]
        model: Option<String>,
        /// The most tokens to generate (1 to 4096).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=4096))]
        max_tokens: Option<i64>,
    },
    /// Show one trace from `apollo serve`'s window as a waterfall.
    Trace {
        /// The trace id (32 hex digits), as a command printed it.
        trace_id: String,
    },
    /// List the most recent traces in `apollo serve`'s window.
    Traces {
        /// Only traces with a span of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only traces with an error.
        #[arg(long)]
        errors: bool,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Run the Apollo API, the OTLP receiver and the diagnostics window.
    Serve(ServeArgs),
    /// Every service's effective configuration in this environment (--env), and where each
    /// value comes from: flag, env, profile or default (secrets redacted). Calls no service.
    Config,
}

/// Where `apollo serve` listens.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "APOLLO_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 takes a free one.
    #[arg(long, env = "APOLLO_PORT", default_value_t = 27000)]
    pub port: u16,
    /// The most spans the diagnostics window holds; the oldest traces go first.
    #[arg(long, env = "APOLLO_DIAGNOSTICS_MAX_SPANS", default_value_t = crate::diagnostics::DEFAULT_MAX_SPANS as u64, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub diagnostics_max_spans: u64,
    /// Jaeger's UI, for the page's links to each trace there (e.g. `http://localhost:16686`).
    #[arg(long, env = "APOLLO_JAEGER_URL", value_parser = foundry::http::parse_service_url)]
    pub jaeger_url: Option<String>,
    /// Grafana's UI, for the page's links to each trace there (e.g. `http://localhost:3001`).
    #[arg(long, env = "APOLLO_GRAFANA_URL", value_parser = foundry::http::parse_service_url)]
    pub grafana_url: Option<String>,
}

impl ServeArgs {
    /// The page's links to Jaeger and Grafana.
    pub fn links(&self) -> crate::routes::diagnostics::Links {
        crate::routes::diagnostics::Links {
            jaeger: self.jaeger_url.clone(),
            grafana: self.grafana_url.clone(),
        }
    }
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("sophia_url", &self.sophia_url)
            .field("hermes_url", &self.hermes_url)
            .field(
                "sophia_api_key",
                &self.sophia_api_key.as_ref().map(|_| "***"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("apollo_url", &self.apollo_url)
            .field("json", &self.json)
            .field("command", &self.command)
            .finish()
    }
}

impl Cli {
    /// Telemetry from the environment and `profile`, as `one_shot` adapts it for every command
    /// but `serve`.
    pub fn telemetry_config(
        &self,
        profile: &foundry::profile::Profile,
    ) -> Result<foundry::config::TelemetryConfig, foundry::profile::ProfileError> {
        let config = profile.telemetry("apollo", env!("CARGO_PKG_VERSION"))?;
        if matches!(self.command, Command::Serve(_)) {
            return Ok(config);
        }
        let rust_log_set = std::env::var("RUST_LOG").is_ok_and(|value| !value.trim().is_empty());
        Ok(one_shot(config, rust_log_set))
    }

    /// Sophia and Hermes as these flags say.
    pub fn services(&self) -> Result<crate::services::Services, reqwest::Error> {
        crate::services::Services::new(
            &self.sophia_url,
            &self.hermes_url,
            self.sophia_api_key.clone(),
            std::time::Duration::from_millis(self.timeout_ms),
        )
    }
}

/// A command's telemetry: its output is the answer, so only warnings are logged beside it unless
/// `RUST_LOG` says otherwise, and foundry's one-shot settings: no retries, and with the collector
/// down one line at exit that says so.
fn one_shot(
    mut config: foundry::config::TelemetryConfig,
    rust_log_set: bool,
) -> foundry::config::TelemetryConfig {
    if !rust_log_set {
        config.log_filter = "warn".into();
    }
    config.one_shot();
    config
}

#[cfg(test)]
mod tests {
    use foundry::config::TelemetryConfig;

    use super::one_shot;

    fn from(variables: &[(&str, &str)]) -> TelemetryConfig {
        TelemetryConfig::from_lookup("apollo", "0.0.0", |name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
        .expect("valid variables")
    }

    #[test]
    fn a_command_logs_warnings_and_exports_without_retries() {
        // Arrange
        let config = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")]);
        assert_eq!(config.retries(), Some(true), "exporting, with retries");

        // Act
        let command = one_shot(config, false);

        // Assert
        assert_eq!(command.log_filter, "warn");
        assert_eq!(
            command.retries(),
            Some(false),
            "still exporting, no retries"
        );
    }

    #[test]
    fn a_command_keeps_the_log_filter_rust_log_gives() {
        // Arrange
        let config = from(&[("RUST_LOG", "debug")]);

        // Act
        let command = one_shot(config, true);

        // Assert
        assert_eq!(command.log_filter, "debug");
        assert_eq!(command.retries(), None, "not exporting");
    }
}
