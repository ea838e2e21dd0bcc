//! Chat completions: the `/llm` request and response types, their validation, and two providers.
//!
//! `echo` is local and deterministic: it answers with the last user message, so the whole chain
//! can be exercised (and benchmarked) without a network or a key. `openai` calls any
//! OpenAI-compatible chat completions API through the caller's HTTP client, so outbound calls are
//! traced like every other. The API key lives in [`ApiKey`], whose `Debug` prints `***`; it is sent
//! only in the `Authorization` header and scrubbed from anything an upstream sends back, so it
//! never reaches an error message, a log line or a span.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// Model name the echo provider reports when the request names none.
pub const DEFAULT_ECHO_MODEL: &str = "echo";

/// Base URL of OpenAI's own API, for configurations that name none.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A default for `HERMES_LLM_MODEL`: the model requested when a request names none.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// Largest `max_tokens` a request may ask for; also the echo provider's limit when none is given.
pub const MAX_TOKENS_LIMIT: u32 = 4096;

/// Longest total message content, in characters, a request may carry.
pub const MAX_INPUT_CHARS: usize = 100_000;

/// Longest model name, in characters, a request may give.
pub const MAX_MODEL_NAME_CHARS: usize = 256;

/// How much of an upstream error body is kept in [`LlmError::UpstreamStatus`].
const MAX_ERROR_BODY_CHARS: usize = 300;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What it says.
    pub content: String,
}

/// The body of `POST /llm`: exactly one of `prompt` and `messages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LlmRequest {
    /// A single user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// `echo` or `openai`; the service's default provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model to ask for; the provider's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature, `0.0..=2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// Most tokens to generate, `1..=4096`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4096)]
    pub max_tokens: Option<u32>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The answer.
    pub message: ChatMessage,
    /// Why generation stopped: `stop`, `length`, or what the upstream said.
    pub finish_reason: String,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Tokens in the input messages.
    pub prompt_tokens: u32,
    /// Tokens in the answer.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// The answer of `POST /llm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LlmResponse {
    /// Completion id.
    pub id: String,
    /// The provider that answered: `echo` or `openai`.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Unix time, in seconds, of the completion.
    pub created: i64,
    /// The answers, at least one.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// A completion provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// Local and deterministic: echoes the last user message.
    #[default]
    Echo,
    /// Any OpenAI-compatible chat completions API.
    OpenAi,
}

impl Provider {
    /// The name requests and `HERMES_LLM_PROVIDER` use, also the `gen_ai.system` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::OpenAi => "openai",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = LlmError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Self::Echo, Self::OpenAi]
            .into_iter()
            .find(|provider| provider.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| LlmError::UnknownProvider {
                name: name.to_owned(),
            })
    }
}

/// Why a completion failed.
///
/// Client errors (bad input; [`is_client_error`](Self::is_client_error) is true): `InvalidRequest`,
/// `UnknownProvider`, `ProviderNotConfigured`. Upstream failures of the provider: `Timeout` (a
/// gateway timeout), `Transport`, `UpstreamStatus` and `MalformedResponse` (a bad gateway). No
/// variant ever holds the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The request breaks a rule: prompt and messages, roles, ranges, lengths.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request named a provider that does not exist.
    #[error("unknown provider {name:?}; known providers: echo, openai")]
    UnknownProvider {
        /// The name as requested.
        name: String,
    },
    /// The request named a provider this server has no configuration for.
    #[error("provider {provider} is not configured on this server")]
    ProviderNotConfigured {
        /// The provider's name.
        provider: &'static str,
    },
    /// The provider did not answer in time.
    #[error("LLM provider {provider} did not answer in time")]
    Timeout {
        /// The provider's name.
        provider: &'static str,
    },
    /// The provider could not be reached, or the connection failed mid-answer.
    #[error("could not reach LLM provider {provider}: {message}")]
    Transport {
        /// The provider's name.
        provider: &'static str,
        /// What went wrong, with the key scrubbed.
        message: String,
    },
    /// The provider answered with a non-2xx status.
    #[error("LLM provider {provider} answered HTTP {status}: {body}")]
    UpstreamStatus {
        /// The provider's name.
        provider: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body, with the key scrubbed.
        body: String,
    },
    /// The provider's answer was not a chat completion.
    #[error("LLM provider {provider} sent a malformed answer: {reason}")]
    MalformedResponse {
        /// The provider's name.
        provider: &'static str,
        /// What is wrong with it, with the key scrubbed.
        reason: String,
    },
}

