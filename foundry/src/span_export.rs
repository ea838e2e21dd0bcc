//! OTLP/gRPC span export that encodes each span to protobuf where it ends.
//!
//! Written here because the SDK's batch processor with opentelemetry-otlp's tonic exporter (0.32)
//! was the largest cost of a traced request (see BENCHMARKS.md). That path moves every
//! `SpanData` (hundreds of bytes, a dozen allocations) through a channel to the export thread,
//! which deep-copies each batch twice (to be able to retry, then inside
//! `group_spans_by_resource_and_scope`), builds a protobuf struct per span with an allocation
//! for every id, key and string, encodes it, and frees everything on a thread other than the one
//! that allocated it. [`OtlpSpanProcessor`] instead writes the span's protobuf bytes on the
//! thread that ends it, while its data is hot, appends them to the current batch, and frees the
//! span right there; the export thread only frames batches and hands them to tonic. The bytes
//! are the library's own (a test decodes them with opentelemetry-proto and compares them with
//! its conversion), the resource and scope messages are built by opentelemetry-proto itself.
//!
//! It keeps the batch processor's contract: a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, spans
//! beyond it are dropped and counted), batches of `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, a batch at
//! least every `OTEL_BSP_SCHEDULE_DELAY`, `force_flush`, and a shutdown that exports what is left
//! within its timeout; and the exporter's: a batch refused for a transient reason is sent again
//! with backoff, or after the pause the collector's `RetryInfo` asks for (not at shutdown), while
//! new spans queue behind it. When those retries are spent
//! and the collector is still away, the batch goes back to the head of the queue and is tried
//! again after a pause: a collector gone for less time than the queue takes to fill loses no
//! span. The queue holds no more than its size all along: while batches are out, new spans take
//! their room, and held batches that no longer fit are dropped (the oldest spans go first);
//! everything dropped is counted. OTLP/HTTP and TLS keep the SDK's processor and the upstream
//! exporter.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Array, Context, InstrumentationScope, KeyValue, Value,
    trace::{SpanId, SpanKind, Status, TraceState},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceResponse,
    common::v1::InstrumentationScope as ProtoScope, resource::v1::Resource as ProtoResource,
    trace::v1::SpanFlags,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};
use prost::{
    Message,
    bytes::{Buf, BufMut},
    encoding::{WireType, encoded_len_varint, key_len},
};
use tonic::{codegen::http::uri::PathAndQuery, metadata::MetadataMap, transport::Channel};
use tonic_types::StatusExt as _;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The longest pause a collector's `RetryInfo` is obeyed for (opentelemetry-otlp's cap too).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Export failures and dropped spans are logged at most this often, with counts.
const WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// How batches are formed, from the `OTEL_BSP_*` variables.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSettings {
    /// Spans waiting (not yet taken for export) before new ones are dropped.
    pub(crate) max_queue: usize,
    /// Spans per export.
    pub(crate) max_batch: usize,
    /// How often a batch leaves when fewer spans than a full batch end in between.
    pub(crate) schedule_delay: Duration,
    /// Whether a batch refused for a transient reason is sent again (see [`RETRY_DELAYS`]).
    pub(crate) retries: bool,
}

/// The pauses before each new attempt at a batch refused for a transient reason: the backoff of
/// opentelemetry-otlp's recommended policy (three retries from 100 ms, doubling), which the
/// OTLP spec asks for, plus up to 100 ms of jitter. As there, all attempts at a batch fit in one
/// export timeout; and none is made again at shutdown.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// How long batches wait, when their retries are spent and the collector is still away, before
/// they are tried again. They wait in the queue, so a collector that is gone for less time than
/// the queue takes to fill loses nothing; at shutdown each gets one more attempt.
const HOLD_PAUSE: Duration = Duration::from_secs(1);

/// The span processor for OTLP/gRPC export: see the module documentation.
pub(crate) struct OtlpSpanProcessor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for OtlpSpanProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSpanProcessor").finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: a full batch, a flush, or shutdown.
    work: Condvar,
    /// Wakes those waiting for a flush.
    flushed: Condvar,
    settings: BatchSettings,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: the bound on each attempt, and on all attempts at a batch.
    timeout: Duration,
    /// The collector, as the log names it (without credentials).
    endpoint: String,
}

#[derive(Default)]
struct State {
    current: Batch,
    full: VecDeque<Batch>,
    /// Spans in `current` and `full`.
    queued: usize,
    /// Spans the export thread has taken from the queue and not yet sent or put back.
    in_flight: usize,
    /// Shutdown gave up waiting for the export thread and said what it had not exported: the
    /// thread must not count those again if its calls end after all.
    abandoned: bool,
    /// Spans dropped because the queue was full, since the export thread last looked, and
    /// when the first and last of them were.
    dropped: u64,
    dropped_first: Option<SystemTime>,
    dropped_last: Option<SystemTime>,
    flush_requested: u64,
    flush_done: u64,
    /// The last flush whose round did not deliver every span (held for the collector, or
    /// failed), and how many it did not: a flush at or before it says so instead of succeeding.
    flush_undelivered: (u64, usize),
    shutdown: bool,
    /// The export thread has ended: nothing is exported any more, and nobody waits for it.
    stopped: bool,
    resource: Arc<EncodedResource>,
    /// Buffers of exported batches, emptied, for the next ones: in steady state a batch
    /// allocates nothing, and never grows a buffer under the lock.
    spare: Vec<Vec<u8>>,
}

