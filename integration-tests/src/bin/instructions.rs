//! `make profile`: the instructions one request costs in each telemetry mode, counted by
//! callgrind in the three services: `off`, `unsampled`, `local` (every span built, none
//! exported), `on` and `upstream`, as in `make bench`.
//!
//! Time on these machines moves by 10 to 30 % from one run to the next; an instruction count
//! does not (the same binaries and requests give the same count whatever else runs), so it
//! shows a change to the request path that `make bench` cannot tell from noise. It is not time:
//! a cache miss or a lock wait costs no instructions, and under valgrind threads run one at a
//! time. The chain, the goal and the modes are `make bench`'s; requests go one at a time.
//! Each service runs under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed,
//! `PROFILE_REQUESTS` requests (default 300) are sent, and the counters are dumped. The
//! callgrind files stay under `target/profile/<mode>/` for `callgrind_annotate`.
//!
//! It ends with where the instructions that `on` adds go: the parts every exported span, metric
//! and propagated context needs (the SDK's spans, their export, the metric records, the W3C
//! headers), read from the inclusive counts of `callgrind_annotate`, and what is left (the
//! `tracing` spans and their bridge, foundry's own layers).
//!
//! `PROFILE_CACHE=1` adds callgrind's cache simulation (about twice as slow): besides the
//! instructions it prints estimated cycles, the usual weighting of instructions and
//! simulated cache misses (`Ir + 10 x L1 misses + 100 x last-level misses`). It is still one core
//! and no hardware, but it counts what code and data size cost, which instructions alone miss.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use foundry::testing::OtlpReceiver;
use integration_tests::chain::{Chain, GOAL, Mode, release_dir};

const WARMUP_REQUESTS: usize = 50;

