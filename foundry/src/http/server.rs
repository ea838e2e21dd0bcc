//! The server span and `http.server.request.duration` for every request, in one tower layer.
//!
//! axum-tracing-opentelemetry 0.38 was the first choice and is not used: it records empty
//! `url.scheme` and `user_agent.original` and a Datadog-only `span.type` on every span, creates
//! its spans at TRACE level (so a plain `RUST_LOG` filter disables them), injects an empty
//! `tracestate:` response header, needs a second layer (and a second boxed future) for the
//! response header, and has no OpenTelemetry metrics. This layer does span, metric and
//! `traceparent` in one pass and records only attributes that have a value.

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::MatchedPath, response::IntoResponse};
use futures_util::FutureExt as _;
use http::{Method, Request, Response};
use opentelemetry::{
    Context as OtelContext, KeyValue, StringValue, global,
    propagation::TextMapPropagator,
    trace::{FutureExt as _, SpanKind, Status, TraceContextExt, Tracer as _},
};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{ErrorResponse, error::BodyDeadline};
use crate::{
    error_log::{self, ErrorDetails},
    metrics::HttpInstruments,
    propagation::{HeaderExtractor, HeaderInjector, W3cTraceContextPropagator},
};

/// How long a request may take, body included, before it is abandoned with 503 `timeout`:
/// a slow client or a stuck downstream cannot hold a handler for ever.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Paths that are never traced: health checks and metric scrapes would drown the real traffic.
pub(crate) const UNTRACED_PATHS: [&str; 2] = ["/health", "/metrics"];

/// Adds the server span, its metric and the `traceparent` response header to a router, and
/// abandons requests that outlive 60 s (so it needs a tokio runtime with timers).
#[derive(Clone, Copy, Debug)]
pub struct ServerLayer {
    timeout: Duration,
}

impl Default for ServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerLayer {
    /// The layer; telemetry must be initialised first for its metric to record.
    pub fn new() -> Self {
        Self {
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Abandons requests after `timeout` instead of 60 s: for tests, which
    /// cannot wait a minute.
    #[cfg(feature = "testing")]
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerService {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`ServerLayer`] wraps around each route.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    timeout: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for ServerService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // `instrument` adds these routes outside the layer; this guards a service that routes
        // them itself, for the price of two string comparisons.
        if UNTRACED_PATHS.contains(&request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let start = Instant::now();
        let body_time = self.timeout / 2;
        request.extensions_mut().insert(BodyDeadline {
            at: tokio::time::Instant::from_std(start) + body_time,
            after: body_time,
        });
        let method = request.method().clone();
        // Copied once, shared by the span and the metric.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|matched| StringValue::from(Arc::<str>::from(matched.as_str())));
        let context = server_span(&request, &method, route.as_ref());
        let sampled = context.span().span_context().is_sampled();
        // Only with span-scoped `RUST_LOG` directives: a `tracing` span for them to match
        // (`[{http.route}]=debug`), which OpenTelemetry does not see.
        let log_span = if crate::logging::request_log_spans() {
            tracing::info_span!(
                target: crate::logging::REQUEST_LOG_SPAN_TARGET,
                "HTTP request",
                http.request.method = method_name(&method),
                http.route = route.as_ref().map(StringValue::as_str),
            )
        } else {
            tracing::Span::none()
        };
        let future = self.inner.call(request).instrument(log_span);
        let timeout = self.timeout;
        let mut exchange = Exchange {
            context,
            sampled,
            start,
            method: method_name(&method),
            route,
            answered: false,
        };

        Box::pin(async move {
            // A handler that panics answers 500 like any other failure, instead of the
            // connection closing with no answer and the span ending as `cancelled`.
            let future = AssertUnwindSafe(crate::panics::caught(
                future.with_context(exchange.context.clone()),
            ));
            let mut response = match tokio::time::timeout(timeout, future.catch_unwind()).await {
                Ok(Ok(Ok(response))) => response,
                Ok(Err(panic)) => panicked(panic.as_ref()),
                Err(_elapsed) => ErrorResponse::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    format!(
                        "the request took longer than {} ms and was abandoned",
                        timeout.as_millis()
                    ),
                )
                .into_response(),
            };
            exchange.answer(&mut response);
            Ok(response)
        })
    }
}

/// 500 `internal` for a handler that panicked. The panic's message goes to the span and the
/// error log, not to the client.
fn panicked(panic: &(dyn Any + Send)) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let mut response = ErrorResponse::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed unexpectedly",
    )
    .into_response();
    response.extensions_mut().insert(ErrorDetails {
        code: "panic".into(),
        message: format!("the handler panicked: {message}"),
    });
    response
}

/// What the layer records of one request, once it is answered or, when the future is dropped
/// first (the client went away, the server stopped), on drop: the span then ends with
/// `error.type` `cancelled` and no status code, and the duration is recorded the same way, as
/// the HTTP conventions say for a request that ended before a response was sent. Without this the
/// span would end bare and the request would be missing from `http.server.request.duration`.
struct Exchange {
    context: OtelContext,
    sampled: bool,
    start: Instant,
    method: &'static str,
    route: Option<StringValue>,
    answered: bool,
}

/// The `error.type` of a request whose response was never sent.
const CANCELLED: &str = "cancelled";