impl State {
    /// Counts `spans` dropped for want of room in the queue, for the next report.
    fn drop_spans(&mut self, spans: usize) {
        self.dropped += spans as u64;
        // When, for the report: it may be said long after the queue has room again.
        let now = SystemTime::now();
        self.dropped_first.get_or_insert(now);
        self.dropped_last = Some(now);
    }
}

#[derive(Default)]
struct EncodedResource {
    /// `ResourceSpans.resource`.
    message: Vec<u8>,
    schema_url: String,
}

/// Spans already encoded, grouped by instrumentation scope.
#[derive(Default)]
pub(crate) struct Batch {
    /// Each scope with its spans, as `ScopeSpans.spans` fields.
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    spans: usize,
}

impl Batch {
    /// Appends a span, taking a buffer from `spare` for a scope new to the batch.
    fn push(
        &mut self,
        scope: &InstrumentationScope,
        encoded_span: &[u8],
        spare: &mut Vec<Vec<u8>>,
    ) {
        let index = match self.scopes.iter().position(|(known, _)| known == scope) {
            Some(index) => index,
            None => {
                self.scopes
                    .push((scope.clone(), spare.pop().unwrap_or_default()));
                self.scopes.len() - 1
            }
        };
        put_bytes_always(2, encoded_span, &mut self.scopes[index].1);
        self.spans += 1;
    }
}

