//! The OTLP receiver of `apollo serve`: gRPC (the three OTLP services) and HTTP (`POST
//! /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON, gzip or not) on Apollo's own port.
//!
//! Its routes are neither traced nor logged per request: every export would otherwise make spans
//! that are exported again (a feedback loop). Bodies are bounded before and after inflating, so a
//! gzip bomb is a 413, and spans without a valid trace or span id are refused as the OTLP
//! specification asks, in the answer's `partial_success`.

use std::io::Read as _;

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::post,
};
use foundry::{
    http::ErrorResponse,
    openapi::error,
    otlp::proto::collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
};
use http::{HeaderMap, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};
use tonic::codec::CompressionEncoding;
use utoipa::openapi::{
    Content, HttpMethod, ObjectBuilder, OpenApiBuilder, PathItem, PathsBuilder, RefOr, Required,
    ResponseBuilder, ResponsesBuilder, Schema, Type, path::OperationBuilder,
    request_body::RequestBodyBuilder,
};
use utoipa_axum::router::OpenApiRouter;

use super::{Accepted, Diagnostics};

/// The largest export body accepted as it arrives (compressed or not); larger gets 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The largest export once inflated; a body that inflates past it gets 413.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// Where the gRPC routes are. They are gRPC, not HTTP/JSON, so they are not in `/openapi.json`:
/// every route whose path starts with this is left out of it.
pub const GRPC_PATH_PREFIX: &str = "/opentelemetry.proto.collector.";

/// The receiver's routes, gRPC and HTTP, to be merged beside the instrumented API; the HTTP ones
/// documented.
pub fn router(diagnostics: Diagnostics) -> OpenApiRouter {
    let receiver = Receiver(diagnostics);
    OpenApiRouter::with_openapi(http_document())
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            TraceServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_DECODED_BYTES),
        )
        .route_service(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            MetricsServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_DECODED_BYTES),
        )
        .route_service(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            LogsServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_DECODED_BYTES),
        )
        .route("/v1/traces", post(http_export::<ExportTraceServiceRequest>))
        .route(
            "/v1/metrics",
            post(http_export::<ExportMetricsServiceRequest>),
        )
        .route("/v1/logs", post(http_export::<ExportLogsServiceRequest>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(bounded))
        .with_state(receiver)
}

/// How long an export may take to arrive and be stored. The services' routes have this bound
/// from foundry's server layer, which the receiver's untraced routes go without: a client that
/// sends its body slowly must not hold a connection and its buffer without end.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn bounded(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(EXPORT_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ErrorResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the export took longer than {} s to arrive and be stored",
                EXPORT_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The OTLP services, over the window.
#[derive(Clone, Debug)]
struct Receiver(Diagnostics);

/// An OTLP export request of one signal, as the window takes it in, and its answer.
trait Export: prost::Message + DeserializeOwned + Default + Send + 'static {
    /// The export response, for gRPC and HTTP alike.
    type Answer: prost::Message + Serialize;
    /// Stores the request's items in the window.
    fn ingest(self, diagnostics: &Diagnostics) -> Self::Answer;
}

impl Export for ExportTraceServiceRequest {
    type Answer = ExportTraceServiceResponse;
    fn ingest(self, diagnostics: &Diagnostics) -> Self::Answer {
        trace_response(&diagnostics.ingest_traces(self))
    }
}

impl Export for ExportMetricsServiceRequest {
    type Answer = ExportMetricsServiceResponse;
    fn ingest(self, diagnostics: &Diagnostics) -> Self::Answer {
        diagnostics.ingest_metrics(&self);
        Self::Answer::default()
    }
}

impl Export for ExportLogsServiceRequest {
    type Answer = ExportLogsServiceResponse;
    fn ingest(self, diagnostics: &Diagnostics) -> Self::Answer {
        diagnostics.ingest_logs(self);
        Self::Answer::default()
    }
}

/// The gRPC service of one signal: tonic has a trait a signal, all answered by [`Export`].
macro_rules! grpc_service {
    ($service:ident, $request:ty) => {
        #[tonic::async_trait]
        impl $service for Receiver {
            async fn export(
                &self,
                request: tonic::Request<$request>,
            ) -> Result<tonic::Response<<$request as Export>::Answer>, tonic::Status> {
                Ok(tonic::Response::new(request.into_inner().ingest(&self.0)))
            }
        }
    };
}

grpc_service!(TraceService, ExportTraceServiceRequest);
grpc_service!(MetricsService, ExportMetricsServiceRequest);
grpc_service!(LogsService, ExportLogsServiceRequest);

/// The OTLP/HTTP routes: their path, the name of their handler in `/openapi.json`, and what
/// their requests carry.
const HTTP_ROUTES: [(&str, &str, &str); 3] = [
    ("/v1/traces", "http_traces", "spans"),
    ("/v1/metrics", "http_metrics", "metrics"),
    ("/v1/logs", "http_logs", "log records"),
];

