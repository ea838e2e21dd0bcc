//! Server errors in the log, bounded: the first of each kind at once, then one summary line per
//! kind and interval with how many there were, and when.
//!
//! A kind is a route, a status and an error code (which names the service at fault behind this
//! one: `hermes_unavailable`). With Hermes down, Sophia used to log one line per failed request,
//! thousands a second, each also an OTLP log record; every request's error still has its span
//! (status ERROR, the code and message as its description) and its measurement, so the log need
//! only say that it happens, how often, and since when. Written here because the rate limits of
//! `tracing` crates (tracing-throttle, say) drop the lines they hold back instead of counting
//! them by a key of our choosing.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Mutex, Once, PoisonError},
    time::{Duration, Instant, SystemTime},
};

/// How often each kind of error may be logged; in between they are counted.
pub(crate) const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The target of these lines, for `RUST_LOG` directives.
const TARGET: &str = "foundry::http::errors";

/// What an error answer holds for the log, left in the response's extensions by
/// [`crate::http::ErrorResponse`] for the server layer, which knows the route.
#[derive(Clone, Debug)]
pub(crate) struct ErrorDetails {
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: String,
}

type Key = (Option<String>, u16, Cow<'static, str>);

/// Errors of one kind held back since its last line.
#[derive(Debug)]
struct Held {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    message: String,
}

#[derive(Debug)]
struct Kind {
    said_at: Instant,
    held: Option<Held>,
}

static KINDS: Mutex<Option<HashMap<Key, Kind>>> = Mutex::new(None);

/// One line to log, built under the lock and logged after it.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// The first error of its kind in an interval, as it happens.
    First {
        route: Option<String>,
        status: u16,
        code: String,
        message: String,
    },
    /// `count` more errors of the kind, between `first` and `last`, the last one's message.
    Summary {
        route: Option<String>,
        status: u16,
        code: String,
        count: u64,
        first: SystemTime,
        last: SystemTime,
        message: String,
    },
}

impl Line {
    fn log(&self) {
        let (route, status, code, repeated, message) = match self {
            Line::First {
                route,
                status,
                code,
                message,
            } => (route, status, code, None, message.clone()),
            Line::Summary {
                route,
                status,
                code,
                count,
                first,
                last,
                message,
            } => (
                route,
                status,
                code,
                Some(i64::try_from(*count).unwrap_or(i64::MAX)),
                format!(
                    "{count} more like this between {} and {}; the last: {message}",
                    humantime::format_rfc3339_millis(*first),
                    humantime::format_rfc3339_millis(*last),
                ),
            ),
        };
        // `repeated` is left out of the first line (a `None` field records nothing).
        tracing::error!(
            target: TARGET,
            status = i64::from(*status),
            http.route = route.as_deref(),
            code = %code,
            repeated,
            "{message}"
        );
    }
}

/// Logs the error answer of a request to `route`, or counts it when its kind was logged less
/// than [`ERROR_LOG_INTERVAL`] ago. Runs in the request's context, so a line logged now carries
/// its trace id.
pub(crate) fn record(route: Option<&str>, status: u16, details: &ErrorDetails) {
    let lines = note(
        &mut KINDS.lock().unwrap_or_else(PoisonError::into_inner),
        (route.map(str::to_owned), status, details.code.clone()),
        &details.message,
        Instant::now(),
        SystemTime::now(),
    );
    for line in &lines {
        line.log();
    }
    start_summaries();
}

/// The lines that an error of kind `key` at `now` calls for: when the kind is due, a summary of
/// what was held back with this one counted in it, or its own line after a quiet interval; else
/// none, and it is counted.
fn note(
    kinds: &mut Option<HashMap<Key, Kind>>,
    key: Key,
    message: &str,
    now: Instant,
    wall: SystemTime,
) -> Vec<Line> {
    let kinds = kinds.get_or_insert_with(HashMap::new);
    let first = |(route, status, code): &Key| Line::First {
        route: route.clone(),
        status: *status,
        code: code.to_string(),
        message: message.to_owned(),
    };
    match kinds.get_mut(&key) {
        Some(kind) if now.duration_since(kind.said_at) < ERROR_LOG_INTERVAL => {
            let held = kind.held.get_or_insert_with(|| Held {
                count: 0,
                first: wall,
                last: wall,
                message: String::new(),
            });
            held.count += 1;
            held.last = wall;
            message.clone_into(&mut held.message);
            Vec::new()
        }
        Some(kind) => {
            kind.said_at = now;
            match kind.held.take() {
                // Still going: one summary line, with this error counted in it.
                Some(mut held) => {
                    held.count += 1;
                    held.last = wall;
                    message.clone_into(&mut held.message);
                    vec![summary(&key, held)]
                }
                // Quiet for a whole interval: a new first line.
                None => vec![first(&key)],
            }
        }
        None => {
            kinds.insert(
                key.clone(),
                Kind {
                    said_at: now,
                    held: None,
                },
            );
            vec![first(&key)]
        }
    }
}

fn summary((route, status, code): &Key, held: Held) -> Line {
    Line::Summary {
        route: route.clone(),
        status: *status,
        code: code.to_string(),
        count: held.count,
        first: held.first,
        last: held.last,
        message: held.message,
    }
}

/// The summaries due at `now` (every kind whose interval is over and that held errors back; all
/// of them when `all`), and kinds quiet for two intervals forgotten.
fn due(kinds: &mut Option<HashMap<Key, Kind>>, now: Instant, all: bool) -> Vec<Line> {
    let Some(kinds) = kinds.as_mut() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for (key, kind) in kinds.iter_mut() {
        if (all || now.duration_since(kind.said_at) >= ERROR_LOG_INTERVAL)
            && let Some(held) = kind.held.take()
        {
            kind.said_at = now;
            lines.push(summary(key, held));
        }
    }
    kinds.retain(|_, kind| {
        kind.held.is_some() || now.duration_since(kind.said_at) < 2 * ERROR_LOG_INTERVAL
    });
    lines
}