thread_local! {
    /// Where a span is encoded before it joins a batch, outside the batch's lock.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl OtlpSpanProcessor {
    /// A processor exporting to `endpoint` (`http://host:port`). The channel connects on first
    /// use and runs on `runtime`. `timeout` bounds connecting and, again, each export call
    /// (the channel's own timeouts: no timer runs outside the runtime, so a runtime shut down
    /// under a stuck export ends it with an error rather than a panic).
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        metadata: MetadataMap,
        settings: BatchSettings,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let channel = {
            let _entered = runtime.enter();
            Channel::from_shared(endpoint.to_owned())
                .map_err(|error| error.to_string())?
                .timeout(timeout)
                .connect_timeout(timeout)
                .connect_lazy()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            flushed: Condvar::new(),
            settings,
            timeout,
            endpoint: crate::url::without_userinfo(endpoint),
        });
        let sender = Sender {
            client: tonic::client::Grpc::new(channel),
            metadata,
            runtime,
        };
        let thread = std::thread::Builder::new()
            .name("otel-spans".into())
            .spawn({
                let shared = shared.clone();
                move || export_loop(&shared, &sender)
            })
            .map_err(|error| error.to_string())?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Asks the export thread to send everything queued so far and waits until it has, or
    /// until `timeout`.
    fn flush_within(&self, timeout: Duration, shutdown: bool) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        if state.stopped {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if shutdown {
            state.shutdown = true;
        }
        state.flush_requested += 1;
        let wanted = state.flush_requested;
        self.shared.work.notify_one();
        while state.flush_done < wanted {
            if state.stopped {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // At shutdown the export thread, stuck on the collector, will never say it.
                let lost = (state.queued + state.in_flight) as u64 + state.dropped;
                if shutdown {
                    state.abandoned = true;
                    state.dropped = 0;
                }
                drop(state);
                if shutdown && lost > 0 {
                    tracing::error!(
                        name = "SpanExport.ExportError",
                        spans_lost = i64::try_from(lost).unwrap_or(i64::MAX),
                        "OTLP span export to {} did not finish within {} ms of shutdown: {lost} spans were not exported",
                        self.shared.endpoint,
                        timeout.as_millis(),
                    );
                }
                return Err(OTelSdkError::Timeout(timeout));
            }
            state = self
                .shared
                .flushed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // A later round's failure may be reported for this flush too (two flushes at once):
        // never a success for spans that were not delivered.
        match state.flush_undelivered {
            (flush, spans) if flush >= wanted => Err(OTelSdkError::InternalFailure(format!(
                "{spans} spans were not exported: the collector did not take them"
            ))),
            _ => Ok(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits `delay` and up to 100 ms of jitter before a retry; `false` when shutdown was asked
    /// for meanwhile, which ends the retries: what is left must go out within its bound.
    fn pause(&self, delay: Duration) -> bool {
        // Jitter from std's randomly keyed hasher (a fresh key per process, and per call): enough
        // to keep services that failed together from retrying in step, without a dependency.
        let jitter = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            Instant::now(),
        ) % 100_000_000;
        let deadline = Instant::now() + delay + Duration::from_nanos(jitter);
        let mut state = self.lock();
        while !state.shutdown {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self
                .work
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        false
    }
}

impl SpanProcessor for OtlpSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let enqueue = |encoded: &mut Vec<u8>| {
            encoded.clear();
            encode_span(&span, encoded);
            let mut guard = self.shared.lock();
            let state = &mut *guard;
            if state.shutdown || state.queued >= self.shared.settings.max_queue {
                state.drop_spans(1);
                return;
            }
            state
                .current
                .push(&span.instrumentation_scope, encoded, &mut state.spare);
            state.queued += 1;
            if state.current.spans >= self.shared.settings.max_batch {
                let full = std::mem::take(&mut state.current);
                state.full.push_back(full);
                self.shared.work.notify_one();
            }
        };
        // A span that ends while the thread's locals are torn down gets a buffer of its own.
        if SCRATCH
            .try_with(|scratch| enqueue(&mut scratch.borrow_mut()))
            .is_err()
        {
            enqueue(&mut Vec::new());
        }
        // `span` is freed here, by the thread that allocated it.
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(Duration::from_secs(5), false)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.flush_within(timeout, true);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Joined only when it is done; a thread stuck on a silent collector is left behind.
        if let Some(thread) = thread
            && result.is_ok()
        {
            let _ = thread.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Arc::new(EncodedResource::new(resource));
    }
}

impl EncodedResource {
    fn new(resource: &Resource) -> Self {
        let resource = ResourceAttributesWithSchema::from(resource);
        Self {
            message: ProtoResource {
                attributes: resource.attributes.0,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }
            .encode_to_vec(),
            schema_url: resource.schema_url.unwrap_or_default(),
        }
    }
}

/// The export thread: waits for a full batch, the schedule delay, a flush or shutdown, then
/// sends what is queued.
fn export_loop(shared: &Shared, sender: &Sender) {
    // However the loop ends (shutdown, or a panic), flushes stop waiting for it.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.lock().stopped = true;
            self.0.flushed.notify_all();
        }
    }
    let _stopped = Stopped(shared);
    let delay = shared.settings.schedule_delay;
    let mut last_export = Instant::now();
    let mut warnings = Warnings::default();
    let mut hold_until: Option<Instant> = None;
    loop {
        let (batches, flush, shutdown, dropped, resource) = {
            let mut state = shared.lock();
            loop {
                let waited = last_export.elapsed();
                // Batches held back for a collector that is away wait out their pause.
                let hold = hold_until.map_or(Duration::ZERO, |until| {
                    until.saturating_duration_since(Instant::now())
                });
                if state.shutdown
                    || (!state.full.is_empty() && hold.is_zero())
                    || state.flush_requested > state.flush_done
                    || waited >= delay
                {
                    break;
                }
                let wait = if state.full.is_empty() {
                    delay - waited
                } else {
                    hold.min(delay - waited)
                };
                state = shared
                    .work
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let flush = state.flush_requested;
            let everything =
                state.shutdown || flush > state.flush_done || last_export.elapsed() >= delay;
            let mut batches: Vec<Batch> = state.full.drain(..).collect();
            if everything && state.current.spans > 0 {
                batches.push(std::mem::take(&mut state.current));
            }
            let taken = batches.iter().map(|batch| batch.spans).sum::<usize>();
            state.queued -= taken;
            state.in_flight = taken;
            (
                batches,
                flush,
                state.shutdown,
                (state.dropped > 0).then(|| {
                    let now = SystemTime::now();
                    (
                        std::mem::take(&mut state.dropped),
                        state.dropped_first.take().unwrap_or(now),
                        state.dropped_last.take().unwrap_or(now),
                    )
                }),
                state.resource.clone(),
            )
        };
        // The batches kept for another attempt: the collector is away for a moment, and the
        // queue holds them rather than losing them (see `HOLD_PAUSE`).
        let mut held = vec![false; batches.len()];
        let mut undelivered = 0;
        for (index, batch) in batches.iter().enumerate() {
            // At shutdown every batch gets its last attempt, whatever the pause.
            if !shutdown && hold_until.is_some_and(|until| until > Instant::now()) {
                held[index] = true;
                undelivered += batch.spans;
                continue;
            }
            let mut request = Vec::new();
            encode_request(&resource.message, &resource.schema_url, batch, &mut request);
            // Shared, not copied, by each attempt.
            let request = prost::bytes::Bytes::from(request);
            let deadline = Instant::now() + shared.timeout;
            let mut delays = RETRY_DELAYS.iter().filter(|_| shared.settings.retries);
            loop {
                match sender.send(request.clone(), batch.spans) {
                    Ok(()) => {
                        warnings.exported();
                        break;
                    }
                    Err(failure) => {
                        // The backoff's pause, or longer if the collector asked for longer.
                        let retry = failure.transient
                            && !shutdown
                            && delays.next().is_some_and(|delay| {
                                let delay = failure.retry_after.map_or(*delay, |d| d.max(*delay));
                                Instant::now() + delay < deadline && shared.pause(delay)
                            });
                        if !retry {
                            undelivered += batch.spans;
                            if failure.transient && !shutdown && shared.settings.retries {
                                // The rest of this round waits with it.
                                held[index] = true;
                                let pause = failure
                                    .retry_after
                                    .map_or(HOLD_PAUSE, |d| d.max(HOLD_PAUSE));
                                hold_until = Some(Instant::now() + pause);
                                warnings.export_waiting(&failure.error, SystemTime::now());
                            } else if !shared.lock().abandoned {
                                warnings.export_failed(
                                    failure.lost,
                                    &failure.error,
                                    SystemTime::now(),
                                );
                            }
                            break;
                        }
                    }
                }
            }
        }
        if let Some((spans, first, last)) = dropped {
            warnings.dropped(spans, first, last);
        }
        for report in warnings.reports(Instant::now(), shutdown) {
            report.log(shutdown, &shared.endpoint);
        }
        last_export = Instant::now();
        if !held.contains(&true) {
            hold_until = None;
        }
        let mut kept = Vec::new();
        let mut sent = Vec::new();
        for (batch, held) in batches.into_iter().zip(held) {
            if held {
                kept.push(batch)
            } else {
                sent.push(batch)
            }
        }
        let spare = sent
            .into_iter()
            .flat_map(|batch| batch.scopes)
            .map(|(_, mut buffer)| {
                buffer.clear();
                buffer
            });
        let mut state = shared.lock();
        state.in_flight = 0;
        // Back at the head of the queue, in order, and counted in it, as far as it has room: new
        // spans came in while these were out, and the queue never holds more than its size
        // however long the collector stays away (the rest are dropped, and counted).
        let mut room = shared.settings.max_queue.saturating_sub(state.queued);
        let mut back = Vec::new();
        for batch in kept {
            if batch.spans <= room {
                room -= batch.spans;
                back.push(batch);
            } else {
                state.drop_spans(batch.spans);
            }
        }
        for batch in back.into_iter().rev() {
            state.queued += batch.spans;
            state.full.push_front(batch);
        }
        // As many as the queue can fill; the rest go back to the allocator.
        let keep = shared.settings.max_queue / shared.settings.max_batch + 2;
        state.spare.extend(spare);
        state.spare.truncate(keep);
        if flush > state.flush_done {
            state.flush_done = flush;
            if undelivered > 0 {
                state.flush_undelivered = (flush, undelivered);
            }
        }
        shared.flushed.notify_all();
        if shutdown {
            return;
        }
    }
}

/// The gRPC side: one unary `Export` call per batch, on the export runtime.
struct Sender {
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    runtime: tokio::runtime::Handle,
}

/// Why an export of `lost` spans failed, whether trying again may help, and how long the
/// collector asked to be left alone first (its `RetryInfo`).
struct Failure {
    lost: usize,
    error: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Sender {
    /// Sends one request of `spans` spans, its body shared with the caller, not copied.
    fn send(&self, request: prost::bytes::Bytes, spans: usize) -> Result<(), Failure> {
        let mut request = tonic::Request::new(Encoded(request));
        *request.metadata_mut() = self.metadata.clone();
        let mut client = self.client.clone();
        self.runtime.block_on(async move {
            // Not connected (refused, reset, unresolved): the collector may be back soon.
            client.ready().await.map_err(|error| Failure {
                lost: spans,
                error: error.to_string(),
                transient: true,
                retry_after: None,
            })?;
            let codec = tonic_prost::ProstCodec::<Encoded, ExportTraceServiceResponse>::default();
            let response = client
                .unary(request, PathAndQuery::from_static(EXPORT_PATH), codec)
                .await
                .map_err(|status| {
                    let retry_info = status.get_details_retry_info();
                    let retry_after = retry_info
                        .as_ref()
                        .and_then(|info| info.retry_delay)
                        .map(|delay| delay.min(MAX_RETRY_AFTER));
                    Failure {
                        lost: spans,
                        error: format!("{}: {}", status.code(), status.message()),
                        transient: is_transient(status.code(), retry_info.is_some())
                            || is_cut_off(&status),
                        retry_after,
                    }
                })?;
            match response.into_inner().partial_success {
                Some(partial) if partial.rejected_spans > 0 => Err(Failure {
                    lost: usize::try_from(partial.rejected_spans).unwrap_or(spans),
                    error: format!("the collector rejected spans: {}", partial.error_message),
                    transient: false,
                    retry_after: None,
                }),
                _ => Ok(()),
            }
        })
    }
}

/// The gRPC codes the OTLP spec lists as retryable; `RESOURCE_EXHAUSTED` only when the collector
/// sent a `RetryInfo` detail (that it may recover; its pause, if it gives one, is waited out).
fn is_transient(code: tonic::Code, retry_info: bool) -> bool {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_info,
        _ => false,
    }
}

/// A call that the connection cut off (the collector stopped mid-call, a reset) ends with no
/// status from the collector: tonic reports it as `UNKNOWN` or `INTERNAL`, with the transport's
/// error as its source. Like a refused connection, it may be over in a moment, so it is retried;
/// a status the collector sent has no source.
fn is_cut_off(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Export failures and drops repeat for every batch while the collector is away: each kind is
/// logged once per [`WARNING_INTERVAL`], with what it cost since the last line and when. A line
/// said after the fact says so: drops are reported with the times they happened, and failures
/// that have ended (the last export went through) are reported as over, never as current.
#[derive(Default)]
struct Warnings {
    failed: Tally,
    last_error: String,
    /// The last export attempt failed.
    failing: bool,
    /// Since when batches wait in the queue for the collector, while they do.
    waiting_since: Option<SystemTime>,
    /// When that was last said.
    waiting_said: Option<Instant>,
    dropped: Tally,
}

/// Spans lost one way, since the last line that said so, and when.
#[derive(Default)]
struct Tally {
    spans: u64,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
    last_said: Option<Instant>,
}

/// What was lost, between two times.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Lost {
    spans: u64,
    first: SystemTime,
    last: SystemTime,
}

impl Tally {
    /// Adds `spans` lost between `first` and `last`.
    fn add(&mut self, spans: u64, first: SystemTime, last: SystemTime) {
        if spans == 0 {
            return;
        }
        self.spans += spans;
        self.first.get_or_insert(first);
        self.last = Some(last);
    }

    /// The count to log at `now`, if the interval allows and there is one.
    fn due(&mut self, now: Instant) -> Option<Lost> {
        let due = self
            .last_said
            .is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL);
        if due { self.take(now) } else { None }
    }

    /// The count to log, whatever the interval (none when nothing was lost).
    fn take(&mut self, now: Instant) -> Option<Lost> {
        if self.spans == 0 {
            return None;
        }
        self.last_said = Some(now);
        let now = SystemTime::now();
        Some(Lost {
            spans: std::mem::take(&mut self.spans),
            first: self.first.take().unwrap_or(now),
            last: self.last.take().unwrap_or(now),
        })
    }
}

