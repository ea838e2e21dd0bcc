//! `OTEL_PROPAGATORS`: which context formats a service reads from requests and writes on its calls.
//!
//! W3C Trace Context and Baggage are foundry's own propagators (strict, [`crate::propagation`]);
//! B3, single and multiple headers, is opentelemetry-propagator-b3's (the propagator that left the
//! deprecated opentelemetry-zipkin); Jaeger's `uber-trace-id` is opentelemetry-jaeger-propagator's,
//! whose newest release is built on the 0.32 API, so [`Jaeger`] carries span contexts across;
//! AWS X-Ray's `X-Amzn-Trace-Id` is opentelemetry-aws's. `ottrace` is refused at startup: OT
//! Trace (deprecated by the spec) has no Rust crate.

use opentelemetry::{
    Context, global,
    propagation::{
        Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
        text_map_propagator::FieldIter,
    },
};
use opentelemetry_propagator_b3::{B3Encoding, Propagator as B3Propagator};

use crate::{
    config::ConfigError,
    propagation::{W3cBaggagePropagator, W3cTraceContextPropagator},
};

/// One format of `OTEL_PROPAGATORS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagator {
    /// `tracecontext`: W3C `traceparent` and `tracestate`.
    TraceContext,
    /// `baggage`: W3C `baggage`.
    Baggage,
    /// `b3`: B3 in one `b3` header.
    B3,
    /// `b3multi`: B3 in `X-B3-TraceId`, `X-B3-SpanId` and `X-B3-Sampled`.
    B3Multi,
    /// `jaeger`: Jaeger's `uber-trace-id`.
    Jaeger,
    /// `xray`: AWS X-Ray's `X-Amzn-Trace-Id`.
    XRay,
}

/// The formats when `OTEL_PROPAGATORS` is unset, as the spec says.
pub(crate) const DEFAULT_PROPAGATORS: [Propagator; 2] =
    [Propagator::TraceContext, Propagator::Baggage];

const VARIABLE: &str = "OTEL_PROPAGATORS";

/// Parses `OTEL_PROPAGATORS`: a comma-separated list, or `none` alone (propagate nothing).
/// Repeated names count once.
pub(crate) fn parse(value: Option<&str>) -> Result<Vec<Propagator>, ConfigError> {
    let Some(value) = value else {
        return Ok(DEFAULT_PROPAGATORS.to_vec());
    };
    // Enum values are read case-insensitively, as the spec asks.
    let names: Vec<String> = value
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut propagators = Vec::new();
    for name in &names {
        let propagator = match name.as_str() {
            "tracecontext" => Propagator::TraceContext,
            "baggage" => Propagator::Baggage,
            "b3" => Propagator::B3,
            "b3multi" => Propagator::B3Multi,
            "jaeger" => Propagator::Jaeger,
            "xray" => Propagator::XRay,
            "none" if names.len() == 1 => continue,
            "none" => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    "`none` cannot be listed with other propagators",
                ));
            }
            "ottrace" => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    format!(
                        "`{name}` is not available in this build; use tracecontext, baggage, \
                         b3, b3multi, jaeger or xray"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    "expected tracecontext, baggage, b3, b3multi, jaeger, xray or none, separated by commas",
                ));
            }
        };
        if !propagators.contains(&propagator) {
            propagators.push(propagator);
        }
    }
    Ok(propagators)
}

/// Installs `propagators`, in their order, as the global propagator: the server layer extracts
/// with it and the client injects with it.
pub(crate) fn install(propagators: &[Propagator]) {
    let formats: Vec<Box<dyn TextMapPropagator + Send + Sync>> = propagators
        .iter()
        .map(|propagator| -> Box<dyn TextMapPropagator + Send + Sync> {
            match propagator {
                Propagator::TraceContext => Box::new(W3cTraceContextPropagator::new()),
                Propagator::Baggage => Box::new(W3cBaggagePropagator::new()),
                Propagator::B3 => Box::new(Foreign {
                    propagator: B3Propagator::with_encoding(B3Encoding::SingleHeader),
                    only_b3: true,
                }),
                Propagator::B3Multi => Box::new(Foreign {
                    propagator: B3Propagator::with_encoding(B3Encoding::MultipleHeader),
                    only_b3: false,
                }),
                Propagator::Jaeger => Box::new(Jaeger::new()),
                Propagator::XRay => Box::new(Foreign {
                    propagator: opentelemetry_aws::trace::XrayPropagator::new(),
                    only_b3: false,
                }),
            }
        })
        .collect();
    global::set_text_map_propagator(TextMapCompositePropagator::new(formats));
}