#[tokio::main]
async fn main() {
    let requests: usize = std::env::var("PROFILE_REQUESTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(300);
    let cache = std::env::var("PROFILE_CACHE").is_ok_and(|value| value == "1");
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("profile: valgrind is not installed (Debian: apt-get install valgrind)");
        std::process::exit(2);
    }
    let bin = release_dir();
    let out = bin.join("../profile");
    let receiver = OtlpReceiver::start_counting()
        .await
        .expect("receiver starts");
    println!(
        "profile: {requests} requests one at a time after {WARMUP_REQUESTS} of warm-up, each service under callgrind{}",
        if cache {
            " with its cache simulation"
        } else {
            ""
        }
    );

    let mut totals = BTreeMap::new();
    let mut cycles = BTreeMap::new();
    let mut files: BTreeMap<Mode, Vec<std::path::PathBuf>> = BTreeMap::new();
    let mut spans_per_request = 0.0;
    for mode in [
        Mode::Off,
        Mode::Unsampled,
        Mode::Local,
        Mode::On,
        Mode::Upstream,
    ] {
        let dir = out.join(mode.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the profile folder can be made");
        let mut wrapper = vec![
            "valgrind".to_owned(),
            "--quiet".to_owned(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}/callgrind.%p", dir.display()),
        ];
        if cache {
            // The last level as a 32 MiB L3 (a server core's share would be less): valgrind's
            // own guess from the host's caches is not a size a real cache has, and says so.
            wrapper.extend(["--cache-sim=yes", "--LL=33554432,16,64"].map(str::to_owned));
        }
        let chain = Chain::start_under(&bin, &mode.env(&receiver.grpc_endpoint()), &wrapper).await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/plan", chain.apollo_url);
        let spans_before = receiver.span_count();
        post(&client, &url, WARMUP_REQUESTS).await;
        for service in &chain.services {
            callgrind_control("--zero", service.pid());
        }
        post(&client, &url, requests).await;
        for service in &chain.services {
            callgrind_control("--dump", service.pid());
        }
        let dumps: Vec<std::path::PathBuf> = chain
            .services
            .iter()
            .map(|service| dir.join(format!("callgrind.{}.1", service.pid())))
            .collect();
        let by_service: Vec<(&str, Counts)> = chain
            .services
            .iter()
            .zip(&dumps)
            .map(|(service, file)| (service.name, Counts::read(file).per(requests as u64)))
            .collect();
        files.insert(mode, dumps);
        chain.stop().await;
        if mode == Mode::On {
            // Spans still queued arrive with the shutdown's flush; give the receiver a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            spans_per_request =
                (receiver.span_count() - spans_before) as f64 / (requests + WARMUP_REQUESTS) as f64;
        }
        let total: u64 = by_service.iter().map(|(_, count)| count.instructions).sum();
        let detail: Vec<String> = by_service
            .iter()
            .map(|(name, count)| format!("{name} {}", count.instructions))
            .collect();
        println!(
            "{:<10} {total:>9} instructions per request ({})",
            mode.name(),
            detail.join(", ")
        );
        totals.insert(mode, total as f64);
        if cache {
            let estimated: u64 = by_service
                .iter()
                .map(|(_, count)| count.estimated_cycles)
                .sum();
            println!(
                "{:<10} {estimated:>9} estimated cycles per request",
                mode.name()
            );
            cycles.insert(mode, estimated as f64);
        }
    }

    let off = totals[&Mode::Off];
    let added = |mode: Mode| totals[&mode] - off;
    println!(
        "added per request: on {:.0} ({:.0} per span, {spans_per_request:.1} spans), local (not exported) {:.0}, unsampled {:.0}",
        added(Mode::On),
        added(Mode::On) / spans_per_request.max(1.0),
        added(Mode::Local),
        added(Mode::Unsampled),
    );
    println!(
        "instructions: on_ratio={:.3} unsampled_ratio={:.3} upstream_ratio={:.3}",
        totals[&Mode::On] / off,
        totals[&Mode::Unsampled] / off,
        totals[&Mode::Upstream] / off
    );
    breakdown(
        &files[&Mode::On],
        requests as f64,
        off,
        added(Mode::On),
        added(Mode::On) - added(Mode::Local),
    );
    if cache {
        let off = cycles[&Mode::Off];
        println!(
            "estimated cycles: on_ratio={:.3} unsampled_ratio={:.3} local_ratio={:.3}",
            cycles[&Mode::On] / off,
            cycles[&Mode::Unsampled] / off,
            cycles[&Mode::Local] / off
        );
    }
}

/// Functions whose inclusive count is one part of what `on` adds (their names as
/// `callgrind_annotate` prints them, without the file: by the module that defines them, not the
/// path a `pub use` gives them).
const SDK_SPAN_START: &str = "<opentelemetry_sdk::trace::tracer::SdkTracer as opentelemetry::trace::tracer::Tracer>::build_with_context";
const SDK_SPAN_END: &str = "opentelemetry_sdk::trace::span::Span::ensure_ended_and_exported";
const SPAN_PROCESSOR_END: &str = "<foundry::span_export::OtlpSpanProcessor as opentelemetry_sdk::trace::span_processor::SpanProcessor>::on_end";
const METRIC_RECORD: &str = "<opentelemetry_sdk::metrics::internal::histogram::Histogram<T> as opentelemetry_sdk::metrics::internal::aggregate::Measure<T>>::call";
const PROPAGATORS: [&str; 4] = [
    "<foundry::propagation::W3cTraceContextPropagator as opentelemetry::propagation::text_map_propagator::TextMapPropagator>::extract_with_context",
    "<foundry::propagation::W3cTraceContextPropagator as opentelemetry::propagation::text_map_propagator::TextMapPropagator>::inject_context",
    "<foundry::propagation::W3cBaggagePropagator as opentelemetry::propagation::text_map_propagator::TextMapPropagator>::extract_with_context",
    "<foundry::propagation::W3cBaggagePropagator as opentelemetry::propagation::text_map_propagator::TextMapPropagator>::inject_context",
];

/// Prints where the instructions `on` adds to a request go: first the parts every exported
/// span, metric record and propagated context costs (the floor of any instrumentation on this
/// SDK), then the rest.
fn breakdown(dumps: &[std::path::PathBuf], requests: f64, off: f64, added: f64, export: f64) {
    let mut inclusive: BTreeMap<String, f64> = BTreeMap::new();
    for dump in dumps {
        let output = Command::new("callgrind_annotate")
            .args([
                "--inclusive=yes",
                "--threshold=100",
                "--auto=no",
                "--show=Ir",
                "--show-percs=no",
            ])
            .arg(dump)
            .output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            other => {
                println!("callgrind_annotate failed ({other:?}): no breakdown");
                return;
            }
        };
        for (function, count) in annotated(&String::from_utf8_lossy(&output.stdout)) {
            *inclusive.entry(function).or_default() += count / requests;
        }
    }
    let missing: Vec<&str> = [
        SDK_SPAN_START,
        SDK_SPAN_END,
        SPAN_PROCESSOR_END,
        METRIC_RECORD,
    ]
    .into_iter()
    .chain(PROPAGATORS)
    .filter(|function| !inclusive.contains_key(*function))
    .collect();
    if !missing.is_empty() {
        // A renamed or fully inlined function would silently count as nothing.
        println!("no breakdown: not in the profile: {}", missing.join(", "));
        return;
    }
    let count = |function: &str| inclusive.get(function).copied().unwrap_or_default();
    let sdk_spans = count(SDK_SPAN_START) + count(SDK_SPAN_END) - count(SPAN_PROCESSOR_END);
    let metrics = count(METRIC_RECORD);
    let propagation: f64 = PROPAGATORS.iter().map(|function| count(function)).sum();
    let floor = sdk_spans + export + metrics + propagation;
    println!("where the instructions `on` adds to a request go ({added:.0}):");
    println!("  SDK spans (sampler, ids, data, end; export not included) {sdk_spans:>7.0}");
    println!("  export (on minus local: spans encoded, batched and sent)  {export:>7.0}");
    println!("  metric records (each reader's aggregation) {metrics:>7.0}");
    println!("  W3C trace context and baggage, extract and inject         {propagation:>7.0}");
    println!(
        "  = the spans, their export, the metrics and the headers     {floor:>7.0}  ({:.1} % of off)",
        floor / off * 100.0
    );
    println!(
        "  the rest: `tracing` spans and their bridge, foundry's layers {:>5.0}  ({:.1} % of off)",
        added - floor,
        (added - floor) / off * 100.0
    );
}

