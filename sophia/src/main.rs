//! The sophia binary: configuration, telemetry, and the application until it is stopped.

use clap::Parser;
use sophia::{app::Application, config::Config};

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry =
        foundry::config::TelemetryConfig::from_env("sophia", env!("CARGO_PKG_VERSION"))?;
    let _telemetry = foundry::telemetry::init(telemetry)?;
    let app = Application::build(&config).await?;
    println!("sophia listening on http://{}", app.local_addr()?);
    app.run_until_stopped().await?;
    Ok(())
}
