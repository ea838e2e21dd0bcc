//! Sophia's command line, with an environment variable behind every flag.

use clap::Parser;

/// `sophia [--host H] [--port P] [--hermes-url URL]`; defaults that work on a laptop.
#[derive(Clone, Parser)]
#[command(
    name = "sophia",
    version,
    about = "The LOGOS planner: plans, simulations, world state, HCG"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SOPHIA_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 takes a free one.
    #[arg(long, env = "SOPHIA_PORT", default_value_t = 47000)]
    pub port: u16,
    /// Where Hermes answers.
    #[arg(long, env = "HERMES_URL", default_value = "http://127.0.0.1:17000", value_parser = foundry::http::parse_service_url)]
    pub hermes_url: String,
    /// How long one call to Hermes may take, in milliseconds: under the 60 s a request is given,
    /// so that a slow Hermes is answered `504 hermes_timeout`, not the request's timeout.
    #[arg(long, env = "SOPHIA_HERMES_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=59_000))]
    pub hermes_timeout_ms: u64,
    /// The most entities the in-memory graph keeps, and about 2 KiB of memory for each; the
    /// oldest go first.
    #[arg(long, env = "SOPHIA_HCG_CAPACITY", default_value_t = crate::hcg::DEFAULT_CAPACITY as u64, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub hcg_capacity: u64,
    /// When set, every route but /health and /metrics requires `Authorization: Bearer <token>`.
    #[arg(long, env = "SOPHIA_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("hermes_url", &self.hermes_url)
            .field("hermes_timeout_ms", &self.hermes_timeout_ms)
            .field("hcg_capacity", &self.hcg_capacity)
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Config;

    #[test]
    fn a_call_ends_before_the_request_it_serves() {
        // Every request is given 60 s (foundry's server layer).
        assert!(Config::try_parse_from(["sophia", "--hermes-timeout-ms", "60000"]).is_err());
        let config = Config::try_parse_from(["sophia"]).expect("the defaults parse");
        assert!(config.hermes_timeout_ms < 60_000);
    }
}
