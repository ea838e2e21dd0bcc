//! The diagnostics routes through the router: the OTLP receiver over HTTP (protobuf, JSON, gzip,
//! and every bad body), the API over what it stored, and the page's headers.

use std::io::Write as _;

use apollo::{diagnostics::Diagnostics, routes::diagnostics::Links};
use axum::body::Body;
use foundry::{
    otlp::proto::{
        collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
        common::v1::{AnyValue, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
    },
    testing::{TestResponse, assert_error, capture, new_traceparent},
};
use http::{Request, StatusCode as Http};
use prost::Message as _;
use serde_json::{Value, json};

fn apollo(diagnostics: &Diagnostics) -> axum::Router {
    let services = apollo::services::Services::new(
        &crate::support::closed_url(),
        &crate::support::closed_url(),
        None,
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    apollo::app::router(
        services,
        diagnostics.clone(),
        Links {
            jaeger: Some("http://jaeger.example:16686".into()),
            grafana: None,
        },
    )
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// One export of `service` holding `spans`.
fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
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

/// A server span of trace `trace` (one byte repeated), with an integer status code attribute.
fn server_span(trace: u8, id: u8, parent: Option<u8>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
        name: "POST /plan".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_020_000_000,
        attributes: vec![KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(201)),
            }),
            ..KeyValue::default()
        }],
        status: Some(Status {
            code: StatusCode::Unset as i32,
            message: String::new(),
        }),
        ..Span::default()
    }
}

fn post(path: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", content_type);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.body(Body::from(body)).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn protobuf_json_and_gzip_exports_are_stored_with_their_types() {
    // Arrange
    let diagnostics = Diagnostics::new(1000);
    let router = apollo(&diagnostics);
    let protobuf = export("sophia", vec![server_span(1, 1, None)]).encode_to_vec();
    let json_body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hermes"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "02".repeat(16), "spanId": "02".repeat(8), "name": "hermes.llm",
            "kind": 1, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
            "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}],
        }]}],
    }]});

    // Act
    let answers = [
        TestResponse::of(
            &router,
            post(
                "/v1/traces",
                "application/x-protobuf",
                None,
                protobuf.clone(),
            ),
        )
        .await,
        TestResponse::of(
            &router,
            post(
                "/v1/traces",
                "application/json",
                None,
                json_body.to_string().into_bytes(),
            ),
        )
        .await,
        TestResponse::of(
            &router,
            post(
                "/v1/traces",
                "application/x-protobuf",
                Some("gzip"),
                gzip(&export("apollo", vec![server_span(3, 3, None)]).encode_to_vec()),
            ),
        )
        .await,
    ];

    // Assert
    for answer in &answers {
        assert_eq!(answer.status, Http::OK, "{}", answer.text);
    }
    assert_eq!(answers[0].headers["content-type"], "application/x-protobuf");
    assert_eq!(answers[1].headers["content-type"], "application/json");
    let first = TestResponse::of(
        &router,
        get(&format!("/api/diagnostics/traces/{}", "01".repeat(16))),
    )
    .await;
    assert_eq!(first.status, Http::OK, "{}", first.text);
    let span = &first.body["spans"][0];
    assert_eq!(span["service"], "sophia");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["parent_span_id"], Value::Null);
    assert_eq!(span["attributes"]["http.response.status_code"], json!(201));
    assert_eq!(span["status"], json!({"code": "unset", "message": ""}));
    let second = TestResponse::of(
        &router,
        get(&format!("/api/diagnostics/traces/{}", "02".repeat(16))),
    )
    .await;
    assert_eq!(
        second.body["spans"][0]["attributes"]["gen_ai.usage.input_tokens"],
        json!(12)
    );
    let list = TestResponse::of(&router, get("/api/diagnostics/traces")).await;
    let services: Vec<&str> = list.body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| trace["root_service"].as_str().unwrap())
        .collect();
    assert_eq!(services.len(), 3, "{}", list.text);
    assert!(services.contains(&"apollo") && services.contains(&"hermes"));
}

