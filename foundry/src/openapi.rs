//! The OpenAPI 3.1 contract every LOGOS service serves at `/openapi.json`.
//!
//! A service registers its routes with `utoipa_axum`'s `OpenApiRouter` and `routes!`, so a route
//! and its documentation are one call and cannot drift; the schemas are derived (`ToSchema`) from
//! the handlers' own request and response types. This module adds what every service shares: the
//! routes foundry itself serves (`/health` and `/metrics`, added by [`crate::http::instrument`],
//! and `/openapi.json`), the one error shape ([`ErrorBody`]) and the error answers each kind of
//! route can give ([`JsonBodyErrors`], [`QueryErrors`], [`PathErrors`], [`DownstreamErrors`],
//! [`Timeout`], [`Internal`]).

use std::collections::BTreeMap;

use axum::{Router, response::IntoResponse, routing::get};
use serde::Serialize;
use utoipa::{
    IntoResponses, OpenApi, ToSchema,
    openapi::{
        Content, InfoBuilder, OpenApi as Document, RefOr, Response, ResponseBuilder, schema::Ref,
    },
};

/// The route that serves a service's document.
pub(crate) const DOCUMENT_PATH: &str = "/openapi.json";

/// `{"error": {"code", "message"}}`: the body of every error answer of every LOGOS service, as
/// [`crate::http::ErrorResponse`] writes it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code clients can match on, e.g. `invalid_json` or `not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// The answer of `GET /health`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the service answers.
    pub status: String,
    /// The service's name, e.g. `sophia`.
    pub service: String,
    /// The service's version.
    pub version: String,
}

/// One error answer: `status` (a code, or a range such as `4XX`), described, with the
/// [`ErrorBody`] schema (for a route's own [`IntoResponses`] set).
pub fn error(status: impl std::fmt::Display, description: &str) -> (String, RefOr<Response>) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build();
    (status.to_string(), RefOr::T(response))
}

/// A set of error answers that kinds of routes share, for a route's `responses(...)`.
macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident: $(($status:literal, $description:literal)),+ $(,)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(error($status, $description)),+])
            }
        }
    };
}

error_set!(
    /// The errors of a route that reads a JSON body: 400 `invalid_json`, 408 `request_timeout`
    /// (the body did not arrive within 30 s), 413 `payload_too_large` (over 1 MiB),
    /// 415 `unsupported_media_type` (not `application/json`), 422 `invalid_request` (missing or
    /// mistyped fields, or values out of range).
    JsonBodyErrors:
    (400, "`invalid_json`: the body is not JSON"),
    (408, "`request_timeout`: the body did not arrive within 30 s"),
    (413, "`payload_too_large`: the body is over the limit"),
    (415, "`unsupported_media_type`: the body is not `application/json`; `unsupported_encoding`: the body has a `Content-Encoding`"),
    (422, "`invalid_request` (or a more precise code): well-formed JSON whose fields or values are not acceptable"),
);

error_set!(
    /// The error of a route with query parameters: 400 `invalid_query`.
    QueryErrors: (400, "`invalid_query`: a query parameter is not valid")
);

error_set!(
    /// The error of a route with path parameters: 400 `invalid_path`.
    PathErrors: (400, "`invalid_path` (or a more precise code): a path parameter is not valid")
);

error_set!(
    /// The errors of a route that calls another service: 502 (it failed or is down) and 504 (it
    /// did not answer in time), each naming it.
    DownstreamErrors:
    (502, "a service this route calls failed, refused or could not be reached"),
    (504, "a service this route calls did not answer in time"),
);

error_set!(
    /// The answer of every instrumented route that outlives its 60 s (`http::instrument`): 503
    /// `timeout`.
    Timeout: (503, "`timeout`: the request took too long and was abandoned (or a backend is unavailable)")
);

error_set!(
    /// 500 `internal_error`: a backend failed; the details are in the service's log.
    Internal: (500, "`internal_error`: the service failed; the details are in its log")
);

/// Whether the service is up, with its name and version (added by `foundry::http::instrument`; untraced).
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses((status = 200, description = "The service is up", body = Health))
)]
#[allow(dead_code)] // Documents the route `instrument` adds; never called.
fn health() {}

/// The service's metrics for Prometheus to scrape (added by `foundry::http::instrument`; untraced).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((
        status = 200,
        description = "The service's metrics in the Prometheus text format",
        content_type = "text/plain",
        body = String
    ))
)]
#[allow(dead_code)] // Documents the route `instrument` adds; never called.
fn metrics() {}

/// This document (added by `foundry::openapi::with_document`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "This document, OpenAPI 3.1", body = Object),
        Timeout,
    )
)]
#[allow(dead_code)] // Documents the route `with_document` adds; never called.
fn openapi_json() {}

/// What foundry serves in every service, and the schemas its error answers use.
#[derive(OpenApi)]
#[openapi(
    paths(health, metrics, openapi_json),
    components(schemas(ErrorBody, ErrorDetail, Health))
)]
struct Shared;

