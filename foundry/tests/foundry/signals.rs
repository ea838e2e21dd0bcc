//! The per-signal variables end to end: each test runs the child service of [`crate::export`]
//! with `OTEL_<SIGNAL>_EXPORTER`, `OTEL_EXPORTER_OTLP_<SIGNAL>_*` or
//! `OTEL_EXPORTER_OTLP_COMPRESSION` set, and asserts where each signal arrived, by which path and
//! compressed how, at real OTLP receivers over gRPC and HTTP.

use std::time::Duration;

use foundry::testing::{OtlpReceiver, ReceivedExport, new_traceparent, silent_address};

use crate::export::{child_service, child_value, is_child, run_child};

/// Runs the child service as test `name` with `env` and a sampled request; returns its trace id
/// and the child's output.
async fn run(name: &str, env: &[(&str, &str)]) -> (String, std::process::Output) {
    let (trace_id, traceparent) = new_traceparent(true);
    let mut env = env.to_vec();
    env.push(("CHILD_TRACEPARENT", &traceparent));
    let output = run_child(name, &env).await;
    assert_eq!(child_value(&output, "status"), "200");
    (trace_id, output)
}

/// The signals `receiver` got, each with how it came: (signal, transport, path, encoding).
fn arrivals(receiver: &OtlpReceiver) -> Vec<(&'static str, &'static str, String, Option<String>)> {
    let mut arrivals: Vec<_> = receiver
        .exports()
        .into_iter()
        .map(
            |ReceivedExport {
                 signal,
                 transport,
                 path,
                 encoding,
             }| { (signal, transport, path, encoding) },
        )
        .collect();
    arrivals.sort();
    arrivals.dedup();
    arrivals
}

#[tokio::test]
async fn each_signal_goes_where_its_own_variables_say() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: the generic endpoint is one receiver's gRPC port; the traces have their own
    // HTTP endpoint at another receiver, with a path of their own; the logs are off.
    let generic = OtlpReceiver::start().await.unwrap();
    let own = OtlpReceiver::start().await.unwrap();
    let traces_endpoint = format!("{}/ingest/tenant-a/traces", own.http_endpoint());

    // Act
    let (trace_id, _) = run(
        "signals::each_signal_goes_where_its_own_variables_say",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &generic.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ],
    )
    .await;

    // Assert: the spans reached the traces' own endpoint at its path as given (nothing
    // appended), the metrics the generic endpoint, and no log record went anywhere.
    let spans = own
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(
        arrivals(&own),
        vec![("traces", "http", "/ingest/tenant-a/traces".to_owned(), None)]
    );
    assert_eq!(
        arrivals(&generic),
        vec![("metrics", "grpc", String::new(), None)]
    );
    assert!(generic.spans().is_empty());
    assert_eq!(generic.log_record_count() + own.log_record_count(), 0);
}

#[tokio::test]
async fn gzip_over_http_with_the_generic_endpoint_s_paths() {
    if is_child() {
        return child_service().await;
    }
    // Arrange: a generic HTTP endpoint with a path of its own, under which each signal's
    // `v1/<signal>` goes.
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = format!("{}/otlp", receiver.http_endpoint());

    // Act
    let (trace_id, _) = run(
        "signals::gzip_over_http_with_the_generic_endpoint_s_paths",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    )
    .await;

    // Assert: every request gzip-compressed, and decoded whole by the receiver.
    let gzip = Some("gzip".to_owned());
    assert_eq!(
        arrivals(&receiver),
        vec![
            ("logs", "http", "/otlp/v1/logs".to_owned(), gzip.clone()),
            (
                "metrics",
                "http",
                "/otlp/v1/metrics".to_owned(),
                gzip.clone()
            ),
            ("traces", "http", "/otlp/v1/traces".to_owned(), gzip),
        ]
    );
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].name, "GET /items/{id}");
    assert!(receiver.log_record_count() > 0);
}

#[tokio::test]
async fn gzip_over_grpc_and_a_signal_s_own_headers_and_compression() {
    if is_child() {
        return child_service().await;
    }
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();

    // Act: gzip for all but the metrics, which say `none`; the traces have headers of their
    // own, which replace the generic ones.
    let (trace_id, _) = run(
        "signals::gzip_over_grpc_and_a_signal_s_own_headers_and_compression",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-logos-tenant=acme"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-logos-signal=traces"),
        ],
    )
    .await;

    // Assert
    let gzip = Some("gzip".to_owned());
    assert_eq!(
        arrivals(&receiver),
        vec![
            ("logs", "grpc", String::new(), gzip.clone()),
            ("metrics", "grpc", String::new(), None),
            ("traces", "grpc", String::new(), gzip),
        ]
    );
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(
        receiver.trace_export_header("x-logos-signal").as_deref(),
        Some("traces")
    );
    assert_eq!(receiver.trace_export_header("x-logos-tenant"), None);
}