impl LlmError {
    /// Whether the caller's input caused the error (as opposed to the provider).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidRequest(_)
                | Self::UnknownProvider { .. }
                | Self::ProviderNotConfigured { .. }
        )
    }

    /// Whether the provider timed out (a gateway timeout rather than a bad gateway).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// A stable machine-readable code for the error body, also the span's `error.type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnknownProvider { .. } => "unknown_provider",
            Self::ProviderNotConfigured { .. } => "provider_not_configured",
            Self::Timeout { .. } => "llm_timeout",
            Self::Transport { .. } => "llm_unreachable",
            Self::UpstreamStatus { .. } => "llm_upstream_error",
            Self::MalformedResponse { .. } => "llm_malformed_response",
        }
    }
}

/// Why an LLM configuration is unusable; reported at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmConfigError {
    /// The base URL is not an absolute `http` or `https` URL.
    #[error("HERMES_LLM_BASE_URL {url:?} is not an http(s) URL")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
    },
    /// The openai provider needs a key.
    #[error("HERMES_LLM_API_KEY is required for the openai provider")]
    MissingApiKey,
    /// The model name is empty.
    #[error("HERMES_LLM_MODEL must not be empty")]
    EmptyModel,
    /// The default provider is openai but no openai configuration was given.
    #[error("HERMES_LLM_PROVIDER is openai but the openai provider is not configured")]
    ProviderNotConfigured,
}

/// An API key. Its `Debug` prints `***` and it has no `Display`, so it cannot be logged by
/// accident; [`expose`](Self::expose) is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` with `***`.
    fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

/// Where and how to reach an OpenAI-compatible API.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// Bearer token.
    pub api_key: ApiKey,
    /// Model requested when the request names none.
    pub model: String,
    /// Per-request timeout on top of the client's own, if any.
    pub timeout: Option<Duration>,
}

impl OpenAiConfig {
    /// A checked configuration without a per-request timeout.
    ///
    /// # Errors
    /// [`LlmConfigError`] for a base URL that is not http(s), an empty key or an empty model.
    pub fn new(
        base_url: impl Into<String>,
        api_key: ApiKey,
        model: impl Into<String>,
    ) -> Result<Self, LlmConfigError> {
        let config = Self {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            timeout: None,
        };
        config.endpoint()?;
        if config.api_key.expose().trim().is_empty() {
            return Err(LlmConfigError::MissingApiKey);
        }
        if config.model.trim().is_empty() {
            return Err(LlmConfigError::EmptyModel);
        }
        Ok(config)
    }

    /// Sets a per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn endpoint(&self) -> Result<reqwest::Url, LlmConfigError> {
        let invalid = || LlmConfigError::InvalidBaseUrl {
            url: self.base_url.clone(),
        };
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&url).map_err(|_| invalid())?;
        if matches!(url.scheme(), "http" | "https") && url.has_host() {
            Ok(url)
        } else {
            Err(invalid())
        }
    }
}

