//! Property tests of the W3C parsers: `traceparent`, `tracestate` and `baggage` headers of any
//! shape never make the propagators panic, whatever they send on is valid by the specs (checked
//! here by checkers of this file's own, not by the code under test), and valid headers survive a
//! hop unchanged. `make test` runs proptest's default number of cases (256 a property); `make
//! fuzz` runs about a million in all, in a release build (`PROPTEST_CASES`).

use std::collections::HashMap;

use opentelemetry::{
    Context,
    baggage::BaggageExt,
    propagation::{Extractor, TextMapPropagator},
};
use proptest::prelude::*;

use foundry::testing::{W3cBaggagePropagator, W3cTraceContextPropagator};

/// Headers as a list, so a header can repeat.
struct Headers(Vec<(&'static str, String)>);

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// What a hop sends on of `headers`: extracted by both propagators, then injected.
fn hop(headers: Vec<(&'static str, String)>) -> HashMap<String, String> {
    let headers = Headers(headers);
    let cx = W3cTraceContextPropagator::new().extract_with_context(&Context::new(), &headers);
    let cx = W3cBaggagePropagator::new().extract_with_context(&cx, &headers);
    let mut out = HashMap::new();
    W3cTraceContextPropagator::new().inject_context(&cx, &mut out);
    W3cBaggagePropagator::new().inject_context(&cx, &mut out);
    out
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A version 00 `traceparent` by W3C Trace Context: ids not all zero, only known flags.
fn valid_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    let [version, trace_id, parent_id, flags] = fields[..] else {
        return false;
    };
    version == "00"
        && is_lower_hex(trace_id, 32)
        && is_lower_hex(parent_id, 16)
        && is_lower_hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0')
        && u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & !0x03 == 0)
}

/// A `tracestate` by the current grammar: 1 to 32 members, keys unique.
fn valid_tracestate(value: &str) -> bool {
    let members: Vec<&str> = value.split(',').collect();
    let mut keys = Vec::new();
    (1..=32).contains(&members.len())
        && members.iter().all(|member| {
            let Some((key, value)) = member.split_once('=') else {
                return false;
            };
            let key_ok = (1..=256).contains(&key.len())
                && key
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
            let value_ok = (1..=256).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
                && !value.ends_with(' ');
            let unique = !keys.contains(&key);
            keys.push(key);
            key_ok && value_ok && unique
        })
}

/// A `baggage` header by W3C Baggage: at most 64 members and 8192 bytes, token keys, values of
/// baggage octets whose `%` starts an escape, properties of the same grammar.
fn valid_baggage(value: &str) -> bool {
    fn token(text: &str) -> bool {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
    fn octets(text: &str) -> bool {
        let bytes = text.as_bytes();
        bytes.iter().enumerate().all(|(i, b)| {
            matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
                && (*b != b'%'
                    || bytes
                        .get(i + 1..i + 3)
                        .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
        })
    }
    let members: Vec<&str> = value.split(',').collect();
    value.len() <= 8192
        && (1..=64).contains(&members.len())
        && members.iter().all(|member| {
            let mut parts = member.split(';');
            let pair = parts.next().unwrap_or_default();
            let Some((key, value)) = pair.split_once('=') else {
                return false;
            };
            token(key)
                && octets(value)
                && parts.all(|property| match property.split_once('=') {
                    Some((key, value)) => token(key) && octets(value),
                    None => token(property),
                })
        })
}

/// Strings of the characters the W3C headers are made of, and some that break them.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        "[a-z0-9@_*/=, \t%;-]{0,120}",
        any::<String>(),
    ]
}

/// A valid tracestate key: `@` anywhere after the first character.
fn tracestate_key() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_*/@-]{0,40}"
}

