//! The W3C Trace Context test suite (w3c/trace-context, `test/test.py`, `STRICT_LEVEL=2`), case by
//! case, through the real server layer and client: the harness sends headers to a service over a
//! socket, the service calls the harness back, and the headers of the call are what is checked.
//!
//! Where the suite still checks `tracestate` keys by the older `tenant@system` grammar
//! (`test_tracestate_key_illegal_vendor_format`, `test_tracestate_key_length_limit`), the cases
//! expect what the current spec says: `@` is a key character like any other after the first,
//! and a key is up to 256 characters, however it splits at `@`. Duplicated keys keep their
//! first member, which the suite accepts ("kept as-is or one of them discarded").

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRACE: &str = "12345678901234567890123456789012";
const PARENT: &str = "1234567890123456";
const UNSAMPLED: &str = "00-12345678901234567890123456789012-1234567890123456-00";
const SAMPLED: &str = "00-12345678901234567890123456789012-1234567890123456-01";

/// What the harness expects of the `traceparent` of each call back.
#[derive(Clone, Copy, Debug)]
enum Parent {
    /// The harness's trace goes on (with a new parent id).
    Continued,
    /// A new trace: neither the harness's trace id nor the all-zero one.
    NewTrace,
}

/// One request of the suite: its name, the headers sent as they are written on the wire
/// (name case included), how many calls back it asks for, and what those calls must carry.
struct Case {
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    calls: usize,
    parent: Parent,
    /// The `tracestate` of the calls back; `None`: no header.
    tracestate: Option<String>,
}

