//! The chain the benchmarks and the soak run: the release binaries of Hermes, Sophia and the
//! Apollo API, started as separate processes in one telemetry mode, and stopped with SIGTERM.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The goal every benchmark request posts: three steps, so one `/api/plan` is six HTTP hops.
pub const GOAL: &str = "Pick up the red block, then place it on the table and report the result.";

/// A telemetry mode of the same binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// `OTEL_SDK_DISABLED=true`: no provider, propagator or exporter (the baseline).
    Off,
    /// 100 % sampling, every span exported over OTLP/gRPC.
    On,
    /// `OTEL_TRACES_SAMPLER=always_off`, exporter configured.
    Unsampled,
    /// As `on`, exporting spans through the SDK's batch span processor and opentelemetry-otlp's
    /// exporter (`LOGOS_TELEMETRY_PIPELINE=upstream`).
    Upstream,
    /// 100 % sampling and no exporter: every span is built, none is encoded or sent (what
    /// export adds is `on` minus this). Only on request (`BENCH_MODES=...,local`).
    Local,
}

impl Mode {
    /// The mode's name in reports and `BENCH_MODES`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Unsampled => "unsampled",
            Self::Upstream => "upstream",
            Self::Local => "local",
        }
    }

    /// The environment of the services in this mode, exporting to `endpoint`.
    pub fn env(self, endpoint: &str) -> Vec<(&'static str, String)> {
        match self {
            Self::Off => vec![("OTEL_SDK_DISABLED", "true".into())],
            Self::On => vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.into())],
            Self::Unsampled => vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.into()),
                ("OTEL_TRACES_SAMPLER", "always_off".into()),
            ],
            Self::Upstream => vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.into()),
                ("LOGOS_TELEMETRY_PIPELINE", "upstream".into()),
            ],
            Self::Local => Vec::new(),
        }
    }
}

/// The URL a service's first line gives (`<name> listening on http://...`), read from its
/// piped stdout within 60 s (long enough for a start under a profiler).
pub async fn listening_url(name: &str, stdout: tokio::process::ChildStdout) -> String {
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .unwrap_or_else(|| panic!("{name} printed no listening line"));
    line.split_once("listening on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("unexpected first line of {name}: {line}"))
}

/// A started service that is stopped with SIGTERM (and killed if it outlives that). Its log
/// (stderr) goes on to this process's stderr and is kept, for what it says about lost spans.
pub struct Service {
    /// The binary's name.
    pub name: &'static str,
    child: Child,
    /// Its base URL, from its listening line.
    pub url: String,
    log: tokio::task::JoinHandle<String>,
}

impl Service {
    /// Starts `bin/name args --port 0` with `env` only, under `wrapper` (a command and its
    /// arguments that run the binary, such as a profiler) when it is not empty, and waits for
    /// its listening line.
    pub async fn start(
        bin: &Path,
        name: &'static str,
        args: &[&str],
        env: &[(&'static str, String)],
        wrapper: &[String],
    ) -> Self {
        let binary = bin.join(name);
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(args)
            .args(["--port", "0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            // The span queue and batch settings may be tried from outside.
            .envs(std::env::vars().filter(|(key, _)| key.starts_with("OTEL_BSP_")))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|error| {
            panic!("cannot start {name}: {error} (build the release binaries first)")
        });
        // Read from the start: a child (or its wrapper, valgrind) that fills the pipe before its
        // listening line would block.
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let log = tokio::spawn(async move {
            let mut log = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        let url = listening_url(name, child.stdout.take().expect("piped stdout")).await;
        Self {
            name,
            child,
            url,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// user + system CPU seconds so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The command name may hold spaces: fields count from after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        ticks / clock_ticks_per_second()
    }

    /// Peak resident set size (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS:")
    }

    fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_default()
    }

    /// SIGTERM (the service flushes its telemetry), then SIGKILL if it has not exited within
    /// 8 s; returns everything it logged.
    pub async fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(8), self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "chain: {} did not exit after SIGTERM; killing it",
                self.name
            );
            let _ = self.child.kill().await;
        }
        // The reader ends with the pipe, once the process is gone.
        self.log.await.unwrap_or_default()
    }
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The three services of one mode.
pub struct Chain {
    /// hermes, sophia, apollo.
    pub services: Vec<Service>,
    /// Where the Apollo API listens.
    pub apollo_url: String,
}

impl Chain {
    /// Starts Hermes, then Sophia, then the Apollo API, each knowing the others' URLs.
    pub async fn start(bin: &Path, env: &[(&'static str, String)]) -> Self {
        Self::start_under(bin, env, &[]).await
    }

    /// [`Chain::start`], with every service run under `wrapper` (see [`Service::start`]).
    pub async fn start_under(
        bin: &Path,
        env: &[(&'static str, String)],
        wrapper: &[String],
    ) -> Self {
        let hermes = Service::start(bin, "hermes", &[], env, wrapper).await;
        let sophia =
            Service::start(bin, "sophia", &["--hermes-url", &hermes.url], env, wrapper).await;
        let apollo = Service::start(
            bin,
            "apollo",
            &[
                "--sophia-url",
                &sophia.url,
                "--hermes-url",
                &hermes.url,
                "serve",
            ],
            env,
            wrapper,
        )
        .await;
        let apollo_url = apollo.url.clone();
        Self {
            services: vec![hermes, sophia, apollo],
            apollo_url,
        }
    }

    /// CPU seconds so far, per service.
    pub fn cpu_seconds(&self) -> BTreeMap<&'static str, f64> {
        self.services
            .iter()
            .map(|service| (service.name, service.cpu_seconds()))
            .collect()
    }

    /// Stops the services, Apollo first; returns each one's peak RSS (KiB).
    pub async fn stop(self) -> BTreeMap<&'static str, u64> {
        let mut peaks = BTreeMap::new();
        for service in self.services.into_iter().rev() {
            peaks.insert(service.name, service.peak_rss_kib());
            service.stop().await;
        }
        peaks
    }
}

/// Where `cargo build --release` put the binaries.
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}
