//! Starting the real binaries: `hermes`, `sophia` and `apollo serve` as child processes on port 0
//! (their address read from the one `listening on` line), `apollo` commands run to completion,
//! all exporting OTLP/gRPC to a receiver inside the test. Every child is killed when its handle
//! is dropped, also when a test fails; then its stderr is printed. With `TEST_LOG=1` the
//! children's stderr is shown as it comes.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use foundry::testing::OtlpReceiver;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

/// How long a service may take to print its `listening on` line (debug builds on a busy machine).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one `apollo` command may run before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a test waits for the spans of a trace to arrive.
pub const TRACE_DEADLINE: Duration = Duration::from_secs(20);
/// The batch processor's delay for the services: short, so spans arrive while the test waits.
pub const FAST_SCHEDULE_DELAY_MS: u64 = 100;

/// Environment variables a child must not inherit from the machine: the test sets what it needs.
const INHERITED_PREFIXES: [&str; 7] = [
    "OTEL_",
    "LOGOS_",
    "RUST_LOG",
    "LOG_FORMAT",
    "HERMES_",
    "SOPHIA_",
    "APOLLO_",
];

/// Whether the children's logs are shown as they come (`TEST_LOG=1`).
pub fn test_log() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|value| !value.is_empty() && value != "0")
}

/// The workspace root: this crate's parent directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives inside the workspace")
        .to_path_buf()
}

/// Where cargo puts the workspace's build output: `CARGO_TARGET_DIR` when set, else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The path of a service binary, built (or rebuilt when stale) once per test run.
///
/// `cargo test` builds the binaries of the package under test only, not those of other
/// workspace members, so the harness asks cargo itself; when they are fresh this takes a moment.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_services)
        .as_ref()
        .unwrap_or_else(|error| {
            panic!("cannot build the services: {error}");
        });
    dir.join(name)
}

fn build_services() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["build", "-p", "hermes", "-p", "sophia", "-p", "apollo"])
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    if !test_log() {
        command.arg("--quiet");
    }
    let output = command
        .output()
        .map_err(|error| format!("cannot run {cargo}: {error}"))?;
    if test_log() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    if !output.status.success() {
        return Err(format!(
            "`{cargo} build -p hermes -p sophia -p apollo` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let dir = target_dir().join("debug");
    for name in ["hermes", "sophia", "apollo"] {
        if !dir.join(name).is_file() {
            return Err(format!("{} was not built", dir.join(name).display()));
        }
    }
    Ok(dir)
}

/// The telemetry environment of a child: OTLP/gRPC to `endpoint`, nothing else inherited.
#[derive(Clone, Debug)]
pub struct Export {
    vars: Vec<(String, String)>,
}

impl Export {
    /// Export to `endpoint` (`http://127.0.0.1:PORT`) with a short batch delay.
    pub fn to(endpoint: &str) -> Self {
        Self {
            vars: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
                (
                    "OTEL_BSP_SCHEDULE_DELAY".into(),
                    FAST_SCHEDULE_DELAY_MS.to_string(),
                ),
            ],
        }
    }

    /// No export at all (`apollo serve` as the receiver: its own spans reach its window
    /// in-process).
    pub fn none() -> Self {
        Self { vars: Vec::new() }
    }

    /// Sets (or replaces) one variable.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    /// Leaves one variable unset.
    pub fn without(mut self, key: &str) -> Self {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    fn apply(&self, command: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if INHERITED_PREFIXES.iter().any(|p| key.starts_with(p)) {
                command.env_remove(key.as_ref());
            }
        }
        command.envs(self.vars.iter().map(|(k, v)| (k, v)));
    }
}

/// What a child wrote to stderr (and to stdout after its first line), for failure reports.
type Log = Arc<Mutex<String>>;

fn collect(name: &'static str, stream: impl AsyncRead + Unpin + Send + 'static, log: Log) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if test_log() {
                eprintln!("[{name}] {line}");
            }
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// A running service: killed on drop.
#[derive(Debug)]
pub struct Service {
    /// `hermes`, `sophia` or `apollo`.
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    pub url: String,
    child: Child,
    log: Log,
}

impl Service {
    /// Starts `name` with `--port 0` and `args`, and waits for its `listening on` line.
    pub async fn start(name: &'static str, args: &[&str], export: &Export) -> Self {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0"]);
        export.apply(&mut command);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let log = Log::default();
        collect(name, child.stderr.take().expect("piped"), log.clone());
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(START_DEADLINE, stdout.read_line(&mut line)).await;
        let prefix = format!("{name} listening on ");
        let url = match read {
            Ok(Ok(_)) if line.starts_with(&prefix) => line[prefix.len()..].trim().to_owned(),
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let stderr = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
                panic!("{name} did not start (first stdout line {line:?}); its stderr:\n{stderr}");
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{name} printed a real address: {line:?}"
        );
        collect(name, stdout.into_inner(), log.clone());
        Self {
            name,
            url,
            child,
            log,
        }
    }

    /// Hermes, exporting as `export` says.
    pub async fn hermes(export: &Export) -> Self {
        Self::start("hermes", &[], export).await
    }

    /// Sophia, calling Hermes at `hermes_url`.
    pub async fn sophia(export: &Export, hermes_url: &str) -> Self {
        Self::start("sophia", &["--hermes-url", hermes_url], export).await
    }

    /// `apollo serve`, calling Sophia and Hermes at these URLs.
    pub async fn apollo_serve(export: &Export, sophia_url: &str, hermes_url: &str) -> Self {
        Self::start(
            "apollo",
            &[
                "--sophia-url",
                sophia_url,
                "--hermes-url",
                hermes_url,
                "serve",
            ],
            export,
        )
        .await
    }

    /// `host:port`, for a Prometheus scrape target.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit; returns the exit status (`None`
    /// if it was still running at the deadline) and how long it took.
    pub async fn terminate(&mut self, deadline: Duration) -> (Option<ExitStatus>, Duration) {
        let pid = self.child.id().expect("the service is still running");
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for the service"));
        (status, started.elapsed())
    }

    /// Kills the service (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() && !test_log() {
            eprintln!("--- {} stderr ---\n{}", self.name, self.log());
        }
    }
}