/// A validated request, ready for a provider.
#[derive(Debug)]
struct Chat {
    provider: Provider,
    messages: Vec<ChatMessage>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

fn invalid(message: impl Into<String>) -> LlmError {
    LlmError::InvalidRequest(message.into())
}

fn validate(request: &LlmRequest, default_provider: Provider) -> Result<Chat, LlmError> {
    let provider = match &request.provider {
        Some(name) => name.parse()?,
        None => default_provider,
    };
    let messages = match (&request.prompt, &request.messages) {
        (Some(_), Some(_)) => return Err(invalid("give either prompt or messages, not both")),
        (None, None) => return Err(invalid("give prompt or messages")),
        (Some(prompt), None) => {
            if prompt.trim().is_empty() {
                return Err(invalid("prompt must not be empty"));
            }
            vec![ChatMessage {
                role: Role::User,
                content: prompt.clone(),
            }]
        }
        (None, Some(messages)) => {
            if messages.is_empty() {
                return Err(invalid("messages must not be empty"));
            }
            if let Some(i) = messages.iter().position(|m| m.content.trim().is_empty()) {
                return Err(invalid(format!("messages[{i}].content must not be empty")));
            }
            messages.clone()
        }
    };
    let input_chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if input_chars > MAX_INPUT_CHARS {
        return Err(invalid(format!(
            "the input is {input_chars} characters long; the limit is {MAX_INPUT_CHARS}"
        )));
    }
    if let Some(temperature) = request.temperature
        && !(0.0..=2.0).contains(&temperature)
    {
        return Err(invalid(format!(
            "temperature must be between 0.0 and 2.0, got {temperature}"
        )));
    }
    if let Some(max_tokens) = request.max_tokens
        && !(1..=MAX_TOKENS_LIMIT).contains(&max_tokens)
    {
        return Err(invalid(format!(
            "max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}"
        )));
    }
    if let Some(model) = &request.model {
        if model.trim().is_empty() {
            return Err(invalid("model must not be empty"));
        }
        if model.chars().count() > MAX_MODEL_NAME_CHARS {
            return Err(invalid(format!(
                "model names are at most {MAX_MODEL_NAME_CHARS} characters long"
            )));
        }
    }
    Ok(Chat {
        provider,
        messages,
        model: request.model.clone(),
        temperature: request.temperature,
        max_tokens: request.max_tokens,
    })
}

/// Tokens as the echo provider counts them: whitespace-separated words.
fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

fn now_unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The echo provider: answers with the last user message (the last message when there is no user
/// message), cut to `max_tokens` whitespace tokens.
///
/// The id is `chatcmpl-echo-` and the hex stable hash of model, token limit and messages, so the
/// same request always gets the same id; only `created` varies.
fn echo(chat: &Chat) -> LlmResponse {
    let model = chat.model.as_deref().unwrap_or(DEFAULT_ECHO_MODEL);
    let limit = chat.max_tokens.unwrap_or(MAX_TOKENS_LIMIT);
    let source = chat
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .or(chat.messages.last())
        .map_or("", |m| m.content.as_str());
    let limit_words = usize::try_from(limit).unwrap_or(usize::MAX);
    let truncated = source.split_whitespace().nth(limit_words).is_some();
    let (content, finish_reason) = if truncated {
        let words: Vec<&str> = source.split_whitespace().take(limit_words).collect();
        (words.join(" "), "length")
    } else {
        (source.to_owned(), "stop")
    };
    let prompt_tokens = chat
        .messages
        .iter()
        .map(|m| count_tokens(&m.content))
        .fold(0_u32, u32::saturating_add);
    let completion_tokens = count_tokens(&content);
    let fingerprint =
        serde_json::to_vec(&(model, limit, &chat.messages)).unwrap_or_else(|_| model.into());
    LlmResponse {
        id: format!(
            "chatcmpl-echo-{:016x}",
            crate::embed::stable_hash(&fingerprint)
        ),
        provider: Provider::Echo.as_str().to_owned(),
        model: model.to_owned(),
        created: now_unix_seconds(),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage {
                role: Role::Assistant,
                content,
            },
            finish_reason: finish_reason.to_owned(),
        }],
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        },
    }
}

/// The openai provider: one `POST {base_url}/chat/completions` per completion.
pub struct OpenAiProvider {
    client: ClientWithMiddleware,
    config: OpenAiConfig,
    endpoint: reqwest::Url,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.config.model)
            .field("api_key", &self.config.api_key)
            .field("timeout", &self.config.timeout)
            .finish()
    }
}

/// A chat completions request on the wire.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// A chat completions answer on the wire; compatible servers leave out different fields, so only
/// `choices` is required.
#[derive(Deserialize)]
struct WireResponse {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    index: Option<u32>,
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: Option<u32>,
}

const OPENAI: &str = "openai";

impl OpenAiProvider {
    /// A provider that sends through `client` (the caller's, so outbound calls are traced).
    ///
    /// # Errors
    /// [`LlmConfigError::InvalidBaseUrl`] when the configuration's base URL is unusable.
    pub fn new(client: ClientWithMiddleware, config: OpenAiConfig) -> Result<Self, LlmConfigError> {
        let endpoint = config.endpoint()?;
        Ok(Self {
            client,
            config,
            endpoint,
        })
    }

