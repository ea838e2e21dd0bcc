//! The apollo binary: one command (one trace, flushed before exit), a look at the diagnostics
//! window (`trace`, `traces`), the effective configuration (`config`), or `serve` for the API,
//! the OTLP receiver and the window.

use std::{process::ExitCode, sync::Arc};

use apollo::{app, cli, config::Cli, config::Command, diagnostics::Diagnostics, settings};

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // Flags, then the environment, then the profile of logos.toml (--env / LOGOS_ENV), then defaults.
    let loaded = foundry::profile::parse::<Cli>()?;
    let cli = &loaded.config;
    if let Command::Config = cli.command {
        return Ok(settings::report(&loaded, cli.json).print());
    }
    if let Some(report) = apollo::waterfall::run(cli).await {
        return Ok(report.print());
    }
    let telemetry_config = cli.telemetry_config(&loaded.profile)?;
    if let Command::Serve(serve) = &cli.command {
        let diagnostics = Diagnostics::new(usize::try_from(serve.diagnostics_max_spans)?);
        let sink = Arc::new(diagnostics.clone());
        let _telemetry = foundry::telemetry::init_with_sink(telemetry_config, sink)?;
        let (services, links) = (cli.services()?, serve.links());
        let app = app::build(&serve.host, serve.port, services, diagnostics, links).await?;
        println!("apollo listening on http://{}", app.local_addr()?);
        app.run_until_stopped().await?;
        return Ok(ExitCode::SUCCESS);
    }
    let telemetry = foundry::telemetry::init(telemetry_config)?;
    let report = cli::run(cli, &cli.services()?).await;
    // Flush this command's spans before anything is printed and the process exits.
    drop(telemetry);
    Ok(report.print())
}
