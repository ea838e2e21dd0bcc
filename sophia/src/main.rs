//! The sophia binary: configuration, telemetry, and the application until it is stopped.

use sophia::app;

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    foundry::http::run_service("sophia", env!("CARGO_PKG_VERSION"), app::build)
        .await
        .map_err(|error| anyhow::anyhow!(error))
}