/// The contract of the OTLP/HTTP routes, one shape for the three.
fn http_document() -> utoipa::openapi::OpenApi {
    let object = || ObjectBuilder::new().schema_type(Type::Object).build();
    let mut paths = PathsBuilder::new();
    for (path, handler, items) in HTTP_ROUTES {
        let body = RequestBodyBuilder::new()
            .description(Some(format!(
                "An OTLP export request of {items}: protobuf, or the OTLP JSON mapping; `Content-Encoding: gzip` accepted"
            )))
            .content("application/x-protobuf", Content::new(None::<RefOr<Schema>>))
            .content("application/protobuf", Content::new(None::<RefOr<Schema>>))
            .content("application/json", Content::new(Some(object())))
            .required(Some(Required::True))
            .build();
        let answer = ResponseBuilder::new()
            .description("The export response, in the request's format")
            .content(
                "application/x-protobuf",
                Content::new(None::<RefOr<Schema>>),
            )
            .content("application/json", Content::new(Some(object())))
            .build();
        let responses = ResponsesBuilder::new()
            .response("200", answer)
            .responses_from_iter([
                error(
                    400,
                    "`invalid_protobuf`, `invalid_json`, `invalid_gzip`, `invalid_body`: the body cannot be decoded",
                ),
                error(
                    413,
                    "`payload_too_large`: over 4 MiB as sent or 16 MiB inflated",
                ),
                error(
                    415,
                    "`unsupported_media_type`, `unsupported_encoding`: not protobuf or JSON, or not gzip",
                ),
                error(
                    503,
                    "`timeout`: the export took longer than 60 s to arrive and be stored",
                ),
            ]);
        let operation = OperationBuilder::new()
            .tag("receiver")
            .operation_id(Some(handler))
            .request_body(Some(body))
            .responses(responses);
        paths = paths.path(path, PathItem::new(HttpMethod::Post, operation));
    }
    OpenApiBuilder::new().paths(paths).build()
}

/// Full success, or the count of refused spans and why.
fn trace_response(accepted: &Accepted) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (accepted.refused > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(accepted.refused).unwrap_or(i64::MAX),
            error_message: "spans need a 16-byte trace id and an 8-byte span id, not all zero"
                .into(),
        }),
    }
}

/// `POST /v1/traces`, `/v1/metrics` or `/v1/logs`: the export in the request's format, or why
/// the body could not be taken.
async fn http_export<R: Export>(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match decode::<R>(&headers, body) {
        Ok((request, format)) => format.answer(&request.ingest(&receiver.0)),
        Err(error) => error.into_response(),
    }
}

/// How an OTLP/HTTP body is encoded; the answer uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn answer<M: prost::Message + Serialize>(self, message: &M) -> Response {
        match self {
            Self::Protobuf => (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                message.encode_to_vec(),
            )
                .into_response(),
            Self::Json => axum::Json(message).into_response(),
        }
    }
}

/// The export request of an OTLP/HTTP body: inflated if gzip, decoded as its content type says.
fn decode<M: prost::Message + DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(M, Format), ErrorResponse> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(MAX_BODY_BYTES)
        } else {
            ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                rejection.body_text(),
            )
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    let format = match content_type.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            return Err(ErrorResponse::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "OTLP/HTTP takes application/x-protobuf or application/json, not {}",
                    other.unwrap_or("a body without a content type")
                ),
            ));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("" | "identity") => body,
        Some("gzip") => Bytes::from(inflate(&body)?),
        Some(other) => {
            return Err(ErrorResponse::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("the receiver takes gzip or no content encoding, not {other:?}"),
            ));
        }
    };
    let message = match format {
        Format::Protobuf => M::decode(body).map_err(|error| {
            ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "invalid_protobuf",
                format!("the body is not a valid OTLP protobuf message: {error}"),
            )
        })?,
        Format::Json => serde_json::from_slice(&body).map_err(|error| {
            ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not a valid OTLP JSON message: {error}"),
            )
        })?,
    };
    Ok((message, format))
}

/// Inflates a gzip body, stopping one byte past the limit.
fn inflate(body: &[u8]) -> Result<Vec<u8>, ErrorResponse> {
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| {
            ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "invalid_gzip",
                format!("the body is not valid gzip: {error}"),
            )
        })?;
    if inflated.len() > MAX_DECODED_BYTES {
        return Err(too_large(MAX_DECODED_BYTES));
    }
    Ok(inflated)
}

fn too_large(limit: usize) -> ErrorResponse {
    ErrorResponse::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "an OTLP export may be at most {} MiB, inflated or not",
            limit / (1024 * 1024)
        ),
    )
}
