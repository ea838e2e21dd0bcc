//! The traced client: context injection, its span, and downstream errors.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, http::HeaderMap, routing::get};
use foundry::{
    http::{Downstream, DownstreamError},
    testing::{Kind, Status, capture, new_traceparent},
};
use opentelemetry::{
    Context, KeyValue, baggage::BaggageExt, propagation::TextMapPropagator, trace::TraceContextExt,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A server on loopback that remembers the headers of the last request.
async fn echo_server() -> (String, Arc<Mutex<HeaderMap>>) {
    let seen = Arc::new(Mutex::new(HeaderMap::new()));
    let remember = seen.clone();
    let app = Router::new()
        .route(
            "/echo",
            get(move |headers: HeaderMap| async move {
                *remember.lock().unwrap() = headers;
                Json(serde_json::json!({"ok": true}))
            }),
        )
        .route(
            "/teapot",
            get(|| async {
                foundry::http::ErrorResponse::new(
                    http::StatusCode::IM_A_TEAPOT,
                    "teapot",
                    "short and stout",
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        // An answer that never ends, in chunks of 1 MiB.
        .route(
            "/endless",
            get(|| async {
                let chunks = std::iter::repeat_with(|| {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1 << 20]))
                });
                axum::body::Body::from_stream(tokio_stream::iter(chunks))
            }),
        )
        // A refusal in the LOGOS shape with a message of 5 MiB.
        .route(
            "/loud",
            get(|| async {
                foundry::http::ErrorResponse::new(
                    http::StatusCode::BAD_REQUEST,
                    "loud",
                    "x".repeat(5 << 20),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), seen)
}

/// A parent context as a server would extract it: a remote span, a tracestate, and baggage.
fn parent_context(traceparent: &str) -> Context {
    let mut headers = std::collections::HashMap::new();
    headers.insert("traceparent".to_owned(), traceparent.to_owned());
    headers.insert(
        "tracestate".to_owned(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned(),
    );
    let cx = foundry::testing::W3cTraceContextPropagator::new().extract(&headers);
    cx.with_baggage(vec![KeyValue::new("tenant", "acme")])
}

#[tokio::test]
async fn client_injects_traceparent_tracestate_and_baggage_and_records_its_span() {
    // Arrange
    let capture = capture("foundry-test");
    let (base, seen) = echo_server().await;
    let (trace_id, traceparent) = new_traceparent(true);
    let hermes = Downstream::new(
        "hermes",
        &base,
        foundry::http::client(Duration::from_secs(2)).unwrap(),
    );
    let span = tracing::info_span!("caller");
    let _ = span.set_parent(parent_context(&traceparent));
    let caller_span_id = span.context().span().span_context().span_id().to_string();

    // Act
    let answer: serde_json::Value = hermes.get_json("/echo").instrument(span).await.unwrap();

    // Assert
    assert_eq!(answer["ok"], true);
    let headers = seen.lock().unwrap().clone();
    let sent = headers["traceparent"].to_str().unwrap();
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
    assert_eq!(
        headers["tracestate"],
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
    assert_eq!(headers["baggage"], "tenant=acme");

    let spans = capture.spans(&trace_id);
    let client = spans
        .iter()
        .find(|s| s.kind == Kind::Client)
        .expect("a client span");
    assert_eq!(client.name, "GET /echo");
    assert_eq!(client.parent_span_id, caller_span_id);
    assert_eq!(
        &sent[36..52],
        client.span_id,
        "the server's parent is the client span"
    );
    assert_eq!(client.int("http.response.status_code"), Some(200));
    assert!(
        client.int("server.port").is_some(),
        "server.port is an integer: {client:?}"
    );
    assert_eq!(client.str("http.request.method"), Some("GET"));
    assert_eq!(
        client.str("url.full"),
        Some(format!("{base}/echo").as_str())
    );
}

#[tokio::test]
async fn an_external_client_records_its_span_but_sends_no_context() {
    // Arrange
    let capture = capture("foundry-test");
    let (base, seen) = echo_server().await;
    let (trace_id, traceparent) = new_traceparent(true);
    let provider = Downstream::new(
        "provider",
        &base,
        foundry::http::external_client(Duration::from_secs(2)).unwrap(),
    );
    let span = tracing::info_span!("caller");
    let _ = span.set_parent(parent_context(&traceparent));

    // Act
    let answer: serde_json::Value = provider.get_json("/echo").instrument(span).await.unwrap();

    // Assert
    assert_eq!(answer["ok"], true);
    let headers = seen.lock().unwrap().clone();
    for name in ["traceparent", "tracestate", "baggage"] {
        assert!(
            !headers.contains_key(name),
            "{name} stays inside: {headers:?}"
        );
    }
    let spans = capture.spans(&trace_id);
    assert!(
        spans
            .iter()
            .any(|s| s.kind == Kind::Client && s.name == "GET /echo"),
        "the call is still traced: {spans:#?}"
    );
}

#[tokio::test]
async fn redirects_are_followed_within_the_origin_only() {
    // Arrange: a server whose `/moved` redirects (307) to its own `/echo`, and whose `/away`
    // redirects to another server's.
    let (other, other_seen) = echo_server().await;
    let arrived = Arc::new(Mutex::new(0));
    let count = arrived.clone();
    let app = Router::new()
        .route(
            "/echo",
            get(move || async move {
                *count.lock().unwrap() += 1;
                "here"
            }),
        )
        .route(
            "/moved",
            get(|| async {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "/echo")],
                )
            }),
        )
        .route(
            "/away",
            get(move || async move {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("{other}/echo"))],
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // (path, status the caller gets, calls that reach the same origin's `/echo`)
    let cases = [("/moved", 200, 1), ("/away", 307, 0)];

    for (path, status, same_origin_calls) in cases {
        for client in [
            foundry::http::client(Duration::from_secs(2)).unwrap(),
            foundry::http::external_client(Duration::from_secs(2)).unwrap(),
        ] {
            *arrived.lock().unwrap() = 0;

            // Act
            let response = client.get(format!("{base}{path}")).send().await.unwrap();

            // Assert
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert_eq!(*arrived.lock().unwrap(), same_origin_calls, "{path}");
            assert!(
                other_seen.lock().unwrap().is_empty(),
                "{path}: nothing reaches the other origin"
            );
        }
    }
}

#[tokio::test]
async fn downstream_errors_name_the_service_and_mark_the_span() {
    let capture = capture("foundry-test");
    let (base, _) = echo_server().await;
    let (trace_id, traceparent) = new_traceparent(true);
    let client = foundry::http::client(Duration::from_millis(300)).unwrap();
    let hermes = Downstream::new("hermes", &base, client.clone());
    let span = tracing::info_span!("caller");
    let _ = span.set_parent(parent_context(&traceparent));

    let (teapot, slow, down) = async {
        let teapot = hermes
            .get_json::<serde_json::Value>("/teapot")
            .await
            .unwrap_err();
        let slow = hermes
            .get_json::<serde_json::Value>("/slow")
            .await
            .unwrap_err();
        let closed = foundry::testing::closed_address();
        let down = Downstream::new("hermes", &format!("http://{closed}"), client)
            .get_json::<serde_json::Value>("/echo")
            .await
            .unwrap_err();
        (teapot, slow, down)
    }
    .instrument(span)
    .await;

    assert!(
        matches!(&teapot, DownstreamError::Status { code, .. } if code == "teapot"),
        "{teapot:?}"
    );
    assert!(
        matches!(slow, DownstreamError::Timeout { service: "hermes" }),
        "{slow:?}"
    );
    assert!(
        matches!(
            down,
            DownstreamError::Unreachable {
                service: "hermes",
                ..
            }
        ),
        "{down:?}"
    );
    let mapped = foundry::http::ErrorResponse::from(slow);
    assert_eq!(mapped.status, http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(mapped.code, "hermes_timeout");
    let mapped = foundry::http::ErrorResponse::from(down);
    assert_eq!(mapped.status, http::StatusCode::BAD_GATEWAY);
    assert_eq!(mapped.code, "hermes_unavailable");

    let spans = capture.spans(&trace_id);
    let clients: Vec<_> = spans.iter().filter(|s| s.kind == Kind::Client).collect();
    assert_eq!(clients.len(), 3, "{spans:#?}");
    assert!(clients.iter().all(|s| s.status == Status::Error));
    let error_types: Vec<_> = clients.iter().filter_map(|s| s.str("error.type")).collect();
    assert!(
        error_types.contains(&"418") && error_types.contains(&"timeout"),
        "{error_types:?}"
    );
}

#[tokio::test]
async fn an_answer_is_read_no_further_than_its_limit_and_a_refusal_is_cut() {
    let (base, _) = echo_server().await;
    let client = foundry::http::client(Duration::from_secs(20)).unwrap();
    let hermes = Downstream::new("hermes", &base, client);

    let endless = hermes
        .get_json::<serde_json::Value>("/endless")
        .await
        .unwrap_err();
    let loud = hermes
        .get_json::<serde_json::Value>("/loud")
        .await
        .unwrap_err();

    assert!(
        matches!(&endless, DownstreamError::InvalidResponse { detail, .. } if detail.contains("larger than 16 MiB")),
        "{endless:?}"
    );
    assert!(
        matches!(&loud, DownstreamError::Status { code, message, .. }
            if code == "loud" && message.chars().count() == 200),
        "{loud:?}"
    );
}

#[tokio::test]
async fn https_urls_are_supported() {
    // Nothing listens there: a connect error proves the client took the https URL, where a
    // client without a TLS backend refuses the scheme before connecting.
    let closed = foundry::testing::closed_address();
    let client = foundry::http::client(Duration::from_secs(2)).unwrap();

    let error = client
        .get(format!("https://{closed}/"))
        .send()
        .await
        .unwrap_err();

    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn client_durations_carry_method_server_and_status() {
    // Arrange
    let _ = capture("foundry-test");
    let (base, _) = echo_server().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let echo = Downstream::new(
        "echo",
        &base,
        foundry::http::client(Duration::from_secs(2)).unwrap(),
    );

    // Act
    let _: serde_json::Value = echo.get_json("/echo").await.unwrap();

    // Assert: the attributes the conventions require, on the series of this server.
    let metrics = foundry::testing::render_prometheus();
    let series = metrics
        .lines()
        .find(|line| {
            line.starts_with("http_client_request_duration_seconds_count")
                && line.contains(&format!("server_port=\"{port}\""))
        })
        .unwrap_or_else(|| panic!("no client duration for port {port}:\n{metrics}"));
    for label in [
        "http_request_method=\"GET\"",
        "server_address=\"127.0.0.1\"",
        "http_response_status_code=\"200\"",
    ] {
        assert!(series.contains(label), "{label} in {series}");
    }
}