fn case(
    name: &'static str,
    headers: &[(&'static str, &str)],
    parent: Parent,
    tracestate: Option<&str>,
) -> Case {
    Case {
        name,
        headers: headers
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect(),
        calls: 1,
        parent,
        tracestate: tracestate.map(str::to_owned),
    }
}

/// A request with `traceparent` [`UNSAMPLED`] and the given `tracestate` headers.
fn state(name: &'static str, tracestate: &[&str], expected: Option<&str>) -> Case {
    let mut headers = vec![("traceparent", UNSAMPLED.to_owned())];
    headers.extend(
        tracestate
            .iter()
            .map(|value| ("tracestate", (*value).to_owned())),
    );
    Case {
        name,
        headers,
        calls: 1,
        parent: Parent::Continued,
        tracestate: expected.map(str::to_owned),
    }
}

/// Every case of the suite's `TraceContextTest` and `AdvancedTest`, in its order.
fn cases() -> Vec<Case> {
    use Parent::{Continued, NewTrace};
    let tp =
        |value: &'static str| -> [(&'static str, &'static str); 1] { [("traceparent", value)] };
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let vendor_key = format!("{key}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x7e)
        .filter(|b| *b != b',' && *b != b'=')
        .map(char::from)
        .collect();
    let all_chars = format!("{key}={value}");
    let all_chars_vendor = format!("{vendor_key}={value}");
    let bars = |range: std::ops::RangeInclusive<usize>| {
        range
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (bars_1, bars_2, bars_3) = (bars(1..=10), bars(11..=20), bars(21..=30));
    let thirty_two = format!("{bars_1},{bars_2},{bars_3},{}", bars(31..=32));
    let key_256 = format!("{}=1", "z".repeat(256));
    let key_257 = format!("{}=1", "z".repeat(257));
    let tenant_vendor = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let tenant_242 = format!("{}@v=1", "t".repeat(242));
    let vendor_15 = format!("t@{}=1", "v".repeat(15));
    let mut cases = vec![
        // test_both_traceparent_and_tracestate_missing
        case("no context", &[], NewTrace, None),
        // test_traceparent_included_tracestate_missing
        case("traceparent only", &tp(SAMPLED), Continued, None),
        // test_traceparent_duplicated
        case(
            "two traceparents",
            &[
                (
                    "traceparent",
                    "00-12345678901234567890123456789011-1234567890123456-01",
                ),
                ("traceparent", SAMPLED),
            ],
            NewTrace,
            None,
        ),
        // test_traceparent_header_name
        case("trace-parent", &[("trace-parent", SAMPLED)], NewTrace, None),
        case("trace.parent", &[("trace.parent", SAMPLED)], NewTrace, None),
        // test_traceparent_header_name_valid_casing
        case("TraceParent", &[("TraceParent", SAMPLED)], Continued, None),
        case("TrAcEpArEnT", &[("TrAcEpArEnT", SAMPLED)], Continued, None),
        case("TRACEPARENT", &[("TRACEPARENT", SAMPLED)], Continued, None),
        // test_traceparent_version_0x00
        case(
            "00 with a trailing dot",
            &tp("00-12345678901234567890123456789012-1234567890123456-01."),
            NewTrace,
            None,
        ),
        case(
            "00 with more fields",
            &tp(
                "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            ),
            NewTrace,
            None,
        ),
        // test_traceparent_version_0xcc
        case(
            "cc",
            &tp("cc-12345678901234567890123456789012-1234567890123456-01"),
            Continued,
            None,
        ),
        case(
            "cc with more fields",
            &tp(
                "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            ),
            Continued,
            None,
        ),
        case(
            "cc with a dot",
            &tp(
                "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
            ),
            NewTrace,
            None,
        ),
        // test_traceparent_version_0xff
        case(
            "ff",
            &tp("ff-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_version_illegal_characters
        case(
            ".0",
            &tp(".0-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        case(
            "0.",
            &tp("0.-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_version_too_long
        case(
            "000",
            &tp("000-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        case(
            "0000",
            &tp("0000-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_version_too_short
        case(
            "0",
            &tp("0-12345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_id_all_zero
        case(
            "zero trace id",
            &tp("00-00000000000000000000000000000000-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_id_illegal_characters
        case(
            "trace id .",
            &tp("00-.2345678901234567890123456789012-1234567890123456-01"),
            NewTrace,
            None,
        ),
        case(
            "trace id ...",
            &tp("00-1234567890123456789012345678901.-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_id_too_long
        case(
            "trace id 33",
            &tp("00-123456789012345678901234567890123-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_id_too_short
        case(
            "trace id 31",
            &tp("00-1234567890123456789012345678901-1234567890123456-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_parent_id_all_zero
        case(
            "zero parent id",
            &tp("00-12345678901234567890123456789012-0000000000000000-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_parent_id_illegal_characters
        case(
            "parent id .",
            &tp("00-12345678901234567890123456789012-.234567890123456-01"),
            NewTrace,
            None,
        ),
        case(
            "parent id ...",
            &tp("00-12345678901234567890123456789012-123456789012345.-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_parent_id_too_long
        case(
            "parent id 17",
            &tp("00-12345678901234567890123456789012-12345678901234567-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_parent_id_too_short
        case(
            "parent id 15",
            &tp("00-12345678901234567890123456789012-123456789012345-01"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_flags_illegal_characters
        case(
            "flags .0",
            &tp("00-12345678901234567890123456789012-1234567890123456-.0"),
            NewTrace,
            None,
        ),
        case(
            "flags 0.",
            &tp("00-12345678901234567890123456789012-1234567890123456-0."),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_flags_too_long
        case(
            "flags 001",
            &tp("00-12345678901234567890123456789012-1234567890123456-001"),
            NewTrace,
            None,
        ),
        // test_traceparent_trace_flags_too_short
        case(
            "flags 1",
            &tp("00-12345678901234567890123456789012-1234567890123456-1"),
            NewTrace,
            None,
        ),
        // test_traceparent_ows_handling
        case(
            "leading space",
            &tp(" 00-12345678901234567890123456789012-1234567890123456-01"),
            Continued,
            None,
        ),
        case(
            "leading tab",
            &tp("\t00-12345678901234567890123456789012-1234567890123456-01"),
            Continued,
            None,
        ),
        case(
            "trailing space",
            &tp("00-12345678901234567890123456789012-1234567890123456-01 "),
            Continued,
            None,
        ),
        case(
            "trailing tab",
            &tp("00-12345678901234567890123456789012-1234567890123456-01\t"),
            Continued,
            None,
        ),
        case(
            "both",
            &tp("\t 00-12345678901234567890123456789012-1234567890123456-01 \t"),
            Continued,
            None,
        ),
        // test_tracestate_included_traceparent_missing
        case(
            "tracestate alone",
            &[("tracestate", "foo=1")],
            NewTrace,
            None,
        ),
        case(
            "tracestate alone, two",
            &[("tracestate", "foo=1,bar=2")],
            NewTrace,
            None,
        ),
        // test_tracestate_included_traceparent_included
        state("both headers", &["foo=1,bar=2"], Some("foo=1,bar=2")),
        // test_tracestate_header_name
        case(
            "trace-state",
            &[("traceparent", UNSAMPLED), ("trace-state", "foo=1")],
            Continued,
            None,
        ),
        case(
            "trace.state",
            &[("traceparent", UNSAMPLED), ("trace.state", "foo=1")],
            Continued,
            None,
        ),
        // test_tracestate_header_name_valid_casing
        case(
            "TraceState",
            &[("traceparent", UNSAMPLED), ("TraceState", "foo=1")],
            Continued,
            Some("foo=1"),
        ),
        case(
            "TrAcEsTaTe",
            &[("traceparent", UNSAMPLED), ("TrAcEsTaTe", "foo=1")],
            Continued,
            Some("foo=1"),
        ),
        case(
            "TRACESTATE",
            &[("traceparent", UNSAMPLED), ("TRACESTATE", "foo=1")],
            Continued,
            Some("foo=1"),
        ),
        // test_tracestate_empty_header
        state("empty", &[""], None),
        state("value then empty", &["foo=1", ""], Some("foo=1")),
        state("empty then value", &["", "foo=1"], Some("foo=1")),
        // test_tracestate_multiple_headers_different_keys
        state(
            "three headers",
            &["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
            Some("foo=1,bar=2,rojo=1,congo=2,baz=3"),
        ),
        // test_tracestate_duplicated_keys
        state("foo=1,foo=1", &["foo=1,foo=1"], Some("foo=1")),
        state("foo=1,foo=2", &["foo=1,foo=2"], Some("foo=1")),
        state("foo=1 twice", &["foo=1", "foo=1"], Some("foo=1")),
        state("foo=1 then foo=2", &["foo=1", "foo=2"], Some("foo=1")),
        // test_tracestate_all_allowed_characters
        state("all characters", &[&all_chars], Some(&all_chars)),
        state(
            "all characters, vendor",
            &[&all_chars_vendor],
            Some(&all_chars_vendor),
        ),
        // test_tracestate_ows_handling
        state(
            "ows 1",
            &["foo=1 \t , \t bar=2, \t baz=3"],
            Some("foo=1,bar=2,baz=3"),
        ),
        state(
            "ows 2",
            &["foo=1\t \t,\t \tbar=2,\t \tbaz=3"],
            Some("foo=1,bar=2,baz=3"),
        ),
        state("ows 3", &[" foo=1"], Some("foo=1")),
        state("ows 4", &["\tfoo=1"], Some("foo=1")),
        state("ows 5", &["foo=1 "], Some("foo=1")),
        state("ows 6", &["foo=1\t"], Some("foo=1")),
        state("ows 7", &["\t foo=1 \t"], Some("foo=1")),
        // test_tracestate_key_illegal_characters
        state("key with a space", &["foo =1"], None),
        state("upper-case key", &["FOO=1"], None),
        state("key with a dot", &["foo.bar=1"], None),
        // test_tracestate_key_illegal_vendor_format: by the current grammar only `@foo` is
        // illegal (a key begins with a letter or a digit).
        state("foo@", &["foo@=1,bar=2"], Some("foo@=1,bar=2")),
        state("@foo", &["@foo=1,bar=2"], None),
        state("foo@@bar", &["foo@@bar=1,bar=2"], Some("foo@@bar=1,bar=2")),
        state(
            "foo@bar@baz",
            &["foo@bar@baz=1,bar=2"],
            Some("foo@bar@baz=1,bar=2"),
        ),
        // test_tracestate_member_count_limit
        state(
            "32 members",
            &[&bars_1, &bars_2, &bars_3, "bar31=31,bar32=32"],
            Some(&thirty_two),
        ),
        state(
            "33 members",
            &[&bars_1, &bars_2, &bars_3, "bar31=31,bar32=32,bar33=33"],
            None,
        ),
        // test_tracestate_key_length_limit: by the current grammar, 256 characters in all
        // however the key splits at `@`.
        state(
            "key 256",
            &["foo=1", &key_256],
            Some(&format!("foo=1,{key_256}")),
        ),
        state("key 257", &["foo=1", &key_257], None),
        state(
            "tenant 241, vendor 14",
            &["foo=1", &tenant_vendor],
            Some(&format!("foo=1,{tenant_vendor}")),
        ),
        state(
            "tenant 242",
            &["foo=1", &tenant_242],
            Some(&format!("foo=1,{tenant_242}")),
        ),
        state(
            "vendor 15",
            &["foo=1", &vendor_15],
            Some(&format!("foo=1,{vendor_15}")),
        ),
        // test_tracestate_value_illegal_characters
        state("value with =", &["foo=bar=baz"], None),
        state("empty value", &["foo=,bar=3"], None),
    ];
    // AdvancedTest: three calls back each, every one with a parent id of its own.
    for (name, headers, parent) in [
        (
            "three calls, valid",
            vec![("traceparent", SAMPLED)],
            Continued,
        ),
        ("three calls, none", vec![], NewTrace),
        (
            "three calls, illegal",
            vec![(
                "traceparent",
                "00-00000000000000000000000000000000-1234567890123456-01",
            )],
            NewTrace,
        ),
    ] {
        let mut advanced = case(name, &headers, parent, None);
        advanced.calls = 3;
        cases.push(advanced);
    }
    cases
}

/// The harness: remembers the headers of every call back, in order.
async fn harness() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let remember = calls.clone();
    let app = Router::new().route(
        "/callback",
        post(move |headers: HeaderMap| async move {
            remember.lock().unwrap().push(headers);
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/callback"), calls)
}

/// The service under test: foundry's server layer around a route that calls the harness back
/// `calls` times with foundry's client.
async fn service(callback: String) -> std::net::SocketAddr {
    let client = foundry::http::client(std::time::Duration::from_secs(5)).unwrap();
    let routes = Router::new()
        .route(
            "/test/{calls}",
            post(
                |State((client, callback)): State<(foundry::http::HttpClient, String)>,
                 axum::extract::Path(calls): axum::extract::Path<usize>| async move {
                    for _ in 0..calls {
                        client.post(&callback).send().await.unwrap();
                    }
                    "called back"
                },
            ),
        )
        .with_state((client, callback));
    let app = foundry::http::instrument(routes, "foundry-test", "0.0.0");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// `POST /test/{calls}` written by hand, so header names keep their case and repeated headers
/// stay separate lines, as the suite sends them; returns the status line.
async fn send(address: std::net::SocketAddr, headers: &[(&str, String)], calls: usize) -> String {
    let mut request = format!("POST /test/{calls} HTTP/1.1\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_w3c_trace_context_suite_passes_at_its_strictest_level() {
    // Arrange
    let _capture = foundry::testing::capture("foundry-test");
    let (callback, calls) = harness().await;
    let address = service(callback).await;

    for case in cases() {
        calls.lock().unwrap().clear();

        // Act
        let status = send(address, &case.headers, case.calls).await;

        // Assert
        assert!(status.contains(" 200 "), "{}: {status}", case.name);
        let received = calls.lock().unwrap().clone();
        assert_eq!(received.len(), case.calls, "{}", case.name);
        let mut parent_ids = Vec::new();
        for headers in &received {
            let traceparents: Vec<&str> = headers
                .get_all("traceparent")
                .iter()
                .map(|value| value.to_str().unwrap())
                .collect();
            let [traceparent] = traceparents[..] else {
                panic!("{}: one traceparent, got {traceparents:?}", case.name);
            };
            let fields: Vec<&str> = traceparent.split('-').collect();
            assert!(
                fields.len() == 4
                    && fields[0] == "00"
                    && fields[1].len() == 32
                    && fields[2].len() == 16
                    && fields[3].len() == 2
                    && traceparent
                        .bytes()
                        .all(|b| b == b'-' || b.is_ascii_hexdigit()),
                "{}: {traceparent}",
                case.name
            );
            let (trace_id, parent_id) = (fields[1], fields[2]);
            assert_ne!(parent_id, PARENT, "{}: a new parent id", case.name);
            assert_ne!(trace_id, "0".repeat(32), "{}", case.name);
            match case.parent {
                Parent::Continued => assert_eq!(trace_id, TRACE, "{}", case.name),
                Parent::NewTrace => {
                    assert!(
                        !case
                            .headers
                            .iter()
                            .any(|(_, value)| value.contains(trace_id)),
                        "{}: {trace_id} is not new",
                        case.name
                    );
                }
            }
            let tracestate: Vec<&str> = headers
                .get_all("tracestate")
                .iter()
                .map(|value| value.to_str().unwrap())
                .collect();
            assert_eq!(
                tracestate.first().copied(),
                case.tracestate.as_deref(),
                "{}",
                case.name
            );
            assert!(tracestate.len() <= 1, "{}: {tracestate:?}", case.name);
            parent_ids.push(parent_id.to_owned());
        }
        parent_ids.sort_unstable();
        parent_ids.dedup();
        assert_eq!(parent_ids.len(), case.calls, "{}: parent ids", case.name);
    }
}

/// A request's headers as the SDK's propagator reads them: names in lower case, repeated
/// headers joined with commas as HTTP allows (its best chance at the suite's split cases).
struct Joined(Vec<(String, String)>);

impl opentelemetry::propagation::Extractor for Joined {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Why foundry's propagator is kept instead of the SDK's: the same cases of the suite, read by
/// the SDK's `TraceContextPropagator`, and the ones it gets wrong. When an upgrade fixes them,
/// this test fails, and foundry's propagator can go (BENCHMARKS.md measures no speed in it).
#[test]
fn the_sdk_propagator_fails_cases_of_the_suite_that_foundry_passes() {
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
    let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let mut failed = Vec::new();
    for case in cases().into_iter().filter(|case| case.calls == 1) {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (name, value) in &case.headers {
            let name = name.to_ascii_lowercase();
            match joined.iter_mut().find(|(known, _)| *known == name) {
                Some((_, known)) => {
                    known.push(',');
                    known.push_str(value);
                }
                None => joined.push((name, value.clone())),
            }
        }
        let context = sdk.extract(&Joined(joined));
        let span = context.span().span_context().clone();
        let continued = span.is_valid() && span.trace_id().to_string() == TRACE;
        let tracestate = Some(span.trace_state().header()).filter(|state| !state.is_empty());
        let right = match case.parent {
            Parent::Continued => continued && tracestate == case.tracestate,
            Parent::NewTrace => !continued,
        };
        if !right {
            failed.push(case.name);
        }
    }
    assert_eq!(
        failed,
        [
            // A `traceparent` of the wrong width continues the trace: a version of one, three or
            // four digits, a parent id of 15, flags of one or three.
            "000",
            "0000",
            "0",
            "parent id 15",
            "flags 001",
            "flags 1",
            // A repeated key drops the whole `tracestate` (the suite keeps one member).
            "foo=1,foo=1",
            "foo=1,foo=2",
            "foo=1 twice",
            "foo=1 then foo=2",
            // Keys valid for the current spec (`@` after the first character; up to 256
            // characters however they split at `@`) drop the whole header, and past the
            // 32-member limit, or with an empty value, the header is kept, not dropped.
            "foo@@bar",
            "foo@bar@baz",
            "33 members",
            "tenant 241, vendor 14",
            "vendor 15",
            "empty value",
        ],
        "the cases the SDK's propagator gets wrong changed"
    );
}