#[tokio::test]
async fn export_timeouts_bound_exports_to_a_collector_that_never_answers() {
    if is_child() {
        return child_service().await;
    }
    // Each case sends one signal to a collector that never answers. With the default
    // timeouts (10 s, 30 s) shutdown waits out its share of the 3 s bound on it: 1.5 s for
    // spans or logs, all 3 s for metrics (measured); with 200 ms, about 200 ms.
    let silent = format!("http://{}", silent_address());
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &silent),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "200"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &silent),
            ("OTEL_BSP_EXPORT_TIMEOUT", "200"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &silent),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "200"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", &silent),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "200"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", &silent),
            ("OTEL_BLRP_EXPORT_TIMEOUT", "200"),
        ],
    ];
    for env in cases {
        // Act
        let (_, output) = run(
            "signals::export_timeouts_bound_exports_to_a_collector_that_never_answers",
            env,
        )
        .await;

        // Assert
        assert_eq!(child_value(&output, "finished"), "true", "{env:?}");
        let shutdown_ms: u64 = child_value(&output, "shutdown_ms").parse().unwrap();
        assert!(
            shutdown_ms < 1_000,
            "{env:?}: shutdown took {shutdown_ms} ms"
        );
    }
}

#[tokio::test]
async fn the_span_attribute_count_limit_drops_attributes_past_it() {
    if is_child() {
        return child_service().await;
    }
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();

    // Act
    let (trace_id, _) = run(
        "signals::the_span_attribute_count_limit_drops_attributes_past_it",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3"),
        ],
    )
    .await;

    // Assert: the server span has more than three attributes, and keeps its first three.
    let spans = receiver
        .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let attributes: Vec<&str> = spans[0].attributes.keys().map(String::as_str).collect();
    assert_eq!(attributes.len(), 3, "{attributes:?}");
    assert_eq!(spans[0].str("http.request.method"), Some("GET"));
}

#[tokio::test]
async fn otel_traces_exporter_console_prints_spans_and_exports_nothing() {
    if is_child() {
        return child_service().await;
    }
    // Arrange
    let receiver = OtlpReceiver::start().await.unwrap();

    // Act: the generic endpoint is set, but the traces name the console alone.
    let (trace_id, output) = run(
        "signals::otel_traces_exporter_console_prints_spans_and_exports_nothing",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_TRACES_EXPORTER", "console"),
        ],
    )
    .await;

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("span foundry-child ") && line.contains(&trace_id)),
        "{stderr}"
    );
    assert!(receiver.spans().is_empty());
    assert!(arrivals(&receiver).iter().any(|a| a.0 == "metrics"));
}

#[tokio::test]
async fn the_attribute_value_length_limit_cuts_string_values() {
    if is_child() {
        return child_service().await;
    }
    let name = "signals::the_attribute_value_length_limit_cuts_string_values";
    // The span's own limit wins over the general one.
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "/items/{id}"),
        (&[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")], "/ite"),
        (
            &[
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4"),
                ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "6"),
            ],
            "/items",
        ),
    ];
    for (limits, route) in cases {
        // Arrange
        let receiver = OtlpReceiver::start().await.unwrap();
        let endpoint = receiver.grpc_endpoint();
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        env.extend_from_slice(limits);

        // Act
        let (trace_id, _) = run(name, &env).await;

        // Assert: strings are cut, numbers are not.
        let spans = receiver
            .wait_for_trace(&trace_id, Duration::from_secs(5), |s| !s.is_empty())
            .await;
        assert_eq!(spans.len(), 1, "{limits:?}: {spans:#?}");
        assert_eq!(spans[0].str("http.route"), Some(route), "{limits:?}");
        assert_eq!(spans[0].int("http.response.status_code"), Some(200));
    }
}

