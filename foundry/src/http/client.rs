//! Outbound HTTP: reqwest with a middleware of ours for the client span, the trace context and
//! `http.client.request.duration`, and typed JSON calls.
//!
//! reqwest-tracing was used here first and is no longer: its client spans are `tracing` spans,
//! and a `tracing` span costs a registry entry and a pass through every layer at its creation,
//! at each field, at every entry and exit (each poll of the call) and at its close, before
//! tracing-opentelemetry builds the same span a second time (`make profile` measured about 9000
//! instructions a call more than this). Its default backend also names every client span by the
//! bare method and records `http.response.status_code` and `server.port` as strings
//! (tracing-opentelemetry has no unsigned integers; upstream PR #287). Like the server span, the
//! client span is an OpenTelemetry SDK span: its parent is the current `tracing` span (a
//! service's own operation, like `sophia.plan`) or else the active context (the request's server
//! span), and its context goes out as `traceparent`, `tracestate` and `baggage` through the global
//! propagator. Inside a request whose trace is not sampled no span is started, and the call
//! carries the request's own context, unsampled.

use std::{borrow::Cow, sync::Arc, time::Duration, time::Instant};

use http::{Extensions, StatusCode};
use opentelemetry::{
    Context, KeyValue, StringValue, global,
    trace::{SpanKind, Status, TraceContextExt, Tracer as _},
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde::{Serialize, de::DeserializeOwned};

use super::{ErrorResponse, server::method_name};
use crate::{metrics::HttpInstruments, propagation::HeaderInjector};

/// A traced HTTP client.
pub type HttpClient = ClientWithMiddleware;

/// A client whose calls each get a client span and carry the trace context, with a connect
/// timeout of 2 s and the given overall `timeout` per request. Like [`external_client`], it
/// follows redirects within the origin of the call only.
pub fn client(timeout: Duration) -> Result<HttpClient, reqwest::Error> {
    build_client(timeout, true)
}

/// A client for calls that leave the system (a third-party API): each gets its client span and
/// metric like any other, but carries no `traceparent`, `tracestate` nor `baggage`. W3C Baggage
/// asks that baggage not cross a trust boundary, where it may hold user data, and the system's
/// trace ids are nothing an outside party needs.
pub fn external_client(timeout: Duration) -> Result<HttpClient, reqwest::Error> {
    build_client(timeout, false)
}

fn build_client(timeout: Duration, propagate: bool) -> Result<HttpClient, reqwest::Error> {
    let inner = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2).min(timeout))
        .timeout(timeout)
        .redirect(same_origin_redirects())
        .build()?;
    Ok(ClientBuilder::new(inner)
        .with(ClientTelemetry { propagate })
        .build())
}

/// The most redirects a call follows, reqwest's own default.
const MAX_REDIRECTS: usize = 10;

/// Redirects are followed within the origin of the call only: reqwest's default follows them
/// anywhere, and a 307 or 308 resends the body (a prompt, a plan) to whatever host the answer
/// names. A redirect elsewhere is not followed; the caller gets the 3xx answer itself.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().origin() == first.origin() {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The name of a call's client span, `{METHOD} {url.template}` by the conventions: put it in the
/// request's extensions (`RequestBuilder::with_extension`). Without it the span is named by the
/// method alone.
#[derive(Clone, Debug)]
pub(crate) struct ClientSpanName(pub Cow<'static, str>);

/// The client span, the trace context on the request (when `propagate`), and the duration
/// metric, for every call.
struct ClientTelemetry {
    propagate: bool,
}

#[async_trait::async_trait]
impl Middleware for ClientTelemetry {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // Telemetry off: nothing to record, but the request's context is carried on
        // (`OTEL_SDK_DISABLED` leaves the propagators on; with none installed this injects nothing).
        let Some(instruments) = HttpInstruments::get() else {
            if self.propagate {
                global::get_text_map_propagator(|propagator| {
                    propagator.inject_context(
                        &crate::context::current_context(),
                        &mut HeaderInjector(request.headers_mut()),
                    );
                });
            }
            return next.run(request, extensions).await;
        };
        let start = Instant::now();
        let method = method_name(request.method());
        let url = request.url();
        // Copied once, shared by the span and the metric.
        let (address, port) = (
            StringValue::from(Arc::<str>::from(url.host_str().unwrap_or_default())),
            url.port_or_known_default().map(i64::from),
        );
        let parent = crate::context::current_context();
        let span = client_span(&request, extensions, &parent, method, &address, port);
        if self.propagate {
            global::get_text_map_propagator(|propagator| {
                propagator.inject_context(
                    span.as_ref().unwrap_or(&parent),
                    &mut HeaderInjector(request.headers_mut()),
                );
            });
        }
        let outcome = next.run(request, extensions).await;

        let status = outcome.as_ref().ok().map(reqwest::Response::status);
        let error_type: Option<Cow<'static, str>> = match (&outcome, status) {
            (Err(error), _) => Some(Cow::Borrowed(transport_error_type(error))),
            (Ok(_), Some(status)) if status.is_client_error() || status.is_server_error() => {
                Some(Cow::Owned(status.as_str().to_owned()))
            }
            _ => None,
        };
        if let Some(context) = &span {
            let span = context.span();
            if let Some(status) = status {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
            }
            if let Some(error_type) = &error_type {
                span.set_attribute(KeyValue::new("error.type", error_type.clone()));
                span.set_status(Status::error(""));
            }
            span.end();
        }
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("http.request.method", method));
        attributes.push(KeyValue::new("server.address", address));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", port));
        }
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
        }
        if let Some(error_type) = error_type {
            attributes.push(KeyValue::new("error.type", error_type));
        }
        instruments
            .client_duration
            .record(start.elapsed().as_secs_f64(), &attributes);
        outcome
    }
}