/// One line about lost spans.
#[derive(Debug, PartialEq)]
enum Report {
    /// Exports fail, and the last attempt failed too.
    Failing {
        lost: Lost,
        error: String,
        /// When exports began to fail: the wait before the first loss counts.
        since: SystemTime,
    },
    /// Exports failed, and have gone through since.
    Failed { lost: Lost, error: String },
    /// The queue was full.
    Dropped(Lost),
    /// Exports fail, and the batches wait in the queue: nothing lost so far.
    Waiting { since: SystemTime, error: String },
}

/// A warning, or an error when it is the last word (`at_end`: at shutdown, what was lost is
/// final, and `RUST_LOG=error` must still say it).
macro_rules! say {
    ($at_end:expr, $($field:tt)*) => {
        if $at_end {
            tracing::error!($($field)*)
        } else {
            tracing::warn!($($field)*)
        }
    };
}

impl Report {
    /// Logs the line; a failure names the collector it failed to reach.
    fn log(&self, at_end: bool, endpoint: &str) {
        let time = |at: SystemTime| humantime::format_rfc3339_millis(at).to_string();
        let count = |spans: u64| i64::try_from(spans).unwrap_or(i64::MAX);
        match self {
            Report::Failing { lost, error, since } => say!(
                at_end,
                name = "SpanExport.ExportError",
                spans_lost = count(lost.spans),
                "OTLP span export to {endpoint} failing since {} (last attempt {}): {error}",
                time(*since),
                time(lost.last),
            ),
            Report::Failed { lost, error } => say!(
                at_end,
                name = "SpanExport.ExportError",
                spans_lost = count(lost.spans),
                "OTLP span export to {endpoint} failed between {} and {} and has worked since; the last error: {error}",
                time(lost.first),
                time(lost.last),
            ),
            Report::Waiting { since, error } => say!(
                at_end,
                name = "SpanExport.Waiting",
                "OTLP span export to {endpoint} failing since {}; spans wait in the queue (OTEL_BSP_MAX_QUEUE_SIZE) for the collector: {error}",
                time(*since),
            ),
            Report::Dropped(lost) => say!(
                at_end,
                name = "SpanExport.QueueFull",
                spans_dropped = count(lost.spans),
                "spans were dropped between {} and {}: the span export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)",
                time(lost.first),
                time(lost.last),
            ),
        }
    }
}

