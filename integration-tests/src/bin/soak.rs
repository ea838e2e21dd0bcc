//! `make soak`: the release chain (Hermes, Sophia, the Apollo API) under a steady load for
//! `SOAK_SECONDS` (default 600), exporting to an OTLP receiver that is stopped and started again
//! on a schedule (`SOAK_UP_SECONDS` up, `SOAK_DOWN_SECONDS` down), and an account of every span
//! at the end, on one line:
//!
//! `soak: requests=N errors=E spans_expected=X spans_received=R spans_reported_dropped=D rss_growth_mb=M`
//!
//! `X` is the requests times the spans one request makes (counted on a first request),
//! `R` what the receiver acknowledged over all its lives, `D` what the services' logs say they
//! lost or dropped (`spans_lost`, `spans_dropped`), and `M` the largest growth of a service's
//! resident memory from the end of the first up period to the end. The in-memory stores run with
//! small caps (`SOPHIA_HCG_CAPACITY`, `HERMES_VECTOR_CAPACITY` and Apollo's diagnostics window,
//! `APOLLO_DIAGNOSTICS_MAX_SPANS`, set here unless given) that the
//! first up period fills, so that `M` measures what grows past them, a leak, and not the stores
//! filling up to their production caps (minutes at this rate). The receiver runs in a child
//! process (this binary again, with `SOAK_RECEIVER_ADDRESS` set), so that stopping it closes
//! every connection, as a collector that goes away does.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use foundry::testing::OtlpReceiver;
use integration_tests::chain::{Chain, GOAL, Service, release_dir};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The child's variable: the address its receiver listens on.
const RECEIVER_ADDRESS: &str = "SOAK_RECEIVER_ADDRESS";

/// The stores' caps for the soak: at the default 40 requests a second (5 entities, 3
/// embeddings and 4 of Apollo's own spans each), full within the first up period of 20 s.
const STORE_CAPS: [(&str, &str); 3] = [
    ("SOPHIA_HCG_CAPACITY", "2000"),
    ("HERMES_VECTOR_CAPACITY", "1000"),
    ("APOLLO_DIAGNOSTICS_MAX_SPANS", "2000"),
];
/// Requests in flight at most.
const CONCURRENCY: usize = 16;

fn setting(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    let value = std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    value.clamp(*range.start(), *range.end())
}

fn main() {
    if let Ok(address) = std::env::var(RECEIVER_ADDRESS) {
        receiver_child(&address);
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(soak());
}

/// The receiver's process: counts spans, prints the count as it changes, and on SIGTERM stops
/// its runtime (closing every connection, so nothing more is acknowledged) before it prints the
/// final count.
fn receiver_child(address: &str) {
    let address: SocketAddr = address.parse().expect("a socket address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let receiver = runtime.block_on(async {
        // The port was this receiver's a moment ago: a bounded wait for it to be free.
        for _ in 0..100 {
            if let Ok(receiver) = OtlpReceiver::start_counting_at(address).await {
                return receiver;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{address} stays taken");
    });
    println!("ready");
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM");
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut last = usize::MAX;
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = ticker.tick() => {
                    let count = receiver.span_count();
                    if count != last {
                        println!("count {count}");
                        last = count;
                    }
                }
            }
        }
    });
    drop(runtime);
    println!("final {}", receiver.span_count());
}

/// One life of the receiver child.
struct Receiver {
    child: Child,
    /// Its latest count, and its final one once it has said it.
    count: Arc<AtomicUsize>,
    done: tokio::task::JoinHandle<Option<usize>>,
}

impl Receiver {
    async fn start(address: SocketAddr) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env(RECEIVER_ADDRESS, address.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the receiver starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines.next_line().await.ok().flatten();
        assert_eq!(ready.as_deref(), Some("ready"), "the receiver is ready");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let done = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(count) = line.strip_prefix("count ") {
                    seen.store(count.parse().unwrap_or_default(), Ordering::Relaxed);
                } else if let Some(count) = line.strip_prefix("final ") {
                    return count.parse().ok();
                }
            }
            None
        });
        Self { child, count, done }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// SIGTERM; returns its final count.
    async fn stop(mut self) -> usize {
        signal(self.child.id(), "-TERM");
        let _ = self.child.wait().await;
        let last = self.count();
        self.done.await.ok().flatten().unwrap_or(last)
    }
}

fn signal(pid: Option<u32>, signal: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    }
}

/// The sum of `spans_lost=N` and `spans_dropped=N` in a service's log.
fn reported_lost(log: &str) -> u64 {
    log.split_whitespace()
        .filter_map(|word| {
            word.strip_prefix("spans_lost=")
                .or_else(|| word.strip_prefix("spans_dropped="))
        })
        .filter_map(|count| count.parse::<u64>().ok())
        .sum()
}

