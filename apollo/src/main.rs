//! The apollo binary: one command (one trace, flushed before exit), or `serve` for the API.

use apollo::{app::Application, cli, config::Cli, config::Command};
use clap::Parser;

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let telemetry = foundry::telemetry::init(cli.telemetry_config()?)?;
    let services = cli.services()?;
    if let Command::Serve(serve) = &cli.command {
        let app = Application::build(&serve.host, serve.port, services).await?;
        println!("apollo listening on http://{}", app.local_addr()?);
        app.run_until_stopped().await?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let report = cli::run(&cli, &services).await;
    // Flush this command's spans before anything is printed and the process exits.
    drop(telemetry);
    Ok(report.print())
}
