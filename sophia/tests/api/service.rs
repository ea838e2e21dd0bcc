//! What every Sophia route shares: `/health` and `/metrics` (answered, never traced), and JSON
//! 404 and 405 answers.

use http::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn health_names_the_service_and_is_not_traced() {
    TestApp::with_hermes_down()
        .assert_health(env!("CARGO_PKG_VERSION"))
        .await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_not_by_path() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let missing = app.get("/hcg/entities/metrics-probe").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Act
    let (text, count) = app.request_count("/hcg/entities/{id}", 404).await;

    // Assert
    assert!(count >= 1.0, "{text}");
    assert!(!text.contains("metrics-probe"), "ids stay out of metrics");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    TestApp::with_hermes_down()
        .assert_unknown_route_and_method("/plans", "/plan")
        .await;
}
