//! What instrumentation reads of the installed telemetry: the tracer of the spans foundry builds
//! with the SDK directly, and the context new work continues. [`crate::telemetry`] sets the
//! tracer; the server layer, the client middleware and the log bridge read them, with no path
//! back to the pipeline that built them.

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The tracer of the server layer's spans, set with the global providers (the first set in a
/// process wins): a concrete SDK tracer, not the boxed global one, on the request path.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer for spans foundry builds with the SDK directly; `None` when telemetry is off.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The context that new work continues: the current `tracing` span's (a service's own
/// operation, like `sophia.plan`), or else the active one (the server span's, which the
/// request's future carries).
pub(crate) fn current_context() -> opentelemetry::Context {
    let span = tracing::Span::current();
    if !span.is_none() {
        let context = span.context();
        if context.has_active_span() {
            return context;
        }
    }
    opentelemetry::Context::current()
}

/// Sets the tracer, with the global providers; the first in a process wins.
pub(crate) fn set_tracer(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}