impl Warnings {
    /// A batch went through.
    fn exported(&mut self) {
        self.failing = false;
        self.waiting_since = None;
    }

    /// A batch of `spans` could not be exported, for `error`.
    fn export_failed(&mut self, spans: usize, error: &str, at: SystemTime) {
        self.failing = true;
        error.clone_into(&mut self.last_error);
        self.failed.add(spans as u64, at, at);
    }

    /// Batches wait in the queue for the collector, since `at` at the latest.
    fn export_waiting(&mut self, error: &str, at: SystemTime) {
        self.failing = true;
        error.clone_into(&mut self.last_error);
        self.waiting_since.get_or_insert(at);
    }

    /// `spans` were dropped between `first` and `last`.
    fn dropped(&mut self, spans: u64, first: SystemTime, last: SystemTime) {
        self.dropped.add(spans, first, last);
    }

    /// What is due at `now`, or everything (before the end).
    fn reports(&mut self, now: Instant, all: bool) -> Vec<Report> {
        let (failed, dropped) = if all {
            (self.failed.take(now), self.dropped.take(now))
        } else {
            (self.failed.due(now), self.dropped.due(now))
        };
        let mut reports = Vec::new();
        if let Some(since) = self.waiting_since
            && self.failing
            && self
                .waiting_said
                .is_none_or(|at| now.duration_since(at) >= WARNING_INTERVAL)
        {
            self.waiting_said = Some(now);
            reports.push(Report::Waiting {
                since,
                error: self.last_error.clone(),
            });
        }
        if let Some(lost) = failed {
            let error = self.last_error.clone();
            reports.push(if self.failing {
                let since = self
                    .waiting_since
                    .map_or(lost.first, |since| since.min(lost.first));
                Report::Failing { lost, error, since }
            } else {
                Report::Failed { lost, error }
            });
        }
        reports.extend(dropped.map(Report::Dropped));
        reports
    }
}