/// A valid tracestate value (no trailing space).
fn tracestate_value() -> impl Strategy<Value = String> {
    "[ -+\\--<>-~]{0,20}[!-+\\--<>-~]"
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_traceparent_is_either_continued_as_valid_or_replaced(value in header_text()) {
        let out = hop(vec![("traceparent", value)]);
        // No span here: an invalid parent sends nothing, a valid one goes on valid.
        if let Some(sent) = out.get("traceparent") {
            prop_assert!(valid_traceparent(sent), "{sent:?}");
        }
    }

    #[test]
    fn a_valid_traceparent_goes_on_with_its_ids_and_known_flags(
        trace_id in "[0-9a-f]{32}",
        parent_id in "[0-9a-f]{16}",
        flags in any::<u8>(),
        version in prop_oneof![Just("00".to_owned()), "[0-9a-e][0-9a-f]"],
        ows in "[ \t]{0,2}",
    ) {
        prop_assume!(trace_id.bytes().any(|b| b != b'0') && parent_id.bytes().any(|b| b != b'0'));
        let header = format!("{ows}{version}-{trace_id}-{parent_id}-{flags:02x}{ows}");
        let out = hop(vec![("traceparent", header)]);
        prop_assert_eq!(
            out.get("traceparent"),
            Some(&format!("00-{trace_id}-{parent_id}-{:02x}", flags & 0x03))
        );
    }

    #[test]
    fn any_tracestate_goes_on_valid_or_not_at_all(
        values in proptest::collection::vec(header_text(), 1..4),
    ) {
        let mut headers = vec![("traceparent", PARENT.to_owned())];
        headers.extend(values.into_iter().map(|value| ("tracestate", value)));
        let out = hop(headers);
        prop_assert!(out.contains_key("traceparent"), "the traceparent stands");
        if let Some(sent) = out.get("tracestate") {
            prop_assert!(valid_tracestate(sent), "{sent:?}");
        }
    }

    #[test]
    fn a_valid_tracestate_goes_on_unchanged_with_first_members_of_repeated_keys(
        members in proptest::collection::vec((tracestate_key(), tracestate_value()), 1..=32),
        split in 0usize..32,
    ) {
        // Arrange: the list, in two headers, with optional whitespace around members.
        let listed: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let split = split.min(listed.len());
        let headers = vec![
            ("traceparent", PARENT.to_owned()),
            ("tracestate", format!(" {}\t", listed[..split].join(" ,"))),
            ("tracestate", listed[split..].join(",\t")),
        ];
        let mut expected: Vec<(&str, &str)> = Vec::new();
        for (key, value) in &members {
            if !expected.iter().any(|(k, _)| k == key) {
                expected.push((key, value.trim_end_matches(' ')));
            }
        }
        let expected: Vec<String> = expected.iter().map(|(k, v)| format!("{k}={v}")).collect();

        // Act
        let out = hop(headers);

        // Assert
        prop_assert_eq!(out.get("tracestate"), Some(&expected.join(",")));
    }

    #[test]
    fn any_baggage_goes_on_valid_or_not_at_all(
        values in proptest::collection::vec(header_text(), 1..4),
    ) {
        let headers = values.into_iter().map(|value| ("baggage", value)).collect();
        let out = hop(headers);
        if let Some(sent) = out.get("baggage") {
            prop_assert!(valid_baggage(sent), "{sent:?}");
        }
    }

    #[test]
    fn baggage_values_of_any_text_survive_two_hops(
        members in proptest::collection::btree_map("[A-Za-z0-9_.-]{1,12}", any::<String>(), 1..10),
    ) {
        // Arrange: baggage set in this process, sent, read by the next hop and sent again.
        let cx = Context::new().with_baggage(
            members.iter().map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        );
        let mut first = HashMap::new();
        W3cBaggagePropagator::new().inject_context(&cx, &mut first);
        // Members that the 8192-byte limit leaves out, once escaped, are not this test's.
        prop_assume!(
            first.get("baggage").is_some_and(|header| header.split(',').count() == members.len())
        );

        // Act
        let second = hop(vec![("baggage", first["baggage"].clone())]);
        let sent = second.get("baggage").cloned().unwrap_or_default();
        let read = W3cBaggagePropagator::new()
            .extract_with_context(&Context::new(), &Headers(vec![("baggage", sent.clone())]));

        // Assert
        let sorted = |header: &str| {
            let mut members: Vec<String> = header.split(',').map(str::to_owned).collect();
            members.sort_unstable();
            members
        };
        prop_assert_eq!(sorted(&sent), sorted(&first["baggage"]), "the same members");
        for (key, value) in &members {
            prop_assert_eq!(read.baggage().get(key.as_str()).map(|v| v.as_str().to_owned()), Some(value.clone()));
        }
    }
}
