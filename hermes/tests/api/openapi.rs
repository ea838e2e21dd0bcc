//! `/openapi.json`: Hermes' document lists every route of its router, and nothing else.

use foundry::testing::{document_routes, router_routes, served_document};

#[tokio::test]
async fn the_document_lists_every_route_and_nothing_else() {
    // Arrange
    let router = hermes::app::router(hermes::app::AppState::local());

    // Act
    let document = served_document(&router).await;
    let documented = document_routes(&document);
    let routed = router_routes(&router).await;

    // Assert
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "hermes");
    assert_eq!(
        routed, documented,
        "left: the router's routes; right: the document's"
    );
    for route in [
        "/embed_text",
        "/search",
        "/simple_nlp",
        "/llm",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(documented.iter().any(|(_, path)| path == route), "{route}");
    }
}
