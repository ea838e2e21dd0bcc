//! Hermes' command line, with an environment variable behind every flag.

use clap::Parser;

/// `hermes [--host H] [--port P]`, and the LLM provider settings.
#[derive(Clone, Parser)]
#[command(
    name = "hermes",
    version,
    about = "LOGOS language services: embeddings, NLP, LLM, vector store"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HERMES_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 takes a free one.
    #[arg(long, env = "HERMES_PORT", default_value_t = 17000)]
    pub port: u16,
    /// The provider for `/llm` requests that name none: `echo` or `openai`.
    #[arg(long, env = "HERMES_LLM_PROVIDER", default_value = "echo")]
    pub llm_provider: String,
    /// API key of the OpenAI-compatible provider.
    #[arg(long, env = "HERMES_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Base URL of the OpenAI-compatible provider (requests go to `{base}/chat/completions`).
    #[arg(
        long,
        env = "HERMES_LLM_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub llm_base_url: String,
    /// Model asked for when a request names none.
    #[arg(long, env = "HERMES_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// How long one call to the provider may take, in milliseconds: under the 60 s a request is
    /// given, so that a slow provider is answered `504 llm_timeout`, not the request's timeout.
    #[arg(long, env = "HERMES_LLM_TIMEOUT_MS", default_value_t = 55_000, value_parser = clap::value_parser!(u64).range(1..=59_000))]
    pub llm_timeout_ms: u64,
    /// The most embeddings the in-memory vector store keeps; the oldest go first.
    #[arg(long, env = "HERMES_VECTOR_CAPACITY", default_value_t = crate::vector_store::DEFAULT_CAPACITY as u64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub vector_capacity: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("llm_provider", &self.llm_provider)
            .field("llm_api_key", &self.llm_api_key.as_ref().map(|_| "***"))
            .field("llm_base_url", &self.llm_base_url)
            .field("llm_model", &self.llm_model)
            .field("vector_capacity", &self.vector_capacity)
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
        assert!(Config::try_parse_from(["hermes", "--llm-timeout-ms", "60000"]).is_err());
        let config = Config::try_parse_from(["hermes"]).expect("the defaults parse");
        assert!(config.llm_timeout_ms < 60_000);
    }
}