/// A message already encoded: tonic's prost codec writes it as it is (the benchmark's load
/// generator sends its exports so too, through `testing`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Encoded(pub prost::bytes::Bytes);

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: it only travels out.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Appends `batch` to `out` as an `ExportTraceServiceRequest`: one `ResourceSpans` (with the
/// `resource` message, already encoded) and one `ScopeSpans` per instrumentation scope.
fn encode_request(resource: &[u8], resource_schema_url: &str, batch: &Batch, out: &mut Vec<u8>) {
    let scopes: Vec<(Vec<u8>, &InstrumentationScope, &[u8])> = batch
        .scopes
        .iter()
        .map(|(scope, spans)| {
            (
                ProtoScope::from((scope, None)).encode_to_vec(),
                scope,
                spans.as_slice(),
            )
        })
        .collect();
    let scope_spans_len = |(message, scope, spans): &(Vec<u8>, &InstrumentationScope, &[u8])| {
        bytes_field_len(1, message.len())
            + spans.len()
            + str_field_len(3, scope.schema_url().unwrap_or_default())
    };
    let resource_spans_len = bytes_field_len(1, resource.len())
        + scopes
            .iter()
            .map(|scope| bytes_field_len(2, scope_spans_len(scope)))
            .sum::<usize>()
        + str_field_len(3, resource_schema_url);
    out.reserve(bytes_field_len(1, resource_spans_len));
    put_len(1, resource_spans_len, out);
    put_bytes_always(1, resource, out);
    for scope in &scopes {
        put_len(2, scope_spans_len(scope), out);
        let (message, scope, spans) = scope;
        put_bytes_always(1, message, out);
        out.extend_from_slice(spans);
        put_str(3, scope.schema_url().unwrap_or_default(), out);
    }
    put_str(3, resource_schema_url, out);
}

/// One `opentelemetry.proto.trace.v1.Span`, the fields as opentelemetry-proto fills them.
fn encode_span(span: &SpanData, out: &mut Vec<u8>) {
    let context = &span.span_context;
    put_bytes(1, &context.trace_id().to_bytes(), out);
    put_bytes(2, &context.span_id().to_bytes(), out);
    put_trace_state(3, context.trace_state(), out);
    if span.parent_span_id != SpanId::INVALID {
        put_bytes(4, &span.parent_span_id.to_bytes(), out);
    }
    put_str(5, &span.name, out);
    put_varint(6, span_kind(&span.span_kind), out);
    put_fixed64(7, nanos(span.start_time), out);
    put_fixed64(8, nanos(span.end_time), out);
    put_attributes(9, &span.attributes, out);
    put_varint(10, u64::from(span.dropped_attributes_count), out);
    for event in &span.events.events {
        let mut message = Vec::new();
        put_fixed64(1, nanos(event.timestamp), &mut message);
        put_str(2, &event.name, &mut message);
        put_attributes(3, &event.attributes, &mut message);
        put_varint(4, u64::from(event.dropped_attributes_count), &mut message);
        put_bytes_always(11, &message, out);
    }
    put_varint(12, u64::from(span.events.dropped_count), out);
    for link in &span.links.links {
        let linked = &link.span_context;
        let mut message = Vec::new();
        put_bytes(1, &linked.trace_id().to_bytes(), &mut message);
        put_bytes(2, &linked.span_id().to_bytes(), &mut message);
        put_trace_state(3, linked.trace_state(), &mut message);
        put_attributes(4, &link.attributes, &mut message);
        put_varint(5, u64::from(link.dropped_attributes_count), &mut message);
        put_fixed32(
            6,
            span_flags(linked.is_remote(), linked.trace_flags().to_u8()),
            &mut message,
        );
        put_bytes_always(13, &message, out);
    }
    put_varint(14, u64::from(span.links.dropped_count), out);
    // Status is always present, as the library sets it (an empty message when unset).
    let (code, message) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    let status_len = str_field_len(2, message) + varint_field_len(3, code);
    put_len(15, status_len, out);
    put_str(2, message, out);
    put_varint(3, code, out);
    put_fixed32(
        16,
        span_flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
        out,
    );
}

/// `SpanFlags`: the W3C trace flags, and whether the parent was remote.
fn span_flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn put_trace_state(tag: u32, state: &TraceState, out: &mut Vec<u8>) {
    if *state != TraceState::NONE {
        put_str(tag, &state.header(), out);
    }
}

fn put_attributes(tag: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for attribute in attributes {
        let key = attribute.key.as_str();
        let value_len = any_value_len(&attribute.value);
        put_len(
            tag,
            str_field_len(1, key) + bytes_field_len(2, value_len),
            out,
        );
        put_str(1, key, out);
        put_len(2, value_len, out);
        put_any_value(&attribute.value, out);
    }
}

/// The length of an `AnyValue` message: its one `oneof` field, always written.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(int) => key_len(3) + encoded_len_varint(*int as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(text) => bytes_field_len(1, text.as_str().len()),
        Value::Array(array) => bytes_field_len(5, array_len(array)),
        // A value kind newer than this code: sent as an empty AnyValue.
        _ => 0,
    }
}

/// The length of an `ArrayValue` message: one `AnyValue` per element.
fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |value| {
        len += bytes_field_len(1, any_value_len(value))
    });
    len
}

/// Calls `f` with each element of `array` as a `Value` (arrays are rare in spans; a string
/// element is cloned).
fn for_each_element(array: &Array, mut f: impl FnMut(&Value)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|flag| f(&Value::Bool(*flag))),
        Array::I64(values) => values.iter().for_each(|int| f(&Value::I64(*int))),
        Array::F64(values) => values.iter().for_each(|double| f(&Value::F64(*double))),
        Array::String(values) => values
            .iter()
            .for_each(|text| f(&Value::String(text.clone()))),
        _ => {}
    }
}

fn put_any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(flag) => put_varint_always(2, u64::from(*flag), out),
        Value::I64(int) => put_varint_always(3, *int as u64, out),
        Value::F64(double) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.put_f64_le(*double);
        }
        Value::String(text) => put_bytes_always(1, text.as_str().as_bytes(), out),
        Value::Array(array) => {
            put_len(5, array_len(array), out);
            put_array(array, out);
        }
        _ => {}
    }
}

