//! The server layer, asserted through foundry's in-process span capture.

use axum::{Router, body::Body, routing::get};
use foundry::testing::{Kind, Status, capture, new_traceparent, span_named};
use http::{Request, StatusCode};
use tower::ServiceExt;
use tracing::Instrument;

fn app() -> Router {
    let routes = Router::new()
        .route("/items/{id}", get(|| async { "an item" }))
        .route(
            "/fail",
            get(|| async {
                foundry::http::ErrorResponse::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "boom",
                    "it broke",
                )
            }),
        );
    foundry::http::instrument(routes, "foundry-test", "0.0.0")
}

async fn get_with(uri: &str, traceparent: Option<&str>) -> http::Response<Body> {
    let mut request = Request::get(uri)
        .header("host", "sophia.local:47000")
        .header("user-agent", "foundry-tests");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    app()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn server_span_has_the_conventional_name_kind_and_typed_attributes() {
    // Arrange
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    let response = get_with("/items/42?verbose=1", Some(&traceparent)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let spans = capture.spans(&trace_id);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.kind, Kind::Server);
    assert_eq!(span.service_name, "foundry-test");
    assert_eq!(span.str("http.route"), Some("/items/{id}"));
    assert_eq!(span.str("url.path"), Some("/items/42"));
    assert_eq!(span.str("http.request.method"), Some("GET"));
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(span.str("server.address"), Some("sophia.local"));
    assert_eq!(span.int("server.port"), Some(47000));
    assert_eq!(span.str("user_agent.original"), Some("foundry-tests"));
    assert_eq!(span.status, Status::Unset);
    for noise in [
        "code.file.path",
        "thread.id",
        "busy_ns",
        "idle_ns",
        "span.type",
        "target",
    ] {
        assert!(
            !span.attributes.contains_key(noise),
            "{noise} leaked: {span:#?}"
        );
    }
}

#[tokio::test]
async fn incoming_traceparent_is_the_parent_and_comes_back_on_the_response() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let parent_span_id = &traceparent[36..52];

    let response = get_with("/items/1", Some(&traceparent)).await;

    let spans = capture.spans(&trace_id);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent_span_id, parent_span_id);
    let returned = response.headers()["traceparent"].to_str().unwrap();
    assert_eq!(returned, format!("00-{trace_id}-{}-01", spans[0].span_id));
    assert!(
        response.headers().get("tracestate").is_none(),
        "no empty tracestate header"
    );
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace_without_error() {
    let capture = capture("foundry-test");
    let malformed = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-junk";

    let response = get_with("/items/7", Some(malformed)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let returned = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let new_trace_id = &returned[3..35];
    assert_ne!(new_trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let spans = capture.spans(new_trace_id);
    assert_eq!(spans.len(), 1);
    assert!(spans[0].is_root(), "a new root: {:?}", spans[0]);
    assert!(capture.spans("4bf92f3577b34da6a3ce929d0e0e4736").is_empty());
}

#[tokio::test]
async fn server_errors_set_status_error() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);

    let response = get_with("/fail", Some(&traceparent)).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let spans = capture.spans(&trace_id);
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].int("http.response.status_code"), Some(500));
    assert_eq!(spans[0].str("error.type"), Some("500"));
}

#[tokio::test]
async fn unsampled_parent_records_nothing_but_still_propagates() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(false);

    let (control_id, control) = new_traceparent(true);

    let response = get_with("/items/3", Some(&traceparent)).await;
    let _ = get_with("/items/3", Some(&control)).await;

    assert_eq!(capture.spans(&control_id).len(), 1, "the capture works");
    assert!(capture.spans(&trace_id).is_empty());
    let returned = response.headers()["traceparent"].to_str().unwrap();
    assert!(returned.starts_with(&format!("00-{trace_id}-")) && returned.ends_with("-00"));
}