/// Starts the client span of `request` under `parent`, and returns its context; `None` when
/// telemetry is off or the call is inside a request whose trace is not sampled.
fn client_span(
    request: &reqwest::Request,
    extensions: &Extensions,
    parent: &Context,
    method: &'static str,
    address: &StringValue,
    port: Option<i64>,
) -> Option<Context> {
    let tracer = crate::context::tracer()?;
    if crate::sampling::inside_skipped_trace(parent) {
        return None;
    }
    let name = extensions
        .get::<ClientSpanName>()
        .map_or(Cow::Borrowed(method), |name| name.0.clone());
    let mut attributes = Vec::with_capacity(4);
    attributes.push(KeyValue::new("http.request.method", method));
    attributes.push(KeyValue::new("server.address", address.clone()));
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", port));
    }
    attributes.push(KeyValue::new(
        "url.full",
        url_full(request.url()).into_owned(),
    ));
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    Some(crate::sampling::with_span(parent, span))
}

/// The URL for `url.full`: scheme, host, port and path only, as a query string or user info
/// may carry secrets. Borrowed when there is nothing to strip (every call between the services).
fn url_full(url: &reqwest::Url) -> Cow<'_, str> {
    if url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
    {
        return Cow::Borrowed(url.as_str());
    }
    let port = url
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Cow::Owned(format!(
        "{}://{}{port}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    ))
}

fn transport_error_type(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(error) if error.is_connect() => "connect",
        _ => "transport",
    }
}

/// Another LOGOS service, called with JSON: every failure becomes a [`DownstreamError`] that
/// names the service.
#[derive(Clone)]
pub struct Downstream {
    service: &'static str,
    base_url: String,
    client: HttpClient,
    bearer_token: Option<String>,
    forwards_client_errors: bool,
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("service", &self.service)
            .field("base_url", &self.base_url())
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// Nothing answered (connection refused, DNS, reset).
    #[error("{service} is unreachable at {url}")]
    Unreachable {
        /// The service called.
        service: &'static str,
        /// Where it was called.
        url: String,
    },
    /// No answer within the client timeout.
    #[error("{service} did not answer in time")]
    Timeout {
        /// The service called.
        service: &'static str,
    },
    /// It answered with an error status.
    #[error("{service} answered {status}: {message}")]
    Status {
        /// The service called.
        service: &'static str,
        /// Its status.
        status: StatusCode,
        /// Its error code, when it sent the LOGOS error shape; else `http_error`.
        code: String,
        /// Its error message.
        message: String,
        /// Whether a 4xx is the end user's to see (the caller only forwards their input).
        forwarded: bool,
    },
    /// It answered 2xx with a body that is not what the contract says.
    #[error("{service} sent an invalid response: {detail}")]
    InvalidResponse {
        /// The service called.
        service: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// The code of an error answer that is not in the LOGOS error shape (a proxy's HTML page, say).
pub(crate) const NOT_LOGOS_ERROR: &str = "http_error";

impl DownstreamError {
    /// The service that failed.
    pub fn service(&self) -> &'static str {
        match self {
            Self::Unreachable { service, .. }
            | Self::Timeout { service }
            | Self::Status { service, .. }
            | Self::InvalidResponse { service, .. } => service,
        }
    }
}

impl From<DownstreamError> for ErrorResponse {
    fn from(error: DownstreamError) -> Self {
        Self::from_ref(&error)
    }
}

impl ErrorResponse {
    /// The answer for a failed downstream call. For a caller that only forwards the user's input
    /// (see [`Downstream::forwarding_client_errors`]), a 4xx passes through, and so does a
    /// 502/504 in the LOGOS error shape: it already names the service at fault further down
    /// (`hermes_timeout` behind Sophia). Anything else is 502, or 504 for a timeout, with a code
    /// that names the service called.
    pub fn from_ref(error: &DownstreamError) -> Self {
        let service = error.service();
        match error {
            DownstreamError::Status {
                status,
                code,
                message,
                forwarded: true,
                ..
            } if status.is_client_error()
                || (matches!(
                    *status,
                    StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
                ) && code != NOT_LOGOS_ERROR) =>
            {
                ErrorResponse::new(*status, code.clone(), format!("{service}: {message}"))
            }
            DownstreamError::Timeout { .. } => ErrorResponse::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{service}_timeout"),
                error.to_string(),
            ),
            _ => ErrorResponse::new(
                StatusCode::BAD_GATEWAY,
                format!("{service}_unavailable"),
                error.to_string(),
            ),
        }
    }
}

