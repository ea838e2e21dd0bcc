//! The apollo binary: one command (one trace, flushed before exit), or `serve` for the API.

use apollo::{app::Application, cli, config::Cli, config::Command, settings};

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    // Flags, then the environment, then the profile of logos.toml (--env / LOGOS_ENV), then defaults.
    let loaded = foundry::profile::parse::<Cli>()?;
    let cli = &loaded.config;
    if let Command::Config = cli.command {
        return Ok(settings::report(&loaded, cli.json).print());
    }
    let telemetry = foundry::telemetry::init(cli.telemetry_config(&loaded.profile)?)?;
    let services = cli.services()?;
    if let Command::Serve(serve) = &cli.command {
        let app = Application::build(&serve.host, serve.port, services).await?;
        println!("apollo listening on http://{}", app.local_addr()?);
        app.run_until_stopped().await?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let report = cli::run(cli, &services).await;
    // Flush this command's spans before anything is printed and the process exits.
    drop(telemetry);
    Ok(report.print())
}