fn put_array(array: &Array, out: &mut Vec<u8>) {
    for_each_element(array, |value| {
        put_len(1, any_value_len(value), out);
        put_any_value(value, out);
    });
}

// Field writers. Like prost, they leave out proto3 defaults (zero, empty) unless "always".

fn put_len(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes_always(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_len(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_bytes_always(tag, bytes, out);
    }
}

fn put_str(tag: u32, text: &str, out: &mut Vec<u8>) {
    put_bytes(tag, text.as_bytes(), out);
}

fn put_varint_always(tag: u32, value: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

fn put_varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        put_varint_always(tag, value, out);
    }
}

fn put_fixed64(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.put_u64_le(value);
    }
}

fn put_fixed32(tag: u32, value: u32, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.put_u32_le(value);
    }
}

// prost's `encode_key` and `encode_varint`, for a `Vec` only: prost's take any `BufMut`, and in
// this build they stayed calls of their own (`make profile` showed them as one symbol taking
// about 700 instructions a span, a call and a capacity check per byte for the thirty or so keys
// and lengths of a span); these inline to a push.

#[inline]
fn encode_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    debug_assert!(
        (1..=(1 << 29) - 1).contains(&tag),
        "a protobuf field number"
    );
    encode_varint(u64::from((tag << 3) | wire_type as u32), out);
}

