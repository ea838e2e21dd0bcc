//! Apollo's diagnostics window with the real binaries: the services export to `apollo serve`
//! (Hermes over gRPC, Sophia over HTTP/protobuf, the CLI over gRPC), and the window shows each
//! action's whole trace, its log lines and the RED table, over the API, the WebSocket and the
//! terminal; it stays at its cap, and refuses what the OTLP specification says to refuse.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use foundry::{
    otlp::proto::{
        collector::trace::v1::{
            ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
        },
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    },
    testing::{AttributeValue, Kind, ReceivedSpan, Status},
};
use serde_json::{Value, json};

use crate::{
    harness::{Export, Service, TRACE_DEADLINE, apollo, binary, http},
    shape::Trace,
    trace::{Entry, GOAL, apollo_rows, assert_action, assert_plan_attributes, plan_rows},
};

pub const ALL: [&str; 3] = ["apollo", "sophia", "hermes"];

/// `apollo serve` as the receiver, and Hermes and Sophia exporting to it.
pub struct Window {
    pub serve: Service,
    hermes: Service,
    sophia: Service,
    /// What the CLI exports with: gRPC to `apollo serve`.
    export: Export,
}

impl Window {
    /// `apollo serve` (with `serve_env`), then Hermes exporting to it over gRPC and Sophia over
    /// HTTP, both sending their metrics every half second.
    pub async fn start(serve_env: &[(&str, &str)]) -> Self {
        let mut serve_export = Export::none();
        for (key, value) in serve_env {
            serve_export = serve_export.with(key, value);
        }
        let serve = serve_alone(&serve_export).await;
        let export = Export::to(&serve.url).with("OTEL_METRIC_EXPORT_INTERVAL", "500");
        let hermes = Service::hermes(&export).await;
        let over_http = export
            .clone()
            .with("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        let sophia = Service::sophia(&over_http, &hermes.url).await;
        Self {
            serve,
            hermes,
            sophia,
            export,
        }
    }

    pub async fn plan(&self) -> crate::harness::ApolloRun {
        apollo(
            &self.export,
            &self.sophia.url,
            &self.hermes.url,
            &["plan", GOAL],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = http()
            .get(format!("{}{path}", self.serve.url))
            .send()
            .await
            .expect("apollo serve answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The trace as the window holds it, once complete (or whatever it holds at the deadline).
    pub async fn trace(&self, trace_id: &str, services: &[&str]) -> Trace {
        let deadline = Instant::now() + TRACE_DEADLINE;
        loop {
            let (_, body) = self
                .get(&format!("/api/diagnostics/traces/{trace_id}"))
                .await;
            let trace = Trace {
                trace_id: trace_id.to_owned(),
                spans: body["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|span| received(trace_id, span))
                    .collect(),
            };
            if trace.is_complete(services, None) || Instant::now() >= deadline {
                return trace;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `path` until `done` holds for its answer, or the deadline passes; returns the last.
    async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TRACE_DEADLINE;
        loop {
            let (_, body) = self.get(path).await;
            if done(&body) || Instant::now() >= deadline {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of counter `name` for spans in Prometheus text, summed over its series.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| line.contains("signal=\"spans\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A span of the API as the shape assertions take it (the same as an OTLP receiver's).
fn received(trace_id: &str, span: &Value) -> ReceivedSpan {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    ReceivedSpan {
        service_name: text(&span["service"]),
        trace_id: trace_id.to_owned(),
        span_id: text(&span["span_id"]),
        parent_span_id: text(&span["parent_span_id"]),
        name: text(&span["name"]),
        kind: match span["kind"].as_str() {
            Some("server") => Kind::Server,
            Some("client") => Kind::Client,
            Some("producer") => Kind::Producer,
            Some("consumer") => Kind::Consumer,
            _ => Kind::Internal,
        },
        attributes: span["attributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let value = match value {
                    Value::String(text) => AttributeValue::String(text.clone()),
                    Value::Bool(flag) => AttributeValue::Bool(*flag),
                    Value::Number(number) => number.as_i64().map_or_else(
                        || AttributeValue::Double(number.as_f64().unwrap_or_default()),
                        AttributeValue::Int,
                    ),
                    _ => AttributeValue::Other,
                };
                (key.clone(), value)
            })
            .collect::<BTreeMap<_, _>>(),
        status: match span["status"]["code"].as_str() {
            Some("error") => Status::Error,
            Some("ok") => Status::Ok,
            _ => Status::Unset,
        },
        status_message: text(&span["status"]["message"]),
        trace_state: String::new(),
        events: span["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| text(&event["name"]))
            .collect(),
        event_attribute_counts: span["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| event["attributes"].as_object().map_or(0, |a| a.len()))
            .collect(),
        // The window's span has no links (the LOGOS services make none).
        link_attribute_counts: Vec::new(),
    }
}

#[tokio::test]
async fn the_window_holds_the_whole_trace_of_apollo_plan_sent_over_grpc_and_http() {
    // Arrange
    let window = Window::start(&[]).await;

    // Act
    let run = window.plan().await;

    // Assert: the same exact shape as an OTLP receiver sees, attribute types included.
    let plan = run.result();
    let steps = plan["plan"].as_array().expect("steps").len();
    let trace_id = run.trace_id();
    let trace = window.trace(&trace_id, &ALL).await;
    assert_action(
        &trace,
        Entry::Cli,
        "plan",
        &[
            apollo_rows(Entry::Cli, "apollo.api.sophia", "POST /plan"),
            plan_rows(steps, Some(("apollo", "POST /plan"))),
        ]
        .concat(),
        None,
    );
    assert_plan_attributes(&trace, GOAL, plan);
    let (_, list) = window
        .get("/api/diagnostics/traces?service=hermes&limit=10")
        .await;
    let summary = list["traces"]
        .as_array()
        .and_then(|traces| traces.iter().find(|t| t["trace_id"] == trace_id.as_str()))
        .unwrap_or_else(|| panic!("{trace_id} in the list: {list}"));
    assert_eq!(summary["root_name"], "apollo.command");
    assert_eq!(summary["root_service"], "apollo");
    assert_eq!(summary["services"], json!(["apollo", "hermes", "sophia"]));
    assert_eq!(summary["span_count"], trace.spans.len());
    assert_eq!(summary["error"], false);
}

#[tokio::test]
async fn apollo_trace_prints_the_waterfall_and_the_red_table_fills() {
    // Arrange
    let window = Window::start(&[]).await;
    let trace_id = window.plan().await.trace_id();
    window.trace(&trace_id, &ALL).await;

    // Act
    let output = tokio::process::Command::new(binary("apollo"))
        .args(["--apollo-url", &window.serve.url, "trace", &trace_id])
        .output()
        .await
        .expect("apollo trace runs");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("trace {trace_id}: "))
            && first.contains("3 services (apollo, hermes, sophia)"),
        "{stdout}"
    );
    for row in [
        "apollo  apollo.command",
        "sophia        POST /plan",
        "hermes.embed",
    ] {
        assert!(stdout.contains(row), "{row} in\n{stdout}");
    }
    let metrics = window
        .wait_for("/api/diagnostics/metrics", |body| {
            ["sophia", "hermes"].iter().all(|service| {
                body["metrics"].as_array().into_iter().flatten().any(|row| {
                    row["service"] == *service && row["requests"].as_u64().unwrap_or(0) >= 1
                })
            })
        })
        .await;
    let plan_row = metrics["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["service"] == "sophia" && row["route"] == "/plan")
        .unwrap_or_else(|| panic!("sophia /plan in {metrics}"));
    assert_eq!(plan_row["requests"], 1, "{plan_row}");
    assert_eq!(plan_row["error_rate"], 0.0, "{plan_row}");
    assert!(
        plan_row["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{plan_row}"
    );
    let list = tokio::process::Command::new(binary("apollo"))
        .args([
            "--apollo-url",
            &window.serve.url,
            "--json",
            "traces",
            "--service",
            "sophia",
        ])
        .output()
        .await
        .expect("apollo traces runs");
    let list: Value = serde_json::from_slice(&list.stdout).expect("one JSON object");
    assert_eq!(list["traces"][0]["trace_id"], trace_id.as_str(), "{list}");
}

#[tokio::test]
async fn apollo_serves_own_spans_reach_its_window_without_an_exporter() {
    // Arrange: `apollo serve` has no OTLP endpoint; its Sophia is down, so the call fails.
    let window = Window::start(&[]).await;
    let (trace_id, traceparent) = foundry::testing::new_traceparent(true);

    // Act
    let answer = http()
        .get(format!("{}/api/state", window.serve.url))
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("apollo serve answers");

    // Assert
    assert_eq!(answer.status(), 502);
    let body = window
        .wait_for(&format!("/api/diagnostics/traces/{trace_id}"), |body| {
            body["spans"]
                .as_array()
                .is_some_and(|spans| spans.len() >= 4)
        })
        .await;
    let names: Vec<&str> = body["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|span| span["service"] == "apollo")
        .filter_map(|span| span["name"].as_str())
        .collect();
    for name in [
        "GET /api/state",
        "apollo.command",
        "apollo.api.sophia",
        "GET /state",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}

#[tokio::test]
async fn the_telemetry_message_counts_llm_calls_and_tokens_from_hermes_spans() {
    use futures_util::StreamExt as _;

    // Arrange
    let window = Window::start(&[]).await;
    let run = apollo(
        &window.export,
        &window.sophia.url,
        &window.hermes.url,
        &["chat", "say", "hello", "to", "the", "window"],
    )
    .await;
    window.trace(&run.trace_id(), &["apollo", "hermes"]).await;

    // Act
    let address = format!(
        "{}/ws/diagnostics",
        window.serve.url.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&address)
        .await
        .expect("the WebSocket opens");
    let mut telemetry = Value::Null;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        let json: Value =
            serde_json::from_str(message.to_text().unwrap_or("null")).unwrap_or_default();
        if json["type"] == "telemetry" {
            telemetry = json;
            break;
        }
    }

    // Assert
    let llm = &telemetry["llm"];
    assert_eq!(llm["calls"], 1, "{telemetry}");
    assert_eq!(llm["errors"], 0, "{telemetry}");
    assert!(
        llm["input_tokens"].as_i64().is_some_and(|n| n > 0),
        "{telemetry}"
    );
    assert!(
        llm["output_tokens"].as_i64().is_some_and(|n| n > 0),
        "{telemetry}"
    );
    assert!(
        llm["last_latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{telemetry}"
    );
}

#[tokio::test]
async fn a_failure_shows_with_its_log_lines_live_over_the_websocket() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    // Arrange
    let mut window = Window::start(&[]).await;
    let address = format!(
        "{}/ws/diagnostics",
        window.serve.url.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&address)
        .await
        .expect("the WebSocket opens");
    socket
        .send(Message::text(r#"{"type": "ping"}"#))
        .await
        .expect("a ping goes out");
    window.hermes.kill().await;

    // Act: Sophia cannot reach Hermes, answers 502 and logs why.
    let run = window.plan().await;

    // Assert
    assert_eq!(run.code, Some(1), "{run:?}");
    let trace_id = run.trace_id();
    let mut seen: BTreeMap<&str, Value> = BTreeMap::new();
    let deadline = Instant::now() + TRACE_DEADLINE;
    while seen.len() < 4 && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), socket.next()).await
        else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("each message is JSON");
        match message["type"].as_str() {
            Some("pong") => seen.insert("pong", message),
            Some("telemetry") => seen.insert("telemetry", message),
            Some("trace") if message["trace"]["trace_id"] == trace_id.as_str() => {
                seen.insert("trace", message)
            }
            Some("log") if message["log"]["trace_id"] == trace_id.as_str() => {
                seen.insert("log", message)
            }
            _ => None,
        };
    }
    let kinds: Vec<&str> = seen.keys().copied().collect();
    assert_eq!(kinds, ["log", "pong", "telemetry", "trace"]);
    let telemetry = &seen["telemetry"];
    assert_eq!(telemetry["websockets"], 1, "{telemetry}");
    assert!(
        telemetry["metrics"].is_array() && telemetry["llm"].is_object(),
        "{telemetry}"
    );
    assert!(
        telemetry["window"]["max_spans"].as_u64() == Some(100_000),
        "{telemetry}"
    );
    let logs = window
        .wait_for(
            &format!("/api/diagnostics/logs?trace_id={trace_id}"),
            |body| body["logs"].as_array().is_some_and(|logs| !logs.is_empty()),
        )
        .await;
    let log = &logs["logs"][0];
    assert_eq!(log["service"], "sophia", "{logs}");
    assert_eq!(log["severity"], "ERROR", "{logs}");
    assert_eq!(log["trace_id"], trace_id.as_str(), "{logs}");
    assert!(
        log["span_id"].as_str().is_some_and(|id| id.len() == 16),
        "{logs}"
    );
    let summary = window
        .wait_for("/api/diagnostics/traces?error=true", |body| {
            body["traces"].as_array().is_some_and(|traces| {
                traces
                    .iter()
                    .any(|trace| trace["trace_id"] == trace_id.as_str())
            })
        })
        .await;
    assert!(summary["traces"][0]["error"] == true, "{summary}");
}

#[tokio::test]
async fn the_window_stays_at_its_cap_and_counts_what_it_evicts() {
    // Arrange: room for about two plans' traces.
    let window = Window::start(&[("APOLLO_DIAGNOSTICS_MAX_SPANS", "40")]).await;

    // Act
    let mut trace_ids = Vec::new();
    for _ in 0..4 {
        let trace_id = window.plan().await.trace_id();
        window.trace(&trace_id, &ALL).await;
        trace_ids.push(trace_id);
    }

    // Assert
    let (_, list) = window.get("/api/diagnostics/traces?limit=1000").await;
    let held: u64 = list["traces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|trace| trace["span_count"].as_u64().unwrap_or(0))
        .sum();
    assert!((1..=40).contains(&held), "{held} spans held: {list}");
    let (first, _) = window
        .get(&format!("/api/diagnostics/traces/{}", trace_ids[0]))
        .await;
    assert_eq!(first, 404, "the oldest trace was evicted");
    let last = window.trace(&trace_ids[3], &ALL).await;
    assert!(last.is_complete(&ALL, None), "{}", last.tree());
    let metrics = http()
        .get(format!("{}/metrics", window.serve.url))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("text");
    let evicted = counter(&metrics, "apollo_diagnostics_evicted_total");
    assert!(evicted >= 30.0, "{metrics}");
    let received = counter(&metrics, "apollo_diagnostics_received_total");
    assert!(received >= evicted + held as f64, "{metrics}");
}

#[tokio::test]
async fn grpc_exports_of_spans_without_ids_or_past_the_size_limit_are_refused() {
    // Arrange
    let window = Window::start(&[]).await;
    let mut client = TraceServiceClient::connect(window.serve.url.clone())
        .await
        .expect("gRPC connects")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let span = |trace: u8, name: String| Span {
        trace_id: vec![trace; 16],
        span_id: vec![1; 8],
        name,
        ..Span::default()
    };
    let request = |spans| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };

    // Act
    let partial = client
        .export(request(vec![
            span(0, "zero".into()),
            span(7, "kept".into()),
        ]))
        .await;
    let bomb = client
        .export(request(vec![span(8, "x".repeat(17 * 1024 * 1024))]))
        .await;

    // Assert
    let answer = partial.expect("an answer").into_inner();
    assert_eq!(answer.partial_success.map(|p| p.rejected_spans), Some(1));
    let (kept, _) = window
        .get(&format!("/api/diagnostics/traces/{}", "07".repeat(16)))
        .await;
    assert_eq!(kept, 200);
    let status = bomb.expect_err("past the limit once inflated");
    assert_ne!(status.code(), tonic::Code::Ok);
    let (missing, _) = window
        .get(&format!("/api/diagnostics/traces/{}", "08".repeat(16)))
        .await;
    assert_eq!(missing, 404);
    let (health, _) = window.get("/health").await;
    assert_eq!(health, 200, "apollo serve lives on");
}

#[tokio::test]
async fn websockets_beyond_the_cap_are_answered_503_and_large_client_frames_close_the_socket() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::{Error, Message};

    // Arrange: `apollo serve` alone, and as many viewers as it serves.
    let serve = serve_alone(&Export::none()).await;
    let address = format!("{}/ws/diagnostics", serve.url.replace("http://", "ws://"));
    let mut open = Vec::new();
    // Apollo's MAX_WEBSOCKETS.
    for _ in 0..64 {
        let (socket, _) = tokio_tungstenite::connect_async(&address)
            .await
            .expect("a WebSocket within the cap opens");
        open.push(socket);
    }

    // Act
    let refused = tokio_tungstenite::connect_async(&address).await;

    // Assert: the one over is a JSON 503; once a viewer leaves, a new one gets in.
    let Err(Error::Http(response)) = refused else {
        panic!("the WebSocket over the cap opened");
    };
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_many_viewers", "{body}");
    let mut viewer = open.pop().expect("a viewer");
    viewer
        .send(Message::text("x".repeat(100 * 1024)))
        .await
        .expect("the frame goes out");
    // The socket over its message limit is closed with the code that says why (1009), which
    // frees its place.
    assert_eq!(
        close_frame(&mut viewer).await,
        (1009, "a message may be at most 65536 bytes".to_owned())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match tokio_tungstenite::connect_async(&address).await {
            Ok((socket, _)) => break socket,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("no place came free: {error}"),
        }
    };
    drop((reopened, open, viewer));
}

#[tokio::test]
async fn a_viewer_that_breaks_the_websocket_protocol_is_told_how_in_the_close_frame() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    };

    // Arrange: `apollo serve` alone; (frame the viewer sends, the close code, its reason).
    let serve = serve_alone(&Export::none()).await;
    let address = format!("{}/ws/diagnostics", serve.url.replace("http://", "ws://"));
    let cases = [
        (
            Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true),
            1007,
            "a text message must be UTF-8",
        ),
        (
            Frame::message(b"{}".to_vec(), OpCode::Data(Data::Reserved(3)), true),
            1002,
            "not a valid WebSocket frame",
        ),
    ];

    for (frame, code, reason) in cases {
        // Act
        let (mut viewer, _) = tokio_tungstenite::connect_async(&address)
            .await
            .expect("the WebSocket opens");
        viewer
            .send(Message::Frame(frame))
            .await
            .expect("the frame goes out");

        // Assert
        assert_eq!(close_frame(&mut viewer).await, (code, reason.to_owned()));
    }
}

/// `apollo serve` with `export`, its services nowhere (a closed port).
async fn serve_alone(export: &Export) -> Service {
    binary("apollo");
    let closed = format!("http://{}", foundry::testing::closed_address());
    Service::start(
        "apollo",
        &["--sophia-url", &closed, "--hermes-url", &closed, "serve"],
        export,
    )
    .await
}

/// The code and reason of the close frame that ends `viewer`'s socket (what comes before it is
/// skipped).
async fn close_frame<S>(viewer: &mut S) -> (u16, String)
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), viewer.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}