/// Completes a service's document: its title and version, the routes foundry adds (`/health`,
/// `/metrics`, `/openapi.json`) and the shared schemas.
pub fn document(routes: Document, service: &str, version: &str) -> Document {
    let mut document = routes.merge_from(Shared::openapi());
    document.info = InfoBuilder::new()
        .title(service)
        .version(version)
        .description(Some(format!(
            "The HTTP API of {service}, a LOGOS service. Every error answer is \
             {{\"error\": {{\"code\", \"message\"}}}} with a 4xx or 5xx status; an unknown path \
             answers 404 `not_found`, a wrong method 405 `method_not_allowed`."
        )))
        .build();
    document
}

/// Adds `GET /openapi.json`, answering `document`, to `router`.
pub fn with_document(router: Router, document: &Document) -> Router {
    // Serialised once: the document does not change while the service runs.
    let body = document
        .to_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    router.route(
        DOCUMENT_PATH,
        get(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body).into_response() }
        }),
    )
}

/// Both sides of the route-coverage check: the routes a router really has, and those its
/// document lists (for tests, through `testing`).
#[cfg(feature = "testing")]
pub(crate) mod coverage {
    use std::collections::BTreeSet;

    use axum::{Router, body::Body};
    use http::{Method, Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt as _;

    /// A route: its method and its path as axum and OpenAPI both write it (`/hcg/entities/{id}`).
    pub type Route = (String, String);

    /// The methods probed on every path of a router.
    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];

    /// Every (method, path) of `router`.
    ///
    /// axum has no API that lists a router's routes, so the paths are read from its `Debug`
    /// output (`paths: {RouteId(0): "/plan", ...}`, which axum 0.8 prints for each router), and
    /// the methods each path takes are found by asking: a request that is not answered by the
    /// router's 405 `method_not_allowed` reached a handler. Path parameters are filled with `0`.
    /// HEAD (which axum answers on every GET route), OPTIONS and TRACE are not probed: no LOGOS
    /// route declares them.
    /// Panics when no path can be read, so a change of axum's `Debug` output fails loudly.
    pub async fn router_routes(router: &Router) -> BTreeSet<Route> {
        let paths = router_paths(router);
        assert!(
            paths.iter().any(|path| path == "/health"),
            "no /health among the paths read from the router's Debug output: {paths:?}"
        );
        let mut routes = BTreeSet::new();
        for path in paths {
            let uri = fill_parameters(&path);
            for method in METHODS {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(Body::empty())
                    .expect("a valid request");
                let response = router.clone().oneshot(request).await.expect("infallible");
                if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                    routes.insert((method.as_str().to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    /// The paths of the router's own routes (not of its fallbacks), from its `Debug` output.
    fn router_paths(router: &Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        // The router's routes come first; its fallback router (catch-all paths) after.
        let routes = debug.split("fallback_router:").next().unwrap_or_default();
        let mut paths = BTreeSet::new();
        let mut rest = routes;
        while let Some(start) = rest.find("RouteId(") {
            rest = &rest[start..];
            let Some(open) = rest.find("): \"") else {
                break;
            };
            let after = &rest[open + 4..];
            let Some(close) = after.find('"') else {
                break;
            };
            let path = &after[..close];
            if !path.contains("__private__axum") {
                paths.insert(path.to_owned());
            }
            rest = &after[close..];
        }
        paths
    }

    fn fill_parameters(path: &str) -> String {
        path.split('/')
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') {
                    "0"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The document `router` serves at `/openapi.json`, as JSON.
    pub async fn served_document(router: &Router) -> Value {
        let request = Request::get(super::DOCUMENT_PATH)
            .body(Body::empty())
            .expect("a valid request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "GET /openapi.json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the whole body");
        serde_json::from_slice(&body).expect("the document is JSON")
    }

    /// Every (method, path) of a document.
    pub fn document_routes(document: &Value) -> BTreeSet<Route> {
        let mut routes = BTreeSet::new();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            let methods = item.as_object().cloned().unwrap_or_default();
            for method in methods.keys() {
                let method = method.to_ascii_uppercase();
                if HTTP_METHODS.contains(&method.as_str()) {
                    routes.insert((method, path.clone()));
                }
            }
        }
        routes
    }

    /// The keys of an OpenAPI path item that are operations (the others are `parameters`,
    /// `summary` and such).
    const HTTP_METHODS: [&str; 8] = [
        "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_schema_describes_what_error_response_writes() {
        // Arrange
        let written = crate::http::ErrorResponse::not_found("no such route").body();

        // Act
        let body: ErrorBody = ErrorBody {
            error: ErrorDetail {
                code: "not_found".into(),
                message: "no such route".into(),
            },
        };

        // Assert
        assert_eq!(serde_json::to_value(body).expect("serialisable"), written);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_shared_routes_and_schemas() {
        // Arrange
        let routes = Document::default();

        // Act
        let document = document(routes, "sophia", "1.2.3");
        let json = serde_json::to_value(&document).expect("serialisable");

        // Assert
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["info"]["title"], "sophia");
        assert_eq!(json["info"]["version"], "1.2.3");
        for path in ["/health", "/metrics", "/openapi.json"] {
            assert!(json["paths"][path]["get"].is_object(), "{path}: {json}");
        }
        for schema in ["ErrorBody", "ErrorDetail", "Health"] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema}"
            );
        }
    }
}