#[inline]
fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn str_field_len(tag: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        bytes_field_len(tag, text.len())
    }
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::{
        Context, KeyValue, StringValue,
        trace::{
            Link, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
            Tracer, TracerProvider as _,
        },
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::trace::tonic::group_spans_by_resource_and_scope,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[test]
    fn a_flush_whose_spans_the_collector_did_not_take_is_an_error() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        // A port given out and taken back: connections are refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        // Without retries the batch fails; with them, it is held for the collector.
        for retries in [false, true] {
            let settings = BatchSettings {
                max_queue: 100,
                max_batch: 10,
                schedule_delay: Duration::from_secs(60),
                retries,
            };
            let processor = OtlpSpanProcessor::new(
                &format!("http://{closed}"),
                Duration::from_millis(500),
                MetadataMap::new(),
                settings,
                runtime.handle().clone(),
            )
            .expect("a processor");
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .build();

            opentelemetry::trace::Span::end(&mut provider.tracer("test").start("lost"));

            assert!(provider.force_flush().is_err(), "retries: {retries}");
        }
    }

    /// What happens to the export thread, at a time in seconds from the start.
    #[derive(Clone, Copy)]
    enum Event {
        /// A batch of 10 failed.
        Fail(u64),
        /// A batch went through.
        Exported,
        /// 5 spans dropped between two times.
        Drop(u64, u64),
        /// Batches wait in the queue for the collector.
        Hold(u64),
        /// The loop ends an iteration.
        Tick(u64),
        /// The last iteration, at shutdown.
        Shutdown(u64),
    }

    /// A report as the test reads it: its kind, spans, and first and last second.
    type Seen = (&'static str, u64, u64, u64);

    #[test]
    fn lost_spans_are_reported_with_when_and_a_failure_that_ended_as_over() {
        use Event::{Drop, Exported, Fail, Hold, Shutdown, Tick};
        let start = Instant::now();
        let wall = UNIX_EPOCH;
        let secs = |s: u64| wall + Duration::from_secs(s);
        // (events, reports: kind, spans, first and last second)
        let cases: Vec<(Vec<Event>, Vec<Seen>)> = vec![
            // A failure is reported at once, as current.
            (vec![Fail(1), Tick(1)], vec![("failing", 10, 1, 1)]),
            // Failures held back, then exports work again: the count comes later, as over.
            (
                vec![
                    Fail(1),
                    Tick(1),
                    Fail(2),
                    Tick(2),
                    Fail(3),
                    Tick(3),
                    Exported,
                    Tick(4),
                    Tick(31),
                ],
                vec![("failing", 10, 1, 1), ("failed", 20, 2, 3)],
            ),
            // A service whose last export went through says nothing is failing at shutdown.
            (
                vec![Fail(1), Tick(1), Fail(2), Tick(2), Exported, Shutdown(3)],
                vec![("failing", 10, 1, 1), ("failed", 10, 2, 2)],
            ),
            (
                vec![Fail(1), Tick(1), Fail(2), Tick(2), Shutdown(3)],
                vec![("failing", 10, 1, 1), ("failing", 10, 2, 2)],
            ),
            // Drops are reported with the times they happened, however late.
            (
                vec![Drop(1, 2), Tick(2), Drop(3, 4), Tick(4), Tick(40)],
                vec![("dropped", 5, 1, 2), ("dropped", 5, 3, 4)],
            ),
            (vec![Exported, Tick(1), Shutdown(2)], vec![]),
            // Batches waiting for the collector: said once an interval while it lasts, not once
            // it is over.
            (
                vec![
                    Hold(1),
                    Tick(1),
                    Hold(2),
                    Tick(2),
                    Hold(40),
                    Tick(40),
                    Exported,
                    Tick(80),
                ],
                vec![("waiting", 0, 1, 1), ("waiting", 0, 1, 1)],
            ),
            (vec![Hold(1), Exported, Tick(1)], vec![]),
            // A failure after a wait is failing since the wait began, not since the first loss.
            (
                vec![Hold(1), Tick(1), Fail(5), Shutdown(6)],
                vec![("waiting", 0, 1, 1), ("failing", 10, 1, 5)],
            ),
        ];

        for (events, expected) in cases {
            // Arrange
            let mut warnings = Warnings::default();
            let mut reports = Vec::new();

            // Act
            for event in &events {
                match *event {
                    Fail(at) => warnings.export_failed(10, "unavailable", secs(at)),
                    Exported => warnings.exported(),
                    Drop(first, last) => warnings.dropped(5, secs(first), secs(last)),
                    Hold(at) => warnings.export_waiting("unavailable", secs(at)),
                    Tick(at) => {
                        reports.extend(warnings.reports(start + Duration::from_secs(at), false));
                    }
                    Shutdown(at) => {
                        reports.extend(warnings.reports(start + Duration::from_secs(at), true));
                    }
                }
            }

            // Assert
            let at = |time: SystemTime| time.duration_since(wall).map_or(0, |d| d.as_secs());
            let seen: Vec<Seen> = reports
                .iter()
                .map(|report| match report {
                    Report::Failing { lost, since, .. } => {
                        ("failing", lost.spans, at(*since), at(lost.last))
                    }
                    Report::Failed { lost, .. } => {
                        ("failed", lost.spans, at(lost.first), at(lost.last))
                    }
                    Report::Dropped(lost) => ("dropped", lost.spans, at(lost.first), at(lost.last)),
                    Report::Waiting { since, .. } => ("waiting", 0, at(*since), at(*since)),
                })
                .collect();
            assert_eq!(seen, expected);
        }
    }

    #[derive(Clone, Debug, Default)]
    struct Keep(Arc<Mutex<Vec<SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Keep {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("valid in this test").extend(batch);
            Ok(())
        }
    }

    /// Spans with everything a span can carry, from the SDK itself.
    fn spans(resource: &Resource) -> Vec<SpanData> {
        let kept = Keep::default();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(kept.clone())
            .build();
        let tracer = provider.tracer("logos");
        let remote = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid in this test"),
            SpanId::from_hex("00f067aa0ba902b7").expect("valid in this test"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("rojo", "00f067aa0ba902b7")]).expect("valid in this test"),
        );
        let parent = Context::new().with_remote_span_context(remote.clone());
        let server = tracer
            .span_builder("POST /plan")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.route", "/plan"),
                KeyValue::new("http.response.status_code", 500_i64),
                KeyValue::new("sampled.ratio", 0.25),
                KeyValue::new("cache.hit", false),
                KeyValue::new("empty", ""),
                KeyValue::new("negative", -7_i64),
                KeyValue::new(
                    "tags",
                    Value::Array(Array::String(vec![StringValue::from("a"), "".into()])),
                ),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
                KeyValue::new("doubles", Value::Array(Array::F64(vec![0.0, 1.5]))),
            ])
            .with_links(vec![Link::new(
                remote.clone(),
                vec![KeyValue::new("link.kind", "follows")],
                0,
            )])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(server);
        {
            let span = cx.span();
            span.add_event("retry", vec![KeyValue::new("attempt", 2_i64)]);
            span.set_status(Status::error("hermes answered 503"));
        }
        let child = tracer.start_with_context("sophia.plan", &cx);
        drop(child);
        cx.span().end();
        let other = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("other")
                .with_version("1.2.3")
                .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
                .with_attributes([KeyValue::new("scope.attr", 1_i64)])
                .build(),
        );
        let mut root = other.start("root");
        opentelemetry::trace::Span::set_status(&mut root, Status::Ok);
        drop(root);
        let _ = provider.shutdown();
        let spans = kept.0.lock().expect("valid in this test").clone();
        assert_eq!(spans.len(), 3);
        spans
    }

    fn sorted(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
        for resource_spans in &mut request.resource_spans {
            resource_spans.scope_spans.sort_by(|a, b| {
                a.scope
                    .as_ref()
                    .map(|s| &s.name)
                    .cmp(&b.scope.as_ref().map(|s| &s.name))
            });
        }
        request
    }

    fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let mut batch = Batch::default();
        for span in spans {
            let mut encoded = Vec::new();
            encode_span(span, &mut encoded);
            batch.push(&span.instrumentation_scope, &encoded, &mut Vec::new());
        }
        let resource = EncodedResource::new(resource);
        let mut request = Vec::new();
        encode_request(
            &resource.message,
            &resource.schema_url,
            &batch,
            &mut request,
        );
        request
    }

    #[test]
    fn encodes_what_opentelemetry_proto_encodes() {
        // Arrange
        let resource = Resource::builder()
            .with_service_name("sophia")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .build();
        let batch = spans(&resource);

        // Act
        let ours = encode(&resource, &batch);

        // Assert
        let upstream = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        let decoded =
            ExportTraceServiceRequest::decode(ours.as_slice()).expect("valid in this test");
        assert_eq!(sorted(decoded), sorted(upstream.clone()));
        assert_eq!(ours.len(), upstream.encoded_len(), "no field written twice");
    }

    #[test]
    fn an_empty_batch_is_one_empty_resource() {
        let out = encode(&Resource::builder_empty().build(), &[]);
        let decoded =
            ExportTraceServiceRequest::decode(out.as_slice()).expect("valid in this test");
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
    }
}
