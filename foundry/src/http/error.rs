//! The one error shape of every LOGOS service: `{"error": {"code": "...", "message": "..."}}`.

use std::borrow::Cow;

use axum::{
    Json,
    extract::{
        FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

use crate::error_log::ErrorDetails;

/// A JSON error answer with a status and a stable machine-readable `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code clients can match on, e.g. `invalid_json` or `not_found`.
    pub code: Cow<'static, str>,
    /// A sentence for people.
    pub message: String,
}

impl ErrorResponse {
    /// An error with the given status, code and message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `invalid_request`: well-formed JSON whose values are not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// The JSON body, as it goes on the wire.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ErrorResponse {
    /// The JSON answer. A server error also leaves its code and message for the server layer,
    /// which puts them on the request's span and logs them, bounded (see `error_log`).
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body was never read, so the connection cannot carry another
            // request (RFC 9110 15.5.9); hyper drops the header on HTTP/2, where it is not needed.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if self.status.is_server_error() {
            response.extensions_mut().insert(ErrorDetails {
                code: self.code,
                message: self.message,
            });
        }
        response
    }
}

impl From<JsonRejection> for ErrorResponse {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::JsonDataError(_) => "invalid_request",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        Self::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<QueryRejection> for ErrorResponse {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ErrorResponse {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

/// `axum::Json` whose rejections answer in the error shape above (400 invalid JSON, 422 missing
/// or mistyped fields, 413 over the body limit, 415 without a JSON content type or with a
/// `Content-Encoding`, 408 for a body that does not arrive in time).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A compressed body would be read as it is: a gzip body as invalid JSON, one labelled
        // `br` but plain as if nothing were said.
        let encoding = req.headers().get(http::header::CONTENT_ENCODING);
        if encoding.is_some_and(|encoding| !encoding.as_bytes().eq_ignore_ascii_case(b"identity")) {
            return Err(Self::Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "request bodies are read as they are sent: send this one without Content-Encoding",
            ));
        }
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let read = Json::<T>::from_request(req, state);
        let Json(value) = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.at, read)
                .await
                .map_err(|_| deadline.missed())??,
            None => read.await?,
        };
        Ok(Self(value))
    }
}

/// When a request's body must have arrived, set by the server layer at half the request's time
/// (30 s): a client that stalls mid-body gets 408 `request_timeout`, its own error, instead of
/// holding the handler until the request is abandoned as the server's 503.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyDeadline {
    pub(crate) at: tokio::time::Instant,
    pub(crate) after: std::time::Duration,
}

impl BodyDeadline {
    fn missed(self) -> ErrorResponse {
        ErrorResponse::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request's body did not arrive within {} ms",
                self.after.as_millis()
            ),
        )
    }
}

/// `axum::extract::Query` whose rejections answer 400 `invalid_query` in the error shape above.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` whose rejections (a segment that is not valid UTF-8 once decoded, or
/// not of the expected type) answer 400 `invalid_path` in the error shape above.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathParam<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}
