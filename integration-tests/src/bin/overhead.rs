//! `make bench`: what telemetry costs end to end, as ratios measured in one run.
//!
//! The same release binaries run the chain Apollo API → Sophia `/plan` → Hermes in three modes,
//! interleaved over several rounds so machine drift hits every mode alike: `off`
//! (`OTEL_SDK_DISABLED=true`), `on` (100 % sampling, OTLP/gRPC to a counting receiver in this
//! process) and `unsampled` (`OTEL_TRACES_SAMPLER=always_off`). A closed-loop load generator with
//! fixed concurrency drives `POST /api/plan`. Per mode it reports throughput (median over
//! rounds), CPU time per request of the three services (from /proc), p50/p99 latency, peak RSS,
//! and spans received against spans expected. The ratios are taken round by round, each mode
//! against the `off` run of the same round, and the median of the rounds is reported (with
//! their range): the runs of one round are seconds apart, so drift of the machine over the
//! minutes of the benchmark does not enter a ratio. `BENCH_QUICK=1` runs a short version.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use foundry::testing::OtlpReceiver;
use integration_tests::chain::{Chain, GOAL, Mode, release_dir};

struct Settings {
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    concurrency: usize,
    /// The latency phase: one request at a time, so no queueing hides or inflates what
    /// telemetry adds to a request.
    latency: Duration,
}

/// HTTP hops of one `/api/plan`: client → apollo → sophia → hermes (`/simple_nlp` and one
/// `/embed_text` per step of the fixed three-step goal).
const HOPS_PER_REQUEST: i128 = 6;

/// One mode's run in one round.
#[derive(Debug, Default, Clone)]
struct Sample {
    requests: u64,
    errors: u64,
    seconds: f64,
    cpu_seconds: f64,
    cpu_seconds_by_service: BTreeMap<&'static str, f64>,
    latencies_us: Vec<u64>,
    /// Latencies of the one-at-a-time phase.
    single_latencies_us: Vec<u64>,
    peak_rss_kib: BTreeMap<&'static str, u64>,
    spans_received: usize,
    spans_expected: usize,
}

/// Closed loop: `concurrency` workers, each sending the next request when the last answered.
async fn load(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    duration: Duration,
) -> (Vec<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let body = serde_json::json!({ "goal": GOAL });
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, stop) =
            (client.clone(), url.to_owned(), body.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                        let _ = response.bytes().await;
                        latencies
                            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((mut l, e)) = worker.await {
            latencies.append(&mut l);
            errors += e;
        }
    }
    (latencies, errors)
}

async fn run_mode(
    bin: &Path,
    mode: Mode,
    receiver: &OtlpReceiver,
    spans_per_request: usize,
    settings: &Settings,
) -> Sample {
    let client = reqwest::Client::new();
    let before_spans = receiver.span_count();
    let chain = Chain::start(bin, &mode.env(&receiver.grpc_endpoint())).await;
    let url = format!("{}/api/plan", chain.apollo_url);
    let (warm, warm_errors) = load(&client, &url, settings.concurrency, settings.warmup).await;

    let cpu_before = chain.cpu_seconds();
    let started = Instant::now();
    let (latencies_us, errors) = load(&client, &url, settings.concurrency, settings.measure).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds_by_service: BTreeMap<&'static str, f64> = chain
        .cpu_seconds()
        .into_iter()
        .map(|(name, after)| {
            (
                name,
                after - cpu_before.get(name).copied().unwrap_or_default(),
            )
        })
        .collect();
    let cpu_seconds = cpu_seconds_by_service.values().sum();
    let (single_latencies_us, single_errors) = load(&client, &url, 1, settings.latency).await;
    // SIGTERM flushes what is still queued: everything sent must then have arrived.
    let peak_rss_kib = chain.stop().await;

    let sent = (warm.len() + latencies_us.len() + single_latencies_us.len()) as u64
        + warm_errors
        + errors
        + single_errors;
    let spans_expected = match mode {
        Mode::On => usize::try_from(sent).unwrap_or(usize::MAX) * spans_per_request,
        Mode::Off | Mode::Unsampled | Mode::Local => 0,
    };
    Sample {
        requests: latencies_us.len() as u64,
        errors,
        seconds,
        cpu_seconds,
        cpu_seconds_by_service,
        latencies_us,
        single_latencies_us,
        peak_rss_kib,
        spans_received: receiver.span_count() - before_spans,
        spans_expected,
    }
}