/// `function -> inclusive count` from `callgrind_annotate --inclusive=yes --show=Ir
/// --show-percs=no` (lines `count file:function [object]`), the file and the object left out.
/// A function is printed once per source file its code comes from (code inlined from another
/// crate is a line of its own). It counts at its largest line, an approximation from below:
/// adding the lines up counts calls made from inlined code twice (the SDK's span end then came
/// out smaller than the span processor it calls).
fn annotated(text: &str) -> BTreeMap<String, f64> {
    let mut functions: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some((count, name)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<f64>() else {
            continue;
        };
        let name = name.trim();
        let name = name.rsplit_once(" [").map_or(name, |(name, _)| name);
        let function = name.split_once(':').map_or(name, |(_, function)| function);
        let entry = functions.entry(function.to_owned()).or_default();
        *entry = entry.max(count);
    }
    functions
}

/// Posts the benchmark's goal `count` times, one at a time; a failed request ends the run, as
/// its count would be wrong.
async fn post(client: &reqwest::Client, url: &str, count: usize) {
    let body = serde_json::json!({ "goal": GOAL });
    for _ in 0..count {
        let status = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map(|response| response.status());
        assert!(
            matches!(status, Ok(reqwest::StatusCode::CREATED)),
            "profile: a request failed: {status:?}"
        );
    }
}

/// Runs `callgrind_control <action> <pid>`, which returns once the service has done it.
fn callgrind_control(action: &str, pid: u32) {
    let status = Command::new("callgrind_control")
        .args([action, &pid.to_string()])
        .output()
        .map(|output| output.status);
    assert!(
        matches!(status, Ok(status) if status.success()),
        "profile: callgrind_control {action} {pid} failed: {status:?}"
    );
}

/// What a callgrind dump counted, from its `events:` and `totals:` lines.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    instructions: u64,
    /// `Ir + 10 x (I1mr + D1mr + D1mw) + 100 x (ILmr + DLmr + DLmw)`, the usual cycle estimate
    /// from callgrind's counts; the instructions alone without the cache simulation.
    estimated_cycles: u64,
}

impl Counts {
    fn read(file: &Path) -> Self {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|error| panic!("profile: cannot read {}: {error}", file.display()));
        let field = |prefix: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("profile: no {prefix} line in {}", file.display()))
        };
        let events: Vec<&str> = field("events:").split_whitespace().collect();
        let totals: Vec<u64> = field("totals:")
            .split_whitespace()
            .map(|count| count.parse().unwrap_or(0))
            .collect();
        let count = |event: &str| {
            events
                .iter()
                .position(|name| *name == event)
                .and_then(|index| totals.get(index).copied())
                .unwrap_or(0)
        };
        let instructions = count("Ir");
        Self {
            instructions,
            estimated_cycles: instructions
                + 10 * (count("I1mr") + count("D1mr") + count("D1mw"))
                + 100 * (count("ILmr") + count("DLmr") + count("DLmw")),
        }
    }

    fn per(self, requests: u64) -> Self {
        Self {
            instructions: self.instructions / requests,
            estimated_cycles: self.estimated_cycles / requests,
        }
    }
}