/// An app whose handler opens a span inside a span and calls `downstream`, answering whether
/// its spans were created at all (`"created"`) or skipped (`"skipped"`).
fn app_with_work(downstream: foundry::http::Downstream) -> Router {
    let routes = Router::new().route(
        "/work",
        get(move || async move {
            let outer = tracing::info_span!("work.outer");
            let inner = outer.in_scope(|| tracing::info_span!("work.inner"));
            let answer: serde_json::Value = downstream
                .get_json("/echo")
                .instrument(outer.clone())
                .await
                .expect("the downstream answers");
            assert_eq!(answer["ok"], true);
            match (outer.is_disabled(), inner.is_disabled()) {
                (false, false) => "created",
                (true, true) => "skipped",
                _ => "mixed",
            }
        }),
    );
    foundry::http::instrument(routes, "foundry-test", "0.0.0")
}

#[tokio::test]
async fn inside_an_unsampled_request_no_span_is_created_and_the_context_still_flows() {
    // Arrange
    let capture = capture("foundry-test");
    let (echo_url, seen) = echo_server().await;
    let downstream = echo_downstream(&echo_url);
    let (unsampled_trace, unsampled) = new_traceparent(false);
    let (sampled_trace, sampled) = new_traceparent(true);

    // Act
    let skipped = call_work(app_with_work(downstream.clone()), &unsampled).await;
    let sent_unsampled = seen.lock().unwrap().clone();
    let created = call_work(app_with_work(downstream), &sampled).await;
    let sent_sampled = seen.lock().unwrap().clone();

    // Assert: unsampled, the handler's spans and the client span are never created, yet the
    // downstream call continues the caller's trace, still unsampled.
    assert_eq!(skipped, "skipped");
    assert!(capture.spans(&unsampled_trace).is_empty());
    let traceparent = sent_unsampled["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{unsampled_trace}-")) && traceparent.ends_with("-00"),
        "{traceparent}"
    );
    // Sampled, the same handler records server, work.outer, work.inner and the client span.
    assert_eq!(created, "created");
    let spans = capture.spans(&sampled_trace);
    let mut names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["GET /echo", "GET /work", "work.inner", "work.outer"]
    );
    let span = |name: &str| span_named(&spans, name);
    let (server, outer, client) = (span("GET /work"), span("work.outer"), span("GET /echo"));
    // The handler's spans hang under the server span (the active context), the client span
    // under the `tracing` span it was made in.
    assert_eq!(outer.parent_span_id, server.span_id);
    assert_eq!(span("work.inner").parent_span_id, outer.span_id);
    assert_eq!(client.parent_span_id, outer.span_id);
    let traceparent = sent_sampled["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{sampled_trace}-{}-01", client.span_id)
    );
}

