//! `OTEL_PROPAGATORS` end to end: a child service, configured only through its environment,
//! gets a request carrying one context format, calls itself with foundry's client, and the test
//! asserts the parent its server span was exported with (at a real OTLP receiver) and the
//! headers its outbound call carried.

use std::time::Duration;

use axum::{Router, http::HeaderMap, routing::get};
use foundry::testing::{Kind, OtlpReceiver};

use crate::export::{child_value, init_child_telemetry, is_child, run_child};

/// The context headers any of the formats write.
const CONTEXT_HEADERS: [&str; 9] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "uber-trace-id",
    "x-amzn-trace-id",
];

/// The child: `/items/1` calls `/echo`, which answers the context headers it got; the request
/// to `/items/1` carries `CHILD_HEADERS` (`name=value|name=value`).
async fn child() {
    let telemetry = init_child_telemetry();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = Router::new()
        .route(
            "/items/{id}",
            get(move || async move {
                let client = foundry::http::client(Duration::from_secs(5)).unwrap();
                client
                    .get(format!("http://{address}/echo"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }),
        )
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                CONTEXT_HEADERS
                    .iter()
                    .filter_map(|name| {
                        let value = headers.get(*name)?.to_str().ok()?;
                        Some(format!("{name}={value}"))
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            }),
        );
    let app = foundry::http::instrument(routes, "foundry-child", "9.9.9");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut request = reqwest::Client::new().get(format!("http://{address}/items/1"));
    for pair in std::env::var("CHILD_HEADERS").unwrap().split('|') {
        if let Some((name, value)) = pair.split_once('=') {
            request = request.header(name, value);
        }
    }
    let outbound = request.send().await.unwrap().text().await.unwrap();
    println!("CHILD outbound={}", outbound.replace(' ', ""));
    let _ = telemetry.shutdown();
}

/// The outbound call's context headers, by name.
fn outbound(output: &std::process::Output) -> Vec<(String, String)> {
    child_value(output, "outbound")
        .split('|')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[tokio::test]
async fn each_format_is_read_from_requests_and_written_on_calls() {
    if is_child() {
        return child().await;
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    // (OTEL_PROPAGATORS, the incoming request's headers, whether the server span continues
    // the incoming trace, the headers the outbound call carries)
    let b3multi_in = format!("x-b3-traceid={trace_id}|x-b3-spanid={parent_id}|x-b3-sampled=1");
    let b3_in = format!("b3={trace_id}-{parent_id}-1");
    let w3c_in = format!("traceparent=00-{trace_id}-{parent_id}-01|baggage=tenant=acme");
    let jaeger_in = format!("uber-trace-id={trace_id}:{parent_id}:0:1");
    let xray_in = format!(
        "x-amzn-trace-id=Root=1-{}-{};Parent={parent_id};Sampled=1",
        &trace_id[..8],
        &trace_id[8..]
    );
    // Jaeger baggage that is no valid trace state member, and the debug flag (3): the context
    // goes on all the same, sampled.
    let jaeger_debug_in = format!("uber-trace-id={trace_id}:{parent_id}:0:3|uberctx-user.id=a=b");
    let cases: Vec<(&str, String, bool, Vec<&str>)> = vec![
        (
            "b3multi",
            b3multi_in.clone(),
            true,
            vec!["x-b3-traceid", "x-b3-spanid", "x-b3-sampled"],
        ),
        ("b3", b3_in.clone(), true, vec!["b3"]),
        // A format not listed is not read: the trace starts here.
        ("b3", w3c_in.clone(), false, vec!["b3"]),
        ("tracecontext", w3c_in.clone(), true, vec!["traceparent"]),
        (
            "tracecontext,baggage,b3multi",
            w3c_in.clone(),
            true,
            vec![
                "traceparent",
                "baggage",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-sampled",
            ],
        ),
        ("jaeger", jaeger_in.clone(), true, vec!["uber-trace-id"]),
        (
            "jaeger",
            jaeger_debug_in.clone(),
            true,
            vec!["uber-trace-id"],
        ),
        ("jaeger", w3c_in.clone(), false, vec!["uber-trace-id"]),
        ("xray", xray_in.clone(), true, vec!["x-amzn-trace-id"]),
        ("xray", w3c_in.clone(), false, vec!["x-amzn-trace-id"]),
        // A malformed header is no context: the trace starts here, and the call still goes out.
        (
            "jaeger",
            "uber-trace-id=not:a:jaeger:header:at-all".to_owned(),
            false,
            vec!["uber-trace-id"],
        ),
        (
            "xray",
            "x-amzn-trace-id=Root=1-zz;Parent=;Sampled=9".to_owned(),
            false,
            vec!["x-amzn-trace-id"],
        ),
        ("none", w3c_in.clone(), false, vec![]),
    ];
    for (propagators, incoming, continues, written) in cases {
        // Arrange
        let receiver = OtlpReceiver::start().await.unwrap();

        // Act
        let output = run_child(
            "propagators::each_format_is_read_from_requests_and_written_on_calls",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
                ("OTEL_PROPAGATORS", propagators),
                ("CHILD_HEADERS", &incoming),
            ],
        )
        .await;

        // Assert: the server span's parent, and what went out.
        assert!(
            receiver
                .wait_until(Duration::from_secs(5), |r| r.spans().len() >= 3)
                .await,
            "{propagators}: {:#?}",
            receiver.spans()
        );
        let spans = receiver.spans();
        let server = spans
            .iter()
            .find(|s| s.name == "GET /items/{id}" && s.kind == Kind::Server)
            .unwrap_or_else(|| panic!("{propagators}: {spans:#?}"));
        assert_eq!(
            (
                server.trace_id == trace_id,
                server.parent_span_id == parent_id
            ),
            (continues, continues),
            "{propagators}: {server:#?}"
        );
        let outbound = outbound(&output);
        let names: Vec<&str> = outbound.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, written, "{propagators}: {outbound:?}");
        let client = spans
            .iter()
            .find(|s| s.kind == Kind::Client)
            .unwrap_or_else(|| panic!("{propagators}: {spans:#?}"));
        for (name, value) in &outbound {
            match name.as_str() {
                "x-b3-traceid" => assert_eq!(value, &server.trace_id),
                "x-b3-spanid" => assert_eq!(value, &client.span_id),
                "b3" => assert!(
                    value.starts_with(&format!("{}-{}", server.trace_id, client.span_id)),
                    "{value}"
                ),
                "traceparent" => assert_eq!(
                    value,
                    &format!("00-{}-{}-01", server.trace_id, client.span_id)
                ),
                "baggage" => assert_eq!(value, "tenant=acme"),
                "uber-trace-id" => assert_eq!(
                    value,
                    &format!("{}:{}:0:1", server.trace_id, client.span_id)
                ),
                "x-amzn-trace-id" => assert_eq!(
                    value,
                    &format!(
                        "Root=1-{}-{};Parent={};Sampled=1",
                        &server.trace_id[..8],
                        &server.trace_id[8..],
                        client.span_id
                    )
                ),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn other_formats_agree_with_w3c_on_flags_and_leave_its_trace_state_alone() {
    if is_child() {
        return child().await;
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let xray_root = format!("Root=1-{}-{}", &trace_id[..8], &trace_id[8..]);
    // (OTEL_PROPAGATORS, the incoming request's headers, whether the request is sampled, each
    // outbound header with the end its value must have; `-` alone: the header is absent)
    type Case = (&'static str, String, bool, Vec<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        // The Level 2 random flag is no B3 or X-Ray "deferred": the decision goes on.
        (
            "tracecontext,b3multi",
            format!("traceparent=00-{trace_id}-{parent_id}-03|tracestate=rojo=1"),
            true,
            vec![
                ("traceparent", "-03".into()),
                ("tracestate", "rojo=1".into()),
                ("x-b3-sampled", "1".into()),
            ],
        ),
        (
            "tracecontext,b3",
            format!("traceparent=00-{trace_id}-{parent_id}-03"),
            true,
            vec![("traceparent", "-03".into()), ("b3", "-1".into())],
        ),
        (
            "tracecontext,xray",
            format!("traceparent=00-{trace_id}-{parent_id}-03|tracestate=rojo=1"),
            true,
            vec![
                ("tracestate", "rojo=1".into()),
                ("x-amzn-trace-id", "Sampled=1".into()),
            ],
        ),
        // A B3 "deferred" is not random: unsampled, as a W3C parent without the flag.
        (
            "tracecontext,b3",
            format!("b3={trace_id}-{parent_id}"),
            false,
            vec![("traceparent", "-00".into()), ("b3", "-0".into())],
        ),
        // B3's debug is sampled.
        (
            "tracecontext,b3",
            format!("b3={trace_id}-{parent_id}-d"),
            true,
            vec![("traceparent", "-01".into()), ("b3", "-1".into())],
        ),
        // The same span in W3C and B3 headers: the W3C trace state and flags stay.
        (
            "tracecontext,b3",
            format!(
                "traceparent=00-{trace_id}-{parent_id}-03|tracestate=rojo=1|b3={trace_id}-{parent_id}-1"
            ),
            true,
            vec![
                ("traceparent", "-03".into()),
                ("tracestate", "rojo=1".into()),
            ],
        ),
        // X-Ray's own keys are no W3C trace state, and W3C's are no X-Ray keys.
        (
            "tracecontext,xray",
            format!("x-amzn-trace-id={xray_root};Parent={parent_id};Sampled=1;UserKey=secret"),
            true,
            vec![("tracestate", "-".into())],
        ),
    ];
    for (propagators, incoming, sampled, expected) in cases {
        // Arrange
        let receiver = OtlpReceiver::start().await.unwrap();

        // Act
        let output = run_child(
            "propagators::other_formats_agree_with_w3c_on_flags_and_leave_its_trace_state_alone",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
                ("OTEL_PROPAGATORS", propagators),
                ("CHILD_HEADERS", &incoming),
            ],
        )
        .await;

        // Assert: the outbound headers, and the spans exported only when sampled.
        let outbound = outbound(&output);
        for (name, end) in &expected {
            let value = outbound.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            match (end.as_str(), value) {
                ("-", None) => {}
                (end, Some(value)) if end != "-" && value.ends_with(end) => {}
                _ => panic!("{propagators} {incoming}: {name} should end {end}: {outbound:?}"),
            }
        }
        let exported = receiver
            .wait_until(Duration::from_secs(2), |r| !r.spans().is_empty())
            .await;
        assert_eq!(exported, sampled, "{propagators} {incoming}");
    }
}

#[tokio::test]
async fn with_the_sdk_disabled_the_context_still_goes_through() {
    if is_child() {
        return child().await;
    }
    // Arrange: no span is made, but the spec leaves the propagators on.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let incoming = format!("traceparent={traceparent}|baggage=tenant=acme");

    // Act
    let output = run_child(
        "propagators::with_the_sdk_disabled_the_context_still_goes_through",
        &[("OTEL_SDK_DISABLED", "true"), ("CHILD_HEADERS", &incoming)],
    )
    .await;

    // Assert: the call carries the request's own context, unchanged.
    assert_eq!(
        outbound(&output),
        [
            ("traceparent".to_owned(), traceparent.to_owned()),
            ("baggage".to_owned(), "tenant=acme".to_owned()),
        ]
    );
}