/// The sampled bit of the trace flags.
const TRACE_SAMPLED: u8 = 0x01;
/// B3's bit of the trace flags for "debug" in opentelemetry-propagator-b3 (and Jaeger's crate).
const DEBUG: u8 = 0x04;

/// B3 or X-Ray, through their crates, made to agree with W3C Trace Context. Both crates give bit
/// 0x02 of the trace flags their own meaning ("deferred"), which Level 2 gives "random": a
/// sampled trace with the random flag went out as undecided, and an undecided one came in
/// labelled random. Here only `sampled` crosses, B3's debug counts as sampled (as the
/// OpenTelemetry spec says), W3C `tracestate` stays out of their headers and theirs out of it,
/// and a request that carries the same span in W3C headers too keeps what those say.
#[derive(Debug)]
struct Foreign<P> {
    propagator: P,
    /// B3 in its one `b3` header alone. opentelemetry-propagator-b3 0.33 writes the `X-B3-*`
    /// headers too whatever the encoding (its test of `UnSpecified`, a zero bitmask, always
    /// holds), so they are dropped on the way out.
    only_b3: bool,
}

impl<P: TextMapPropagator> TextMapPropagator for Foreign<P> {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};

        let span = cx.span();
        let ours = span.span_context();
        let plain = cx.with_remote_span_context(SpanContext::new(
            ours.trace_id(),
            ours.span_id(),
            ours.trace_flags() & TraceFlags::SAMPLED,
            ours.is_remote(),
            TraceState::default(),
        ));
        if self.only_b3 {
            self.propagator
                .inject_context(&plain, &mut OnlyB3(injector));
        } else {
            self.propagator.inject_context(&plain, injector);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        use opentelemetry::trace::TraceContextExt as _;

        let extracted = self.propagator.extract_with_context(cx, extractor);
        let span = extracted.span();
        let theirs = span.span_context();
        let sampled = theirs.trace_flags().to_u8() & (TRACE_SAMPLED | DEBUG) != 0;
        continued(cx, theirs.trace_id(), theirs.span_id(), sampled)
    }

    fn fields(&self) -> FieldIter<'_> {
        self.propagator.fields()
    }
}

/// `cx` continued from a span another format named: remote, `sampled` or not, with no trace
/// state. Where the context already holds that span (the request's W3C headers named it), it
/// stays as they said, `tracestate` and the random flag with it.
fn continued(
    cx: &Context,
    trace_id: opentelemetry::trace::TraceId,
    span_id: opentelemetry::trace::SpanId,
    sampled: bool,
) -> Context {
    use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};

    let theirs = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::default().with_sampled(sampled),
        true,
        TraceState::default(),
    );
    let span = cx.span();
    let ours = span.span_context();
    if !theirs.is_valid() || (ours.trace_id() == trace_id && ours.span_id() == span_id) {
        return cx.clone();
    }
    cx.with_remote_span_context(theirs)
}

/// Passes only the `b3` header on to the real injector.
struct OnlyB3<'a>(&'a mut dyn Injector);

impl Injector for OnlyB3<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == "b3" {
            self.0.set(key, value);
        }
    }
}