#[tokio::test]
async fn an_unsampled_request_keeps_the_random_flag_on_its_response_and_downstream() {
    // Arrange: a caller that did not sample, and says its trace id is random (Level 2).
    let _capture = capture("foundry-test");
    let (echo_url, seen) = echo_server().await;
    let app = app_with_work(echo_downstream(&echo_url));
    let (trace_id, traceparent) = new_traceparent(false);
    let random = format!("{}-02", &traceparent[..52]);

    // Act
    let response = app
        .oneshot(
            Request::get("/work")
                .header("traceparent", &random)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

    // Assert: the hop changed the parent id only, on the response and on the call it made.
    assert_eq!(response.status(), StatusCode::OK);
    let returned = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let sent = seen.lock().unwrap()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in [&returned, &sent] {
        assert!(
            header.starts_with(&format!("00-{trace_id}-")) && header.ends_with("-02"),
            "{header}"
        );
        assert_ne!(
            header[36..52],
            random[36..52],
            "a span of this hop is the parent"
        );
    }
}

async fn call_work(app: Router, traceparent: &str) -> String {
    call(app, "/work", traceparent).await
}

/// `GET path` on `app` with `traceparent`; the answer's body, once it is 200.
async fn call(app: Router, path: &str, traceparent: &str) -> String {
    let response = app
        .oneshot(
            Request::get(path)
                .header("traceparent", traceparent)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A client of the echo server at `url`.
fn echo_downstream(url: &str) -> foundry::http::Downstream {
    foundry::http::Downstream::new(
        "echo",
        url,
        foundry::http::client(std::time::Duration::from_secs(5)).unwrap(),
    )
}

/// A server on loopback that remembers the headers of the last request.
async fn echo_server() -> (String, std::sync::Arc<std::sync::Mutex<http::HeaderMap>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(http::HeaderMap::new()));
    let remember = seen.clone();
    let app = Router::new().route(
        "/echo",
        get(move |headers: http::HeaderMap| async move {
            *remember.lock().unwrap() = headers;
            axum::Json(serde_json::json!({"ok": true}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), seen)
}

#[tokio::test]
async fn health_and_metrics_are_untraced_and_metrics_has_the_request_histogram() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let _ = get_with("/items/9", None).await;

    let (control_id, control) = new_traceparent(true);
    let health = get_with("/health", Some(&traceparent)).await;
    let metrics = get_with("/metrics", Some(&traceparent)).await;
    let _ = get_with("/items/10", Some(&control)).await;
    assert_eq!(capture.spans(&control_id).len(), 1, "the capture works");

    assert_eq!(health.status(), StatusCode::OK);
    let body = axum::body::to_bytes(health.into_body(), 1 << 20)
        .await
        .unwrap();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "foundry-test");
    assert!(
        capture.spans(&trace_id).is_empty(),
        "health and metrics untraced"
    );
    let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("http_route=\"/items/{id}\""), "{text}");
}

#[tokio::test]
async fn errors_are_json_with_a_code() {
    let cases = [
        (
            Request::get("/nowhere").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::post("/items/1").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::post("/health").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::delete("/metrics").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

/// Sends `request` through `app` and reads the answer's status and JSON body.
async fn json_answer(app: Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app
        .oneshot(request)
        .await
        .expect("an answer, not a dropped connection");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).expect("a JSON body"))
}

#[tokio::test]
async fn a_request_that_outlives_its_timeout_is_abandoned_with_a_json_503() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .layer(
            foundry::testing::ServerLayer::new()
                .with_request_timeout(std::time::Duration::from_millis(50)),
        );

    let request = Request::get("/slow").header("traceparent", &traceparent);

    let (status, body) = json_answer(app, request.body(Body::empty()).unwrap()).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "timeout");
    let spans = capture.spans(&trace_id);
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].int("http.response.status_code"), Some(503));
}

#[tokio::test]
async fn a_body_that_stalls_is_the_clients_408_not_the_servers_503() {
    use futures_util::StreamExt as _;
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let app = Router::new()
        .route(
            "/echo",
            axum::routing::post(
                |foundry::http::JsonBody(value): foundry::http::JsonBody<serde_json::Value>| async move {
                    axum::Json(value)
                },
            ),
        )
        .layer(
            foundry::testing::ServerLayer::new()
                .with_request_timeout(std::time::Duration::from_millis(400)),
        );
    // The first bytes of a body, then nothing more, for ever.
    let stalled = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"text\": "))
    })
    .chain(futures_util::stream::pending());

    let request = Request::post("/echo")
        .header("content-type", "application/json")
        .header("traceparent", &traceparent);

    let response = app
        .oneshot(request.body(Body::from_stream(stalled)).unwrap())
        .await
        .expect("an answer, not a dropped connection");

    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    // What is left of the body is never read: the connection cannot carry another request.
    assert_eq!(response.headers()["connection"], "close");
    let body: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .expect("a JSON body");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(
        body["error"]["message"],
        "the request's body did not arrive within 200 ms"
    );
    let spans = capture.spans(&trace_id);
    assert_eq!(spans[0].int("http.response.status_code"), Some(408));
    assert_ne!(spans[0].status, Status::Error, "a client's error");
}

/// An instrumented app whose `GET /panics` panics with "the index was out of range".
pub(crate) fn panicking_app(service: &'static str) -> Router {
    let routes = Router::new().route(
        "/panics",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("the index was out of range");
            }
            "unreachable"
        }),
    );
    foundry::http::instrument(routes, service, "0.0.0")
}

