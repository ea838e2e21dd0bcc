//! What the SDK's OTLP exporters lose, said as foundry's span export says it.
//!
//! The SDK's batch processors and periodic reader, and opentelemetry-otlp's retries, log a failed
//! export without the collector's address or a count, and the log output keeps one line per call
//! site per 30 s: a metric or log outage of an hour was two lines, saying neither where nor how
//! much. [`Reported`] wraps each of those exporters (metrics and logs always, spans where the
//! SDK's processor exports them): a line naming the collector when exports begin to fail, one
//! with the count at most every [`REPORT_INTERVAL`] while they go on, one when they work again,
//! and an ERROR at shutdown if they still fail. The SDK's own lines for the same failures
//! ([`REPLACED`]) are left out of the output.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

/// The target of these lines, for `RUST_LOG` directives (and kept out of the OTLP log bridge).
pub(crate) const TARGET: &str = "foundry::export_report";

/// The SDK's and opentelemetry-otlp's events that [`Reported`] says better: each comes with an
/// export that returns its error to the wrapper.
pub(crate) const REPLACED: [&str; 6] = [
    "BatchSpanProcessor.ExportError",
    "BatchLogProcessor.ExportError",
    "PeriodicReader.ExportError",
    "Export.Failed.Exhausted",
    "Export.Failed.NonRetryable",
    "Export.Failed.DeadlineExceeded",
];

/// At most one line per this while exports go on failing.
const REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// An SDK exporter whose failures are reported (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Reported<E> {
    inner: E,
    /// `span`, `metric` or `log`.
    signal: &'static str,
    /// The collector, without credentials.
    endpoint: String,
    outage: Mutex<Outage>,
}

impl<E> Reported<E> {
    pub(crate) fn new(inner: E, signal: &'static str, endpoint: &str) -> Self {
        Self {
            inner,
            signal,
            endpoint: crate::url::without_userinfo(endpoint),
            outage: Mutex::new(Outage::default()),
        }
    }

    /// Counts and says the outcome of one export.
    fn outcome(&self, result: OTelSdkResult) -> OTelSdkResult {
        let line = {
            let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(()) => outage.succeeded(Instant::now()),
                Err(error) => outage.failed(&error.to_string(), Instant::now()),
            }
        };
        if let Some(line) = line {
            line.log(self.signal, &self.endpoint);
        }
        result
    }

    /// Says what an outage still going on at shutdown lost.
    fn shutting_down(&self) {
        let line = self
            .outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at_shutdown(Instant::now());
        if let Some(line) = line {
            line.log(self.signal, &self.endpoint);
        }
    }
}

/// The failed exports of one outage. Lines are said at most once per [`REPORT_INTERVAL`], across
/// outages too: a collector that fails and recovers by turns (one dead backend behind a balancer)
/// is one outage going on, not a line at each turn.
#[derive(Debug, Default)]
struct Outage {
    /// When the first export of the outage failed; `None`: exports work.
    since: Option<SystemTime>,
    /// The last export went through, but the interval held back the line that says so.
    recovered: bool,
    /// Failed exports not yet said.
    unsaid: u64,
    /// Failed exports of the whole outage.
    total: u64,
    last_error: String,
    said_at: Option<Instant>,
}

/// One line about an outage; `lost` counts the failed exports no earlier line counted.
#[derive(Debug, PartialEq)]
enum Line {
    /// The outage's first line.
    Began {
        since: SystemTime,
        lost: u64,
        error: String,
    },
    /// Failures since the last line, the outage going on.
    Going {
        since: SystemTime,
        lost: u64,
        error: String,
    },
    /// Exports went through after the outage.
    Ended {
        since: SystemTime,
        lost: u64,
        total: u64,
        error: String,
    },
    /// Shutdown came during the outage.
    AtShutdown {
        since: SystemTime,
        lost: u64,
        total: u64,
        error: String,
    },
}

impl Outage {
    fn due(&self, now: Instant) -> bool {
        self.said_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_INTERVAL)
    }

    fn failed(&mut self, error: &str, now: Instant) -> Option<Line> {
        error.clone_into(&mut self.last_error);
        self.recovered = false;
        let since = *self.since.get_or_insert_with(SystemTime::now);
        self.unsaid += 1;
        self.total += 1;
        if !self.due(now) {
            return None;
        }
        self.said_at = Some(now);
        let first = self.unsaid == self.total;
        let (lost, error) = (std::mem::take(&mut self.unsaid), error.to_owned());
        Some(if first {
            Line::Began { since, lost, error }
        } else {
            Line::Going { since, lost, error }
        })
    }

    fn succeeded(&mut self, now: Instant) -> Option<Line> {
        self.since?;
        if !self.due(now) {
            self.recovered = true;
            return None;
        }
        self.end(now)
    }

    /// The line that ends the outage; the interval starts again from it.
    fn end(&mut self, now: Instant) -> Option<Line> {
        let line = Line::Ended {
            since: self.since?,
            lost: self.unsaid,
            total: self.total,
            error: std::mem::take(&mut self.last_error),
        };
        *self = Self {
            said_at: Some(now),
            ..Self::default()
        };
        Some(line)
    }

    /// Whatever the interval: the last word on an outage.
    fn at_shutdown(&mut self, now: Instant) -> Option<Line> {
        let since = self.since?;
        if self.recovered {
            return self.end(now);
        }
        Some(Line::AtShutdown {
            since,
            lost: std::mem::take(&mut self.unsaid),
            total: self.total,
            error: self.last_error.clone(),
        })
    }
}

