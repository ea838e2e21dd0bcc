//! Rate, errors and duration per service and route, from the `http.server.request.duration`
//! histograms that the services export over OTLP.
//!
//! Each service exports its histograms cumulatively at every interval. The table compares each
//! series' latest export with the one a minute before ([`RECENT`]; until Apollo has seen a
//! series for a minute, with the series' start): the requests between them give the rate, those with a 5xx status (or an
//! `error.type`) the error rate, and the difference of their buckets the percentiles,
//! interpolated within a bucket as Prometheus' `histogram_quantile` does. Delta series are summed
//! into the same cumulative form.

use std::collections::{BTreeMap, VecDeque};

use foundry::otlp::proto::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{KeyValue, any_value},
    metrics::v1::{AggregationTemporality, HistogramDataPoint, metric},
    resource::v1::Resource,
};
use serde_json::{Value, json};

use super::window::{cut, rfc3339};

/// The metric the table is made of.
pub const SERVER_DURATION: &str = "http.server.request.duration";

/// How far back the rates and percentiles look, in nanoseconds.
pub const RECENT: u64 = 60_000_000_000;

/// Readings closer together than this are thinned to the later one (the latest is always
/// kept), so a minute of history is a dozen readings whatever the export interval.
const READING_SPACING: u64 = 5_000_000_000;

/// The most readings kept per series: a minute at [`READING_SPACING`], and room to spare.
const MAX_READINGS: usize = 32;

/// The most series kept (service, route, method, status, ...): a bound on memory whatever the
/// services send.
const MAX_SERIES: usize = 4096;

/// The most buckets a point may have (the services' histograms have 15): a point with more, or
/// with counts that do not match its bounds, is not one of ours and is left out.
const MAX_BUCKETS: usize = 256;

/// The longest attribute set a series may be keyed by, in bytes, for the same reason.
const MAX_KEY_BYTES: usize = 1024;

/// The longest `service.name` kept, in bytes; a longer one is cut and ends with `…`.
pub const MAX_SERVICE_NAME_BYTES: usize = 256;

/// One cumulative reading of a series.
#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    start: u64,
    time: u64,
    count: u64,
    buckets: Vec<u64>,
}

#[derive(Debug, Default)]
struct Series {
    service: String,
    route: String,
    error: bool,
    bounds: Vec<f64>,
    /// Oldest first; the last is the latest.
    readings: VecDeque<Reading>,
}

impl Series {
    fn latest(&self) -> Option<&Reading> {
        self.readings.back()
    }

    /// What happened in the last [`RECENT`]: since the newest reading at least that old, up to
    /// the latest; for a series Apollo has not seen for that long yet, since the series' start.
    fn recent(&self) -> Reading {
        let Some(latest) = self.latest() else {
            return Reading::default();
        };
        let since = self
            .readings
            .iter()
            .rev()
            .skip(1)
            .find(|reading| latest.time.saturating_sub(reading.time) >= RECENT);
        match since {
            Some(before) if before.start == latest.start && before.count <= latest.count => {
                Reading {
                    start: before.time,
                    time: latest.time,
                    count: latest.count - before.count,
                    buckets: latest
                        .buckets
                        .iter()
                        .zip(before.buckets.iter().chain(std::iter::repeat(&0)))
                        .map(|(now, then)| now.saturating_sub(*then))
                        .collect(),
                }
            }
            _ => latest.clone(),
        }
    }
}

/// The series of every service, keyed by service and attribute set.
#[derive(Debug, Default)]
pub struct RedTable {
    series: BTreeMap<(String, String), Series>,
}

