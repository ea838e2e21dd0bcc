//! Binding and serving with the graceful, bounded shutdown every service shares.

use std::{io, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::net::TcpListener;

use super::protocol_errors::JsonErrorsListener;

/// How long in-flight requests may run on after Ctrl-C or SIGTERM. With the telemetry flush
/// ([`crate::telemetry::SHUTDOWN_TIMEOUT`]) a service exits within 5 s of the signal.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// Binds `host:port`; port 0 takes a free port (read it back with `local_addr`). The error
/// names the address, as the operating system's (`Address already in use`) does not.
pub(crate) async fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((host, port)).await.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot listen on {host}:{port}: {error}"),
        )
    })
}

/// Serves `app` until Ctrl-C or SIGTERM: then stops accepting, lets in-flight requests finish
/// for at most [`DRAIN_TIMEOUT`], and returns. What the HTTP server answers by itself (400 for a
/// request that is not valid HTTP/1.1, 431 for more than 100 header lines, 414 for a URI too
/// long) is in the JSON error shape like every other error.
pub(crate) async fn serve(listener: TcpListener, app: Router) -> io::Result<()> {
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    // The answers hyper gives by itself (a malformed request, too many headers) get the JSON
    // error shape too.
    let server = axum::serve(JsonErrorsListener(listener), app.into_make_service())
        .with_graceful_shutdown(async move {
            crate::shutdown_signal().await;
            let _ = signalled_tx.send(true);
        });
    let drain_deadline = async move {
        if signalled_rx.wait_for(|signalled| *signalled).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            tracing::warn!("in-flight requests did not finish in time; stopping anyway");
            Ok(())
        }
    }
}

/// A service bound to its port, ready to run: what every LOGOS binary starts.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Binds `host:port` for `router` (port 0 takes a free port).
    pub async fn bind(host: &str, port: u16, router: Router) -> io::Result<Self> {
        Ok(Self {
            listener: bind(host, port).await?,
            router,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until Ctrl-C or SIGTERM, then lets in-flight requests finish for at most 1.5 s.
    /// What the HTTP server answers by itself (400, 414, 431) is in the JSON error shape.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        serve(self.listener, self.router).await
    }
}

/// What a service binary does: reads `C` (flags over the environment over the `logos.toml`
/// profile over defaults), installs telemetry as service `name`, then serves the application
/// that `build` makes from `C` until Ctrl-C or SIGTERM, telemetry flushed at the end.
pub async fn run_service<C, F, Fut, E>(
    name: &'static str,
    version: &'static str,
    build: F,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: clap::CommandFactory + clap::FromArgMatches,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<Application, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let loaded = crate::profile::parse::<C>()?;
    let telemetry = loaded.profile.telemetry(name, version)?;
    let _telemetry = crate::telemetry::init(telemetry)?;
    let app = build(loaded.config).await.map_err(Into::into)?;
    println!("{name} listening on http://{}", app.local_addr()?);
    app.run_until_stopped().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_failed_bind_names_the_address() {
        let taken = super::bind("127.0.0.1", 0).await.expect("a free port");
        let port = taken.local_addr().expect("bound").port();

        let error = super::bind("127.0.0.1", port)
            .await
            .expect_err("the port is taken");

        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")),
            "{error}"
        );
    }
}
