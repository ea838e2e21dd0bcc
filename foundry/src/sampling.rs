//! Unsampled requests skip span work: inside a server span whose trace is not sampled, no
//! further span is created at all.
//!
//! The SDK's sampler decides only when a span starts, after `tracing` has created the span and
//! tracing-opentelemetry has recorded its attributes into a builder: an unsampled span costs
//! almost as much as a sampled one that is not exported. The server layer knows the decision for
//! the whole request as soon as its span's parent is set, so it marks that span, and
//! [`SkipUnsampled`] then disables every span opened inside it. A disabled span costs one filter
//! call; the request still carries its trace id downstream (with the sampled flag off, from the
//! server span's context) and in its log lines. While no marked span is open (every request
//! sampled), the filter is one atomic load.
//!
//! Written here because neither tracing-opentelemetry nor the SDK offers sampling before a span
//! is built (the layer's pre-sampling only decides what is exported). The filter judges by the
//! current span: a span opened while a marked span is current is skipped, whatever parent it
//! names; one opened elsewhere with a marked span as its explicit parent is recorded as before
//! (and dropped by the sampler). With span-scoped `RUST_LOG` directives, which must see every
//! span, nothing is skipped.

use std::sync::{
    OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use opentelemetry::trace::TraceContextExt;
use tracing::{Metadata, Span, Subscriber, subscriber::Interest};
use tracing_subscriber::{Layer, Registry, layer::Context, registry::LookupSpan};

use crate::config::SamplerConfig;

/// The extension on a span whose trace is not sampled.
struct Unsampled;

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
/// `parentbased_always_off`, none). The server layer then creates a bare span, as the SDK would
/// drop its attributes anyway.
pub(crate) fn predicts_unsampled(parent: &opentelemetry::Context) -> bool {
    certainly_unsampled(HEAD_SAMPLER.get(), parent)
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

/// Marked spans still open: while there are none (every request sampled), the check of the
/// current span is skipped.
static OPEN_UNSAMPLED: AtomicUsize = AtomicUsize::new(0);

/// Marks `span`, whose trace is not sampled, so that nothing is recorded inside it (when
/// skipping is on and [`SkipUnsampled`] is installed, which counts the mark down again).
pub(crate) fn mark_unsampled(span: &Span) {
    if HEAD_SAMPLER.get().is_none() {
        return;
    }
    span.with_subscriber(|(id, dispatch)| {
        if dispatch.downcast_ref::<SkipUnsampled>().is_none() {
            return;
        }
        if let Some(data) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            let mut extensions = data.extensions_mut();
            if extensions.get_mut::<Unsampled>().is_none() {
                extensions.insert(Unsampled);
                OPEN_UNSAMPLED.fetch_add(1, Ordering::AcqRel);
            }
        }
    });
}

/// The layer that disables, for every layer, each span opened inside a marked span. A global
/// filter, because a per-layer filter only hides a span from its own layer: the span would still
/// exist, with an empty OpenTelemetry context that breaks propagation and the trace ids of log
/// lines.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SkipUnsampled;

impl<S> Layer<S> for SkipUnsampled
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // A span's answer depends on the span it is opened in: it may never be cached. Only
        // for the levels that are recorded, so that DEBUG and TRACE spans stay disabled once
        // and for all by the other layers' answer.
        if metadata.is_span() && *metadata.level() <= tracing::Level::INFO {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        let inside_unsampled = || {
            cx.lookup_current()
                .is_some_and(|span| span.extensions().get::<Unsampled>().is_some())
        };
        !metadata.is_span() || OPEN_UNSAMPLED.load(Ordering::Acquire) == 0 || !inside_unsampled()
    }

    fn on_close(&self, id: tracing::span::Id, cx: Context<'_, S>) {
        if OPEN_UNSAMPLED.load(Ordering::Acquire) > 0
            && cx
                .span(&id)
                .is_some_and(|span| span.extensions().get::<Unsampled>().is_some())
        {
            OPEN_UNSAMPLED.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
