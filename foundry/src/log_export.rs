//! The OTLP log exporter, with no retries once shutdown has begun.
//!
//! The SDK's exporters take one retry policy for their whole life, so a batch flushed at
//! shutdown to a collector that is down was retried with backoff (1.6 to 1.9 s of a service's
//! exit) where foundry's own span export gives up at once. This exporter holds two of the SDK's:
//! one that retries, for the life of the service, and one that does not, for the flush at
//! shutdown; [`NoRetryAtShutdown`] says which.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
};

/// Set when shutdown begins; from then on batches are sent once.
#[derive(Clone, Debug, Default)]
pub(crate) struct NoRetryAtShutdown(Arc<AtomicBool>);

impl NoRetryAtShutdown {
    /// Shutdown has begun: no more retries.
    pub(crate) fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn begun(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A log exporter that retries (`retrying`, when retries are on) until shutdown begins, and
/// sends each batch once (`once`) after.
#[derive(Debug)]
pub(crate) struct ShutdownAwareLogExporter<E> {
    retrying: Option<E>,
    once: E,
    shutdown: NoRetryAtShutdown,
}

impl<E> ShutdownAwareLogExporter<E> {
    /// `once` never retries; `retrying` is `None` when retries are off altogether.
    pub(crate) fn new(retrying: Option<E>, once: E, shutdown: NoRetryAtShutdown) -> Self {
        Self {
            retrying,
            once,
            shutdown,
        }
    }
}

impl<E: LogExporter> LogExporter for ShutdownAwareLogExporter<E> {
    fn export(
        &self,
        batch: LogBatch<'_>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let exporter = match &self.retrying {
            Some(retrying) if !self.shutdown.begun() => retrying,
            _ => &self.once,
        };
        exporter.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        if let Some(retrying) = &self.retrying {
            let _ = retrying.shutdown_with_timeout(timeout);
        }
        self.once.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(retrying) = &mut self.retrying {
            retrying.set_resource(resource);
        }
        self.once.set_resource(resource);
    }
}