#[tokio::test]
async fn a_handler_that_panics_answers_a_json_500_and_its_span_says_why() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let app = panicking_app("foundry-test");

    let request = Request::get("/panics").header("traceparent", &traceparent);

    let (status, body) = json_answer(app, request.body(Body::empty()).unwrap()).await;

    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal");
    assert!(
        !body.to_string().contains("out of range"),
        "the panic's message stays out of the answer: {body}"
    );
    let spans = capture.spans(&trace_id);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].int("http.response.status_code"), Some(500));
    assert_eq!(spans[0].str("error.type"), Some("500"));
    assert_eq!(
        spans[0].status_message,
        "panic: the handler panicked: the index was out of range"
    );
}

#[tokio::test]
async fn a_call_outside_any_tracing_span_is_a_child_of_the_server_span() {
    // Arrange: a handler that calls another service directly, in no span of its own.
    let capture = capture("foundry-test");
    let (echo_url, _) = echo_server().await;
    let downstream = echo_downstream(&echo_url);
    let routes = Router::new().route(
        "/direct",
        get(move || async move {
            let _: serde_json::Value = downstream.get_json("/echo").await.unwrap();
            "called"
        }),
    );
    let app = foundry::http::instrument(routes, "foundry-test", "0.0.0");
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    assert_eq!(call(app, "/direct", &traceparent).await, "called");

    // Assert
    let spans = capture.spans(&trace_id);
    let span = |name: &str| span_named(&spans, name);
    assert_eq!(
        span("GET /echo").parent_span_id,
        span("GET /direct").span_id
    );
}

#[tokio::test]
async fn library_internals_never_become_span_events_or_failures() {
    // Arrange: inside a span of the service, an ERROR event of a library and a line of its own.
    let capture = capture("foundry-test");
    let routes = Router::new().route(
        "/internals",
        get(|| async {
            tracing::info_span!("work").in_scope(|| {
                tracing::error!(target: "h2::codec", "a library's connection trouble");
                tracing::info!("the service's own line");
            });
            "done"
        }),
    );
    let app = foundry::http::instrument(routes, "foundry-test", "0.0.0");
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    assert_eq!(call(app, "/internals", &traceparent).await, "done");

    // Assert: the service's line is a span event; the library's is neither event nor failure.
    let spans = capture.spans(&trace_id);
    let work = spans.iter().find(|span| span.name == "work").unwrap();
    assert_eq!(work.events, ["the service's own line"], "{work:?}");
    assert_eq!(work.status, Status::Unset);
}

#[tokio::test]
async fn server_durations_carry_method_route_status_and_the_error_type_of_a_5xx() {
    // Arrange
    let _ = capture("foundry-test");

    // Act: each set is recorded more than once.
    for _ in 0..2 {
        let _ = get_with("/fail", None).await;
        let _ = get_with("/items/7", None).await;
    }

    // Assert
    let metrics = foundry::testing::render_prometheus();
    // Other tests of this process record other statuses of the same routes.
    let series = |route: &str, status: u16| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("http_server_request_duration_seconds_count")
                    && line.contains(&format!("http_route=\"{route}\""))
                    && line.contains(&format!("http_response_status_code=\"{status}\""))
            })
            .unwrap_or_else(|| panic!("no duration for {route} {status}:\n{metrics}"))
            .to_owned()
    };
    let failed = series("/fail", 500);
    for label in [
        "http_request_method=\"GET\"",
        "error_type=\"500\"",
        "url_scheme=\"http\"",
    ] {
        assert!(failed.contains(label), "{label} in {failed}");
    }
    let count: u64 = failed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2, "{failed}");
    let served = series("/items/{id}", 200);
    assert!(!served.contains("error_type"), "{served}");
}

