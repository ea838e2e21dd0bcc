//! W3C Trace Context and W3C Baggage propagation, strict where the specs are strict.
//!
//! Written by hand because the stock propagators of `opentelemetry_sdk::propagation` are
//! lenient where the specs are not. `TraceContextPropagator` accepts over-long and short fields,
//! reads only the first of repeated `traceparent`/`tracestate` headers, neither trims optional
//! whitespace in `tracestate` nor enforces its limits, and drops the Level 2 `random` flag.
//! `BaggagePropagator` reads only the first `baggage` header, cuts a value at its second `=`,
//! drops an entry whose escapes are not UTF-8 instead of replacing them, and sends `%` and `\`
//! unescaped, so a value that arrived as `a%2541` leaves as `a%41` and the next hop reads `aA`.
//! [`W3cTraceContextPropagator`] implements Trace Context Level 1 and the Level 2 random flag
//! and `tracestate` key grammar, [`W3cBaggagePropagator`] W3C Baggage with its limits. The SDK's
//! `TraceState` checks keys against an older grammar than the spec's, so a `tracestate` it
//! refuses in part travels in the context beside it and goes on unchanged.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    baggage::{BaggageExt, KeyValueMetadata},
    propagation::{Extractor, Injector, TextMapPropagator, text_map_propagator::FieldIter},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// Trace flags this implementation understands: `sampled` (Level 1) and `random` (Level 2).
/// Unknown flags are zeroed on the way out, as the spec requires.
const KNOWN_FLAGS: u8 = 0x03;
/// The spec's limit on `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;

static FIELDS: LazyLock<[String; 2]> =
    LazyLock::new(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]);

/// The W3C `traceparent`/`tracestate` propagator that foundry installs globally.
#[derive(Clone, Copy, Debug, Default)]
pub struct W3cTraceContextPropagator;

impl W3cTraceContextPropagator {
    /// A new propagator.
    pub fn new() -> Self {
        Self
    }

    /// Reads the remote span context, or `None` when the headers do not hold a valid one (the
    /// caller then starts a new trace). Its `TraceState` holds the members the SDK's type can
    /// represent; [`TextMapPropagator::extract_with_context`] also carries the header whole.
    #[cfg(test)]
    fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        self.extract_parts(extractor)
            .map(|(span_context, _)| span_context)
    }

    /// The span context and, when the SDK's `TraceState` could not hold all of it, the
    /// `tracestate` as it is to go on.
    fn extract_parts(&self, extractor: &dyn Extractor) -> Option<(SpanContext, Option<String>)> {
        // Several traceparent headers cannot be told apart: the spec treats that as invalid.
        let traceparent = match extractor.get_all(TRACEPARENT)?.as_slice() {
            [single] => *single,
            _ => return None,
        };
        let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
        // A tracestate that breaks the rules is dropped whole; the traceparent still stands.
        let members = extractor
            .get_all(TRACESTATE)
            .and_then(|values| parse_tracestate(&values))
            .unwrap_or_default();
        let (trace_state, carried) = sdk_trace_state(&members);
        Some((
            SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, trace_state),
            carried,
        ))
    }
}

/// A `tracestate` that is valid for W3C Trace Context but that the SDK's `TraceState` refuses in
/// part (it still checks keys against the older `tenant@system` grammar, a system-id of at most
/// 13 characters): carried in the context next to the span context, and sent instead of the
/// span context's `TraceState` as long as that is the one extracted with it.
#[derive(Clone, Debug)]
struct CarriedTraceState {
    trace_id: TraceId,
    trace_state: TraceState,
    header: String,
}

/// The SDK's `TraceState` of `members`, and the whole header when that could not hold them all.
fn sdk_trace_state(members: &[(&str, &str)]) -> (TraceState, Option<String>) {
    if let Ok(trace_state) = TraceState::from_key_value(members.iter().copied()) {
        return (trace_state, None);
    }
    let accepted = members
        .iter()
        .copied()
        .filter(|member| TraceState::from_key_value([*member]).is_ok());
    let trace_state = TraceState::from_key_value(accepted).unwrap_or_default();
    (trace_state, Some(join_members(members)))
}

/// `key=value,...`, the members as they go out.
fn join_members(members: &[(&str, &str)]) -> String {
    let mut header = String::new();
    for (key, value) in members {
        if !header.is_empty() {
            header.push(',');
        }
        header.push_str(key);
        header.push('=');
        header.push_str(value);
    }
    header
}