/// Spans one `/api/plan` request produces, counted on a traced chain.
async fn calibrate(bin: &Path, receiver: &OtlpReceiver) -> usize {
    let before = receiver.span_count();
    let chain = Chain::start(bin, &Mode::On.env(&receiver.grpc_endpoint())).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/plan", chain.apollo_url))
        .json(&serde_json::json!({ "goal": GOAL }))
        .send()
        .await
        .expect("calibration request");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::CREATED,
        "calibration request failed"
    );
    chain.stop().await;
    receiver.span_count() - before
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Throughput and CPU time per request of `mode` over `off`, round by round: the median of the
/// rounds' ratios, and each round's ratio.
struct Paired {
    throughput: f64,
    cpu_per_request: f64,
    rounds: Vec<(f64, f64)>,
}

fn paired(off: &[Sample], mode: &[Sample]) -> Paired {
    let throughput = |s: &Sample| s.requests as f64 / s.seconds;
    let cpu = |s: &Sample| s.cpu_seconds / s.requests.max(1) as f64;
    let rounds: Vec<(f64, f64)> = off
        .iter()
        .zip(mode)
        .map(|(off, mode)| (throughput(mode) / throughput(off), cpu(mode) / cpu(off)))
        .collect();
    Paired {
        throughput: median(rounds.iter().map(|round| round.0).collect()),
        cpu_per_request: median(rounds.iter().map(|round| round.1).collect()),
        rounds,
    }
}

impl std::fmt::Display for Paired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |pick: fn(&(f64, f64)) -> f64| {
            self.rounds
                .iter()
                .map(|round| format!("{:.3}", pick(round)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(
            f,
            "throughput_ratio={:.3} cpu_per_request_ratio={:.3} (rounds: throughput {}; cpu {})",
            self.throughput,
            self.cpu_per_request,
            list(|round| round.0),
            list(|round| round.1)
        )
    }
}

/// The middle value; the mean of the two middle ones for an even count (two quick rounds).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        len if len % 2 == 0 => (values[middle - 1] + values[middle]) / 2.0,
        _ => values[middle],
    }
}

/// Summary of one mode over all rounds.
struct Summary {
    throughput: f64,
    cpu_us_per_request: f64,
    cpu_us_by_service: BTreeMap<&'static str, f64>,
    p50_us: u64,
    p99_us: u64,
    single_p50_us: u64,
    single_p99_us: u64,
    peak_rss_mib: BTreeMap<&'static str, f64>,
    errors: u64,
    spans_received: usize,
    spans_expected: usize,
}

