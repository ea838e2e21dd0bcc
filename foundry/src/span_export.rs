//! OTLP/gRPC span export that writes each span straight to protobuf bytes.
//!
//! Written here because opentelemetry-otlp 0.32's tonic span exporter was the largest cost of a
//! traced request (see BENCHMARKS.md): it deep-copies every batch twice (once to be able to
//! retry, once more inside `group_spans_by_resource_and_scope`), then builds a protobuf struct
//! per span with an allocation for every id, key and string, encodes it and frees it all. This
//! exporter encodes the same `ExportTraceServiceRequest` from borrowed `SpanData` into one
//! reused buffer: no copy and no allocation per span. The bytes are the library's own (a test
//! decodes them with opentelemetry-proto and compares them with its conversion), the resource and
//! scope messages are built by opentelemetry-proto itself, and tonic sends them. OTLP/HTTP keeps
//! the upstream exporter.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanId, SpanKind, Status, TraceState},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceResponse,
    common::v1::InstrumentationScope as ProtoScope, resource::v1::Resource as ProtoResource,
    trace::v1::SpanFlags,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use prost::{
    Message,
    bytes::{Buf, BufMut},
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};
use tonic::{codegen::http::uri::PathAndQuery, metadata::MetadataMap, transport::Channel};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends spans to an OTLP/gRPC collector, encoding them without intermediate structs.
pub(crate) struct GrpcSpanExporter {
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    /// `ResourceSpans.resource`, encoded once.
    resource: Vec<u8>,
    resource_schema_url: String,
    /// The request buffer, reused from batch to batch (export calls never overlap).
    buffer: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for GrpcSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcSpanExporter").finish_non_exhaustive()
    }
}

impl GrpcSpanExporter {
    /// An exporter to `endpoint` (`http://host:port`); the channel connects on first use, from
    /// the tokio runtime current when this is called. `timeout` bounds every export.
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        metadata: MetadataMap,
    ) -> Result<Self, String> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|error| error.to_string())?
            .timeout(timeout)
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self {
            client: tonic::client::Grpc::new(channel),
            metadata,
            resource: Vec::new(),
            resource_schema_url: String::new(),
            buffer: Mutex::new(Vec::new()),
        })
    }
}

impl SpanExporter for GrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = {
            let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.clear();
            encode_request(
                &self.resource,
                &self.resource_schema_url,
                &batch,
                &mut buffer,
            );
            // The spans go back to the allocator here, before the network wait.
            drop(batch);
            Encoded(prost::bytes::Bytes::copy_from_slice(&buffer))
        };
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|error| OTelSdkError::InternalFailure(format!("export failed: {error}")))?;
        let codec = tonic_prost::ProstCodec::<Encoded, ExportTraceServiceResponse>::default();
        let response = client
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), codec)
            .await
            .map_err(|status| {
                OTelSdkError::InternalFailure(format!(
                    "export failed: {} {}",
                    status.code(),
                    status.message()
                ))
            })?;
        match response.into_inner().partial_success {
            Some(partial) if partial.rejected_spans > 0 => {
                Err(OTelSdkError::InternalFailure(format!(
                    "the collector rejected {} spans: {}",
                    partial.rejected_spans, partial.error_message
                )))
            }
            _ => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        let resource = ResourceAttributesWithSchema::from(resource);
        self.resource = ProtoResource {
            attributes: resource.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }
        .encode_to_vec();
        self.resource_schema_url = resource.schema_url.unwrap_or_default();
    }
}