#[tokio::test]
async fn spans_without_a_trace_id_are_refused_in_a_partial_success() {
    // Arrange
    let diagnostics = Diagnostics::new(1000);
    let router = apollo(&diagnostics);
    let mut zero = server_span(0, 5, None);
    zero.trace_id = vec![0; 16];
    let mut missing = server_span(0, 6, None);
    missing.trace_id = Vec::new();
    let body = export("sophia", vec![zero, missing, server_span(4, 4, None)]).encode_to_vec();

    // Act
    let response = TestResponse::of(
        &router,
        post("/v1/traces", "application/x-protobuf", None, body),
    )
    .await;

    // Assert
    assert_eq!(response.status, Http::OK);
    let answer = ExportTraceServiceResponse::decode(response.text.as_bytes()).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 2);
    assert_eq!(diagnostics.read(|window| window.span_count()), 1);
}

#[tokio::test]
async fn bad_exports_get_the_json_error_and_store_nothing() {
    // Arrange
    let diagnostics = Diagnostics::new(1000);
    let router = apollo(&diagnostics);
    let bomb = gzip(&vec![0u8; 17 * 1024 * 1024]);
    let cases: Vec<(&str, Request<Body>, Http, &str)> = vec![
        (
            "not protobuf",
            post("/v1/traces", "application/x-protobuf", None, vec![0xff; 64]),
            Http::BAD_REQUEST,
            "invalid_protobuf",
        ),
        (
            "not JSON",
            post(
                "/v1/logs",
                "application/json",
                None,
                b"{\"resourceLogs\": [".to_vec(),
            ),
            Http::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "JSON of the wrong shape",
            post(
                "/v1/metrics",
                "application/json",
                None,
                b"{\"resourceMetrics\": 7}".to_vec(),
            ),
            Http::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not gzip",
            post(
                "/v1/traces",
                "application/x-protobuf",
                Some("gzip"),
                b"plain".to_vec(),
            ),
            Http::BAD_REQUEST,
            "invalid_gzip",
        ),
        (
            "a gzip bomb",
            post("/v1/traces", "application/x-protobuf", Some("gzip"), bomb),
            Http::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "too large",
            post(
                "/v1/traces",
                "application/x-protobuf",
                None,
                vec![0; 5 * 1024 * 1024],
            ),
            Http::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "another encoding",
            post("/v1/traces", "application/x-protobuf", Some("br"), vec![1]),
            Http::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        (
            "another content type",
            post("/v1/traces", "text/plain", None, vec![1]),
            Http::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "a GET",
            get("/v1/traces"),
            Http::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];

    for (case, request, status, code) in cases {
        // Act
        let response = TestResponse::of(&router, request).await;

        // Assert
        assert_eq!(response.status, status, "{case}: {}", response.text);
        assert_error(&response, status, code);
    }
    assert_eq!(diagnostics.read(|window| window.span_count()), 0);
}

#[tokio::test]
async fn the_api_answers_bad_queries_and_unknown_traces_with_the_json_error() {
    let router = apollo(&Diagnostics::new(1000));
    let cases = [
        (
            format!("/api/diagnostics/traces/{}", "ab".repeat(16)),
            Http::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/diagnostics/traces/xyz".to_owned(),
            Http::BAD_REQUEST,
            "invalid_trace_id",
        ),
        (
            format!("/api/diagnostics/traces/{}", "0".repeat(32)),
            Http::BAD_REQUEST,
            "invalid_trace_id",
        ),
        (
            "/api/diagnostics/traces?limit=0".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/diagnostics/traces?limit=many".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/diagnostics/traces?error=maybe".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/diagnostics/traces?min_duration_ms=-1".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/diagnostics/logs?trace_id=12".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/diagnostics/logs?limit=1001".to_owned(),
            Http::BAD_REQUEST,
            "invalid_query",
        ),
    ];

    for (path, status, code) in cases {
        let response = TestResponse::of(&router, get(&path)).await;

        assert_error(&response, status, code);
    }
}

#[tokio::test]
async fn the_receiver_and_the_viewer_make_no_spans() {
    // Arrange
    let capture = capture("apollo");
    let router = apollo(&Diagnostics::new(1000));
    let (trace_id, traceparent) = new_traceparent(true);
    let body = export("sophia", vec![server_span(9, 9, None)]).encode_to_vec();

    // Act
    for mut request in [
        post("/v1/traces", "application/x-protobuf", None, body),
        get("/api/diagnostics/traces"),
        get("/diagnostics"),
    ] {
        request
            .headers_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        TestResponse::of(&router, request).await;
    }
    // A traced route of the same router, as the control.
    let mut control = get("/api/state");
    control
        .headers_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    TestResponse::of(&router, control).await;

    // Assert
    let names: Vec<String> = capture
        .spans(&trace_id)
        .into_iter()
        .filter(|span| span.kind == foundry::testing::Kind::Server)
        .map(|span| span.name)
        .collect();
    assert_eq!(names, ["GET /api/state"]);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_content_security_policy() {
    let router = apollo(&Diagnostics::new(1000));

    for (path, content_type) in [
        ("/diagnostics", "text/html; charset=utf-8"),
        ("/diagnostics?trace=abc", "text/html; charset=utf-8"),
        ("/diagnostics/app.js", "text/javascript; charset=utf-8"),
        ("/diagnostics/app.css", "text/css; charset=utf-8"),
    ] {
        let response = TestResponse::of(&router, get(path)).await;

        assert_eq!(response.status, Http::OK, "{path}");
        assert_eq!(response.headers["content-type"], content_type, "{path}");
        let policy = response.headers["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        // Nothing is fetched from elsewhere: every script, style and link is this server's.
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "import(",
        ] {
            assert!(!response.text.contains(external), "{path} has {external}");
        }
    }
    let links = TestResponse::of(&router, get("/api/diagnostics/links")).await;
    assert_eq!(
        links.body,
        json!({"jaeger": "http://jaeger.example:16686", "grafana": null})
    );
}

#[tokio::test]
async fn token_counts_at_the_top_of_i64_saturate_instead_of_crashing_the_export() {
    // Arrange: two LLM calls that claim the most tokens an i64 holds.
    let diagnostics = Diagnostics::new(1000);
    let router = apollo(&diagnostics);
    let span = |id: &str| {
        json!({
            "traceId": id.repeat(16), "spanId": id.repeat(8), "name": "hermes.llm",
            "kind": 1, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
            "attributes": [{"key": "gen_ai.usage.input_tokens",
                            "value": {"intValue": i64::MAX.to_string()}}],
        })
    };
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hermes"}}]},
        "scopeSpans": [{"spans": [span("0a"), span("0b")]}],
    }]});

    // Act
    let answer = TestResponse::of(
        &router,
        post(
            "/v1/traces",
            "application/json",
            None,
            body.to_string().into_bytes(),
        ),
    )
    .await;

    // Assert
    assert_eq!(answer.status, Http::OK, "{}", answer.text);
    let llm = &diagnostics.telemetry()["llm"];
    assert_eq!(llm["calls"], 2, "{llm}");
    assert_eq!(llm["input_tokens"], i64::MAX, "{llm}");
}

#[tokio::test(start_paused = true)]
async fn an_export_whose_body_never_ends_is_answered_503_after_its_bound() {
    // Arrange: a body that declares nothing and never finishes (time runs paused, so the
    // 60 s bound passes as soon as nothing else can happen).
    let diagnostics = Diagnostics::new(1000);
    let router = apollo(&diagnostics);
    let endless = Body::from_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let request = Request::post("/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(endless)
        .unwrap();

    // Act
    let answer = TestResponse::of(&router, request).await;

    // Assert
    assert_error(&answer, Http::SERVICE_UNAVAILABLE, "timeout");
}
