//! `make profile`: the instructions one request costs in each telemetry mode, counted by
//! callgrind in the three services: `off`, `unsampled`, `local` (every span built, none
//! exported) and `on`, as in `make bench`.
//!
//! Time on these machines moves by 10 to 30 % from one run to the next; an instruction count
//! does not (the same binaries and requests give the same count whatever else runs), so it
//! shows a change to the request path that `make bench` cannot tell from noise. It is not time:
//! a cache miss or a lock wait costs no instructions, and under valgrind threads run one at a
//! time. The chain, the goal and the modes are `make bench`'s; requests go one at a time.
//! Each service runs under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed,
//! `PROFILE_REQUESTS` requests (default 300) are sent, and the counters are dumped. The
//! callgrind files stay under `target/profile/<mode>/` for `callgrind_annotate`.

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
        "profile: {requests} requests one at a time after {WARMUP_REQUESTS} of warm-up, each service under callgrind"
    );

    let mut totals = BTreeMap::new();
    let mut spans_per_request = 0.0;
    for mode in [Mode::Off, Mode::Unsampled, Mode::Local, Mode::On] {
        let dir = out.join(mode.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the profile folder can be made");
        let wrapper = vec![
            "valgrind".to_owned(),
            "--quiet".to_owned(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}/callgrind.%p", dir.display()),
        ];
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
        let by_service: Vec<(&str, u64)> = chain
            .services
            .iter()
            .map(|service| {
                let file = dir.join(format!("callgrind.{}.1", service.pid()));
                (service.name, instructions(&file) / requests as u64)
            })
            .collect();
        chain.stop().await;
        if mode == Mode::On {
            // Spans still queued arrive with the shutdown's flush; give the receiver a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            spans_per_request =
                (receiver.span_count() - spans_before) as f64 / (requests + WARMUP_REQUESTS) as f64;
        }
        let total: u64 = by_service.iter().map(|(_, count)| count).sum();
        let detail: Vec<String> = by_service
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        println!(
            "{:<10} {total:>9} instructions per request ({})",
            mode.name(),
            detail.join(", ")
        );
        totals.insert(mode, total as f64);
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
        "instructions: on_ratio={:.3} unsampled_ratio={:.3}",
        totals[&Mode::On] / off,
        totals[&Mode::Unsampled] / off
    );
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

/// The instruction total of a callgrind dump (its `totals:` line).
fn instructions(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("profile: cannot read {}: {error}", file.display()));
    text.lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("profile: no totals line in {}", file.display()))
}
