//! Binding and serving with the graceful, bounded shutdown every service shares.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{idle::Idle, protocol_errors::JsonErrorsListener};

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

/// How long a connection may take to send a request's head, from its first byte (or, kept alive,
/// from the previous answer): a client that sends a byte at a time, or asks nothing more, is
/// closed. One that sends nothing at all is left to [`IDLE_TIMEOUT`].
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may go without traffic, whatever it is doing: longer than a request may
/// run ([`super::server::REQUEST_TIMEOUT`]), as a keep-alive server's usual bound.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// The most connections served at once; more wait in the listen backlog until one closes.
const MAX_CONNECTIONS: usize = 4096;

/// Serves `app` until Ctrl-C or SIGTERM: then stops accepting, lets in-flight requests finish
/// for at most [`DRAIN_TIMEOUT`], and returns. What the HTTP server answers by itself (400 for a
/// request that is not valid HTTP/1.1, 431 for more than 100 header lines, 414 for a URI too
/// long) is in the JSON error shape like every other error.
///
/// The connections are served here rather than by `axum::serve`, which arms no timer: without
/// one, hyper never bounds how long a request's head may take, and idle or half-sent
/// connections would be held without end (a few thousand exhaust the process's files).
pub(crate) async fn serve(listener: TcpListener, app: Router) -> io::Result<()> {
    // The answers hyper gives by itself (a malformed request, too many headers) get the JSON
    // error shape too.
    let mut listener = JsonErrorsListener(listener);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HEAD_TIMEOUT)
        .keep_alive_timeout(HEAD_TIMEOUT);
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            () = &mut signal => break,
            accepted = async {
                let permit = Arc::clone(&permits).acquire_owned().await;
                (permit, axum::serve::Listener::accept(&mut listener).await)
            } => accepted,
        };
        let (Ok(permit), (io, _address)) = accepted else {
            break;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(Idle::new(io, IDLE_TIMEOUT)), service)
            .into_owned();
        let connection = graceful.watch(connection);
        // A panic here ends this connection's task only: it is said once an interval.
        tokio::spawn(crate::panics::caught(async move {
            let _ = connection.await;
            drop(permit);
        }));
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(()),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            // Idle connections closed at once: those left are serving a request.
            let connections = MAX_CONNECTIONS - permits.available_permits();
            let (plural, verb) = if connections == 1 { ("", "has") } else { ("s", "have") };
            tracing::warn!(
                connections = i64::try_from(connections).unwrap_or(i64::MAX),
                "{connections} connection{plural} still {verb} a request in flight {} ms after the shutdown signal; stopping anyway",
                DRAIN_TIMEOUT.as_millis(),
            );
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
