//! `make bench`: what telemetry costs end to end, as ratios measured in one run.
//!
//! The same release binaries run the chain Apollo API → Sophia `/plan` → Hermes in four modes:
//! `off` (`OTEL_SDK_DISABLED=true`), `on` (100 % sampling, OTLP/gRPC to a counting receiver in
//! this process), `unsampled` (`OTEL_TRACES_SAMPLER=always_off`) and `upstream` (as `on`, its spans
//! through the SDK's batch span processor and opentelemetry-otlp's exporter, to a receiver of its
//! own: what a service would otherwise wire; metrics go through the SDK's periodic reader in
//! every mode). A closed-loop load generator
//! with fixed concurrency drives `POST /api/plan`.
//!
//! The machines are noisy: the same mode measures 10 to 30 % apart from one minute to the next.
//! So the three chains run side by side for the whole benchmark, and the load moves from one to
//! the next every couple of seconds, in cycles (the order rotating each cycle), while the idle
//! chains wait. Each ratio is taken within a cycle, each mode against the `off` slice seconds
//! away from it, and the median over the cycles is reported with the spread of the cycles: slow
//! drift of the machine does not enter a ratio, and one disturbed cycle does not move the median.
//! The p99 one request at a time that a mode adds is paired the same way (each cycle's p99
//! against `off`'s, the median over the cycles), with the p99 of all the cycles pooled beside it.
//!
//! Per mode it reports throughput (median over cycles), CPU time per request of the three
//! services (user + system, from /proc), p50/p99 latency under load and one request at a time,
//! peak RSS, and spans received against spans expected. `BENCH_QUICK=1` runs a short version.

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
    cycles: usize,
    /// Load on each chain once, before the first cycle.
    warmup: Duration,
    /// One mode's share of a cycle under load.
    slice: Duration,
    concurrency: usize,
    /// One mode's share of a cycle one request at a time, so no queueing hides or inflates
    /// what telemetry adds to a request.
    latency_slice: Duration,
}

/// HTTP hops of one `/api/plan`: client → apollo → sophia → hermes (`/simple_nlp` and one
/// `/embed_text` per step of the fixed three-step goal).
const HOPS_PER_REQUEST: i128 = 6;

/// One mode's slice of one cycle.
#[derive(Debug, Default, Clone)]
struct Sample {
    requests: u64,
    seconds: f64,
    cpu_seconds: f64,
    cpu_seconds_by_service: BTreeMap<&'static str, f64>,
    latencies_us: Vec<u64>,
    /// Latencies of the one-at-a-time slice.
    single_latencies_us: Vec<u64>,
}

/// What one mode's chain did over the whole benchmark, besides its slices.
#[derive(Debug, Default)]
struct Totals {
    /// Every request sent, warm-up and failures included (each one's spans are expected).
    sent: u64,
    errors: u64,
    peak_rss_kib: BTreeMap<&'static str, u64>,
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

/// One chain, resident for the whole benchmark.
struct Running {
    chain: Chain,
    url: String,
    totals: Totals,
}

impl Running {
    async fn load(
        &mut self,
        client: &reqwest::Client,
        concurrency: usize,
        duration: Duration,
    ) -> Vec<u64> {
        let (latencies, errors) = load(client, &self.url, concurrency, duration).await;
        self.totals.sent += latencies.len() as u64 + errors;
        self.totals.errors += errors;
        latencies
    }