/// The outcome of one `apollo --json` command.
#[derive(Debug)]
pub struct ApolloRun {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// The one JSON object apollo printed.
    pub json: Value,
    /// What it wrote to stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl ApolloRun {
    /// The trace id apollo printed.
    pub fn trace_id(&self) -> String {
        let trace_id = self.json["trace_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "apollo printed a trace id: {self:#?}"
        );
        trace_id
    }

    /// The `result` of a successful command; panics with the output otherwise.
    pub fn result(&self) -> &Value {
        assert_eq!(self.code, Some(0), "apollo succeeded: {self:#?}");
        &self.json["result"]
    }
}

/// Runs `apollo --json <args>` against these services, exporting as `export` says.
pub async fn apollo(
    export: &Export,
    sophia_url: &str,
    hermes_url: &str,
    args: &[&str],
) -> ApolloRun {
    let mut command = Command::new(binary("apollo"));
    command
        .args([
            "--sophia-url",
            sophia_url,
            "--hermes-url",
            hermes_url,
            "--json",
        ])
        .args(args);
    export.apply(&mut command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(COMMAND_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("apollo {args:?} did not finish in {COMMAND_DEADLINE:?}"))
        .expect("apollo runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if test_log() {
        eprintln!("[apollo {args:?}] {stderr}");
    }
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("apollo {args:?} printed one JSON object ({error}): {stdout:?}\nstderr: {stderr}")
    });
    ApolloRun {
        code: output.status.code(),
        json,
        stderr,
        elapsed,
    }
}

/// Hermes and Sophia exporting to a receiver in this test, and apollo commands against them.
pub struct Stack {
    /// Where every process exports.
    pub receiver: OtlpReceiver,
    /// The children's telemetry environment.
    pub export: Export,
    /// Hermes.
    pub hermes: Service,
    /// Sophia, calling `hermes`.
    pub sophia: Service,
}

impl Stack {
    /// A receiver, then Hermes, then Sophia pointed at it.
    pub async fn start() -> Self {
        // Build first: it blocks this thread, which also runs the receiver.
        binary("hermes");
        let receiver = OtlpReceiver::start()
            .await
            .expect("the OTLP receiver starts");
        let export = Export::to(&receiver.grpc_endpoint());
        let hermes = Service::hermes(&export).await;
        let sophia = Service::sophia(&export, &hermes.url).await;
        Self {
            receiver,
            export,
            hermes,
            sophia,
        }
    }

    /// Runs `apollo --json <args>` against this stack.
    pub async fn apollo(&self, args: &[&str]) -> ApolloRun {
        apollo(&self.export, &self.sophia.url, &self.hermes.url, args).await
    }

    /// Starts `apollo serve` against this stack.
    pub async fn apollo_serve(&self) -> Service {
        Service::apollo_serve(&self.export, &self.sophia.url, &self.hermes.url).await
    }
}

/// A plain HTTP client for the tests' own requests (no tracing, no proxy).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A directory under the system's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&path).expect("a temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A name unique within this machine for a while: the time in nanoseconds and a counter.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