/// Starts, once, the thread that logs what each interval held back, so that a count is said
/// within an interval even when no error of its kind follows.
fn start_summaries() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("error-summaries".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(ERROR_LOG_INTERVAL / 2);
                    log_summaries(false);
                }
            });
    });
}

/// Logs the summaries due now, or all of them (at shutdown).
pub(crate) fn log_summaries(all: bool) {
    let lines = due(
        &mut KINDS.lock().unwrap_or_else(PoisonError::into_inner),
        Instant::now(),
        all,
    );
    for line in &lines {
        line.log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: &'static str) -> Key {
        (Some("/plan".to_owned()), 502, Cow::Borrowed(code))
    }

    #[test]
    fn each_kind_is_logged_once_an_interval_then_summarised_with_its_count_and_times() {
        // Arrange
        let mut kinds = None;
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let at = |ms: u64| start + Duration::from_millis(ms);
        let wall_at = |ms: u64| wall + Duration::from_millis(ms);
        let mut lines = Vec::new();

        // Act: 1000 errors of one kind within an interval, one of another, then one of the
        // first kind after the interval.
        for i in 0..1000 {
            lines.extend(note(
                &mut kinds,
                key("hermes_unavailable"),
                "down",
                at(i),
                wall_at(i),
            ));
        }
        lines.extend(note(
            &mut kinds,
            key("hermes_timeout"),
            "slow",
            at(5),
            wall_at(5),
        ));
        let later = ERROR_LOG_INTERVAL.as_millis() as u64 + 10;
        lines.extend(note(
            &mut kinds,
            key("hermes_unavailable"),
            "still down",
            at(later),
            wall_at(later),
        ));

        // Assert
        let first = |code: &str, message: &str| Line::First {
            route: Some("/plan".to_owned()),
            status: 502,
            code: code.to_owned(),
            message: message.to_owned(),
        };
        assert_eq!(
            lines,
            vec![
                first("hermes_unavailable", "down"),
                first("hermes_timeout", "slow"),
                // The interval over, the one after it is counted in the summary, not a new first
                // line: the failure is the same one going on.
                Line::Summary {
                    route: Some("/plan".to_owned()),
                    status: 502,
                    code: "hermes_unavailable".to_owned(),
                    count: 1000,
                    first: wall_at(1),
                    last: wall_at(later),
                    message: "still down".to_owned(),
                },
            ]
        );
        // After a quiet interval, the next error is a first line again.
        let quiet = later + 2 * ERROR_LOG_INTERVAL.as_millis() as u64;
        assert_eq!(
            note(
                &mut kinds,
                key("hermes_unavailable"),
                "down again",
                at(quiet),
                wall_at(quiet),
            ),
            vec![first("hermes_unavailable", "down again")]
        );
    }

    #[test]
    fn what_an_interval_held_back_is_said_when_it_ends_and_all_of_it_at_shutdown() {
        // Arrange
        let mut kinds = None;
        let start = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        for i in 0..3 {
            let _ = note(&mut kinds, key("a"), "x", start, wall);
            let _ = note(
                &mut kinds,
                key("b"),
                "y",
                start + Duration::from_millis(i),
                wall,
            );
        }

        // Act
        let early = due(&mut kinds, start + Duration::from_millis(1), false);
        let after = due(&mut kinds, start + ERROR_LOG_INTERVAL, false);
        let _ = note(&mut kinds, key("a"), "x", start + ERROR_LOG_INTERVAL, wall);
        let _ = note(&mut kinds, key("a"), "x", start + ERROR_LOG_INTERVAL, wall);
        let at_shutdown = due(&mut kinds, start + ERROR_LOG_INTERVAL, true);

        // Assert
        assert!(early.is_empty(), "{early:?}");
        let counts = |lines: &[Line]| -> Vec<u64> {
            lines
                .iter()
                .map(|line| match line {
                    Line::Summary { count, .. } => *count,
                    Line::First { .. } => 0,
                })
                .collect()
        };
        assert_eq!(counts(&after), [2, 2]);
        assert_eq!(counts(&at_shutdown), [2]);
    }

    #[test]
    fn a_summary_line_carries_its_count_and_a_first_line_none() {
        // Arrange: a log output into a buffer, for this thread only.
        let buffer = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = std::sync::Arc::clone(&buffer);
            move || Writer(std::sync::Arc::clone(&buffer))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let first = Line::First {
            route: Some("/plan".to_owned()),
            status: 502,
            code: "hermes_unavailable".to_owned(),
            message: "down".to_owned(),
        };
        let summary = Line::Summary {
            route: Some("/plan".to_owned()),
            status: 502,
            code: "hermes_unavailable".to_owned(),
            count: 41,
            first: SystemTime::UNIX_EPOCH,
            last: SystemTime::UNIX_EPOCH + Duration::from_secs(9),
            message: "down".to_owned(),
        };

        // Act
        tracing::subscriber::with_default(subscriber, || {
            first.log();
            summary.log();
        });

        // Assert
        let bytes = buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("log output is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("code=hermes_unavailable") && !lines[0].contains("repeated="),
            "{text}"
        );
        assert!(
            lines[1].contains("repeated=41")
                && lines[1].contains("41 more like this between 1970-01-01T00:00:00.000Z"),
            "{text}"
        );
    }

    /// Writes into a shared buffer.
    struct Writer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