    /// One slice under load, measured.
    async fn slice(&mut self, client: &reqwest::Client, settings: &Settings) -> Sample {
        let cpu_before = self.chain.cpu_seconds();
        let started = Instant::now();
        let latencies_us = self
            .load(client, settings.concurrency, settings.slice)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds_by_service: BTreeMap<&'static str, f64> = self
            .chain
            .cpu_seconds()
            .into_iter()
            .map(|(name, after)| {
                (
                    name,
                    after - cpu_before.get(name).copied().unwrap_or_default(),
                )
            })
            .collect();
        Sample {
            requests: latencies_us.len() as u64,
            seconds,
            cpu_seconds: cpu_seconds_by_service.values().sum(),
            cpu_seconds_by_service,
            latencies_us,
            single_latencies_us: Vec::new(),
        }
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

/// Throughput and CPU time per request of `mode` over `off`, cycle by cycle: the median of the
/// cycles' ratios, and each cycle's ratio; and the p99 one request at a time that `mode` adds.
struct Paired {
    throughput: f64,
    cpu_per_request: f64,
    /// Each cycle's (throughput, CPU) ratio.
    cycles: Vec<(f64, f64)>,
    /// The median over the cycles of each cycle's p99 one request at a time minus `off`'s, in µs.
    single_p99_added_us: i128,
}

fn paired(off: &[Sample], mode: &[Sample]) -> Paired {
    let throughput = |s: &Sample| s.requests as f64 / s.seconds;
    let cpu = |s: &Sample| s.cpu_seconds / s.requests.max(1) as f64;
    let single_p99 = |s: &Sample| {
        let mut latencies = s.single_latencies_us.clone();
        latencies.sort_unstable();
        i128::from(percentile(&latencies, 99.0))
    };
    let cycles: Vec<(f64, f64)> = off
        .iter()
        .zip(mode)
        .map(|(off, mode)| (throughput(mode) / throughput(off), cpu(mode) / cpu(off)))
        .collect();
    let p99_added: Vec<f64> = off
        .iter()
        .zip(mode)
        .map(|(off, mode)| (single_p99(mode) - single_p99(off)) as f64)
        .collect();
    Paired {
        throughput: median(cycles.iter().map(|cycle| cycle.0).collect()),
        cpu_per_request: median(cycles.iter().map(|cycle| cycle.1).collect()),
        cycles,
        single_p99_added_us: median(p99_added).round() as i128,
    }
}

impl std::fmt::Display for Paired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lowest [middle half] highest, of the cycles' ratios.
        let spread = |pick: fn(&(f64, f64)) -> f64| {
            let mut values: Vec<f64> = self.cycles.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
            format!(
                "{:.3} [{:.3} {:.3}] {:.3}",
                at(0.0),
                at(0.25),
                at(0.75),
                at(1.0)
            )
        };
        write!(
            f,
            "throughput_ratio={:.3} cpu_per_request_ratio={:.3}",
            self.throughput, self.cpu_per_request
        )?;
        if !self.cycles.is_empty() {
            write!(
                f,
                " (over {} cycles, lowest [middle half] highest: throughput {}, cpu {})",
                self.cycles.len(),
                spread(|cycle| cycle.0),
                spread(|cycle| cycle.1)
            )?;
        }
        Ok(())
    }
}

/// The middle value; the mean of the two middle ones for an even count.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        len if len % 2 == 0 => (values[middle - 1] + values[middle]) / 2.0,
        _ => values[middle],
    }
}

/// Summary of one mode over all cycles.
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
}

