//! The apollo binary: one command (one trace, flushed before exit), or `serve` for the API.

use std::time::Duration;

use apollo::{
    app::Application,
    cli,
    config::{Cli, Command},
    services::Services,
};
use clap::Parser;

/// Telemetry allocates on every span; mimalloc makes those small, short-lived allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let mut telemetry =
        foundry::config::TelemetryConfig::from_env("apollo", env!("CARGO_PKG_VERSION"))?;
    if std::env::var_os("RUST_LOG").is_none() && !matches!(cli.command, Command::Serve(_)) {
        // A command's output is the answer; only warnings belong beside it.
        telemetry.log_filter = "warn".into();
    }
    let telemetry = foundry::telemetry::init(telemetry)?;
    let services = Services::new(
        &cli.sophia_url,
        &cli.hermes_url,
        cli.sophia_api_key.clone(),
        Duration::from_millis(cli.timeout_ms),
    )?;
    let Some(action) = cli::action(&cli.command) else {
        let Command::Serve(serve) = &cli.command else {
            unreachable!("only serve is not an action");
        };
        let app = Application::build(&serve.host, serve.port, services).await?;
        println!("apollo listening on http://{}", app.local_addr()?);
        app.run_until_stopped().await?;
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let outcome = services.perform(action).await;
    // Flush this command's spans before anything is printed and the process exits.
    drop(telemetry);
    let report = cli::report(&cli.command, &outcome, cli.json);
    print!("{}", report.stdout);
    if let Some(line) = report.stderr {
        eprintln!("{line}");
    }
    Ok(std::process::ExitCode::from(
        u8::try_from(report.exit_code).unwrap_or(1),
    ))
}