impl Downstream {
    /// `service` at `base_url` (e.g. `http://127.0.0.1:17000`), called through `client`.
    pub fn new(service: &'static str, base_url: &str, client: HttpClient) -> Self {
        Self {
            service,
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
            bearer_token: None,
            forwards_client_errors: false,
        }
    }

    /// Lets the other service's 4xx answers reach the end user as they are, for a caller that
    /// only forwards the user's input (Apollo). Otherwise a 4xx means the caller sent a wrong
    /// request, which is its own failure: 502 naming the service.
    #[must_use]
    pub fn forwarding_client_errors(mut self) -> Self {
        self.forwards_client_errors = true;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every call (never recorded on a span).
    #[must_use]
    pub fn with_bearer_token(mut self, token: Option<String>) -> Self {
        self.bearer_token = token.filter(|token| !token.is_empty());
        self
    }

    /// The service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The service's base URL as a report shows it: without any `user:password@` it holds.
    pub fn base_url(&self) -> String {
        crate::url::without_userinfo(&self.base_url)
    }

    /// `GET {base}{path}`, decoding a JSON answer. `path` is a route template (no ids): it
    /// names the client span.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &'static str,
    ) -> Result<T, DownstreamError> {
        self.call(http::Method::GET, path, None::<&()>).await
    }

    /// `POST {base}{path}` with a JSON body, decoding a JSON answer.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<T, DownstreamError> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &'static str,
        body: Option<&B>,
    ) -> Result<T, DownstreamError> {
        let url = format!("{}{path}", self.base_url);
        let name = format!("{} {path}", method_name(&method));
        let mut request = self
            .client
            .request(method, &url)
            .with_extension(ClientSpanName(name.into()));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.transport(&error, &url))?;
        let status = response.status();
        let (bytes, cut) = read_at_most(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|error| self.transport(&reqwest_middleware::Error::Reqwest(error), &url))?;
        if !status.is_success() {
            let (code, message) = error_fields(&bytes).unwrap_or_else(|| {
                (
                    NOT_LOGOS_ERROR.to_owned(),
                    String::from_utf8_lossy(&bytes)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            });
            let shown = |text: String| text.chars().take(MAX_ERROR_CHARS).collect();
            return Err(DownstreamError::Status {
                service: self.service,
                status,
                code: shown(code),
                message: shown(message),
                forwarded: self.forwards_client_errors,
            });
        }
        if cut {
            return Err(DownstreamError::InvalidResponse {
                service: self.service,
                detail: format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20),
            });
        }
        serde_json::from_slice(&bytes).map_err(|error| DownstreamError::InvalidResponse {
            service: self.service,
            detail: error.to_string(),
        })
    }

    fn transport(&self, error: &reqwest_middleware::Error, url: &str) -> DownstreamError {
        match error {
            reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => {
                DownstreamError::Timeout {
                    service: self.service,
                }
            }
            _ => DownstreamError::Unreachable {
                service: self.service,
                url: crate::url::without_userinfo(url),
            },
        }
    }
}

/// The most of another service's answer that is read: the largest answer of a LOGOS route is a
/// few megabytes, and a service that sends more must not fill the caller's memory.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The most of another service's error code or message passed on, in characters.
const MAX_ERROR_CHARS: usize = 200;

/// Up to `limit` bytes of `response`'s body, and whether it had more: for answers from other
/// services and providers, which must not fill memory however much they send.
pub async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// `code` and `message` of a LOGOS error body.
fn error_fields(bytes: &[u8]) -> Option<(String, String)> {
    let body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let error = body.get("error")?;
    Some((
        error.get("code")?.as_str()?.to_owned(),
        error.get("message")?.as_str()?.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_keeps_no_query_or_user_info() {
        let url = |text: &str| reqwest::Url::parse(text).expect("a valid URL");
        let plain = url("http://127.0.0.1:17000/embed_text");
        assert!(matches!(url_full(&plain), Cow::Borrowed(_)));
        assert_eq!(url_full(&plain), "http://127.0.0.1:17000/embed_text");
        let secret = url("https://user:pw@api.example.com/v1/chat?key=s3cret#x");
        assert_eq!(url_full(&secret), "https://api.example.com/v1/chat");
        let port = url("http://user@localhost:8080/?q=1");
        assert_eq!(url_full(&port), "http://localhost:8080/");
    }
}
