//! Unsampled requests skip span work: inside a request whose trace is not sampled, no span is
//! created at all.
//!
//! The SDK's sampler decides only when a span starts, after `tracing` has created the span and
//! tracing-opentelemetry has recorded its attributes into a builder: an unsampled span costs
//! almost as much as a sampled one that is not exported. The server layer knows the decision for
//! the whole request when it starts the request's span, whose context the request's future
//! carries; [`SpanFilter`] then disables every `tracing` span opened while an unsampled
//! context is active. A disabled span costs one filter call; the request still carries its trace
//! id downstream (with the sampled flag off, from the server span's context) and in its log
//! lines.
//!
//! Written here because neither tracing-opentelemetry nor the SDK offers sampling before a span
//! is built (the layer's pre-sampling only decides what is exported). With span-scoped
//! `RUST_LOG` directives, which must see every span, nothing is skipped.

use std::sync::OnceLock;

use opentelemetry::trace::{Span as _, SpanContext, TraceContextExt};
use opentelemetry_sdk::trace::Span as SdkSpan;
use tracing::{Metadata, Subscriber, level_filters::LevelFilter, subscriber::Interest};
use tracing_subscriber::{Layer, filter::Targets, layer::Context, registry::LookupSpan};

use crate::config::SamplerConfig;

/// The head sampler the tracer provider was built with, to tell ahead of the SDK; set when
/// unsampled requests skip their spans (not with span-scoped `RUST_LOG` directives, which must
/// see every span).
static HEAD_SAMPLER: OnceLock<SamplerConfig> = OnceLock::new();

/// Turns skipping on for this process, with the provider's head sampler.
pub(crate) fn skip_unsampled_spans(sampler: SamplerConfig) {
    let _ = HEAD_SAMPLER.set(sampler);
}

/// Whether a span with `parent` is certain not to be sampled, known before it is created: the
/// sampler is `always_off`, or parent-based with an unsampled parent (or, for
/// `parentbased_always_off`, none). The server layer then gives its span no attributes, as the
/// SDK would drop them anyway.
pub(crate) fn predicts_unsampled(parent: &opentelemetry::Context) -> bool {
    certainly_unsampled(HEAD_SAMPLER.get(), parent)
}

/// `parent` with `span` as its current span. When the sampler dropped the span, its context
/// keeps the parent's trace flags but `sampled` (the Level 2 `random` flag among them): the SDK
/// gives a dropped span empty flags, and W3C Trace Context lets a hop change only `sampled`.
/// Written here because the SDK offers no way to set a dropped span's flags.
pub(crate) fn with_span(parent: &opentelemetry::Context, span: SdkSpan) -> opentelemetry::Context {
    let parent_span = parent.span();
    let inherited = parent_span.span_context();
    let dropped = span.span_context();
    if span.is_recording()
        || !inherited.is_valid()
        || inherited.trace_id() != dropped.trace_id()
        || inherited.trace_flags().with_sampled(false) == dropped.trace_flags()
    {
        return parent.with_span(span);
    }
    let kept = SpanContext::new(
        dropped.trace_id(),
        dropped.span_id(),
        inherited.trace_flags().with_sampled(false),
        false,
        dropped.trace_state().clone(),
    );
    parent.with_remote_span_context(kept)
}

fn certainly_unsampled(sampler: Option<&SamplerConfig>, parent: &opentelemetry::Context) -> bool {
    let span = parent.span();
    let parent = span.span_context();
    match sampler {
        Some(SamplerConfig::AlwaysOff) => true,
        Some(SamplerConfig::ParentBasedAlwaysOff) => !parent.is_sampled(),
        Some(SamplerConfig::ParentBasedAlwaysOn | SamplerConfig::ParentBasedTraceIdRatio(_)) => {
            parent.is_valid() && !parent.is_sampled()
        }
        _ => false,
    }
}