    /// The model requested when the request names none.
    pub fn default_model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, chat: &Chat) -> Result<LlmResponse, LlmError> {
        let model = chat.model.as_deref().unwrap_or(&self.config.model);
        let body = WireRequest {
            model,
            messages: &chat.messages,
            temperature: chat.temperature,
            max_tokens: chat.max_tokens,
        };
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(self.config.api_key.expose())
            .json(&body);
        if let Some(timeout) = self.config.timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(err.is_timeout(), &err))?;
        let status = response.status();
        let (bytes, cut) = foundry::http::read_at_most(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|err| self.transport_error(err.is_timeout(), &err))?;
        if !status.is_success() {
            // Scrub before cutting, so that a key straddling the cut cannot leave a prefix behind.
            let text = self.config.api_key.scrub(&String::from_utf8_lossy(&bytes));
            let excerpt: String = text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(MAX_ERROR_BODY_CHARS)
                .collect();
            return Err(LlmError::UpstreamStatus {
                provider: OPENAI,
                status: status.as_u16(),
                body: excerpt,
            });
        }
        let malformed = |reason: String| LlmError::MalformedResponse {
            provider: OPENAI,
            reason: self.config.api_key.scrub(&reason),
        };
        if cut {
            return Err(malformed(format!(
                "the answer is larger than {} MiB",
                MAX_RESPONSE_BYTES >> 20
            )));
        }
        let wire: WireResponse =
            serde_json::from_slice(&bytes).map_err(|err| malformed(err.to_string()))?;
        if wire.choices.is_empty() {
            return Err(malformed("no choices".to_owned()));
        }
        let choices: Vec<Choice> = wire
            .choices
            .into_iter()
            .zip(0_u32..)
            .map(|(choice, position)| Choice {
                index: choice.index.unwrap_or(position),
                message: ChatMessage {
                    role: Role::Assistant,
                    content: choice.message.content.unwrap_or_default(),
                },
                finish_reason: choice.finish_reason.unwrap_or_else(|| "unknown".to_owned()),
            })
            .collect();
        // Servers that report no usage get the echo provider's whitespace count, so the span's
        // token attributes are always present.
        let usage = match wire.usage {
            Some(usage) => Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage
                    .total_tokens
                    .unwrap_or(usage.prompt_tokens.saturating_add(usage.completion_tokens)),
            },
            None => {
                let prompt_tokens = chat
                    .messages
                    .iter()
                    .map(|m| count_tokens(&m.content))
                    .fold(0_u32, u32::saturating_add);
                let completion_tokens = choices
                    .iter()
                    .map(|c| count_tokens(&c.message.content))
                    .fold(0_u32, u32::saturating_add);
                Usage {
                    prompt_tokens,
                    completion_tokens,
                    total_tokens: prompt_tokens.saturating_add(completion_tokens),
                }
            }
        };
        Ok(LlmResponse {
            id: wire
                .id
                .unwrap_or_else(|| format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())),
            provider: OPENAI.to_owned(),
            model: wire.model.unwrap_or_else(|| model.to_owned()),
            created: wire.created.unwrap_or_else(now_unix_seconds),
            choices,
            usage,
        })
    }

    /// Maps a failed exchange to `Timeout` or `Transport`. `timed_out` comes from the caller
    /// because reqwest's own timeout marker is private and cannot be found by walking the chain.
    fn transport_error(
        &self,
        timed_out: bool,
        err: &(dyn std::error::Error + 'static),
    ) -> LlmError {
        let mut timed_out = timed_out;
        let mut message = String::new();
        for (depth, current) in std::iter::successors(Some(err), |e| e.source()).enumerate() {
            if let Some(reqwest_err) = current.downcast_ref::<reqwest::Error>() {
                timed_out |= reqwest_err.is_timeout();
            }
            if let Some(io_err) = current.downcast_ref::<std::io::Error>() {
                timed_out |= io_err.kind() == std::io::ErrorKind::TimedOut;
            }
            if depth > 0 {
                message.push_str(": ");
            }
            message.push_str(&current.to_string());
        }
        if timed_out {
            LlmError::Timeout { provider: OPENAI }
        } else {
            LlmError::Transport {
                provider: OPENAI,
                message: self.config.api_key.scrub(&message),
            }
        }
    }
}

/// The completion service behind `POST /llm`: validates, picks the provider, traces.
#[derive(Debug)]
pub struct LlmService {
    default_provider: Provider,
    openai: Option<OpenAiProvider>,
}

impl Default for LlmService {
    fn default() -> Self {
        Self::echo_only()
    }
}

impl LlmService {
    /// A service with only the echo provider.
    pub fn echo_only() -> Self {
        Self {
            default_provider: Provider::Echo,
            openai: None,
        }
    }

    /// A service whose requests without a `provider` go to `default_provider`.
    ///
    /// # Errors
    /// [`LlmConfigError::ProviderNotConfigured`] when the default is openai and `openai` is `None`.
    pub fn new(
        default_provider: Provider,
        openai: Option<OpenAiProvider>,
    ) -> Result<Self, LlmConfigError> {
        if default_provider == Provider::OpenAi && openai.is_none() {
            return Err(LlmConfigError::ProviderNotConfigured);
        }
        Ok(Self {
            default_provider,
            openai,
        })
    }