/// Waits until `count` has not changed for `quiet` (at most `bound`), and returns it.
async fn settled(count: impl Fn() -> usize, quiet: Duration, bound: Duration) -> usize {
    let started = Instant::now();
    let mut last = count();
    let mut since = Instant::now();
    while started.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

async fn soak() {
    let seconds = setting("SOAK_SECONDS", 600, 10..=86_400);
    let up = setting("SOAK_UP_SECONDS", 20, 1..=3_600);
    let down = setting("SOAK_DOWN_SECONDS", 5, 1..=3_600);
    let rate = setting("SOAK_RPS", 40, 1..=10_000);
    let bin = release_dir();
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let endpoint = format!("http://{address}");
    println!(
        "soak: {seconds} s at {rate} requests/s; the receiver up {up} s, then down {down} s, in turn"
    );

    let mut receiver = Some(Receiver::start(address).await);
    let count = |receiver: &Option<Receiver>| receiver.as_ref().map_or(0, Receiver::count);
    // The stores' caps, unless given, beside the endpoint.
    let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone())];
    env.extend(STORE_CAPS.iter().map(|(key, default)| {
        (
            *key,
            std::env::var(key).unwrap_or_else(|_| (*default).to_owned()),
        )
    }));
    let chain = Chain::start(&bin, &env).await;
    let url = format!("{}/api/plan", chain.apollo_url);
    let body = serde_json::json!({ "goal": GOAL });
    let client = reqwest::Client::new();

    // The spans of one request: all of them have arrived once the count stays put for longer
    // than a batch's delay.
    let first = client.post(&url).json(&body).send().await;
    assert!(
        first.is_ok_and(|answer| answer.status().is_success()),
        "the chain answers"
    );
    let spans_per_request = settled(
        || count(&receiver),
        Duration::from_secs(7),
        Duration::from_secs(30),
    )
    .await;
    let before = count(&receiver);

    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut received_before = 0;
    let mut next_switch = started + Duration::from_secs(up);
    let mut warm_rss: Option<Vec<u64>> = None;
    while Instant::now() < end {
        if Instant::now() >= next_switch {
            match receiver.take() {
                Some(up) => {
                    if warm_rss.is_none() {
                        warm_rss = Some(chain.services.iter().map(Service::rss_kib).collect());
                    }
                    received_before += up.stop().await;
                    next_switch = Instant::now() + Duration::from_secs(down);
                }
                None => {
                    receiver = Some(Receiver::start(address).await);
                    next_switch = Instant::now() + Duration::from_secs(up);
                }
            }
        }
        ticker.tick().await;
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("never closed");
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let (requests, errors) = (Arc::clone(&requests), Arc::clone(&errors));
        tokio::spawn(async move {
            let answer = client.post(&url).json(&body).send().await;
            if !answer.is_ok_and(|answer| answer.status().is_success()) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            requests.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    let _all = permits
        .acquire_many(CONCURRENCY as u32)
        .await
        .expect("never closed");
    let receiver = match receiver {
        Some(receiver) => receiver,
        None => Receiver::start(address).await,
    };
    let end_rss: Vec<u64> = chain.services.iter().map(Service::rss_kib).collect();

    // SIGTERM flushes what each service still holds, Apollo first; then the receiver has all
    // it will get. What a loss was (the export's error, or a full queue) is in the line that
    // counts it.
    let mut reported_dropped = 0;
    for service in chain.services.into_iter().rev() {
        let name = service.name;
        let log = service.stop().await;
        for line in log.lines().filter(|line| reported_lost(line) > 0) {
            println!("soak: {name} reported: {line}");
        }
        reported_dropped += reported_lost(&log);
    }
    let _ = settled(
        || receiver.count(),
        Duration::from_secs(2),
        Duration::from_secs(20),
    )
    .await;
    let received = received_before + receiver.stop().await - before;

    let requests = requests.load(Ordering::Relaxed);
    let warm_rss = warm_rss.unwrap_or_else(|| end_rss.clone());
    // Each service's memory, warm and at the end: the in-memory stores (the HCG, the vector
    // store) grow until their bounds, which a short soak may not reach.
    let memory: Vec<String> = ["hermes", "sophia", "apollo"]
        .iter()
        .zip(warm_rss.iter().zip(&end_rss))
        .map(|(name, (warm, end))| {
            format!(
                "{name}={:.1}->{:.1}",
                *warm as f64 / 1024.0,
                *end as f64 / 1024.0
            )
        })
        .collect();
    println!("soak: rss_mb {}", memory.join(" "));
    let rss_growth_kib = warm_rss
        .iter()
        .zip(&end_rss)
        .map(|(warm, end)| end.saturating_sub(*warm))
        .max()
        .unwrap_or_default();
    println!(
        "soak: requests={requests} errors={} spans_expected={} spans_received={received} spans_reported_dropped={reported_dropped} rss_growth_mb={:.1}",
        errors.load(Ordering::Relaxed),
        requests * spans_per_request as u64,
        rss_growth_kib as f64 / 1024.0,
    );
}
