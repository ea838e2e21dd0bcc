//! `make bench` (first part): how fast `apollo serve` takes in spans, and what its window costs in
//! memory when full.
//!
//! The release `apollo serve` runs pinned to one core (`taskset`, where there is one) with the
//! default cap of 100 000 spans; this process, on the other core, sends OTLP/gRPC span exports
//! of 512 realistic spans (21 to a trace, LOGOS names and attributes) from several connections
//! at once, far more spans than the cap, so the window fills and then evicts all along. A
//! WebSocket client that never reads stays connected throughout: a slow viewer must not slow
//! the receiver. The line it ends on:
//!
//! `receiver: spans_per_second=N spans_per_cpu_second=C peak_rss_mb=R budget_mb=B window_spans=W`
//!
//! Targets: N at least 100 000 (on one core), R at most B, the memory budget of the cap.
//! `BENCH_QUICK=1` runs a short version.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use foundry::otlp::proto::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind},
};
use foundry::testing::Encoded;
use integration_tests::chain::{Service, release_dir};
use prost::Message as _;

/// Spans per export: the batch size of the services' exporters.
const BATCH: usize = 512;
/// Spans per trace: about one `/api/plan` of the benchmark's chain.
const TRACE_SPANS: usize = 21;
/// Concurrent gRPC connections sending.
const CONNECTIONS: usize = 8;
/// The window's cap, as `apollo serve` has it by default.
const MAX_SPANS: usize = 100_000;
/// The memory budget of a full window: a base for the process and 2 KiB a span.
const BASE_MB: f64 = 48.0;
const PER_SPAN_KB: f64 = 2.0;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The `n`-th export: 512 spans of fresh traces, shaped as the services' spans are.
fn export(n: u64) -> ExportTraceServiceRequest {
    let names = [
        ("POST /plan", SpanKind::Server),
        ("sophia.plan", SpanKind::Internal),
        ("POST /embed_text", SpanKind::Client),
        ("hermes.embed", SpanKind::Internal),
        ("hermes.milvus", SpanKind::Internal),
    ];
    let spans = (0..BATCH as u64)
        .map(|i| {
            let global = n * BATCH as u64 + i;
            let trace = global / TRACE_SPANS as u64;
            let (name, kind) = names[(global % names.len() as u64) as usize];
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(trace + 1).to_be_bytes());
            trace_id[8..].copy_from_slice(&n.to_le_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (global + 1).to_be_bytes().to_vec(),
                parent_span_id: if global.is_multiple_of(TRACE_SPANS as u64) {
                    Vec::new()
                } else {
                    global.to_be_bytes().to_vec()
                },
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: 1_700_000_000_000_000_000 + global * 1000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + global * 1000 + 250_000,
                attributes: vec![
                    kv(
                        "http.request.method",
                        any_value::Value::StringValue("POST".into()),
                    ),
                    kv(
                        "http.route",
                        any_value::Value::StringValue("/embed_text".into()),
                    ),
                    kv("http.response.status_code", any_value::Value::IntValue(200)),
                    kv(
                        "url.path",
                        any_value::Value::StringValue("/embed_text".into()),
                    ),
                    kv(
                        "server.address",
                        any_value::Value::StringValue("127.0.0.1".into()),
                    ),
                    kv("server.port", any_value::Value::IntValue(17000)),
                    kv(
                        "embedding.model",
                        any_value::Value::StringValue("feature-hash-384".into()),
                    ),
                    kv("embedding.dimension", any_value::Value::IntValue(384)),
                ],
                status: Some(Status::default()),
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(["sophia", "hermes"][(n % 2) as usize].into()),
                )],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Sends `export` as the OTLP trace service's one call.
async fn send(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    export: Encoded,
) -> ExportTraceServiceResponse {
    grpc.ready().await.expect("the connection is ready");
    grpc.unary(
        tonic::Request::new(export),
        http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
        tonic_prost::ProstCodec::<Encoded, ExportTraceServiceResponse>::default(),
    )
    .await
    .expect("the export is taken")
    .into_inner()
}

/// The first `telemetry` message of a new WebSocket client.
async fn telemetry(address: &str) -> serde_json::Value {
    use futures_util::StreamExt as _;
    let (mut socket, _) = tokio_tungstenite::connect_async(address)
        .await
        .expect("the WebSocket opens");
    while let Some(Ok(message)) = socket.next().await {
        if let Ok(text) = message.to_text()
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(text)
            && json["type"] == "telemetry"
        {
            return json;
        }
    }
    panic!("no telemetry message from {address}");
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|value| value == "1");
    let duration = Duration::from_secs(if quick { 4 } else { 15 });
    let pinned = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success());
    let wrapper: Vec<String> = if pinned {
        ["taskset", "-c", "0"].map(String::from).to_vec()
    } else {
        eprintln!("receiver: no taskset here; apollo serve is not pinned to one core");
        Vec::new()
    };
    let apollo = Service::start(
        &release_dir(),
        "apollo",
        &["serve"],
        &[("RUST_LOG", "warn".into())],
        &wrapper,
    )
    .await;

    // A viewer that never reads: Apollo must drop it or let it skip, never wait for it.
    let websocket = format!("{}/ws/diagnostics", apollo.url.replace("http://", "ws://"));
    let (_stalled_viewer, _) = tokio_tungstenite::connect_async(&websocket)
        .await
        .expect("the WebSocket opens");

    // Exports are built before the clock starts: what is measured is the receiver.
    let exports_per_connection = if quick { 40 } else { 100 };
    let mut batches: Vec<Vec<Encoded>> = Vec::new();
    for connection in 0..CONNECTIONS as u64 {
        batches.push(
            (0..exports_per_connection)
                .map(|i| Encoded(export(connection * 1_000_000 + i).encode_to_vec().into()))
                .collect(),
        );
    }
    let sent = Arc::new(AtomicU64::new(0));
    let cpu_before = apollo.cpu_seconds();
    let started = Instant::now();
    let mut senders = Vec::new();
    for batch in batches {
        let (url, sent) = (apollo.url.clone(), Arc::clone(&sent));
        senders.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .expect("a URL")
                .connect()
                .await
                .expect("gRPC connects");
            let mut grpc = tonic::client::Grpc::new(channel);
            for export in batch.iter().cycle() {
                if started.elapsed() >= duration {
                    break;
                }
                let answer = send(&mut grpc, export.clone()).await;
                assert!(answer.partial_success.is_none());
                sent.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
        }));
    }
    for sender in senders {
        sender.await.expect("a sender finishes");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = apollo.cpu_seconds() - cpu_before;
    let spans = sent.load(Ordering::Relaxed);

    let window = telemetry(&websocket).await["window"].clone();
    let peak_rss_mb = apollo.peak_rss_kib() as f64 / 1024.0;
    apollo.stop().await;

    let budget_mb = BASE_MB + MAX_SPANS as f64 * PER_SPAN_KB / 1024.0;
    eprintln!(
        "receiver: {spans} spans in {seconds:.1} s over {CONNECTIONS} gRPC connections \
         ({:.0} % of one core); the window: {window}",
        cpu / seconds * 100.0
    );
    println!(
        "receiver: spans_per_second={:.0} spans_per_cpu_second={:.0} peak_rss_mb={peak_rss_mb:.0} \
         budget_mb={budget_mb:.0} window_spans={}",
        spans as f64 / seconds,
        spans as f64 / cpu.max(f64::EPSILON),
        window["spans"],
    );
}
