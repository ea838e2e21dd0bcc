//! Sophia's bearer token: the guard in front of its routes, and what its `/openapi.json` says
//! of it. Every route but `/health` and `/metrics` takes `Authorization: Bearer <token>` when a
//! token is configured.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use foundry::http::ErrorResponse;
use http::StatusCode;
use utoipa::openapi::{
    OpenApi,
    security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
};

/// The routes never behind the token.
const OPEN_PATHS: [&str; 2] = ["/health", "/metrics"];

/// 401 unless `Authorization: Bearer <token>` matches (the scheme's name in any case, as RFC
/// 9110 says), with the `WWW-Authenticate` challenge a 401 must carry. The header is never
/// recorded.
pub async fn require_token(State(token): State<String>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim_matches(' '));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            [(http::header::WWW_AUTHENTICATE, "Bearer realm=\"sophia\"")],
            ErrorResponse::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            ),
        )
            .into_response(),
    }
}

/// Compares without an early exit, so response time does not leak how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Documents the token: a `bearer` security scheme, and on every operation but `/health` and
/// `/metrics` the requirement "the token or nothing" (whether one is needed is the configuration)
/// and the 401 `unauthorized` answered without a valid one.
pub fn document(document: &mut OpenApi) {
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    let (status, unauthorized) = foundry::openapi::error(
        401,
        "`unauthorized`: sophia requires a bearer token and the request has no valid one",
    );
    for (path, item) in &mut document.paths.paths {
        if OPEN_PATHS.contains(&path.as_str()) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .insert(status.clone(), unauthorized.clone());
            operation.security = Some(vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::default(),
            ]);
        }
    }
}
