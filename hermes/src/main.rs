//! The hermes binary: configuration, telemetry, and the application until it is stopped.

use hermes::{app, config::Config};

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    foundry::http::run_service(
        "hermes",
        env!("CARGO_PKG_VERSION"),
        |config: Config| async move { app::build(&config).await },
    )
    .await
    .map_err(|error| anyhow::anyhow!(error))
}