impl RedTable {
    /// Takes in the server duration histograms of one export; other metrics are ignored.
    pub fn ingest(&mut self, request: &ExportMetricsServiceRequest) {
        for resource in &request.resource_metrics {
            let service = service_name(resource.resource.as_ref());
            for metric in resource
                .scope_metrics
                .iter()
                .flat_map(|scope| &scope.metrics)
                .filter(|metric| metric.name == SERVER_DURATION)
            {
                let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                    continue;
                };
                let delta =
                    histogram.aggregation_temporality == AggregationTemporality::Delta as i32;
                for point in &histogram.data_points {
                    self.record(&service, point, delta);
                }
            }
        }
    }

    fn record(&mut self, service: &str, point: &HistogramDataPoint, delta: bool) {
        let buckets = point.bucket_counts.len();
        if buckets > MAX_BUCKETS || (buckets > 0 && buckets != point.explicit_bounds.len() + 1) {
            return;
        }
        let mut attributes: Vec<String> = point
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, text(kv)))
            .collect();
        attributes.sort_unstable();
        let key = (service.to_owned(), attributes.join(","));
        if key.1.len() > MAX_KEY_BYTES
            || (!self.series.contains_key(&key) && self.series.len() >= MAX_SERIES)
        {
            return;
        }
        let series = self.series.entry(key).or_insert_with(|| Series {
            service: service.to_owned(),
            route: attribute(&point.attributes, "http.route").unwrap_or_default(),
            error: attribute(&point.attributes, "error.type").is_some()
                || attribute(&point.attributes, "http.response.status_code")
                    .and_then(|code| code.parse::<u16>().ok())
                    .is_some_and(|code| code >= 500),
            ..Series::default()
        });
        let mut reading = Reading {
            start: point.start_time_unix_nano,
            time: point.time_unix_nano,
            count: point.count,
            buckets: point.bucket_counts.clone(),
        };
        let latest = series.latest().cloned().unwrap_or_default();
        if delta && latest.time != 0 {
            // A delta point adds to what came before: kept as one running total.
            reading.start = latest.start;
            reading.count = reading.count.saturating_add(latest.count);
            for (bucket, before) in reading.buckets.iter_mut().zip(&latest.buckets) {
                *bucket = bucket.saturating_add(*before);
            }
        }
        if reading.time <= latest.time {
            return;
        }
        series.bounds.clone_from(&point.explicit_bounds);
        // The one before the latest is spaced from the new one: else the latest gives way.
        let len = series.readings.len();
        if len >= 2 && reading.time.saturating_sub(series.readings[len - 2].time) < READING_SPACING
        {
            series.readings.pop_back();
        }
        // Only what `recent` can still use: one reading older than the window, and the rest.
        while series.readings.len() >= MAX_READINGS
            || series
                .readings
                .get(1)
                .is_some_and(|next| reading.time.saturating_sub(next.time) >= RECENT)
        {
            series.readings.pop_front();
        }
        series.readings.push_back(reading);
    }

    /// One row per service and route: `requests` (all so far), and over the last minute
    /// `request_rate` (per second), `error_rate` (a fraction), `p50_ms`, `p95_ms`, `p99_ms` (null
    /// without requests in it); the seconds these cover, and when the last export was.
    pub fn rows(&self) -> Vec<Value> {
        let mut rows: BTreeMap<(&str, &str), Row> = BTreeMap::new();
        for series in self.series.values() {
            let row = rows
                .entry((&series.service, &series.route))
                .or_insert_with(|| Row {
                    bounds: series.bounds.clone(),
                    ..Row::default()
                });
            let recent = series.recent();
            let latest = series.latest().cloned().unwrap_or_default();
            row.total = row.total.saturating_add(latest.count);
            row.count = row.count.saturating_add(recent.count);
            if series.error {
                row.errors = row.errors.saturating_add(recent.count);
            }
            row.seconds = row
                .seconds
                .max(recent.time.saturating_sub(recent.start) as f64 / 1e9);
            row.updated = row.updated.max(latest.time);
            if series.bounds == row.bounds {
                if row.buckets.len() < recent.buckets.len() {
                    row.buckets.resize(recent.buckets.len(), 0);
                }
                for (sum, count) in row.buckets.iter_mut().zip(&recent.buckets) {
                    *sum = sum.saturating_add(*count);
                }
            }
        }
        rows.into_iter()
            .map(|((service, route), row)| {
                let quantile = |q| quantile_ms(q, &row.bounds, &row.buckets);
                json!({
                    "service": service,
                    "route": route,
                    "requests": row.total,
                    "request_rate": if row.seconds > 0.0 { row.count as f64 / row.seconds } else { 0.0 },
                    "error_rate": if row.count > 0 { row.errors as f64 / row.count as f64 } else { 0.0 },
                    "p50_ms": quantile(0.50),
                    "p95_ms": quantile(0.95),
                    "p99_ms": quantile(0.99),
                    "window_seconds": row.seconds,
                    "updated": rfc3339(row.updated),
                })
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Row {
    total: u64,
    count: u64,
    errors: u64,
    seconds: f64,
    updated: u64,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
}

/// The `q` quantile in milliseconds of a histogram with `bounds` in seconds: linear within the
/// bucket that holds it; the last finite bound for the overflow bucket; `None` when empty.
fn quantile_ms(q: f64, bounds: &[f64], buckets: &[u64]) -> Option<f64> {
    let total = buckets
        .iter()
        .fold(0u64, |sum, count| sum.saturating_add(*count));
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        let before = seen;
        seen = seen.saturating_add(*count);
        if (seen as f64) < rank || *count == 0 {
            continue;
        }
        let Some(upper) = bounds.get(index) else {
            return bounds.last().map(|bound| bound * 1000.0);
        };
        let lower = if index == 0 { 0.0 } else { bounds[index - 1] };
        let within = (rank - before as f64) / *count as f64;
        return Some((lower + (upper - lower) * within) * 1000.0);
    }
    bounds.last().map(|bound| bound * 1000.0)
}

/// The `service.name` among resource attributes (`unknown_service` without one, as the SDKs say).
pub fn service_name(resource: Option<&Resource>) -> String {
    let name = resource
        .and_then(|resource| attribute(&resource.attributes, "service.name"))
        .unwrap_or_else(|| "unknown_service".into());
    cut(name, MAX_SERVICE_NAME_BYTES)
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(text)
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use foundry::otlp::proto::{
        common::v1::AnyValue,
        metrics::v1::{Histogram, Metric, ResourceMetrics, ScopeMetrics},
        resource::v1::Resource,
    };

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    /// One export of sophia's `/plan` histogram: `ok` and `failed` cumulative bucket counts over
    /// the bounds 0.01 and 0.1 s, at `seconds` after the start.
    fn export(seconds: u64, ok: [u64; 3], failed: [u64; 3]) -> ExportMetricsServiceRequest {
        let point = |code: i64, buckets: [u64; 3]| HistogramDataPoint {
            attributes: vec![
                kv("http.route", any_value::Value::StringValue("/plan".into())),
                kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(code),
                ),
            ],
            start_time_unix_nano: 1,
            time_unix_nano: 1 + seconds * 1_000_000_000,
            count: buckets.iter().sum(),
            bucket_counts: buckets.to_vec(),
            explicit_bounds: vec![0.01, 0.1],
            ..HistogramDataPoint::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("sophia".into()),
                    )],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: SERVER_DURATION.into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![point(201, ok), point(502, failed)],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    #[test]
    fn rates_and_percentiles_cover_the_last_minute() {
        // Arrange: 100 requests in the first 60 s, then none for 10 s.
        let mut table = RedTable::default();
        table.ingest(&export(60, [100, 0, 0], [0, 0, 0]));
        table.ingest(&export(70, [100, 0, 0], [0, 0, 0]));

        // Act: in the next 60 s, 80 fast and 10 slow successes, 10 failures.
        table.ingest(&export(100, [150, 0, 0], [0, 0, 0]));
        table.ingest(&export(130, [180, 10, 0], [0, 10, 0]));

        // Assert
        let rows = table.rows();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert_eq!(row["service"], "sophia");
        assert_eq!(row["route"], "/plan");
        assert_eq!(row["requests"], 200);
        assert_eq!(row["request_rate"], 100.0 / 60.0);
        assert_eq!(row["error_rate"], 0.1);
        assert_eq!(row["window_seconds"], 60.0);
        // 100 requests: 80 under 10 ms, 20 in (10, 100] ms.
        assert_eq!(row["p50_ms"], 6.25);
        assert_eq!(row["p95_ms"], 77.5);
        assert_eq!(row["p99_ms"], 95.5);
    }

    #[test]
    fn a_first_export_covers_everything_since_the_start() {
        let mut table = RedTable::default();

        table.ingest(&export(4, [8, 0, 0], [0, 0, 0]));

        let row = &table.rows()[0];
        assert_eq!(row["requests"], 8);
        assert_eq!(row["request_rate"], 2.0);
        assert_eq!(row["error_rate"], 0.0);
    }

    #[test]
    fn a_young_series_covers_everything_since_its_start() {
        let mut table = RedTable::default();
        table.ingest(&export(1, [2, 0, 0], [0, 0, 0]));

        table.ingest(&export(2, [2, 0, 0], [0, 0, 0]));

        let row = &table.rows()[0];
        assert_eq!(row["requests"], 2);
        assert_eq!(row["request_rate"], 1.0);
        assert!(row["p50_ms"].as_f64().is_some(), "{row}");
    }

    #[test]
    fn an_idle_minute_has_no_percentiles() {
        let mut table = RedTable::default();
        table.ingest(&export(10, [5, 0, 0], [0, 0, 0]));

        table.ingest(&export(80, [5, 0, 0], [0, 0, 0]));

        let row = &table.rows()[0];
        assert_eq!(row["request_rate"], 0.0);
        assert_eq!(row["p99_ms"], Value::Null);
    }

    #[test]
    fn quantiles_interpolate_within_buckets_and_stop_at_the_last_bound() {
        let rounded = |value: Option<f64>| value.map(|ms| (ms * 1e6).round() / 1e6);
        assert_eq!(
            rounded(quantile_ms(0.5, &[0.1, 0.2], &[0, 10, 0])),
            Some(150.0)
        );
        assert_eq!(
            rounded(quantile_ms(0.99, &[0.1, 0.2], &[0, 0, 4])),
            Some(200.0)
        );
        assert_eq!(quantile_ms(0.5, &[0.1], &[0, 0]), None);
    }

    #[test]
    fn counts_near_the_top_of_u64_saturate_instead_of_overflowing() {
        let mut table = RedTable::default();
        let huge = u64::MAX - 10;

        table.ingest(&export(10, [huge, 0, 0], [huge, 0, 0]));

        let row = &table.rows()[0];
        assert_eq!(row["requests"], u64::MAX);
        assert!(row["p50_ms"].as_f64().is_some(), "{row}");
    }

    #[test]
    fn points_that_are_not_the_services_histograms_are_left_out() {
        let mut table = RedTable::default();
        let mut request = export(10, [1, 0, 0], [1, 0, 0]);
        let Some(metric::Data::Histogram(histogram)) =
            &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            unreachable!("export makes a histogram");
        };
        // Far too many buckets; counts that do not match the bounds.
        histogram.data_points[0].bucket_counts = vec![1; MAX_BUCKETS + 1];
        histogram.data_points[0].explicit_bounds = vec![0.5; MAX_BUCKETS];
        histogram.data_points[1].bucket_counts = vec![1; 2];

        table.ingest(&request);

        assert!(table.rows().is_empty(), "{:?}", table.rows());
    }

    #[test]
    fn a_long_service_name_is_cut() {
        let resource = Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue("é".repeat(MAX_SERVICE_NAME_BYTES)),
            )],
            ..Resource::default()
        };

        let name = service_name(Some(&resource));

        assert!(
            name.len() <= MAX_SERVICE_NAME_BYTES + '…'.len_utf8(),
            "{}",
            name.len()
        );
        assert!(name.ends_with('…'));
    }
}