    /// The provider used when a request names none.
    pub fn default_provider(&self) -> Provider {
        self.default_provider
    }

    /// Validates `request` and runs it on its provider inside a `hermes.llm` span.
    ///
    /// # Errors
    /// See [`LlmError`]: client errors for bad requests, upstream errors for provider failures,
    /// which also mark the span with `otel.status_code = "ERROR"` and `error.type`.
    pub async fn complete(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let span = tracing::info_span!(
            "hermes.llm",
            gen_ai.operation.name = "chat",
            gen_ai.system = tracing::field::Empty,
            gen_ai.request.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        let result = self.run(request, &span).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                span.record(
                    "gen_ai.usage.input_tokens",
                    i64::from(response.usage.prompt_tokens),
                );
                span.record(
                    "gen_ai.usage.output_tokens",
                    i64::from(response.usage.completion_tokens),
                );
            }
            Err(err) if !err.is_client_error() => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", err.code());
            }
            Err(_) => {}
        }
        result
    }

    async fn run(
        &self,
        request: &LlmRequest,
        span: &tracing::Span,
    ) -> Result<LlmResponse, LlmError> {
        let chat = validate(request, self.default_provider)?;
        span.record("gen_ai.system", chat.provider.as_str());
        match chat.provider {
            Provider::Echo => {
                span.record(
                    "gen_ai.request.model",
                    chat.model.as_deref().unwrap_or(DEFAULT_ECHO_MODEL),
                );
                Ok(echo(&chat))
            }
            Provider::OpenAi => {
                let openai = self
                    .openai
                    .as_ref()
                    .ok_or(LlmError::ProviderNotConfigured { provider: OPENAI })?;
                span.record(
                    "gen_ai.request.model",
                    chat.model.as_deref().unwrap_or(openai.default_model()),
                );
                openai.complete(&chat).await
            }
        }
    }
}

