//! The hermes binary: configuration, telemetry, and the application until it is stopped.

use hermes::{app::Application, config::Config};

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flags, then the environment, then the profile of logos.toml (--env / LOGOS_ENV), then defaults.
    let loaded = foundry::profile::parse::<Config>()?;
    let telemetry = loaded
        .profile
        .telemetry("hermes", env!("CARGO_PKG_VERSION"))?;
    let _telemetry = foundry::telemetry::init(telemetry)?;
    let app = Application::build(&loaded.config).await?;
    println!("hermes listening on http://{}", app.local_addr()?);
    app.run_until_stopped().await?;
    Ok(())
}