/// A message already encoded: tonic's prost codec writes it as it is.
#[derive(Debug, Default, Clone)]
struct Encoded(prost::bytes::Bytes);

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: it only travels out.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Appends `batch` to `out` as an `ExportTraceServiceRequest` with one `ResourceSpans` (the
/// `resource` message, already encoded) and one `ScopeSpans` per instrumentation scope.
pub(crate) fn encode_request(
    resource: &[u8],
    resource_schema_url: &str,
    batch: &[SpanData],
    out: &mut Vec<u8>,
) {
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in batch {
        match scopes
            .iter_mut()
            .find(|(scope, _)| **scope == span.instrumentation_scope)
        {
            Some((_, spans)) => spans.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    let mut span_buffer = Vec::with_capacity(512);
    let scope_spans: Vec<Vec<u8>> = scopes
        .into_iter()
        .map(|(scope, spans)| {
            let mut message = Vec::with_capacity(spans.len() * 256);
            let scope_message = ProtoScope::from((scope, None)).encode_to_vec();
            put_bytes_always(1, &scope_message, &mut message);
            for span in spans {
                span_buffer.clear();
                encode_span(span, &mut span_buffer);
                put_bytes(2, &span_buffer, &mut message);
            }
            put_str(3, scope.schema_url().unwrap_or_default(), &mut message);
            message
        })
        .collect();

    let resource_spans_len = bytes_field_len(1, resource.len())
        + scope_spans
            .iter()
            .map(|message| bytes_field_len(2, message.len()))
            .sum::<usize>()
        + str_field_len(3, resource_schema_url);
    out.reserve(bytes_field_len(1, resource_spans_len));
    put_len(1, resource_spans_len, out);
    put_bytes_always(1, resource, out);
    for message in &scope_spans {
        put_bytes(2, message, out);
    }
    put_str(3, resource_schema_url, out);
}

/// One `opentelemetry.proto.trace.v1.Span`, the fields as opentelemetry-proto 0.32 fills them.
fn encode_span(span: &SpanData, out: &mut Vec<u8>) {
    let context = &span.span_context;
    put_bytes(1, &context.trace_id().to_bytes(), out);
    put_bytes(2, &context.span_id().to_bytes(), out);
    put_trace_state(3, context.trace_state(), out);
    if span.parent_span_id != SpanId::INVALID {
        put_bytes(4, &span.parent_span_id.to_bytes(), out);
    }
    put_str(5, &span.name, out);
    put_varint(6, span_kind(&span.span_kind), out);
    put_fixed64(7, nanos(span.start_time), out);
    put_fixed64(8, nanos(span.end_time), out);
    put_attributes(9, &span.attributes, out);
    put_varint(10, u64::from(span.dropped_attributes_count), out);
    for event in &span.events.events {
        let mut message = Vec::new();
        put_fixed64(1, nanos(event.timestamp), &mut message);
        put_str(2, &event.name, &mut message);
        put_attributes(3, &event.attributes, &mut message);
        put_varint(4, u64::from(event.dropped_attributes_count), &mut message);
        put_bytes(11, &message, out);
    }
    put_varint(12, u64::from(span.events.dropped_count), out);
    for link in &span.links.links {
        let linked = &link.span_context;
        let mut message = Vec::new();
        put_bytes(1, &linked.trace_id().to_bytes(), &mut message);
        put_bytes(2, &linked.span_id().to_bytes(), &mut message);
        put_trace_state(3, linked.trace_state(), &mut message);
        put_attributes(4, &link.attributes, &mut message);
        put_varint(5, u64::from(link.dropped_attributes_count), &mut message);
        put_fixed32(
            6,
            span_flags(linked.is_remote(), linked.trace_flags().to_u8()),
            &mut message,
        );
        put_bytes(13, &message, out);
    }
    put_varint(14, u64::from(span.links.dropped_count), out);
    // Status is always present, as the library sets it (an empty message when unset).
    let (code, message) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    let status_len = str_field_len(2, message) + varint_field_len(3, code);
    put_len(15, status_len, out);
    put_str(2, message, out);
    put_varint(3, code, out);
    put_fixed32(
        16,
        span_flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
        out,
    );
}

/// `SpanFlags`: the W3C trace flags, and whether the parent was remote.
fn span_flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn put_trace_state(tag: u32, state: &TraceState, out: &mut Vec<u8>) {
    if *state != TraceState::NONE {
        put_str(tag, &state.header(), out);
    }
}

fn put_attributes(tag: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for attribute in attributes {
        let key = attribute.key.as_str();
        let value_len = any_value_len(&attribute.value);
        put_len(
            tag,
            str_field_len(1, key) + bytes_field_len(2, value_len),
            out,
        );
        put_str(1, key, out);
        put_len(2, value_len, out);
        put_any_value(&attribute.value, out);
    }
}

/// The length of an `AnyValue` message: its one `oneof` field, always written.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(int) => key_len(3) + encoded_len_varint(*int as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(text) => bytes_field_len(1, text.as_str().len()),
        Value::Array(array) => bytes_field_len(5, array_len(array)),
        // A value kind newer than this code: sent as an empty AnyValue.
        _ => 0,
    }
}

/// The length of an `ArrayValue` message: one `AnyValue` per element.
fn array_len(array: &Array) -> usize {
    let element = |len: usize| bytes_field_len(1, len);
    match array {
        Array::Bool(values) => values.len() * element(key_len(2) + 1),
        Array::I64(values) => values
            .iter()
            .map(|int| element(key_len(3) + encoded_len_varint(*int as u64)))
            .sum(),
        Array::F64(values) => values.len() * element(key_len(4) + 8),
        Array::String(values) => values
            .iter()
            .map(|text| element(bytes_field_len(1, text.as_str().len())))
            .sum(),
        _ => 0,
    }
}

fn put_any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(flag) => put_varint_always(2, u64::from(*flag), out),
        Value::I64(int) => put_varint_always(3, *int as u64, out),
        Value::F64(double) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.put_f64_le(*double);
        }
        Value::String(text) => put_bytes_always(1, text.as_str().as_bytes(), out),
        Value::Array(array) => {
            put_len(5, array_len(array), out);
            put_array(array, out);
        }
        _ => {}
    }
}