fn summarise(samples: &[Sample]) -> Summary {
    let mut latencies: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let mut single: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.single_latencies_us.iter().copied())
        .collect();
    single.sort_unstable();
    let requests: u64 = samples.iter().map(|s| s.requests).sum();
    let cpu: f64 = samples.iter().map(|s| s.cpu_seconds).sum();
    let mut peak_rss_mib = BTreeMap::new();
    for sample in samples {
        for (name, kib) in &sample.peak_rss_kib {
            let entry = peak_rss_mib.entry(*name).or_insert(0.0f64);
            *entry = entry.max(*kib as f64 / 1024.0);
        }
    }
    let mut cpu_us_by_service = BTreeMap::new();
    for sample in samples {
        for (name, seconds) in &sample.cpu_seconds_by_service {
            *cpu_us_by_service.entry(*name).or_insert(0.0) +=
                seconds * 1e6 / requests.max(1) as f64;
        }
    }
    Summary {
        cpu_us_by_service,
        throughput: median(
            samples
                .iter()
                .map(|s| s.requests as f64 / s.seconds)
                .collect(),
        ),
        cpu_us_per_request: if requests == 0 {
            0.0
        } else {
            cpu * 1e6 / requests as f64
        },
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        single_p50_us: percentile(&single, 50.0),
        single_p99_us: percentile(&single, 99.0),
        peak_rss_mib,
        errors: samples.iter().map(|s| s.errors).sum(),
        spans_received: samples.iter().map(|s| s.spans_received).sum(),
        spans_expected: samples.iter().map(|s| s.spans_expected).sum(),
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let settings = if quick {
        Settings {
            latency: Duration::from_millis(700),
            rounds: 2,
            warmup: Duration::from_millis(700),
            measure: Duration::from_secs(2),
            concurrency: 8,
        }
    } else {
        Settings {
            rounds: 5,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(7),
            concurrency: 8,
            latency: Duration::from_secs(3),
        }
    };
    let bin = release_dir();
    let receiver = OtlpReceiver::start_counting()
        .await
        .expect("receiver starts");
    let spans_per_request = calibrate(&bin, &receiver).await;
    println!(
        "bench: {} rounds x 3 modes, {} s at concurrency {} after {} s warm-up, then {} s one at a time; {} spans per request",
        settings.rounds,
        settings.measure.as_secs_f64(),
        settings.concurrency,
        settings.warmup.as_secs_f64(),
        settings.latency.as_secs_f64(),
        spans_per_request
    );

    // BENCH_MODES=on or BENCH_MODES=off,unsampled (for profiling); the ratios need the first
    // three. `local` runs only on request.
    let default = [Mode::Off, Mode::On, Mode::Unsampled];
    let modes: Vec<Mode> = match std::env::var("BENCH_MODES") {
        Ok(list) => [Mode::Off, Mode::On, Mode::Unsampled, Mode::Local]
            .into_iter()
            .filter(|mode| list.split(',').any(|name| name.trim() == mode.name()))
            .collect(),
        Err(_) => default.to_vec(),
    };
    let mut samples: BTreeMap<Mode, Vec<Sample>> = BTreeMap::new();
    for round in 0..settings.rounds {
        // Rotate the order so no mode always runs first (or last) in a round.
        for i in 0..modes.len() {
            let mode = modes[(round + i) % modes.len()];
            let sample = run_mode(&bin, mode, &receiver, spans_per_request, &settings).await;
            println!(
                "  round {} {:<9} {:>8.1} req/s  {:>7.0} us cpu/req  spans {}/{}",
                round + 1,
                mode.name(),
                sample.requests as f64 / sample.seconds,
                sample.cpu_seconds * 1e6 / sample.requests.max(1) as f64,
                sample.spans_received,
                sample.spans_expected
            );
            samples.entry(mode).or_default().push(sample);
        }
    }

    println!();
    println!(
        "{:<10} {:>10} {:>12} {:>20} {:>15} {:>15} {:>7}  {:<20} spans",
        "mode",
        "req/s",
        "cpu us/req",
        "(apollo/hermes/soph)",
        "p50/p99 loaded",
        "p50/p99 single",
        "errors",
        "peak RSS MiB (a/h/s)"
    );
    let summaries: BTreeMap<Mode, Summary> = samples
        .iter()
        .map(|(mode, s)| (*mode, summarise(s)))
        .collect();
    for (mode, s) in &summaries {
        let rss: Vec<String> = s.peak_rss_mib.values().map(|m| format!("{m:.1}")).collect();
        let cpu: Vec<String> = s
            .cpu_us_by_service
            .values()
            .map(|us| format!("{us:.0}"))
            .collect();
        println!(
            "{:<10} {:>10.1} {:>12.0} {:>20} {:>15} {:>15} {:>7}  {:<20} {}/{}",
            mode.name(),
            s.throughput,
            s.cpu_us_per_request,
            cpu.join("/"),
            format!("{}/{}", s.p50_us, s.p99_us),
            format!("{}/{}", s.single_p50_us, s.single_p99_us),
            s.errors,
            rss.join(" / "),
            s.spans_received,
            s.spans_expected
        );
    }
    if let (Some(off), Some(local)) = (summaries.get(&Mode::Off), summaries.get(&Mode::Local)) {
        println!(
            "local: {}",
            paired(&samples[&Mode::Off], &samples[&Mode::Local])
        );
        println!(
            "cpu added per request: local (spans built, not exported) {:.0} us",
            local.cpu_us_per_request - off.cpu_us_per_request
        );
    }
    let (Some(off), Some(on), Some(unsampled)) = (
        summaries.get(&Mode::Off),
        summaries.get(&Mode::On),
        summaries.get(&Mode::Unsampled),
    ) else {
        return;
    };
    let single_p99_added = i128::from(on.single_p99_us) - i128::from(off.single_p99_us);
    println!(
        "unsampled: {}",
        paired(&samples[&Mode::Off], &samples[&Mode::Unsampled])
    );
    let on_paired = paired(&samples[&Mode::Off], &samples[&Mode::On]);
    println!("on: {on_paired}");
    // In absolute terms too: a ratio also moves when the baseline does.
    let on_added = on.cpu_us_per_request - off.cpu_us_per_request;
    println!(
        "cpu added per request: on {:.0} us ({:.2} us per span), unsampled {:.0} us",
        on_added,
        on_added / spans_per_request as f64,
        unsampled.cpu_us_per_request - off.cpu_us_per_request
    );
    println!(
        "latency (one request at a time): p99 added {} us over {} hops, {} us per hop; under load p99 added {} us",
        single_p99_added,
        HOPS_PER_REQUEST,
        single_p99_added / HOPS_PER_REQUEST,
        i128::from(on.p99_us) - i128::from(off.p99_us)
    );
    println!(
        "overhead: throughput_ratio={:.3} cpu_per_request_ratio={:.3} p99_added_us={} spans_received={}/{}",
        on_paired.throughput,
        on_paired.cpu_per_request,
        single_p99_added,
        on.spans_received,
        on.spans_expected
    );
}