impl Exchange {
    fn answer(&mut self, response: &mut Response<Body>) {
        self.answered = true;
        let status = response.status();
        let details = response.extensions_mut().remove::<ErrorDetails>();
        let span = self.context.span();
        if self.sampled {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
                // The error's code and message stay on the span, whatever the log holds back.
                span.set_status(Status::error(
                    details
                        .as_ref()
                        .map_or_else(String::new, |d| format!("{}: {}", d.code, d.message)),
                ));
            }
        }
        if let Some(details) = &details {
            // In the request's context, so that the line carries its trace id.
            let _active = self.context.clone().attach();
            error_log::record(
                self.route.as_ref().map(StringValue::as_str),
                status.as_u16(),
                details,
            );
        }
        span.end();
        // Only traceparent (and a non-empty tracestate): baggage is not echoed back. Nothing
        // when there is no span of ours (the caller's own would only be echoed).
        if crate::context::tracer().is_some() {
            W3cTraceContextPropagator::new()
                .inject_context(&self.context, &mut HeaderInjector(response.headers_mut()));
        }
        self.record(Some(status.as_u16()));
    }

    /// The duration, by method, status (`None`: cancelled) and route.
    fn record(&mut self, status: Option<u16>) {
        let Some(instruments) = HttpInstruments::get() else {
            return;
        };
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new("http.request.method", self.method));
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        attributes.push(KeyValue::new("url.scheme", "http"));
        if let Some(route) = self.route.take() {
            attributes.push(KeyValue::new("http.route", route));
        }
        match status {
            Some(status @ 500..600) => {
                attributes.push(KeyValue::new("error.type", status.to_string()));
            }
            None => attributes.push(KeyValue::new("error.type", CANCELLED)),
            Some(_) => {}
        }
        instruments
            .server_duration
            .record(self.start.elapsed().as_secs_f64(), &attributes);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let span = self.context.span();
        if self.sampled {
            span.set_attribute(KeyValue::new("error.type", CANCELLED));
        }
        span.end();
        self.record(None);
    }
}

/// The context of one request: its server span, an OpenTelemetry SDK span whose parent is read
/// from the W3C headers. Empty when telemetry is off.
///
/// The span is built with the SDK directly, not through `tracing`: a `tracing` span costs a
/// registry entry and a pass through every layer at its creation, at each of its fields, and at
/// every entry and exit (each poll of the request), and tracing-opentelemetry then builds the
/// same span a second time. The request's future carries this context instead
/// ([`opentelemetry::trace::FutureExt::with_context`]): `tracing` spans opened inside take it
/// as their parent (tracing-opentelemetry falls back to the active context), log lines take
/// their ids from it, and calls to other services carry it. When the span cannot be sampled it
/// gets no attributes, as the SDK would drop them.
fn server_span(
    request: &Request<Body>,
    method: &Method,
    route: Option<&StringValue>,
) -> OtelContext {
    let headers = request.headers();
    // A malformed traceparent extracts as an empty context: the span then starts a new trace.
    let parent =
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    let Some(tracer) = crate::context::tracer() else {
        // Telemetry off: no span, but the request's context goes on to the calls it makes
        // (`OTEL_SDK_DISABLED` leaves the propagators on, as the spec says).
        return parent;
    };
    let builder = if crate::sampling::predicts_unsampled(&parent) {
        tracer.span_builder("HTTP request")
    } else {
        let mut attributes = Vec::with_capacity(9);
        attributes.push(KeyValue::new("http.request.method", method_name(method)));
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.clone()));
        }
        attributes.push(KeyValue::new("url.path", request.uri().path().to_owned()));
        attributes.push(KeyValue::new("url.scheme", "http"));
        if let Some(host) = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            let (address, port) = split_host_port(host);
            attributes.push(KeyValue::new("server.address", address.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", port));
            }
        }
        if let Some(agent) = headers
            .get(http::header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .filter(|agent| !agent.is_empty())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        tracer
            .span_builder(span_name(method, route.map(StringValue::as_str)))
            .with_attributes(attributes)
    };
    let span = builder
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &parent);
    crate::sampling::with_span(&parent, span)
}

/// `{METHOD} {route}`, or just the method when no route matched, as the conventions name it.
fn span_name(method: &Method, route: Option<&str>) -> String {
    let method = method_name(method);
    match route {
        Some(route) => {
            let mut name = String::with_capacity(method.len() + 1 + route.len());
            name.push_str(method);
            name.push(' ');
            name.push_str(route);
            name
        }
        None => method.to_owned(),
    }
}

/// The method as the conventions want it: known methods by name, anything else `_OTHER`, so a
/// client cannot blow up metric cardinality with invented methods.
pub(crate) fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets out of the address.
fn split_host_port(host: &str) -> (&str, Option<i64>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((address, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (address, port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((address, port)) => match port.parse() {
            Ok(port) => (address, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hosts() {
        assert_eq!(
            split_host_port("localhost:47000"),
            ("localhost", Some(47000))
        );
        assert_eq!(split_host_port("example.com"), ("example.com", None));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
    }

    #[test]
    fn unknown_methods_are_other() {
        let method = Method::from_bytes(b"BREW").expect("valid token");
        assert_eq!(method_name(&method), "_OTHER");
    }
}