fn put_array(array: &Array, out: &mut Vec<u8>) {
    match array {
        Array::Bool(values) => {
            for flag in values {
                let value = Value::Bool(*flag);
                put_len(1, any_value_len(&value), out);
                put_any_value(&value, out);
            }
        }
        Array::I64(values) => {
            for int in values {
                let value = Value::I64(*int);
                put_len(1, any_value_len(&value), out);
                put_any_value(&value, out);
            }
        }
        Array::F64(values) => {
            for double in values {
                let value = Value::F64(*double);
                put_len(1, any_value_len(&value), out);
                put_any_value(&value, out);
            }
        }
        Array::String(values) => {
            for text in values {
                put_len(1, bytes_field_len(1, text.as_str().len()), out);
                put_bytes_always(1, text.as_str().as_bytes(), out);
            }
        }
        _ => {}
    }
}

// Field writers. Like prost, they leave out proto3 defaults (zero, empty) unless "always".

fn put_len(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes_always(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_len(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_bytes_always(tag, bytes, out);
    }
}

fn put_str(tag: u32, text: &str, out: &mut Vec<u8>) {
    put_bytes(tag, text.as_bytes(), out);
}

fn put_varint_always(tag: u32, value: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

fn put_varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        put_varint_always(tag, value, out);
    }
}

fn put_fixed64(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.put_u64_le(value);
    }
}

fn put_fixed32(tag: u32, value: u32, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.put_u32_le(value);
    }
}

fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn str_field_len(tag: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        bytes_field_len(tag, text.len())
    }
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::{
        Context, KeyValue, StringValue,
        trace::{
            Link, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
            Tracer, TracerProvider as _,
        },
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::trace::tonic::group_spans_by_resource_and_scope,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[derive(Clone, Debug, Default)]
    struct Keep(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Keep {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("valid in this test").extend(batch);
            Ok(())
        }
    }

    /// Spans with everything a span can carry, from the SDK itself.
    fn spans(resource: &Resource) -> Vec<SpanData> {
        let kept = Keep::default();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(kept.clone())
            .build();
        let tracer = provider.tracer("logos");
        let remote = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid in this test"),
            SpanId::from_hex("00f067aa0ba902b7").expect("valid in this test"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("rojo", "00f067aa0ba902b7")]).expect("valid in this test"),
        );
        let parent = Context::new().with_remote_span_context(remote.clone());
        let server = tracer
            .span_builder("POST /plan")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.route", "/plan"),
                KeyValue::new("http.response.status_code", 500_i64),
                KeyValue::new("sampled.ratio", 0.25),
                KeyValue::new("cache.hit", false),
                KeyValue::new("empty", ""),
                KeyValue::new("negative", -7_i64),
                KeyValue::new(
                    "tags",
                    Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
                ),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
                KeyValue::new("doubles", Value::Array(Array::F64(vec![0.0, 1.5]))),
            ])
            .with_links(vec![Link::new(
                remote.clone(),
                vec![KeyValue::new("link.kind", "follows")],
                0,
            )])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(server);
        {
            let span = cx.span();
            span.add_event("retry", vec![KeyValue::new("attempt", 2_i64)]);
            span.set_status(Status::error("hermes answered 503"));
        }
        let child = tracer.start_with_context("sophia.plan", &cx);
        drop(child);
        cx.span().end();
        let other = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("other")
                .with_version("1.2.3")
                .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
                .with_attributes([KeyValue::new("scope.attr", 1_i64)])
                .build(),
        );
        let mut root = other.start("root");
        opentelemetry::trace::Span::set_status(&mut root, Status::Ok);
        drop(root);
        let _ = provider.shutdown();
        let spans = kept.0.lock().expect("valid in this test").clone();
        assert_eq!(spans.len(), 3);
        spans
    }

    fn sorted(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
        for resource_spans in &mut request.resource_spans {
            resource_spans.scope_spans.sort_by(|a, b| {
                a.scope
                    .as_ref()
                    .map(|s| &s.name)
                    .cmp(&b.scope.as_ref().map(|s| &s.name))
            });
        }
        request
    }

    #[tokio::test]
    async fn encodes_what_opentelemetry_proto_encodes() {
        // Arrange
        let resource = Resource::builder()
            .with_service_name("sophia")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .build();
        let batch = spans(&resource);
        let mut exporter = GrpcSpanExporter::new(
            "http://127.0.0.1:4317",
            Duration::from_secs(1),
            MetadataMap::new(),
        )
        .expect("valid in this test");
        exporter.set_resource(&resource);

        // Act
        let mut ours = Vec::new();
        encode_request(
            &exporter.resource,
            &exporter.resource_schema_url,
            &batch,
            &mut ours,
        );

        // Assert
        let upstream = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        let decoded =
            ExportTraceServiceRequest::decode(ours.as_slice()).expect("valid in this test");
        assert_eq!(sorted(decoded), sorted(upstream.clone()));
        assert_eq!(ours.len(), upstream.encoded_len(), "no field written twice");
    }

    #[test]
    fn an_empty_batch_is_one_empty_resource() {
        let mut out = Vec::new();
        encode_request(&[], "", &[], &mut out);
        let decoded =
            ExportTraceServiceRequest::decode(out.as_slice()).expect("valid in this test");
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
    }
}