#[tokio::test]
async fn the_log_schedule_delay_holds_log_records_until_it_passes() {
    if is_child() {
        return child_service().await;
    }
    let name = "signals::the_log_schedule_delay_holds_log_records_until_it_passes";
    for delay in ["100", "60000"] {
        // Arrange: a child that runs on until told to stop.
        let receiver = OtlpReceiver::start().await.unwrap();
        let endpoint = receiver.grpc_endpoint();
        let (trace_id, traceparent) = new_traceparent(true);
        let stop = std::env::temp_dir().join(format!("foundry-stop-{trace_id}"));
        let stop_file = stop.to_string_lossy().into_owned();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BLRP_SCHEDULE_DELAY", delay),
            ("CHILD_TRACEPARENT", traceparent.as_str()),
            ("CHILD_STOP_FILE", stop_file.as_str()),
        ];

        // Act: the child's spans arrive (100 ms), then a second passes before it stops.
        let (output, before_stop) = tokio::join!(run_child(name, &env), async {
            let _ = receiver
                .wait_for_trace(&trace_id, Duration::from_secs(10), |s| !s.is_empty())
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before_stop = receiver.log_record_count();
            std::fs::write(&stop, b"").unwrap();
            before_stop
        });
        let _ = std::fs::remove_file(&stop);

        // Assert: with a short delay the records came while the child ran; with a long one,
        // only with the flush at shutdown.
        assert_eq!(child_value(&output, "status"), "200");
        if delay == "100" {
            assert!(before_stop > 0, "records while running");
        } else {
            assert_eq!(before_stop, 0, "no record before the delay");
            assert!(receiver.log_record_count() > 0, "records at shutdown");
        }
    }
}

#[tokio::test]
async fn the_metrics_temporality_preference_makes_histograms_deltas() {
    if is_child() {
        return child_service().await;
    }
    let name = "signals::the_metrics_temporality_preference_makes_histograms_deltas";
    for (preference, delta) in [(None, false), (Some("delta"), true)] {
        // Arrange
        let receiver = OtlpReceiver::start().await.unwrap();
        let endpoint = receiver.grpc_endpoint();
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        if let Some(preference) = preference {
            env.push((
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                preference,
            ));
        }

        // Act: one request; shutdown exports the metrics.
        run(name, &env).await;

        // Assert
        assert_eq!(
            receiver.histogram_is_delta("http.server.request.duration"),
            Some(delta),
            "{preference:?}"
        );
    }
}

/// The child of the event and link limits: one span with five events of six attributes (four
/// fields, and the `level` and `target` the bridge adds) and four links of three attributes,
/// then shutdown.
fn span_with_events_and_links() {
    use opentelemetry::{
        KeyValue,
        trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState},
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let telemetry = crate::export::init_child_telemetry();
    let work = tracing::info_span!("work");
    for link in 1..=4_u64 {
        let linked = SpanContext::new(
            TraceId::from(u128::from(link)),
            SpanId::from(link),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        work.add_link_with_attributes(
            linked,
            vec![
                KeyValue::new("a", 1),
                KeyValue::new("b", 2),
                KeyValue::new("c", 3),
            ],
        );
    }
    work.in_scope(|| {
        for event in 0..5 {
            tracing::info!(a = 1, b = 2, c = 3, d = 4, "event {event}");
        }
    });
    drop(work);
    println!("CHILD finished={}", telemetry.shutdown());
}

#[tokio::test]
async fn the_event_and_link_limits_bound_what_a_span_keeps() {
    if is_child() {
        return span_with_events_and_links();
    }
    let name = "signals::the_event_and_link_limits_bound_what_a_span_keeps";
    // (the limits, how many attributes each kept event has, and each kept link)
    type Limits<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Limits, Vec<usize>, Vec<usize>); 3] = [
        (&[], vec![6; 5], vec![3; 4]),
        (
            &[
                ("OTEL_SPAN_EVENT_COUNT_LIMIT", "2"),
                ("OTEL_SPAN_LINK_COUNT_LIMIT", "3"),
            ],
            vec![6; 2],
            vec![3; 3],
        ),
        (
            &[
                ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "2"),
                ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "1"),
            ],
            vec![2; 5],
            vec![1; 4],
        ),
    ];
    for (limits, events, links) in cases {
        // Arrange
        let receiver = OtlpReceiver::start().await.unwrap();
        let endpoint = receiver.grpc_endpoint();
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        env.extend_from_slice(limits);

        // Act
        let output = run_child(name, &env).await;

        // Assert
        assert_eq!(child_value(&output, "finished"), "true", "{limits:?}");
        let spans = receiver.spans();
        let work = spans
            .iter()
            .find(|span| span.name == "work")
            .unwrap_or_else(|| panic!("{limits:?}: {spans:#?}"));
        assert_eq!(work.event_attribute_counts, events, "{limits:?}: {work:#?}");
        assert_eq!(work.link_attribute_counts, links, "{limits:?}: {work:#?}");
    }
}

/// A child of the log tests: telemetry, the records `log` writes, then shutdown.
fn log_child(log: impl FnOnce()) {
    let telemetry = crate::export::init_child_telemetry();
    log();
    println!("CHILD finished={}", telemetry.shutdown());
}