#[tokio::test]
async fn a_request_dropped_before_its_answer_ends_its_span_and_is_measured_as_cancelled() {
    // Arrange: a handler that never answers, and a client that stops waiting.
    let capture = capture("foundry-test");
    let routes = Router::new().route("/hang", get(std::future::pending::<&'static str>));
    let app = foundry::http::instrument(routes, "foundry-test", "0.0.0");
    let (trace_id, traceparent) = new_traceparent(true);
    let request = Request::get("/hang")
        .header("traceparent", &traceparent)
        .body(Body::empty())
        .unwrap();

    // Act: the future is polled into the handler, then dropped, as when the connection closes.
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(50), app.oneshot(request)).await;

    // Assert
    assert!(waited.is_err(), "the handler never answers");
    let spans = capture.spans(&trace_id);
    let server = span_named(&spans, "GET /hang");
    assert_eq!(server.str("error.type"), Some("cancelled"), "{server:?}");
    assert_eq!(server.int("http.response.status_code"), None);
    assert_eq!(server.status, Status::Unset, "not the server's failure");
    let metrics = foundry::testing::render_prometheus();
    let line = metrics
        .lines()
        .find(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && line.contains("http_route=\"/hang\"")
        })
        .unwrap_or_else(|| panic!("no duration for /hang:\n{metrics}"));
    assert!(line.contains("error_type=\"cancelled\""), "{line}");
    assert!(!line.contains("http_response_status_code"), "{line}");
}

/// The test app served as the LOGOS services are (bound on a free port, spans captured); its
/// address.
async fn served() -> std::net::SocketAddr {
    let _ = capture("foundry-test");
    let application = foundry::http::Application::bind("127.0.0.1", 0, app())
        .await
        .unwrap();
    let address = application.local_addr().unwrap();
    tokio::spawn(application.run_until_stopped());
    address
}

/// Writes `request` as it is to a connection and reads the answer until the server closes it.
async fn raw_exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn what_the_http_server_answers_by_itself_is_in_the_json_error_shape() {
    // Arrange: a service served as the LOGOS services are.
    let address = served().await;
    let many_headers: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_uri = format!("/items/{}", "a".repeat(70_000));
    // (request, status, error code; `None`: not an error)
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (
            format!("GET /items/1 HTTP/1.1\r\nhost: x\r\n{many_headers}connection: close\r\n\r\n"),
            431,
            Some("header_fields_too_large"),
        ),
        (
            "GET /items/1 HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\nconnection: close\r\n\r\n"
                .to_owned(),
            400,
            Some("bad_request"),
        ),
        (
            "GET /items/1 HTTP/1.1 junk\r\nhost: x\r\n\r\n".to_owned(),
            400,
            Some("bad_request"),
        ),
        (
            format!("GET {long_uri} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            414,
            Some("uri_too_long"),
        ),
        (
            "GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_owned(),
            404,
            Some("not_found"),
        ),
        (
            "GET /items/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_owned(),
            200,
            None,
        ),
    ];

    for (request, status, code) in cases {
        // Act
        let answer = raw_exchange(address, request.as_bytes()).await;

        // Assert
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:.80}: {head}"
        );
        match code {
            Some(code) => {
                let body: serde_json::Value = serde_json::from_str(body)
                    .unwrap_or_else(|error| panic!("{request:.80}: {error}: {body:?}"));
                assert_eq!(body["error"]["code"], code, "{request:.80}");
                assert!(body["error"]["message"].is_string(), "{body}");
            }
            None => assert_eq!(body, "an item"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_does_not_finish_its_head_or_stays_silent_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Arrange: a service served as the LOGOS services are (time runs paused: the bound passes
    // as soon as nothing else can happen).
    let address = served().await;
    let mut half_sent = tokio::net::TcpStream::connect(address).await.unwrap();
    half_sent
        .write_all(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();

    // Act: each waits for the server to close it, for longer than the bounds (10 s for a head
    // begun, 75 s for a connection without traffic).
    let mut closed = Vec::new();
    for stream in [&mut half_sent, &mut silent] {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            stream.read_to_end(&mut answer),
        )
        .await;
        closed.push(read.is_ok());
    }

    // Assert
    assert_eq!(
        closed,
        [true, true],
        "connections held past the head's bound"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_with_traffic_stays_open_past_the_idle_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Arrange
    let address = served().await;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();

    // Act: a request every 8 s for 120 s, on one connection (the idle bound is 75 s; between
    // requests, hyper waits 10 s for the next head).
    let mut answered = 0;
    for _ in 0..15 {
        stream
            .write_all(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).ends_with("an item") {
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed after {answered} answers");
            answer.extend_from_slice(&chunk[..read]);
        }
        answered += 1;
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    }

    // Assert
    assert_eq!(answered, 15);
}