/// opentelemetry-jaeger-propagator, whose newest release implements the 0.32 API's propagator:
/// each call carries the headers and the span context across to that API and back. The crate
/// marks the format deprecated (Jaeger's own clients moved to W3C); it is here for services
/// that still talk to such clients, which is what `OTEL_PROPAGATORS=jaeger` asks for.
#[derive(Debug)]
#[expect(
    deprecated,
    reason = "OTEL_PROPAGATORS=jaeger names this deprecated format"
)]
struct Jaeger {
    propagator: opentelemetry_jaeger_propagator::Propagator,
    /// The one header it writes, for [`TextMapPropagator::fields`].
    fields: [String; 1],
}

impl Jaeger {
    #[expect(
        deprecated,
        reason = "OTEL_PROPAGATORS=jaeger names this deprecated format"
    )]
    fn new() -> Self {
        Self {
            propagator: opentelemetry_jaeger_propagator::Propagator::new(),
            fields: ["uber-trace-id".to_owned()],
        }
    }
}

/// The request's headers, read through the 0.32 API: `uber-trace-id` only. The crate reads
/// every key to turn `uberctx-*` baggage into a trace state, and gives up the whole context when
/// one of them is not a valid trace state member (`uberctx-user.id`, a value with `=`); that
/// baggage is not W3C `tracestate` anyway, so no key is listed.
struct ExtractorOf032<'a>(&'a dyn Extractor);

impl opentelemetry_032::propagation::Extractor for ExtractorOf032<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The call's headers, written through the 0.32 API.
struct InjectorOf032<'a>(&'a mut dyn Injector);

impl opentelemetry_032::propagation::Injector for InjectorOf032<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

impl TextMapPropagator for Jaeger {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        use opentelemetry::trace::TraceContextExt as _;
        use opentelemetry_032::trace as v032;
        use opentelemetry_032::trace::TraceContextExt as _;

        let span = cx.span();
        let ours = span.span_context();
        let theirs = v032::SpanContext::new(
            v032::TraceId::from_bytes(ours.trace_id().to_bytes()),
            v032::SpanId::from_bytes(ours.span_id().to_bytes()),
            v032::TraceFlags::new(ours.trace_flags().to_u8()),
            ours.is_remote(),
            v032::TraceState::default(),
        );
        let cx = opentelemetry_032::Context::new().with_remote_span_context(theirs);
        opentelemetry_032::propagation::TextMapPropagator::inject_context(
            &self.propagator,
            &cx,
            &mut InjectorOf032(injector),
        );
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        use opentelemetry::trace::{SpanId, TraceId};
        use opentelemetry_032::trace::TraceContextExt as _;

        let extracted = opentelemetry_032::propagation::TextMapPropagator::extract(
            &self.propagator,
            &ExtractorOf032(extractor),
        );
        let span = extracted.span();
        let theirs = span.span_context();
        // Only the sampled flag goes on: the crate keeps Jaeger's debug bit as 0x04 of the
        // flags (with 0x01: debug is sampled), a bit W3C leaves undefined and OTLP would carry
        // on every child span.
        continued(
            cx,
            TraceId::from_bytes(theirs.trace_id().to_bytes()),
            SpanId::from_bytes(theirs.span_id().to_bytes()),
            theirs.is_sampled(),
        )
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order_and_none_is_empty() {
        let cases: &[(Option<&str>, &[Propagator])] = &[
            (None, &DEFAULT_PROPAGATORS),
            (Some("b3multi"), &[Propagator::B3Multi]),
            (Some("jaeger"), &[Propagator::Jaeger]),
            (Some("xray"), &[Propagator::XRay]),
            (
                Some("b3, tracecontext,b3"),
                &[Propagator::B3, Propagator::TraceContext],
            ),
            (Some("none"), &[]),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse(*value).expect("valid").as_slice(),
                *expected,
                "{value:?}"
            );
        }
    }

    #[test]
    fn unknown_and_unavailable_formats_name_the_variable() {
        for value in ["ottrace", "tracecontext,ottrace", "w3c", "none,b3"] {
            let error = parse(Some(value)).expect_err(value);
            assert_eq!(error.variable, "OTEL_PROPAGATORS", "{error}");
        }
    }
}