/// Runs test `name` as a log child exporting its logs alone to a new receiver, with `env` added;
/// returns the receiver and the child's output once it has stopped.
async fn run_log_child(name: &str, env: &[(&str, &str)]) -> (OtlpReceiver, std::process::Output) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.grpc_endpoint();
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ];
    all.extend_from_slice(env);
    let output = run_child(name, &all).await;
    (receiver, output)
}

#[tokio::test]
async fn the_log_batch_size_bounds_each_log_export() {
    if is_child() {
        return log_child(|| {
            for record in 0..7 {
                tracing::info!(record, "a log record");
            }
        });
    }
    let name = "signals::the_log_batch_size_bounds_each_log_export";
    // (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, the largest export allowed)
    for (batch, largest) in [(None, 7), (Some("2"), 2)] {
        // Arrange
        let env: Vec<(&str, &str)> = batch
            .map(|batch| ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", batch))
            .into_iter()
            .collect();

        // Act
        let (receiver, output) = run_log_child(name, &env).await;

        // Assert: all seven arrive, in exports no larger than the batch.
        assert_eq!(child_value(&output, "finished"), "true", "{batch:?}");
        let sizes = receiver.log_export_sizes();
        assert_eq!(sizes.iter().sum::<usize>(), 7, "{batch:?}: {sizes:?}");
        assert!(
            sizes.iter().all(|size| *size <= largest),
            "{batch:?}: {sizes:?}"
        );
        // (With the default batch all seven fit one export; with two, it takes four at least.)
        if batch.is_some() {
            assert!(sizes.len() >= 4, "{batch:?}: {sizes:?}");
        }
    }
}

#[tokio::test]
async fn the_log_record_limits_cut_values_and_drop_attributes() {
    if is_child() {
        return log_child(|| {
            tracing::info!(
                detail = "abcdefgh",
                first = 1_i64,
                second = 2_i64,
                "a log record"
            );
        });
    }
    let name = "signals::the_log_record_limits_cut_values_and_drop_attributes";
    // (the limits, the value `detail` keeps, whether `second` is kept)
    type Limits = &'static [(&'static str, &'static str)];
    let cases: [(Limits, &str, bool); 4] = [
        (&[], "abcdefgh", true),
        (&[("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")], "abcd", true),
        (
            &[
                ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4"),
                ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "6"),
            ],
            "abcdef",
            true,
        ),
        (
            &[
                ("OTEL_ATTRIBUTE_COUNT_LIMIT", "1"),
                ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "2"),
            ],
            "abcdefgh",
            false,
        ),
    ];
    for (limits, detail, second) in cases {
        // Act
        let (receiver, output) = run_log_child(name, limits).await;

        // Assert: the string is cut to the record's limit, the attributes past the count dropped;
        // the body and the trace context are kept.
        assert_eq!(child_value(&output, "finished"), "true", "{limits:?}");
        let records = receiver.log_records();
        let record = records
            .iter()
            .find(|record| record.contains("a log record"))
            .unwrap_or_else(|| panic!("{limits:?}: {records:#?}"));
        assert!(
            record.contains(&format!("StringValue(\"{detail}\")")),
            "{limits:?}: {record}"
        );
        assert!(record.contains("key: \"first\""), "{limits:?}: {record}");
        assert_eq!(
            record.contains("key: \"second\""),
            second,
            "{limits:?}: {record}"
        );
        assert!(
            record.contains("severity_text: \"INFO\""),
            "{limits:?}: {record}"
        );
    }
}

#[tokio::test]
async fn a_full_log_queue_drops_what_does_not_fit() {
    if is_child() {
        return log_child(|| {
            for record in 0..50 {
                tracing::info!(record, "one of fifty");
            }
        });
    }
    let name = "signals::a_full_log_queue_drops_what_does_not_fit";
    for queue in [None, Some("5")] {
        // Arrange
        let env: Vec<(&str, &str)> = queue
            .map(|queue| ("OTEL_BLRP_MAX_QUEUE_SIZE", queue))
            .into_iter()
            .collect();

        // Act: fifty records in a few hundred microseconds, far faster than exports go.
        let (receiver, output) = run_log_child(name, &env).await;

        // Assert: the default queue holds them all; a queue of five (and so batches of five)
        // cannot, and the SDK counts what it dropped.
        assert_eq!(child_value(&output, "finished"), "true", "{queue:?}");
        let received = receiver.log_export_sizes().iter().sum::<usize>();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if queue.is_none() {
            assert_eq!(received, 50, "{stderr}");
        } else {
            let dropped: usize = stderr
                .split("dropped_logs_count=")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("no count of dropped records: {stderr}"));
            assert!(received >= 5 && dropped > 0, "{received}, {dropped}");
            assert_eq!(received + dropped, 50, "every record received or counted");
        }
    }
}
