//! A panic becomes an ERROR line of the log output (tracing-panic's event: JSON with
//! `LOG_FORMAT=json`, the trace id of the request it happened in, exported with the logs) instead
//! of text on stderr that no log reader parses.
//!
//! A handler that panics on every request must not write a line per request: a panic the process
//! survives (a handler's, which the server layer answers 500, or a connection's, which ends only
//! that connection) is said once per [`PANIC_INTERVAL`] for each place in the code, and the next
//! line, or shutdown, says how many were held back in between. Any other panic, one that ends a
//! thread or the process, is said every time. Where the log filter keeps no panic line, Rust's own hook prints the panic as
//! before, so it is never lost.

use std::{
    cell::Cell,
    collections::HashMap,
    future::Future,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

/// The target of tracing-panic's event.
const TARGET: &str = "tracing_panic";

/// At most one panic line per place in the code per this.
const PANIC_INTERVAL: Duration = Duration::from_secs(10);

thread_local! {
    /// Whether the log output wrote the panic event this thread just emitted.
    static WRITTEN: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is polling a future whose panics are caught ([`caught`]).
    static CAUGHT: Cell<bool> = const { Cell::new(false) };
}

/// `future`, whose panics the process survives (the server layer or the connection's task catches
/// them), so they are said once an interval. A thread-local flag around each poll, reset by a
/// guard, so that a panic that unwinds out of the poll leaves it as it was.
pub(crate) async fn caught<F: Future>(future: F) -> F::Output {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CAUGHT.set(self.0);
        }
    }
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _restore = Restore(CAUGHT.replace(true));
        future.as_mut().poll(cx)
    })
    .await
}

/// Called by the log output for each event it writes: notes a panic's.
pub(crate) fn written(metadata: &tracing::Metadata<'_>) {
    if metadata.target() == TARGET {
        WRITTEN.set(true);
    }
}

/// The panics of one place held back since its last line.
#[derive(Debug)]
struct Held {
    said_at: Instant,
    count: u64,
    first: SystemTime,
}

/// Each place's last line and what was held back since, by `file:line:column`.
static HELD: Mutex<Option<HashMap<String, Held>>> = Mutex::new(None);

/// Whether a panic at `location` is said now, and then how many were held back before it (and
/// since when); `None`: it is held back and counted.
fn due(location: &str, now: Instant) -> Option<(u64, SystemTime)> {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let held = held.get_or_insert_with(HashMap::new);
    match held.get_mut(location) {
        Some(place) if now.duration_since(place.said_at) < PANIC_INTERVAL => {
            if place.count == 0 {
                place.first = SystemTime::now();
            }
            place.count += 1;
            None
        }
        Some(place) => {
            let before = (place.count, place.first);
            place.said_at = now;
            place.count = 0;
            Some(before)
        }
        None => {
            let place = Held {
                said_at: now,
                count: 0,
                first: SystemTime::now(),
            };
            held.insert(location.to_owned(), place);
            Some((0, SystemTime::now()))
        }
    }
}

/// Says how many panics of a place were held back since its last line.
fn say_held_back(location: &str, held_back: u64, first: SystemTime) {
    tracing::error!(
        target: TARGET,
        panics_held_back = i64::try_from(held_back).unwrap_or(i64::MAX),
        "{held_back} more panics at {location} since {} were not logged one by one",
        humantime::format_rfc3339_millis(first)
    );
}

/// At shutdown: the panics held back since each place's last line, which no later panic will
/// say now.
pub(crate) fn log_held_back() {
    let held: Vec<(String, u64, SystemTime)> = {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter_mut()
            .flatten()
            .filter(|(_, place)| place.count > 0)
            .map(|(location, place)| {
                (
                    location.clone(),
                    std::mem::take(&mut place.count),
                    place.first,
                )
            })
            .collect()
    };
    for (location, held_back, first) in held {
        say_held_back(&location, held_back, first);
    }
}

/// Installs the hook; the previous one (Rust's own) is called when the log output did not write
/// the panic.
pub(crate) fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        let location = panic
            .location()
            .map(ToString::to_string)
            .unwrap_or_default();
        let (held_back, first) = if CAUGHT.get() {
            let Some(due) = due(&location, Instant::now()) else {
                return;
            };
            due
        } else {
            (0, SystemTime::now())
        };
        WRITTEN.set(false);
        if held_back > 0 {
            say_held_back(&location, held_back, first);
        }
        tracing_panic::panic_hook(panic);
        if !WRITTEN.replace(false) {
            previous(panic);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panics_of_one_place_are_said_once_an_interval_with_the_count_held_back() {
        let start = Instant::now();
        let place = "src/a.rs:1:1";

        assert_eq!(due(place, start).map(|(count, _)| count), Some(0));
        assert_eq!(due(place, start + Duration::from_secs(1)), None);
        assert_eq!(due(place, start + Duration::from_secs(2)), None);
        assert_eq!(
            due("src/b.rs:2:2", start + Duration::from_secs(2)).map(|(count, _)| count),
            Some(0),
            "another place has its own interval"
        );
        assert_eq!(
            due(place, start + PANIC_INTERVAL).map(|(count, _)| count),
            Some(2)
        );
    }
}
