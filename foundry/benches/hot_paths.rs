//! Criterion micro-benchmarks of the request path's telemetry: a manual span through `tracing`
//! and the same span built with the SDK directly (what the bridge adds, and the floor of a span
//! that is exported), context propagation, one metric record, and one request through the
//! server layer (with a baseline without it). Each hand-written part is paired with what it
//! replaces, in the same run: the SDK's W3C propagator, an unbound histogram record, and
//! axum-tracing-opentelemetry's server layer.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;

use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use opentelemetry::{
    KeyValue, StringValue, global,
    propagation::TextMapPropagator,
    trace::{Tracer as _, TracerProvider as _},
};
use tower::ServiceExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn spans(c: &mut Criterion) {
    let provider = foundry::testing::install_benchmark_pipeline("bench");
    c.bench_function("span/three_attributes", |b| {
        b.iter(|| {
            let span = tracing::info_span!(
                "bench.operation",
                plan.id = "4bf92f35",
                plan.step_count = 3i64,
                simulation.confidence = 0.9,
            );
            span.in_scope(|| std::hint::black_box(1));
        });
    });
    // The same span, values and export without `tracing`: the string is owned, as the bridge
    // makes it.
    let tracer = provider.tracer(foundry::testing::INSTRUMENTATION_SCOPE);
    c.bench_function("span/sdk_three_attributes", |b| {
        b.iter(|| {
            let span = tracer
                .span_builder("bench.operation")
                .with_attributes([
                    KeyValue::new("plan.id", "4bf92f35".to_owned()),
                    KeyValue::new("plan.step_count", 3i64),
                    KeyValue::new("simulation.confidence", 0.9),
                ])
                .start(&tracer);
            drop(std::hint::black_box(span));
        });
    });
}

/// One `http.server.request.duration` record with the server layer's attributes, as the server
/// layer records it: the attribute list built, then hashed and looked up by the SDK. (A cache of
/// bound handles saved about 100 ns of it and was removed: BENCHMARKS.md.)
fn metrics(c: &mut Criterion) {
    foundry::testing::install_benchmark_pipeline("bench");
    // The production instrument's definition, so that the SDK sees the same histogram.
    let histogram = global::meter(foundry::testing::INSTRUMENTATION_SCOPE)
        .f64_histogram("http.server.request.duration")
        .with_unit("s")
        .with_description("Duration of HTTP server requests.")
        .with_boundaries(foundry::testing::DURATION_BUCKETS.to_vec())
        .build();
    let route = StringValue::from(std::sync::Arc::<str>::from("/plan"));
    let attributes = || {
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 201i64),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.route", route.clone()),
        ]
    };
    c.bench_function("metric/server_duration", |b| {
        b.iter(|| histogram.record(std::hint::black_box(0.0012), &attributes()));
    });
}

fn propagation(c: &mut Criterion) {
    foundry::testing::install_benchmark_pipeline("bench");
    let propagator = foundry::testing::W3cTraceContextPropagator::new();
    let mut headers = HashMap::new();
    headers.insert("traceparent".to_owned(), TRACEPARENT.to_owned());
    headers.insert(
        "tracestate".to_owned(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned(),
    );
    let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let mut group = c.benchmark_group("propagation");
    group.bench_function("extract", |b| {
        b.iter(|| std::hint::black_box(propagator.extract(&headers)));
    });
    group.bench_function("sdk_extract", |b| {
        b.iter(|| std::hint::black_box(sdk.extract(&headers)));
    });
    let span = tracing::info_span!("bench.parent");
    let _ = span.set_parent(propagator.extract(&headers));
    let context = span.context();
    group.bench_function("inject", |b| {
        b.iter(|| {
            let mut out: HashMap<String, String> = HashMap::new();
            propagator.inject_context(&context, &mut out);
            std::hint::black_box(out)
        });
    });
    group.bench_function("sdk_inject", |b| {
        b.iter(|| {
            let mut out: HashMap<String, String> = HashMap::new();
            sdk.inject_context(&context, &mut out);
            std::hint::black_box(out)
        });
    });
    group.finish();
}

fn server(c: &mut Criterion) {
    foundry::testing::install_benchmark_pipeline("bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routes = || Router::new().route("/items/{id}", get(|| async { "an item" }));
    let instrumented = foundry::http::instrument(routes(), "bench", "0");
    // What a service would otherwise wire: the upstream layer's `tracing` span per request,
    // bridged to OpenTelemetry, and the trace context in the response.
    let upstream = routes()
        .layer(axum_tracing_opentelemetry::middleware::OtelInResponseLayer)
        .layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default());
    let plain = routes();
    let request = || {
        Request::get("/items/42")
            .header("host", "localhost:47000")
            .header("traceparent", TRACEPARENT)
            .body(Body::empty())
            .unwrap()
    };
    let mut group = c.benchmark_group("server_request");
    group.bench_function("without_layer", |b| {
        b.iter(|| runtime.block_on(plain.clone().oneshot(request())).unwrap());
    });
    group.bench_function("with_layer", |b| {
        b.iter(|| {
            runtime
                .block_on(instrumented.clone().oneshot(request()))
                .unwrap()
        });
    });
    group.bench_function("with_upstream_layer", |b| {
        b.iter(|| {
            runtime
                .block_on(upstream.clone().oneshot(request()))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = spans, metrics, propagation, server
}
criterion_main!(benches);