/// The global filter that decides which `tracing` spans exist at all: with `targets`, only the
/// spans they enable (INFO and above, none of the HTTP, gRPC and telemetry crates' own), and, while
/// skipping is on, none opened while the active OpenTelemetry context is a valid, unsampled one
/// (a request whose trace is not sampled).
///
/// A global filter, because a per-layer filter only hides a span from its own layer: the span
/// would still exist, with an empty OpenTelemetry context that breaks propagation and the trace
/// ids of log lines. Spans it excludes are never created, for any layer, whatever `RUST_LOG`
/// enables. Without `targets` (span-scoped `RUST_LOG` directives, which must see every span) it
/// decides nothing but the skipping, and has no level of its own.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanFilter {
    targets: Option<Targets>,
}

impl SpanFilter {
    /// Spans of `targets` only (all spans when `None`), and none inside an unsampled request.
    pub(crate) fn new(targets: Option<Targets>) -> Self {
        Self { targets }
    }

    fn excludes(&self, metadata: &Metadata<'_>) -> bool {
        self.targets
            .as_ref()
            .is_some_and(|targets| !targets.would_enable(metadata.target(), metadata.level()))
    }
}

impl<S> Layer<S> for SpanFilter
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if !metadata.is_span() {
            return Interest::always();
        }
        if self.excludes(metadata) {
            return Interest::never();
        }
        // A span's answer depends on the request it is opened in: it may never be cached. Only
        // for the levels that are recorded; with `targets`, spans below them were answered
        // `never` above, and without, the other layers' answer decides.
        if *metadata.level() <= tracing::Level::INFO {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _cx: Context<'_, S>) -> bool {
        !metadata.is_span()
            || (!self.excludes(metadata)
                && (HEAD_SAMPLER.get().is_none() || !inside_unsampled_trace()))
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // The spans' level, whatever `RUST_LOG` says: a quiet log never disables spans.
        self.targets.as_ref().and_then(Targets::default_level)
    }
}

/// Whether a span under `parent` is skipped: skipping is on and `parent` is valid and not
/// sampled.
pub(crate) fn inside_skipped_trace(parent: &opentelemetry::Context) -> bool {
    HEAD_SAMPLER.get().is_some() && is_unsampled(parent)
}

/// Whether the active context is a span whose trace is not sampled. Inside such a request no
/// `tracing` span exists to be current (they are all skipped), so the active context is the
/// server span's.
fn inside_unsampled_trace() -> bool {
    opentelemetry::Context::map_current(is_unsampled)
}

fn is_unsampled(context: &opentelemetry::Context) -> bool {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid() && !span_context.is_sampled()
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        Context,
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    };

    use super::*;

    fn remote(flags: TraceFlags) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            flags,
            true,
            TraceState::NONE,
        ))
    }

    #[test]
    fn only_certain_drops_are_predicted() {
        let none = Context::new();
        let sampled = remote(TraceFlags::SAMPLED);
        let unsampled = remote(TraceFlags::default());
        let cases = [
            (SamplerConfig::ParentBasedAlwaysOn, &unsampled, true),
            (SamplerConfig::ParentBasedAlwaysOn, &sampled, false),
            (SamplerConfig::ParentBasedAlwaysOn, &none, false),
            (
                SamplerConfig::ParentBasedTraceIdRatio(0.5),
                &unsampled,
                true,
            ),
            (SamplerConfig::ParentBasedTraceIdRatio(0.5), &none, false),
            (SamplerConfig::ParentBasedAlwaysOff, &none, true),
            (SamplerConfig::ParentBasedAlwaysOff, &sampled, false),
            (SamplerConfig::AlwaysOff, &sampled, true),
            (SamplerConfig::AlwaysOn, &unsampled, false),
            (SamplerConfig::TraceIdRatio(0.0), &none, false),
        ];
        for (sampler, parent, expected) in cases {
            assert_eq!(
                certainly_unsampled(Some(&sampler), parent),
                expected,
                "{sampler:?}"
            );
        }
        assert!(
            !certainly_unsampled(None, &unsampled),
            "no telemetry, no guess"
        );
    }
}
