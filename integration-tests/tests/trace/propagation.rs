//! Context across the process boundaries: an incoming `traceparent` is continued through both
//! hops, a malformed one starts a new trace without failing the request, an unsampled one
//! produces no span anywhere and keeps its Level 2 random flag, and `tracestate` and `baggage`
//! (repeated headers, escapes) reach Hermes unchanged.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use foundry::testing::{OtlpReceiver, new_traceparent};
use serde_json::{Value, json};

use crate::{
    harness::{Export, Service, Stack, http},
    shape::wait_for_trace,
    trace::{Entry, GOAL, apollo_rows, assert_action, assert_plan_attributes, plan_rows},
};

const ALL: [&str; 3] = ["apollo", "sophia", "hermes"];

/// The parent span id of a `traceparent` made by `new_traceparent`.
fn parent_id(traceparent: &str) -> &str {
    &traceparent[36..52]
}

/// `POST {url}` with `body` and extra headers; panics unless the answer is 201.
async fn post_created(url: &str, body: &Value, headers: &[(&str, &str)]) -> (String, Value) {
    let mut request = http().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    let traceparent = response
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, StatusCode::CREATED, "POST {url}: {body}");
    (traceparent, body)
}

/// Sophia's `POST /plan` body for [`GOAL`].
fn sophia_plan() -> Value {
    json!({"goal": {"description": GOAL}})
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_through_both_hops() {
    // Arrange
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let (api_trace, api_parent) = new_traceparent(true);
    let (sophia_trace, sophia_parent) = new_traceparent(true);

    // Act: one request into the Apollo API, one straight into Sophia.
    let (api_answer_parent, plan) = post_created(
        &format!("{}/api/plan", serve.url),
        &json!({"goal": GOAL}),
        &[("traceparent", &api_parent)],
    )
    .await;
    let (sophia_answer_parent, sophia_answer) = post_created(
        &format!("{}/plan", stack.sophia.url),
        &sophia_plan(),
        &[("traceparent", &sophia_parent)],
    )
    .await;

    // Assert: the caller's trace goes on through Apollo, Sophia and Hermes...
    assert_eq!(&api_answer_parent[3..35], api_trace, "{api_answer_parent}");
    let trace = wait_for_trace(
        &stack.receiver,
        &api_trace,
        &ALL,
        Some(parent_id(&api_parent)),
    )
    .await;
    let entry = Entry::Api("POST /api/plan");
    let steps = plan["plan"].as_array().expect("steps").len();
    assert_action(
        &trace,
        entry,
        "plan",
        &[
            apollo_rows(entry, "apollo.api.sophia", "POST /plan"),
            plan_rows(steps, Some(("apollo", "POST /plan"))),
        ]
        .concat(),
        Some(parent_id(&api_parent)),
    );
    assert_plan_attributes(&trace, GOAL, &plan);

    // ...and through Sophia and Hermes when Sophia is called first.
    assert_eq!(&sophia_answer_parent[3..35], sophia_trace);
    let trace = wait_for_trace(
        &stack.receiver,
        &sophia_trace,
        &["sophia", "hermes"],
        Some(parent_id(&sophia_parent)),
    )
    .await;
    trace.assert_well_formed("sophia", "POST /plan", Some(parent_id(&sophia_parent)));
    let steps = sophia_answer["plan"].as_array().expect("steps").len();
    trace.assert_spans(&plan_rows(steps, None));
    trace.assert_no_errors();
    assert_plan_attributes(&trace, GOAL, &sophia_answer);
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_the_request_succeeds() {
    // Arrange
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let (trace_id, valid) = new_traceparent(true);
    let span_id = parent_id(&valid).to_owned();
    let malformed = [
        format!("00-{}-{span_id}-01", trace_id.to_uppercase()),
        format!("ff-{trace_id}-{span_id}-01"),
        format!("00-{}-{span_id}-01", "0".repeat(32)),
        format!("00-{trace_id}-{}-01", "0".repeat(16)),
        format!("00-{}-{span_id}-01", &trace_id[1..]),
        format!("00-{trace_id}-{span_id}-01-extra"),
        "not a traceparent".to_owned(),
    ];

    for traceparent in &malformed {
        // Act
        let (answer_parent, answer) = post_created(
            &format!("{}/plan", stack.sophia.url),
            &sophia_plan(),
            &[("traceparent", traceparent)],
        )
        .await;

        // Assert: a new, complete trace rooted at Sophia's server span.
        let new_trace = answer_parent.get(3..35).unwrap_or_default().to_owned();
        assert!(
            new_trace.len() == 32 && new_trace != trace_id && new_trace != "0".repeat(32),
            "{traceparent:?} starts a new trace: {answer_parent:?}"
        );
        let trace = wait_for_trace(&stack.receiver, &new_trace, &["sophia", "hermes"], None).await;
        trace.assert_well_formed("sophia", "POST /plan", None);
        let steps = answer["plan"].as_array().expect("steps").len();
        trace.assert_spans(&plan_rows(steps, None));
    }

    // The API too: a new trace through all three processes.
    let (answer_parent, plan) = post_created(
        &format!("{}/api/plan", serve.url),
        &json!({"goal": GOAL}),
        &[("traceparent", &malformed[0])],
    )
    .await;
    let new_trace = &answer_parent[3..35];
    assert_ne!(new_trace, trace_id);
    let trace = wait_for_trace(&stack.receiver, new_trace, &ALL, None).await;
    let entry = Entry::Api("POST /api/plan");
    let steps = plan["plan"].as_array().expect("steps").len();
    assert_action(
        &trace,
        entry,
        "plan",
        &[
            apollo_rows(entry, "apollo.api.sophia", "POST /plan"),
            plan_rows(steps, Some(("apollo", "POST /plan"))),
        ]
        .concat(),
        None,
    );
    let reused: Vec<_> = stack
        .receiver
        .spans()
        .into_iter()
        .filter(|span| span.trace_id == trace_id || span.parent_span_id == span_id)
        .collect();
    assert!(
        reused.is_empty(),
        "nothing continued a malformed parent: {reused:#?}"
    );
}

#[tokio::test]
async fn an_unsampled_parent_produces_no_spans_in_any_service() {
    // Arrange
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let (unsampled_trace, unsampled) = new_traceparent(false);
    let (sentinel_trace, sentinel_parent) = new_traceparent(true);
    let url = format!("{}/api/plan", serve.url);

    // Act
    let (answer_parent, _) =
        post_created(&url, &json!({"goal": GOAL}), &[("traceparent", &unsampled)]).await;
    // A sampled request after it: once its whole trace has arrived from every process, so has
    // anything the unsampled one produced, because each process exports in the order spans end.
    post_created(
        &url,
        &json!({"goal": GOAL}),
        &[("traceparent", &sentinel_parent)],
    )
    .await;
    let sentinel = wait_for_trace(
        &stack.receiver,
        &sentinel_trace,
        &ALL,
        Some(parent_id(&sentinel_parent)),
    )
    .await;

    // Assert
    assert_eq!(
        answer_parent.get(3..35),
        Some(unsampled_trace.as_str()),
        "the answer continues the caller's trace: {answer_parent:?}"
    );
    assert!(
        answer_parent.ends_with("-00"),
        "and keeps it unsampled: {answer_parent:?}"
    );
    sentinel.assert_well_formed(
        "apollo",
        "POST /api/plan",
        Some(parent_id(&sentinel_parent)),
    );
    // Not a span of any other trace either: had Sophia or Hermes lost the unsampled context,
    // they would have started sampled traces of their own.
    let recorded: Vec<_> = stack
        .receiver
        .spans()
        .into_iter()
        .filter(|span| span.trace_id != sentinel_trace)
        .collect();
    assert!(
        recorded.is_empty(),
        "no spans for an unsampled parent: {recorded:#?}"
    );
}

/// The header-recording stand-in for Hermes: forwards every request to Hermes unchanged and
/// keeps the headers Sophia sent.
struct RecordingProxy {
    url: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl RecordingProxy {
    async fn start(target: &str) -> Self {
        let seen = Arc::default();
        let state = ProxyState {
            target: target.to_owned(),
            client: http(),
            seen: Arc::clone(&seen),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, seen, task }
    }

    fn seen(&self) -> Vec<HeaderMap> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(headers.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = state
        .client
        .request(method, format!("{}{path}", state.target))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The members of a `baggage` header, as a set (the order of members carries no meaning).
fn baggage_members(header: &str) -> BTreeSet<String> {
    header
        .split(',')
        .map(|member| member.trim().to_owned())
        .filter(|member| !member.is_empty())
        .collect()
}

/// The chain exporting to a receiver, Sophia calling Hermes through a [`RecordingProxy`].
struct ProxiedChain {
    receiver: OtlpReceiver,
    proxy: RecordingProxy,
    serve: Service,
    /// Sophia and Hermes, kept running while the chain is.
    _services: [Service; 2],
}

impl ProxiedChain {
    async fn start() -> Self {
        let receiver = OtlpReceiver::start().await.unwrap();
        let export = Export::to(&receiver.grpc_endpoint());
        let hermes = Service::hermes(&export).await;
        let proxy = RecordingProxy::start(&hermes.url).await;
        let sophia = Service::sophia(&export, &proxy.url).await;
        let serve = Service::apollo_serve(&export, &sophia.url, &hermes.url).await;
        Self {
            receiver,
            proxy,
            serve,
            _services: [sophia, hermes],
        }
    }
}

#[tokio::test]
async fn tracestate_and_baggage_arrive_at_hermes_unchanged() {
    // Arrange: Sophia calls Hermes through a proxy that records what Sophia sends.
    let chain = ProxiedChain::start().await;
    let (receiver, proxy, serve) = (&chain.receiver, &chain.proxy, &chain.serve);
    let (trace_id, traceparent) = new_traceparent(true);
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    // Two headers, one list; values with escapes (`%2541` is `%41`, not `A`) and `=` in them.
    let baggage = [
        "user.id=alice;ttl=60,tenant=acme%20corp",
        "is_test=true,pct=a%2541,key=YWJj==",
    ];

    // Act: two hops, Apollo to Sophia to Hermes.
    let (_, plan) = post_created(
        &format!("{}/api/plan", serve.url),
        &json!({"goal": GOAL}),
        &[
            ("traceparent", &traceparent),
            ("tracestate", tracestate),
            ("baggage", baggage[0]),
            ("baggage", baggage[1]),
        ],
    )
    .await;

    // Assert: Hermes' server spans carry the caller's tracestate...
    let trace = wait_for_trace(receiver, &trace_id, &ALL, Some(parent_id(&traceparent))).await;
    let tree = trace.tree();
    let steps = plan["plan"].as_array().expect("steps").len();
    let hermes_servers: Vec<_> = trace
        .spans
        .iter()
        .filter(|s| s.service_name == "hermes" && s.kind == foundry::testing::Kind::Server)
        .collect();
    assert_eq!(hermes_servers.len(), 1 + steps, "{tree}");
    for span in &trace.spans {
        assert_eq!(
            span.trace_state, tracestate,
            "{} [{}] carries the tracestate:\n{tree}",
            span.name, span.service_name
        );
    }
    // ...and what Sophia sent on to Hermes holds the same context, baggage included.
    let seen = proxy.seen();
    assert_eq!(
        seen.len(),
        1 + steps,
        "Sophia called Hermes through the proxy"
    );
    for headers in &seen {
        let get = |name: &str| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            assert_eq!(values.len(), 1, "one {name} header: {headers:?}");
            values[0].to_owned()
        };
        assert_eq!(&get("traceparent")[3..35], trace_id, "{headers:?}");
        assert_eq!(get("tracestate"), tracestate, "{headers:?}");
        assert_eq!(
            baggage_members(&get("baggage")),
            baggage_members(&baggage.join(",")),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn an_unsampled_random_parent_keeps_its_flags_through_both_hops() {
    // Arrange: Sophia calls Hermes through a proxy that records what Sophia sends.
    let chain = ProxiedChain::start().await;
    let (proxy, serve) = (&chain.proxy, &chain.serve);
    let (trace_id, unsampled) = new_traceparent(false);
    // Level 2: not sampled, and the trace id is random.
    let random = format!("{}-02", &unsampled[..52]);

    // Act
    let (answer, _) = post_created(
        &format!("{}/api/plan", serve.url),
        &json!({"goal": GOAL}),
        &[("traceparent", &random)],
    )
    .await;

    // Assert: each hop changes the parent id only, on the answer and on the calls to Hermes.
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "Sophia called Hermes through the proxy");
    let sent = seen.iter().map(|headers| {
        headers["traceparent"]
            .to_str()
            .unwrap_or_default()
            .to_owned()
    });
    for header in std::iter::once(answer).chain(sent) {
        assert_eq!(header.get(3..35), Some(trace_id.as_str()), "{header}");
        assert!(header.ends_with("-02"), "{header}");
    }
}