impl TextMapPropagator for W3cTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        injector.set(TRACEPARENT, format_traceparent(span_context));
        // The header as it arrived when the SDK's type could not hold it, unless the span's
        // `TraceState` is no longer the one extracted with it.
        let trace_state = match cx.get::<CarriedTraceState>() {
            Some(carried)
                if carried.trace_id == span_context.trace_id()
                    && carried.trace_state == *span_context.trace_state() =>
            {
                carried.header.clone()
            }
            _ => span_context.trace_state().header(),
        };
        // No empty `tracestate:` header when there is nothing to carry.
        if !trace_state.is_empty() {
            injector.set(TRACESTATE, trace_state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match self.extract_parts(extractor) {
            Some((span_context, None)) => cx.with_remote_span_context(span_context),
            Some((span_context, Some(header))) => {
                let carried = CarriedTraceState {
                    trace_id: span_context.trace_id(),
                    trace_state: span_context.trace_state().clone(),
                    header,
                };
                cx.with_remote_span_context(span_context)
                    .with_value(carried)
            }
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(FIELDS.as_ref())
    }
}

const BAGGAGE: &str = "baggage";
/// W3C Baggage's limits: list members, and bytes of the whole header.
const MAX_BAGGAGE_MEMBERS: usize = 64;
const MAX_BAGGAGE_BYTES: usize = 8192;
/// What a baggage value must escape: all but `baggage-octet`, and `%` itself. (Bytes beyond
/// ASCII are always escaped.)
const NOT_BAGGAGE_OCTET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

static BAGGAGE_FIELDS: LazyLock<[String; 1]> = LazyLock::new(|| [BAGGAGE.to_owned()]);

/// The W3C `baggage` propagator that foundry installs globally.
#[derive(Clone, Copy, Debug, Default)]
pub struct W3cBaggagePropagator;

impl W3cBaggagePropagator {
    /// A new propagator.
    pub fn new() -> Self {
        Self
    }
}

impl TextMapPropagator for W3cBaggagePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let baggage = cx.baggage();
        if baggage.is_empty() {
            return;
        }
        let mut header = String::new();
        let mut members = 0;
        for (key, (value, metadata)) in baggage {
            if !is_token(key.as_str()) {
                continue;
            }
            let mut member = String::with_capacity(key.as_str().len() + 1 + value.as_str().len());
            member.push_str(key.as_str());
            member.push('=');
            member.extend(utf8_percent_encode(value.as_str(), NOT_BAGGAGE_OCTET));
            // Properties set in this process go out only if they keep to the grammar: one
            // that does not would make the next hop refuse the whole header.
            let properties = valid_properties(metadata.as_str());
            if !properties.is_empty() {
                member.push(';');
                member.push_str(&properties);
            }
            // Over a limit, whole members are left out, never part of one.
            let separator = usize::from(!header.is_empty());
            if members == MAX_BAGGAGE_MEMBERS
                || header.len() + separator + member.len() > MAX_BAGGAGE_BYTES
            {
                break;
            }
            if separator == 1 {
                header.push(',');
            }
            header.push_str(&member);
            members += 1;
        }
        if !header.is_empty() {
            injector.set(BAGGAGE, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        // Repeated headers are one list, as RFC 9110 combines them.
        let Some(values) = extractor.get_all(BAGGAGE) else {
            return cx.clone();
        };
        // The members in order, as long as the list they make keeps within the limits; the rest
        // are dropped whole, and not even read.
        let mut members = Vec::new();
        let mut bytes = 0;
        for member in values
            .iter()
            .flat_map(|value| value.split(','))
            .map(|member| member.trim_matches([' ', '\t']))
            .filter(|member| !member.is_empty())
        {
            bytes += member.len() + usize::from(bytes > 0);
            if bytes > MAX_BAGGAGE_BYTES || members.len() == MAX_BAGGAGE_MEMBERS {
                break;
            }
            members.extend(parse_baggage_member(member));
        }
        if members.is_empty() {
            return cx.clone();
        }
        cx.with_baggage(members)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(BAGGAGE_FIELDS.as_ref())
    }
}

/// `key = value *(; property)`; `None` for a member that breaks the grammar, which is skipped.
/// A value may hold `=`; its escapes that are not UTF-8 become U+FFFD, as the spec says.
/// Properties that break their grammar are left out, the member kept.
fn parse_baggage_member(member: &str) -> Option<KeyValueMetadata> {
    let (pair, properties) = match member.split_once(';') {
        Some((pair, properties)) => (pair, valid_properties(properties)),
        None => (member, String::new()),
    };
    let (key, value) = pair.split_once('=')?;
    let key = key.trim_matches([' ', '\t']);
    let value = value.trim_matches([' ', '\t']);
    if !is_token(key) || !value.bytes().all(is_baggage_octet) {
        return None;
    }
    let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
    Some(KeyValueMetadata::new(
        key.to_owned(),
        value,
        properties.as_str(),
    ))
}

/// The `;`-separated properties of `text` that keep to `key OWS [ "=" OWS value ]`, joined by
/// `;` without their optional whitespace.
fn valid_properties(text: &str) -> String {
    let mut kept = String::new();
    for property in text.split(';').map(|p| p.trim_matches([' ', '\t'])) {
        let (key, value) = match property.split_once('=') {
            Some((key, value)) => (
                key.trim_matches([' ', '\t']),
                Some(value.trim_matches([' ', '\t'])),
            ),
            None => (property, None),
        };
        // Properties go on as they came, not decoded and escaped again like values: a `%` in
        // one must already start an escape.
        if !is_token(key) || !value.is_none_or(is_escaped_baggage_text) {
            continue;
        }
        if !kept.is_empty() {
            kept.push(';');
        }
        kept.push_str(key);
        if let Some(value) = value {
            kept.push('=');
            kept.push_str(value);
        }
    }
    kept
}

/// An RFC 9110 token: the grammar of a baggage key.
fn is_token(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Baggage octets in which every `%` starts an escape (`%` and two hex digits).
fn is_escaped_baggage_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        is_baggage_octet(b)
            && (b != b'%'
                || bytes
                    .get(i + 1..i + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
    })
}

/// `baggage-octet`, and `%` for the escapes.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// opentelemetry-http's `HeaderExtractor`, with the W3C headers' names parsed once: looking a
/// header up by a `&str` parses the name every time, several times a request.
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match known_name(key) {
            Some(name) => self.0.get(name),
            None => self.0.get(key),
        }
        .and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values = match known_name(key) {
            Some(name) => self.0.get_all(name),
            None => self.0.get_all(key),
        };
        let mut values = values.iter().peekable();
        values.peek()?;
        // One value that is not visible ASCII makes the whole header invalid: skipping it would
        // turn two `traceparent`s into one, or keep part of a `tracestate` list.
        values.map(|value| value.to_str().ok()).collect()
    }
}