/// The most of a provider's answer that is read: a completion is kilobytes, and a provider that
/// sends more must not fill Hermes' memory.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    use super::*;

    const KEY: &str = "sk-test-very-secret-0123456789";

    fn prompt(text: &str) -> LlmRequest {
        LlmRequest {
            prompt: Some(text.to_owned()),
            ..LlmRequest::default()
        }
    }

    async fn echo_complete(request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        LlmService::echo_only().complete(request).await
    }

    #[tokio::test]
    async fn echo_answers_with_the_last_user_message() {
        let request = LlmRequest {
            messages: Some(vec![
                ChatMessage {
                    role: Role::System,
                    content: "be brief".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "first question".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "an answer".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "pick up the red block".into(),
                },
            ]),
            ..LlmRequest::default()
        };

        let response = echo_complete(&request).await.expect("echo answers");

        assert_eq!(response.provider, "echo");
        assert_eq!(response.model, DEFAULT_ECHO_MODEL);
        assert_eq!(response.choices.len(), 1);
        assert_eq!(response.choices[0].index, 0);
        assert_eq!(response.choices[0].message.role, Role::Assistant);
        assert_eq!(response.choices[0].message.content, "pick up the red block");
        assert_eq!(response.choices[0].finish_reason, "stop");
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 11,
                completion_tokens: 5,
                total_tokens: 16
            }
        );
        assert!(response.id.starts_with("chatcmpl-echo-"), "{}", response.id);
        assert!(response.created > 1_600_000_000);
    }

    #[tokio::test]
    async fn echo_is_deterministic() {
        let first = echo_complete(&prompt("hello there")).await.expect("first");
        let second = echo_complete(&prompt("hello there")).await.expect("second");
        let other = echo_complete(&prompt("hello here")).await.expect("other");
        assert_eq!(first.id, second.id);
        assert_eq!(first.choices, second.choices);
        assert_ne!(first.id, other.id);
    }

    #[tokio::test]
    async fn echo_truncates_to_max_tokens() {
        let mut request = prompt("one two  three\nfour five");
        request.max_tokens = Some(3);
        request.model = Some("echo-large".into());
        let response = echo_complete(&request).await.expect("echo answers");
        assert_eq!(response.choices[0].message.content, "one two three");
        assert_eq!(response.choices[0].finish_reason, "length");
        assert_eq!(response.model, "echo-large");
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 5,
                completion_tokens: 3,
                total_tokens: 8
            }
        );

        request.max_tokens = Some(5);
        let response = echo_complete(&request).await.expect("echo answers");
        assert_eq!(
            response.choices[0].message.content,
            "one two  three\nfour five"
        );
        assert_eq!(response.choices[0].finish_reason, "stop");
    }

    #[tokio::test]
    async fn invalid_requests_are_client_errors() {
        let message = |content: &str| ChatMessage {
            role: Role::User,
            content: content.into(),
        };
        let cases = [
            (LlmRequest::default(), "give prompt or messages"),
            (
                LlmRequest {
                    messages: Some(vec![message("x")]),
                    ..prompt("x")
                },
                "not both",
            ),
            (prompt("   "), "prompt must not be empty"),
            (
                LlmRequest {
                    messages: Some(vec![]),
                    ..LlmRequest::default()
                },
                "messages must not be empty",
            ),
            (
                LlmRequest {
                    messages: Some(vec![message("x"), message(" ")]),
                    ..LlmRequest::default()
                },
                "messages[1].content",
            ),
            (
                LlmRequest {
                    temperature: Some(2.5),
                    ..prompt("x")
                },
                "temperature",
            ),
            (
                LlmRequest {
                    temperature: Some(-0.1),
                    ..prompt("x")
                },
                "temperature",
            ),
            (
                LlmRequest {
                    temperature: Some(f64::NAN),
                    ..prompt("x")
                },
                "temperature",
            ),
            (
                LlmRequest {
                    max_tokens: Some(0),
                    ..prompt("x")
                },
                "max_tokens",
            ),
            (
                LlmRequest {
                    max_tokens: Some(4097),
                    ..prompt("x")
                },
                "max_tokens",
            ),
            (
                LlmRequest {
                    model: Some(" ".into()),
                    ..prompt("x")
                },
                "model",
            ),
            (prompt(&"x".repeat(MAX_INPUT_CHARS + 1)), "limit"),
        ];
        for (request, expected) in cases {
            let err = echo_complete(&request).await.expect_err("invalid");
            assert!(err.is_client_error(), "{err:?}");
            assert_eq!(err.code(), "invalid_request");
            assert!(
                err.to_string().contains(expected),
                "{err} lacks {expected:?}"
            );
        }
        for (temperature, max_tokens) in [(0.0, 1), (2.0, MAX_TOKENS_LIMIT)] {
            let request = LlmRequest {
                temperature: Some(temperature),
                max_tokens: Some(max_tokens),
                ..prompt("x")
            };
            assert!(echo_complete(&request).await.is_ok());
        }
    }

    #[tokio::test]
    async fn providers_are_checked() {
        let unknown = LlmRequest {
            provider: Some("anthropic".into()),
            ..prompt("x")
        };
        let err = echo_complete(&unknown).await.expect_err("unknown provider");
        assert_eq!(
            err,
            LlmError::UnknownProvider {
                name: "anthropic".into()
            }
        );
        let openai = LlmRequest {
            provider: Some("openai".into()),
            ..prompt("x")
        };
        let err = echo_complete(&openai).await.expect_err("not configured");
        assert_eq!(err, LlmError::ProviderNotConfigured { provider: "openai" });
        assert!(err.is_client_error());
        assert_eq!(
            LlmService::new(Provider::OpenAi, None).err(),
            Some(LlmConfigError::ProviderNotConfigured)
        );
        assert_eq!("OpenAI".parse::<Provider>(), Ok(Provider::OpenAi));
    }

    #[test]
    fn requests_deserialise_and_roles_are_checked() {
        let request: LlmRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "provider": "echo",
            "temperature": 0.5,
            "max_tokens": 10
        }))
        .expect("valid request");
        assert_eq!(request.max_tokens, Some(10));
        assert!(request.prompt.is_none());
        let bad_role = json!({"messages": [{"role": "tool", "content": "hi"}]});
        assert!(serde_json::from_value::<LlmRequest>(bad_role).is_err());
    }

    #[test]
    fn config_checks_its_fields() {
        let key = || ApiKey::new(KEY);
        assert!(OpenAiConfig::new("http://127.0.0.1:9/v1/", key(), "m").is_ok());
        assert!(matches!(
            OpenAiConfig::new("ftp://example.com", key(), "m"),
            Err(LlmConfigError::InvalidBaseUrl { .. })
        ));
        assert!(matches!(
            OpenAiConfig::new("not a url", key(), "m"),
            Err(LlmConfigError::InvalidBaseUrl { .. })
        ));
        assert_eq!(
            OpenAiConfig::new(DEFAULT_OPENAI_BASE_URL, ApiKey::new(""), "m").err(),
            Some(LlmConfigError::MissingApiKey)
        );
        assert_eq!(
            OpenAiConfig::new(DEFAULT_OPENAI_BASE_URL, key(), " ").err(),
            Some(LlmConfigError::EmptyModel)
        );
    }

    #[test]
    fn the_key_is_hidden_from_debug_output() {
        let config =
            OpenAiConfig::new("http://127.0.0.1:9", ApiKey::new(KEY), "m").expect("config");
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
        let provider = OpenAiProvider::new(client, config.clone()).expect("provider");
        let service = LlmService::new(Provider::OpenAi, Some(provider)).expect("service");
        for debug in [
            format!("{:?}", ApiKey::new(KEY)),
            format!("{config:?}"),
            format!("{service:?}"),
        ] {
            assert!(!debug.contains(KEY), "{debug}");
        }
        assert_eq!(format!("{:?}", ApiKey::new(KEY)), "***");
    }

    /// What the fake server saw of the last request.
    type Seen = Arc<Mutex<Option<(HeaderMap, Value)>>>;

    /// A fake OpenAI-compatible server; the first path segment picks its behaviour.
    async fn fake_openai() -> (SocketAddr, Seen) {
        async fn handler(
            State(seen): State<Seen>,
            Path(scenario): Path<String>,
            headers: HeaderMap,
            body: String,
        ) -> Response {
            let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            *seen.lock().expect("lock") = Some((headers.clone(), request.clone()));
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            match scenario.as_str() {
                "ok" => axum::Json(json!({
                    "id": "chatcmpl-123",
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": request["model"],
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": "The block is on the table."},
                        "finish_reason": "stop"
                    }],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
                }))
                .into_response(),
                // A careless upstream that echoes the credentials back must not leak them.
                "fail" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error while handling {auth}"),
                )
                    .into_response(),
                "malformed" => (StatusCode::OK, format!("<html>{auth}</html>")).into_response(),
                "no-choices" => axum::Json(json!({"choices": []})).into_response(),
                // An endless answer, in chunks of 1 MiB without a length.
                "endless" | "endless-fail" => {
                    let status = if scenario == "endless" {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    let chunks = futures_util::stream::repeat_with(|| {
                        Ok::<_, std::io::Error>(vec![b' '; 1 << 20])
                    });
                    (status, axum::body::Body::from_stream(chunks)).into_response()
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    StatusCode::OK.into_response()
                }
            }
        }

        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/{scenario}/v1/chat/completions",
                axum::routing::post(handler),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    fn openai_service(base_url: String) -> LlmService {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client");
        let client = reqwest_middleware::ClientBuilder::new(client).build();
        let config = OpenAiConfig::new(base_url, ApiKey::new(KEY), "gpt-test").expect("config");
        let provider = OpenAiProvider::new(client, config).expect("provider");
        LlmService::new(Provider::OpenAi, Some(provider)).expect("service")
    }

    fn assert_key_hidden(err: &LlmError) {
        assert!(!err.to_string().contains(KEY), "{err}");
        assert!(!format!("{err:?}").contains(KEY), "{err:?}");
    }

    #[tokio::test]
    async fn openai_success_is_parsed() {
        let (addr, seen) = fake_openai().await;
        let service = openai_service(format!("http://{addr}/ok/v1/"));
        let request = LlmRequest {
            temperature: Some(0.2),
            max_tokens: Some(50),
            ..prompt("Where is the block?")
        };

        let response = service.complete(&request).await.expect("completion");

        assert_eq!(
            response,
            LlmResponse {
                id: "chatcmpl-123".into(),
                provider: "openai".into(),
                model: "gpt-test".into(),
                created: 1_700_000_000,
                choices: vec![Choice {
                    index: 0,
                    message: ChatMessage {
                        role: Role::Assistant,
                        content: "The block is on the table.".into()
                    },
                    finish_reason: "stop".into(),
                }],
                usage: Usage {
                    prompt_tokens: 12,
                    completion_tokens: 7,
                    total_tokens: 19
                },
            }
        );
        let (headers, body) = seen
            .lock()
            .expect("lock")
            .take()
            .expect("a request arrived");
        assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
        assert_eq!(
            body,
            json!({
                "model": "gpt-test",
                "messages": [{"role": "user", "content": "Where is the block?"}],
                "temperature": 0.2,
                "max_tokens": 50
            })
        );
    }

    #[tokio::test]
    async fn openai_uses_the_requested_model_and_omits_unset_options() {
        let (addr, seen) = fake_openai().await;
        let service = openai_service(format!("http://{addr}/ok/v1"));
        let request = LlmRequest {
            model: Some("gpt-other".into()),
            ..prompt("hi")
        };
        let response = service.complete(&request).await.expect("completion");
        assert_eq!(response.model, "gpt-other");
        let (_, body) = seen
            .lock()
            .expect("lock")
            .take()
            .expect("a request arrived");
        assert_eq!(
            body,
            json!({"model": "gpt-other", "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[tokio::test]
    async fn an_upstream_500_is_an_upstream_status_error() {
        let (addr, _) = fake_openai().await;
        let err = openai_service(format!("http://{addr}/fail/v1"))
            .complete(&prompt("hi"))
            .await
            .expect_err("upstream failed");
        assert!(
            matches!(&err, LlmError::UpstreamStatus { status: 500, body, .. } if body.contains("Bearer ***")),
            "{err:?}"
        );
        assert!(!err.is_client_error() && !err.is_timeout());
        assert_key_hidden(&err);
    }

    #[tokio::test]
    async fn a_malformed_body_is_a_malformed_response_error() {
        let (addr, _) = fake_openai().await;
        for scenario in ["malformed", "no-choices"] {
            let err = openai_service(format!("http://{addr}/{scenario}/v1"))
                .complete(&prompt("hi"))
                .await
                .expect_err("malformed");
            assert_eq!(err.code(), "llm_malformed_response", "{err:?}");
            assert!(!err.is_client_error());
            assert_key_hidden(&err);
        }
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_no_further_than_its_limit() {
        let (addr, _) = fake_openai().await;

        let ok = openai_service(format!("http://{addr}/endless/v1"))
            .complete(&prompt("hi"))
            .await
            .expect_err("too large");
        let failed = openai_service(format!("http://{addr}/endless-fail/v1"))
            .complete(&prompt("hi"))
            .await
            .expect_err("too large");

        assert!(
            matches!(&ok, LlmError::MalformedResponse { reason, .. } if reason.contains("larger than 8 MiB")),
            "{ok:?}"
        );
        assert!(
            matches!(&failed, LlmError::UpstreamStatus { status: 500, .. }),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_upstream_is_a_timeout() {
        let (addr, _) = fake_openai().await;
        let err = openai_service(format!("http://{addr}/slow/v1"))
            .complete(&prompt("hi"))
            .await
            .expect_err("timed out");
        assert_eq!(err, LlmError::Timeout { provider: "openai" });
        assert!(err.is_timeout() && !err.is_client_error());
    }

    #[tokio::test]
    async fn the_per_request_timeout_applies_too() {
        let (addr, _) = fake_openai().await;
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
        let config = OpenAiConfig::new(format!("http://{addr}/slow/v1"), ApiKey::new(KEY), "m")
            .expect("config")
            .with_timeout(Duration::from_millis(200));
        let provider = OpenAiProvider::new(client, config).expect("provider");
        let service = LlmService::new(Provider::Echo, Some(provider)).expect("service");
        let request = LlmRequest {
            provider: Some("openai".into()),
            ..prompt("hi")
        };
        let err = service.complete(&request).await.expect_err("timed out");
        assert!(err.is_timeout(), "{err:?}");
    }

    /// A server that answers every request with a 307 to `location`, and one that counts the
    /// bodies it receives.
    async fn redirecting_to(location: String) -> SocketAddr {
        let app = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_and_the_prompt_stays() {
        // Arrange: the provider answers 307 to another origin, which would receive the prompt.
        let (elsewhere, seen) = fake_openai().await;
        let provider_addr =
            redirecting_to(format!("http://{elsewhere}/ok/v1/chat/completions")).await;
        let client = foundry::http::external_client(Duration::from_secs(2)).expect("client");
        let config = OpenAiConfig::new(
            format!("http://{provider_addr}/v1"),
            ApiKey::new(KEY),
            "gpt-test",
        )
        .expect("config");
        let provider = OpenAiProvider::new(client, config).expect("provider");
        let service = LlmService::new(Provider::OpenAi, Some(provider)).expect("service");

        // Act
        let err = service
            .complete(&prompt("a secret plan"))
            .await
            .expect_err("the redirect is the answer");

        // Assert
        assert!(
            matches!(err, LlmError::UpstreamStatus { status: 307, .. }),
            "{err:?}"
        );
        assert!(
            seen.lock().expect("lock").is_none(),
            "nothing reached the other origin"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let err = openai_service(format!("http://{addr}/v1"))
            .complete(&prompt("hi"))
            .await
            .expect_err("unreachable");
        assert_eq!(err.code(), "llm_unreachable", "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert_key_hidden(&err);
    }
}