fn summarise(samples: &[Sample], totals: &Totals) -> Summary {
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
        peak_rss_mib: totals
            .peak_rss_kib
            .iter()
            .map(|(name, kib)| (*name, *kib as f64 / 1024.0))
            .collect(),
        errors: totals.errors,
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let settings = if quick {
        Settings {
            cycles: 4,
            warmup: Duration::from_millis(700),
            slice: Duration::from_secs(1),
            concurrency: 8,
            latency_slice: Duration::from_millis(300),
        }
    } else {
        Settings {
            cycles: 20,
            warmup: Duration::from_secs(3),
            slice: Duration::from_secs(2),
            concurrency: 8,
            latency_slice: Duration::from_millis(500),
        }
    };
    let bin = release_dir();
    let receiver = OtlpReceiver::start_counting()
        .await
        .expect("receiver starts");
    // The upstream chain's spans are counted apart from the `on` chain's.
    let upstream_receiver = OtlpReceiver::start_counting()
        .await
        .expect("receiver starts");
    let spans_per_request = calibrate(&bin, &receiver).await;

    // BENCH_MODES=on or BENCH_MODES=off,unsampled (for profiling); the ratios need the first
    // four. `local` runs only on request.
    let default = [Mode::Off, Mode::On, Mode::Unsampled, Mode::Upstream];
    let modes: Vec<Mode> = match std::env::var("BENCH_MODES") {
        Ok(list) => [
            Mode::Off,
            Mode::On,
            Mode::Unsampled,
            Mode::Upstream,
            Mode::Local,
        ]
        .into_iter()
        .filter(|mode| list.split(',').any(|name| name.trim() == mode.name()))
        .collect(),
        Err(_) => default.to_vec(),
    };
    println!(
        "bench: {} cycles over {} chains side by side, each cycle {} s of load at concurrency {} and {} s one request at a time per chain, after {} s of warm-up each; {} spans per request",
        settings.cycles,
        modes.len(),
        settings.slice.as_secs_f64(),
        settings.concurrency,
        settings.latency_slice.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        spans_per_request
    );

    // Only the `on` chain exports spans to `receiver`: everything it gets from here on is its.
    let spans_before = receiver.span_count();
    let client = reqwest::Client::new();
    let mut running: BTreeMap<Mode, Running> = BTreeMap::new();
    for &mode in &modes {
        let endpoint = match mode {
            Mode::Upstream => upstream_receiver.grpc_endpoint(),
            _ => receiver.grpc_endpoint(),
        };
        let chain = Chain::start(&bin, &mode.env(&endpoint)).await;
        let url = format!("{}/api/plan", chain.apollo_url);
        let mut chain = Running {
            chain,
            url,
            totals: Totals::default(),
        };
        chain
            .load(&client, settings.concurrency, settings.warmup)
            .await;
        running.insert(mode, chain);
    }

    let mut samples: BTreeMap<Mode, Vec<Sample>> = BTreeMap::new();
    for cycle in 0..settings.cycles {
        // Rotate the order so no mode always comes first (or last) in a cycle, and reverse it
        // every other cycle so no mode always follows the same one (the `on` chain still sends
        // its last spans for a moment into the next slice).
        let mut order: Vec<Mode> = (0..modes.len())
            .map(|i| modes[(cycle / 2 + i) % modes.len()])
            .collect();
        if cycle % 2 == 1 {
            order.reverse();
        }
        let mut line = format!("  cycle {:>2}", cycle + 1);
        for &mode in &order {
            let chain = running.get_mut(&mode).expect("every mode runs");
            let sample = chain.slice(&client, &settings).await;
            line.push_str(&format!(
                "  {} {:.0} req/s {:.0} us",
                mode.name(),
                sample.requests as f64 / sample.seconds,
                sample.cpu_seconds * 1e6 / sample.requests.max(1) as f64,
            ));
            samples.entry(mode).or_default().push(sample);
        }
        for &mode in &order {
            let chain = running.get_mut(&mode).expect("every mode runs");
            let single = chain.load(&client, 1, settings.latency_slice).await;
            if let Some(sample) = samples.get_mut(&mode).and_then(|s| s.last_mut()) {
                sample.single_latencies_us = single;
            }
        }
        println!("{line}");
    }

    // SIGTERM flushes what is still queued: everything sent must then have arrived.
    let mut totals: BTreeMap<Mode, Totals> = BTreeMap::new();
    for (mode, chain) in running {
        let mut chain_totals = chain.totals;
        chain_totals.peak_rss_kib = chain.chain.stop().await;
        totals.insert(mode, chain_totals);
    }
    let spans_received = receiver.span_count() - spans_before;
    let expected = |mode: Mode| {
        totals.get(&mode).map_or(0, |chain| {
            usize::try_from(chain.sent).unwrap_or(usize::MAX) * spans_per_request
        })
    };
    let spans_expected = expected(Mode::On);

    println!();
    println!("(the table pools every cycle of a mode; the ratios below pair each cycle's slices)");
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
        .map(|(mode, s)| (*mode, summarise(s, &totals[mode])))
        .collect();
    for (mode, s) in &summaries {
        let rss: Vec<String> = s.peak_rss_mib.values().map(|m| format!("{m:.1}")).collect();
        let cpu: Vec<String> = s
            .cpu_us_by_service
            .values()
            .map(|us| format!("{us:.0}"))
            .collect();
        let (received, expected) = match mode {
            Mode::On => (spans_received, spans_expected),
            Mode::Upstream => (upstream_receiver.span_count(), expected(Mode::Upstream)),
            Mode::Off | Mode::Unsampled | Mode::Local => (0, 0),
        };
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
            received,
            expected
        );
    }
    if !modes.contains(&Mode::On) && spans_received != 0 {
        println!("spans received without an `on` chain: {spans_received}");
    }
    let Some(off) = summaries.get(&Mode::Off) else {
        return;
    };
    for (mode, what) in [
        (Mode::Unsampled, "unsampled"),
        (Mode::Upstream, "upstream"),
        (Mode::Local, "local (spans built, not exported)"),
    ] {
        if let Some(summary) = summaries.get(&mode) {
            println!(
                "{}: {}",
                mode.name(),
                paired(&samples[&Mode::Off], &samples[&mode])
            );
            println!(
                "cpu added per request: {what} {:.0} us",
                summary.cpu_us_per_request - off.cpu_us_per_request
            );
        }
    }
    let Some(on) = summaries.get(&Mode::On) else {
        return;
    };
    let on_paired = paired(&samples[&Mode::Off], &samples[&Mode::On]);
    println!("on: {on_paired}");
    // In absolute terms too: a ratio also moves when the baseline does.
    let on_added = on.cpu_us_per_request - off.cpu_us_per_request;
    println!(
        "cpu added per request: on {:.0} us ({:.2} us per span)",
        on_added,
        on_added / spans_per_request as f64,
    );
    // The target: foundry's pipeline adds at most half the CPU the SDK's adds, in the same run.
    let mut share = None;
    let upstream_paired = summaries
        .get(&Mode::Upstream)
        .map(|upstream| {
            let upstream_added = upstream.cpu_us_per_request - off.cpu_us_per_request;
            share = Some(on_added / upstream_added);
            println!(
                "cpu added per request against upstream: on {on_added:.0} us, upstream {upstream_added:.0} us, a share of {:.2} (target at most 0.50)",
                on_added / upstream_added
            );
            paired(&samples[&Mode::Off], &samples[&Mode::Upstream])
        });
    // Paired like the ratios: a cycle that the machine disturbed would otherwise make the p99 of
    // all the cycles pooled, which is printed beside it.
    let single_p99_added = on_paired.single_p99_added_us;
    println!(
        "latency (one request at a time): p99 added {} us over {} hops, {} us per hop (the median of the cycles' differences; pooled over the cycles: {} us); under load p99 added {} us",
        single_p99_added,
        HOPS_PER_REQUEST,
        single_p99_added / HOPS_PER_REQUEST,
        i128::from(on.single_p99_us) - i128::from(off.single_p99_us),
        i128::from(on.p99_us) - i128::from(off.p99_us)
    );
    // A short run's ratios spread by tenths: it may "meet" a target by chance.
    let label = if quick {
        "targets (BENCH_QUICK=1: a check, not a measurement)"
    } else {
        "targets"
    };
    println!(
        "{label}: {}",
        targets(&Measured {
            share,
            on: (on_paired.throughput, on_paired.cpu_per_request),
            unsampled: summaries
                .contains_key(&Mode::Unsampled)
                .then(|| paired(&samples[&Mode::Off], &samples[&Mode::Unsampled]))
                .map(|unsampled| (unsampled.throughput, unsampled.cpu_per_request)),
            p99_added_per_hop_us: single_p99_added / HOPS_PER_REQUEST,
            spans: (spans_received, spans_expected),
        })
    );
    println!(
        "overhead: throughput_ratio={:.3} cpu_per_request_ratio={:.3} p99_added_us={} spans_received={}/{}{}",
        on_paired.throughput,
        on_paired.cpu_per_request,
        single_p99_added,
        spans_received,
        spans_expected,
        upstream_paired.map_or(String::new(), |upstream| format!(
            " upstream_cpu_per_request_ratio={:.3}",
            upstream.cpu_per_request
        ))
    );
}