impl Line {
    /// Logs the line: WARN, or ERROR at shutdown (what is lost then is final, and
    /// `RUST_LOG=error` must still say it). `exports_lost` counts the exports no earlier line
    /// counted, so the field's sum over an outage is its total.
    fn log(&self, signal: &str, endpoint: &str) {
        let time = |at: &SystemTime| humantime::format_rfc3339_millis(*at).to_string();
        let count = |exports: &u64| i64::try_from(*exports).unwrap_or(i64::MAX);
        let name = match signal {
            "span" => "SpanExport.ExportError",
            "metric" => "MetricExport.ExportError",
            _ => "LogExport.ExportError",
        };
        match self {
            Line::Began { since, lost, error } => tracing::warn!(
                target: TARGET,
                name,
                exports_lost = count(lost),
                "OTLP {signal} export to {endpoint} failing since {}, and what it carried is lost: {error}",
                time(since)
            ),
            Line::Going { since, lost, error } => tracing::warn!(
                target: TARGET,
                name,
                exports_lost = count(lost),
                "OTLP {signal} export to {endpoint} failing since {}; exports lost since the last line: {lost}; the last error: {error}",
                time(since)
            ),
            Line::Ended {
                since,
                lost,
                total,
                error,
            } => tracing::warn!(
                target: TARGET,
                name,
                exports_lost = count(lost),
                "OTLP {signal} export to {endpoint} works again after failing since {}; exports lost in all: {total}; the last error: {error}",
                time(since)
            ),
            Line::AtShutdown {
                since,
                lost,
                total,
                error,
            } => tracing::error!(
                target: TARGET,
                name,
                exports_lost = count(lost),
                "OTLP {signal} export to {endpoint} failing since {} at shutdown; exports lost in all: {total}; the last error: {error}",
                time(since)
            ),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.outcome(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shutting_down();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Reported<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.outcome(self.inner.export(batch).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shutting_down();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Reported<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.outcome(self.inner.export(metrics).await)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shutting_down();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_said_when_it_begins_every_interval_while_it_goes_on_and_when_it_ends() {
        let mut outage = Outage::default();
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);

        assert!(matches!(
            outage.failed("refused", start),
            Some(Line::Began { lost: 1, .. })
        ));
        assert_eq!(outage.failed("refused", at(1)), None);
        assert_eq!(outage.failed("refused", at(2)), None);
        let Some(Line::Going { lost, .. }) = outage.failed("timed out", at(30)) else {
            panic!("a line with the count, an interval after the first");
        };
        assert_eq!(lost, 3, "the three failures since the first line");
        assert_eq!(outage.failed("timed out", at(31)), None);
        let Some(Line::Ended {
            lost, total, error, ..
        }) = outage.succeeded(at(60))
        else {
            panic!("a line when exports work again");
        };
        assert_eq!((lost, total, error.as_str()), (1, 5, "timed out"));
        assert_eq!(
            outage.succeeded(at(61)),
            None,
            "nothing to say while exports work"
        );
        assert_eq!(outage.at_shutdown(at(62)), None);
    }

    #[test]
    fn a_collector_failing_by_turns_is_one_outage_said_once_an_interval() {
        let mut outage = Outage::default();
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert!(outage.failed("refused", start).is_some());

        // Failures and successes by turns, within the interval: no line.
        for second in 1..29 {
            let line = if second % 2 == 0 {
                outage.succeeded(at(second))
            } else {
                outage.failed("refused", at(second))
            };
            assert_eq!(line, None, "second {second}");
        }
        // The next line, an interval on, counts them all; it ends the outage when it is a success.
        let Some(Line::Ended { lost, total, .. }) = outage.succeeded(at(30)) else {
            panic!("the end, an interval after the first line");
        };
        assert_eq!((lost, total), (14, 15));
        // A failure soon after is a new outage, said once the interval from that line has passed.
        assert_eq!(outage.failed("refused", at(31)), None);
        assert!(matches!(
            outage.failed("refused", at(60)),
            Some(Line::Began { lost: 2, .. })
        ));
    }

    #[test]
    fn an_outage_at_shutdown_is_said_with_its_total() {
        let mut outage = Outage::default();
        let start = Instant::now();
        outage.failed("refused", start);
        outage.failed("refused", start + Duration::from_secs(1));

        let Some(Line::AtShutdown { lost, total, .. }) =
            outage.at_shutdown(start + Duration::from_secs(2))
        else {
            panic!("a line at shutdown");
        };
        assert_eq!((lost, total), (1, 2));
    }

    #[test]
    fn a_recovery_held_back_by_the_interval_is_said_at_shutdown() {
        let mut outage = Outage::default();
        let start = Instant::now();
        outage.failed("refused", start);
        outage.failed("refused", start + Duration::from_secs(1));
        assert_eq!(outage.succeeded(start + Duration::from_secs(2)), None);

        assert!(matches!(
            outage.at_shutdown(start + Duration::from_secs(3)),
            Some(Line::Ended {
                lost: 1,
                total: 2,
                ..
            })
        ));
    }
}
