//! `OTEL_PROPAGATORS`: which context formats a service reads from requests and writes on its calls.
//!
//! W3C Trace Context and Baggage are foundry's own propagators (strict, [`crate::propagation`]);
//! B3, single and multiple headers, is opentelemetry-propagator-b3's (the propagator that left the
//! deprecated opentelemetry-zipkin). `jaeger`, `xray` and `ottrace`
//! are refused at startup: the Jaeger propagator crate has no release for the 0.33 family this
//! workspace builds on (its newest is 0.32), and the other two have no Rust crate of the family.

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
    let names: Vec<&str> = value.split(',').map(str::trim).collect();
    let mut propagators = Vec::new();
    for name in &names {
        let propagator = match *name {
            "tracecontext" => Propagator::TraceContext,
            "baggage" => Propagator::Baggage,
            "b3" => Propagator::B3,
            "b3multi" => Propagator::B3Multi,
            "none" if names.len() == 1 => continue,
            "none" => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    "`none` cannot be listed with other propagators",
                ));
            }
            "jaeger" | "xray" | "ottrace" => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    format!(
                        "`{name}` is not available: no propagator crate of the OpenTelemetry 0.33 \
                         family has it; use tracecontext, baggage, b3 or b3multi"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    VARIABLE,
                    value,
                    "expected tracecontext, baggage, b3, b3multi or none, separated by commas",
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
                Propagator::B3 => Box::new(SingleHeaderB3(B3Propagator::with_encoding(
                    B3Encoding::SingleHeader,
                ))),
                Propagator::B3Multi => {
                    Box::new(B3Propagator::with_encoding(B3Encoding::MultipleHeader))
                }
            }
        })
        .collect();
    global::set_text_map_propagator(TextMapCompositePropagator::new(formats));
}

/// B3 in its one `b3` header alone. opentelemetry-propagator-b3 0.33 writes the `X-B3-*`
/// headers too whatever the encoding (its test of `UnSpecified`, a zero bitmask, always holds),
/// so this drops them on the way out; extraction is the crate's.
#[derive(Debug)]
struct SingleHeaderB3(B3Propagator);

/// Passes only the `b3` header on to the real injector.
struct OnlyB3<'a>(&'a mut dyn Injector);

impl Injector for OnlyB3<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == "b3" {
            self.0.set(key, value);
        }
    }
}

impl TextMapPropagator for SingleHeaderB3 {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.0.inject_context(cx, &mut OnlyB3(injector));
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        self.0.fields()
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
        for value in ["jaeger", "xray", "tracecontext,ottrace", "w3c", "none,b3"] {
            let error = parse(Some(value)).expect_err(value);
            assert_eq!(error.variable, "OTEL_PROPAGATORS", "{error}");
        }
    }
}