/// opentelemetry-http's `HeaderInjector`, with the W3C headers' names parsed once, and the value
/// taken without a copy.
pub(crate) struct HeaderInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = known_name(key)
            .cloned()
            .or_else(|| HeaderName::from_bytes(key.as_bytes()).ok());
        if let (Some(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

fn known_name(key: &str) -> Option<&'static HeaderName> {
    static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
    static TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
    static BAGGAGE_HEADER: HeaderName = HeaderName::from_static(BAGGAGE);
    match key {
        TRACEPARENT => Some(&TRACEPARENT_HEADER),
        TRACESTATE => Some(&TRACESTATE_HEADER),
        BAGGAGE => Some(&BAGGAGE_HEADER),
        _ => None,
    }
}

/// `00-<trace-id>-<parent-id>-<flags>` for a valid span context.
///
/// Hex by table into one buffer: this runs for every outbound call and every response, and
/// `format!` with the ids' `Display` (a `u128` through the formatting machinery) cost ten
/// times as much.
pub(crate) fn format_traceparent(span_context: &SpanContext) -> String {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    encode_hex(&span_context.trace_id().to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    encode_hex(&span_context.span_id().to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    encode_hex(
        &[span_context.trace_flags().to_u8() & KNOWN_FLAGS],
        &mut out[53..55],
    );
    String::from_utf8(out.to_vec()).expect("hex digits and dashes are ASCII")
}

fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2 = 55 characters.
    let bytes = value.trim_matches([' ', '\t']).as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let [version] = decode_hex::<1>(&bytes[0..2])?;
    if version == 0xff {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may append fields after a dash.
    if version == 0 && bytes.len() != 55 {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(decode_hex(&bytes[3..35])?);
    let span_id = SpanId::from_bytes(decode_hex(&bytes[36..52])?);
    let [flags] = decode_hex::<1>(&bytes[53..55])?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, span_id, flags & KNOWN_FLAGS))
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out`, two digits a byte.
fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
}

/// `N` bytes from `2 * N` lowercase hex digits; `None` for anything else (the spec allows no
/// uppercase).
fn decode_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUES[usize::from(pair[0])],
            HEX_VALUES[usize::from(pair[1])],
        );
        if (high | low) & NOT_HEX != 0 {
            return None;
        }
        *byte = (high << 4) | low;
    }
    Some(out)
}

/// Marks a byte that is no lowercase hex digit in [`HEX_VALUES`]; its bit 4 is set, which no
/// digit's value (0 to 15) has, so one test covers both digits of a pair.
const NOT_HEX: u8 = 0x10;

/// The value of each lowercase hex digit, [`NOT_HEX`] for every other byte: one table lookup a
/// digit on every incoming `traceparent`.
static HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[HEX_DIGITS[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

/// Joins repeated `tracestate` headers, trims optional whitespace, and checks every member; a
/// repeated key keeps its first member, as W3C Trace Context allows and its test suite expects.
/// `None` when a member breaks the grammar or there are more than 32.
fn parse_tracestate<'a>(values: &[&'a str]) -> Option<Vec<(&'a str, &'a str)>> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    let mut count = 0;
    for member in values
        .iter()
        .flat_map(|value| value.split(','))
        .map(|member| member.trim_matches([' ', '\t']))
        .filter(|member| !member.is_empty())
    {
        // Over the limit before anything else: the duplicate check below is quadratic, and a
        // header of tens of thousands of members must not cost seconds of CPU.
        count += 1;
        if count > MAX_TRACESTATE_MEMBERS {
            return None;
        }
        let (key, value) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(value) {
            return None;
        }
        if !members.iter().any(|(k, _)| *k == key) {
            members.push((key, value));
        }
    }
    Some(members)
}

/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, `keychar` being a lowercase letter, a digit,
/// `_`, `-`, `*`, `/` or `@` (W3C Trace Context Level 2, section 3.3.2.2.1: `@` is one more key
/// character, the older `tenant@system` split and its 241/14 limits are gone).
fn valid_key(key: &str) -> bool {
    key.len() <= 256
        && key
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// Up to 256 printable ASCII characters other than `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::Extractor;

    use super::*;

    /// Headers as a list, so a test can repeat one.
    struct Headers(Vec<(&'static str, &'static str)>);

    impl Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
        fn get_all(&self, key: &str) -> Option<Vec<&str>> {
            let values: Vec<&str> = self
                .0
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect();
            (!values.is_empty()).then_some(values)
        }
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// `k0=value,k1=value,...`: a list of `n` members, for the limits.
    fn members(n: usize, value: &str) -> &'static str {
        Box::leak(
            (0..n)
                .map(|i| format!("k{i}={value}"))
                .collect::<Vec<_>>()
                .join(",")
                .into_boxed_str(),
        )
    }

    fn extract(headers: Vec<(&'static str, &'static str)>) -> Option<SpanContext> {
        W3cTraceContextPropagator.extract_span_context(&Headers(headers))
    }

    #[test]
    fn extracts_a_valid_traceparent() {
        let cx = extract(vec![(TRACEPARENT, VALID)]).expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
    }

    #[test]
    fn rejects_malformed_traceparents() {
        let bad = [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fg",
            "00-4bf92f3577b34da6a3ce929d0e0e47fz-00f067aa0ba902b7-01",
            "0f-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902f:-01",
            "not a traceparent",
            "",
        ];
        for value in bad {
            assert!(extract(vec![(TRACEPARENT, value)]).is_none(), "{value}");
        }
    }

    #[test]
    fn formats_what_it_parses_as_the_ids_display_them() {
        for (trace, span, flags) in [
            (1u128, 1u64, 0u8),
            (u128::MAX, u64::MAX, 1),
            (
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
                3,
            ),
        ] {
            let cx = SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::new(flags),
                true,
                TraceState::NONE,
            );
            let header = format_traceparent(&cx);
            let expected = format!(
                "00-{}-{}-{flags:02x}",
                TraceId::from(trace),
                SpanId::from(span)
            );
            assert_eq!(header, expected);
            assert_eq!(
                parse_traceparent(&header),
                Some((TraceId::from(trace), SpanId::from(span), flags))
            );
        }
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é").is_none()
        );
    }

    #[test]
    fn future_versions_parse_known_fields() {
        let cx = extract(vec![(
            TRACEPARENT,
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )])
        .expect("version cc with extra fields");
        assert!(cx.is_sampled());
    }

    #[test]
    fn repeated_traceparent_is_invalid() {
        assert!(extract(vec![(TRACEPARENT, VALID), (TRACEPARENT, VALID)]).is_none());
    }

    #[test]
    fn keeps_the_random_flag_and_zeroes_unknown_ones() {
        let cx = extract(vec![(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
        )])
        .expect("valid");
        assert_eq!(cx.trace_flags().to_u8(), 0x03);
        assert!(format_traceparent(&cx).ends_with("-03"));
    }

    #[test]
    fn merges_repeated_tracestate_and_trims_whitespace() {
        let cx = extract(vec![
            (TRACEPARENT, VALID),
            (TRACESTATE, "rojo=00f067aa0ba902b7 ,\t"),
            (TRACESTATE, " congo=t61rcWkgMzE, tenant@vendor=x"),
        ])
        .expect("valid");
        assert_eq!(
            cx.trace_state().header(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=x"
        );
    }

    /// The `tracestate` a hop passes on of what it received: extracted into a context, then
    /// injected from it; `""` when none goes out.
    fn passed_on(headers: Vec<(&'static str, &'static str)>) -> String {
        let cx = W3cTraceContextPropagator.extract_with_context(&Context::new(), &Headers(headers));
        let mut out = HashMap::new();
        W3cTraceContextPropagator.inject_context(&cx, &mut out);
        assert!(out.contains_key(TRACEPARENT), "the traceparent stands");
        out.remove(TRACESTATE).unwrap_or_default()
    }

    #[test]
    fn tracestate_members_and_limits_pass_on_as_the_spec_says() {
        let long = |key: String, value: &str| -> &'static str {
            Box::leak(format!("{key}={value}").into_boxed_str())
        };
        let key_256 = long("k".repeat(256), "v");
        let key_257 = long("k".repeat(257), "v");
        let value_256 = long("k".to_owned(), &"v".repeat(256));
        let value_257 = long("k".to_owned(), &"v".repeat(257));
        let system_14 = long(format!("t@{}", "v".repeat(14)), "1");
        let system_15 = long(format!("t@{}", "v".repeat(15)), "1");
        let tenant_242 = long(format!("{}@v", "t".repeat(242)), "1");
        let thirty_two = members(32, "v");
        let thirty_three = members(33, "v");
        let fifty_thousand = members(50_000, "v");
        // (tracestate received, tracestate passed on)
        let cases: [(&str, &str); 22] = [
            ("rojo=1", "rojo=1"),
            ("a=b,a=c", "a=b"),
            ("foo=1,bar=2,foo=3", "foo=1,bar=2"),
            ("UPPER=1", ""),
            ("k=va=lue", ""),
            ("=v", ""),
            ("k=", ""),
            ("@foo=1,bar=2", ""),
            ("foo.bar=1", ""),
            ("9lives=1", "9lives=1"),
            ("foo@=1,bar=2", "foo@=1,bar=2"),
            ("foo@@bar=1,bar=2", "foo@@bar=1,bar=2"),
            ("foo@bar@baz=1,bar=2", "foo@bar@baz=1,bar=2"),
            (system_14, system_14),
            (system_15, system_15),
            (tenant_242, tenant_242),
            (key_256, key_256),
            (key_257, ""),
            (value_256, value_256),
            (value_257, ""),
            (thirty_two, thirty_two),
            (thirty_three, ""),
        ];
        for (received, expected) in cases {
            assert_eq!(
                passed_on(vec![(TRACEPARENT, VALID), (TRACESTATE, received)]),
                expected,
                "{received:.60}"
            );
        }
        assert_eq!(
            passed_on(vec![(TRACEPARENT, VALID), (TRACESTATE, fifty_thousand)]),
            ""
        );
        // Trailing spaces are optional whitespace, inner ones part of the value.
        assert_eq!(
            passed_on(vec![(TRACEPARENT, VALID), (TRACESTATE, "k=v ,j= w x")]),
            "k=v,j= w x"
        );
        // A key repeated across two headers keeps its first member all the same.
        assert_eq!(
            passed_on(vec![
                (TRACEPARENT, VALID),
                (TRACESTATE, "a=1"),
                (TRACESTATE, "a=2,b=3"),
            ]),
            "a=1,b=3"
        );
    }

    #[test]
    fn a_tracestate_the_sdk_refuses_in_part_keeps_what_it_can_on_the_span() {
        // Arrange: `t@` with a 14-character system-id is valid, and more than the SDK takes.
        let headers = vec![
            (TRACEPARENT, VALID),
            (TRACESTATE, "rojo=1,t@abcdefghijklmn=2"),
        ];

        // Act
        let cx = extract(headers.clone()).expect("valid");

        // Assert: the span context holds what the SDK can, the header goes on whole.
        assert_eq!(cx.trace_state().header(), "rojo=1");
        assert_eq!(passed_on(headers), "rojo=1,t@abcdefghijklmn=2");
    }

    #[test]
    fn a_changed_trace_state_goes_out_instead_of_the_carried_header() {
        // Arrange: a context carrying a header the SDK refused in part, whose span context
        // then gets another `TraceState`.
        let cx = W3cTraceContextPropagator.extract_with_context(
            &Context::new(),
            &Headers(vec![(TRACEPARENT, VALID), (TRACESTATE, "foo@@bar=1")]),
        );
        let remote = cx.span().span_context().clone();
        let changed = SpanContext::new(
            remote.trace_id(),
            remote.span_id(),
            remote.trace_flags(),
            true,
            TraceState::from_key_value([("mine", "1")]).expect("valid"),
        );

        // Act
        let mut out = HashMap::new();
        W3cTraceContextPropagator.inject_context(&cx.with_remote_span_context(changed), &mut out);

        // Assert
        assert_eq!(out.get(TRACESTATE).map(String::as_str), Some("mine=1"));
    }

    #[test]
    fn a_header_value_that_is_not_visible_ascii_invalidates_the_whole_header() {
        let obs_text = HeaderValue::from_bytes(b"00-4bf92f3577b34da6a3ce929d0e0e4736-\xff")
            .expect("obs-text is a header value");
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.append(TRACEPARENT, obs_text.clone());
        let propagator = W3cTraceContextPropagator;
        assert!(
            propagator
                .extract_span_context(&HeaderExtractor(&headers))
                .is_none(),
            "two traceparents, whatever one of them holds"
        );

        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.append(TRACESTATE, HeaderValue::from_static("rojo=1"));
        headers.append(TRACESTATE, obs_text);
        let cx = propagator
            .extract_span_context(&HeaderExtractor(&headers))
            .expect("the traceparent stands");
        assert_eq!(cx.trace_state().header(), "", "no part of a broken list");
    }

    fn baggage_of(headers: Vec<(&'static str, &'static str)>) -> Context {
        W3cBaggagePropagator.extract_with_context(&Context::new(), &Headers(headers))
    }

    fn value(cx: &Context, key: &str) -> Option<String> {
        cx.baggage().get(key).map(|value| value.as_str().to_owned())
    }

    fn injected(cx: &Context) -> Option<String> {
        let mut headers = HashMap::new();
        W3cBaggagePropagator.inject_context(cx, &mut headers);
        headers.remove(BAGGAGE)
    }

    #[test]
    fn baggage_headers_are_one_list_and_values_may_hold_equal_signs() {
        let cx = baggage_of(vec![
            (BAGGAGE, "a=1, b = two%20words ;p=1"),
            (BAGGAGE, "c=YWJj=="),
        ]);
        assert_eq!(value(&cx, "a").as_deref(), Some("1"));
        assert_eq!(value(&cx, "b").as_deref(), Some("two words"));
        assert_eq!(value(&cx, "c").as_deref(), Some("YWJj=="));
        assert_eq!(cx.baggage().len(), 3);
    }

    #[test]
    fn baggage_values_decode_lossily_and_leave_escaped_as_they_came() {
        let cx = baggage_of(vec![(
            BAGGAGE,
            "pct=a%2541,lead=%20x,bad=%ff%fe,utf=caf%C3%A9",
        )]);
        assert_eq!(value(&cx, "pct").as_deref(), Some("a%41"));
        assert_eq!(value(&cx, "lead").as_deref(), Some(" x"));
        assert_eq!(value(&cx, "bad").as_deref(), Some("\u{fffd}\u{fffd}"));
        assert_eq!(value(&cx, "utf").as_deref(), Some("café"));
        let header = injected(&cx).expect("a header");
        let mut members: Vec<&str> = header.split(',').collect();
        members.sort_unstable();
        assert_eq!(
            members,
            [
                "bad=%EF%BF%BD%EF%BF%BD",
                "lead=%20x",
                "pct=a%2541",
                "utf=caf%C3%A9"
            ]
        );
        let again = baggage_of(vec![(BAGGAGE, Box::leak(header.into_boxed_str()))]);
        assert_eq!(
            value(&again, "pct").as_deref(),
            Some("a%41"),
            "unchanged after a hop"
        );
    }

    #[test]
    fn baggage_escapes_what_is_no_baggage_octet_and_keeps_properties() {
        let cx = Context::new().with_baggage(vec![
            KeyValueMetadata::new("k", "a \"b\",c;d\\e%f=g", "prop=1;flag"),
            KeyValueMetadata::new("not a token", "x", ""),
        ]);
        assert_eq!(
            injected(&cx).as_deref(),
            Some("k=a%20%22b%22%2Cc%3Bd%5Ce%25f=g;prop=1;flag")
        );
    }

    #[test]
    fn baggage_properties_that_break_their_grammar_are_left_out() {
        let cx = baggage_of(vec![(
            BAGGAGE,
            "k=v; ok = 1;bad prop=x;\"q\";flag;e=caf\u{e9};pct=%;esc=a%20b",
        )]);
        assert_eq!(value(&cx, "k").as_deref(), Some("v"));
        assert_eq!(injected(&cx).as_deref(), Some("k=v;ok=1;flag;esc=a%20b"));

        let cx = Context::new().with_baggage(vec![KeyValueMetadata::new(
            "k",
            "v",
            "note=café;ok=1;a,b",
        )]);
        assert_eq!(injected(&cx).as_deref(), Some("k=v;ok=1"));
    }

    #[test]
    fn baggage_members_that_break_the_grammar_are_skipped() {
        let cx = baggage_of(vec![(BAGGAGE, "no-equals,bad key=1,=v,quote=\"x\",ok=2,,")]);
        assert_eq!(cx.baggage().len(), 1, "{:?}", cx.baggage());
        assert_eq!(value(&cx, "ok").as_deref(), Some("2"));
    }

    #[test]
    fn baggage_limits_hold() {
        // Coming in, the members that fit in 8192 bytes are kept, in order; the rest dropped.
        let long = "v".repeat(3000);
        let over = members(3, &long);
        assert!(over.len() > MAX_BAGGAGE_BYTES);
        let cx = baggage_of(vec![(BAGGAGE, over)]);
        assert_eq!(cx.baggage().len(), 2);
        assert!(value(&cx, "k0").is_some() && value(&cx, "k1").is_some());
        assert!(baggage_of(vec![(BAGGAGE, ",, ,")]).baggage().is_empty());

        // Going out, whole members are left out to keep within the byte limit: a space is three
        // bytes once escaped, so of four 1000-space values only two fit.
        let spaces = " ".repeat(1000);
        let cx = Context::new().with_baggage(
            (0..4).map(|i| KeyValueMetadata::new(format!("k{i}"), spaces.clone(), "")),
        );
        assert_eq!(cx.baggage().len(), 4, "within the in-process limit");
        let header = injected(&cx).expect("a header");
        assert!(header.len() <= MAX_BAGGAGE_BYTES, "{}", header.len());
        assert_eq!(header.split(',').count(), 2);
        assert!(header.split(',').all(|member| member.len() == 3 + 3000));
    }

    #[test]
    fn injects_traceparent_and_only_a_non_empty_tracestate() {
        let propagator = W3cTraceContextPropagator;
        let cx = extract(vec![(TRACEPARENT, VALID)]).expect("valid");
        let mut headers = HashMap::new();
        propagator.inject_context(&Context::new().with_remote_span_context(cx), &mut headers);
        assert_eq!(headers.get(TRACEPARENT).map(String::as_str), Some(VALID));
        assert!(!headers.contains_key(TRACESTATE));

        let cx = extract(vec![(TRACEPARENT, VALID), (TRACESTATE, "rojo=1")]).expect("valid");
        let mut headers = HashMap::new();
        propagator.inject_context(&Context::new().with_remote_span_context(cx), &mut headers);
        assert_eq!(headers.get(TRACESTATE).map(String::as_str), Some("rojo=1"));
    }
}