/// What the run measured against the targets.
struct Measured {
    /// The CPU `on` adds per request over what `upstream` adds.
    share: Option<f64>,
    /// `on`'s throughput and CPU ratios.
    on: (f64, f64),
    /// `unsampled`'s throughput and CPU ratios.
    unsampled: Option<(f64, f64)>,
    p99_added_per_hop_us: i128,
    /// Spans received and expected.
    spans: (usize, usize),
}

/// Each target of the benchmark, what this run measured, and whether it is met.
fn targets(measured: &Measured) -> String {
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let mut parts = Vec::new();
    if let Some(share) = measured.share {
        parts.push(format!(
            "cpu added {share:.2} of upstream's (at most 0.50: {})",
            verdict(share <= 0.50)
        ));
    }
    let (throughput, cpu) = measured.on;
    parts.push(format!(
        "cpu ratio {cpu:.3} (at most 1.15: {})",
        verdict(cpu <= 1.15)
    ));
    parts.push(format!(
        "throughput ratio {throughput:.3} (at least 0.90: {})",
        verdict(throughput >= 0.90)
    ));
    if let Some((throughput, cpu)) = measured.unsampled {
        parts.push(format!(
            "unsampled throughput ratio {throughput:.3}, cpu ratio {cpu:.3} (at least 0.98: {})",
            verdict(throughput >= 0.98 && 1.0 / cpu >= 0.98)
        ));
    }
    parts.push(format!(
        "p99 added {} us a hop (at most 50: {})",
        measured.p99_added_per_hop_us,
        verdict(measured.p99_added_per_hop_us <= 50)
    ));
    let (received, expected) = measured.spans;
    parts.push(format!(
        "spans received {received} of {expected} ({})",
        verdict(received == expected)
    ));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_line_says_which_are_met() {
        let measured = Measured {
            share: Some(0.5),
            on: (0.89, 1.15),
            unsampled: Some((0.99, 1.03)),
            p99_added_per_hop_us: 50,
            spans: (10, 11),
        };

        let line = targets(&measured);

        assert_eq!(
            line,
            "cpu added 0.50 of upstream's (at most 0.50: met); \
             cpu ratio 1.150 (at most 1.15: met); \
             throughput ratio 0.890 (at least 0.90: not met); \
             unsampled throughput ratio 0.990, cpu ratio 1.030 (at least 0.98: not met); \
             p99 added 50 us a hop (at most 50: met); \
             spans received 10 of 11 (not met)"
        );
    }
}
