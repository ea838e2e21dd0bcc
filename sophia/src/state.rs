//! The CWM (causal world model) state: one JSON object describing the world as Sophia believes it
//! is, replaced as a whole and stamped with a new id on every write. Storage sits behind
//! [`StateStore`]; callers go through [`Cwm`], which validates the state and opens the
//! `sophia.state.read` / `sophia.state.write` spans for every backend.

use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::Empty;

use crate::hcg::{new_id, now_rfc3339};

/// Largest accepted state, in bytes of compact JSON. Simulation copies the state once per imagined
/// step, so this bounds a simulation's memory as well as the store's.
pub const MAX_STATE_BYTES: usize = 256 * 1024;

/// Errors of the state. The intended HTTP status is given on each variant. The messages of the
/// first two follow the name of the field that held the state (`target_state must be ...`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// The state is not a JSON object (400/422: bad input).
    #[error("must be a JSON object, got {found}")]
    NotAnObject {
        /// The JSON type that was given instead.
        found: &'static str,
    },
    /// The state serializes to more than [`MAX_STATE_BYTES`] (413).
    #[error("is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The storage backend failed; never produced by the in-memory store (500).
    #[error("state storage failed: {0}")]
    Backend(String),
}

/// A version of the world state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CwmState {
    /// The state itself.
    pub state: Map<String, Value>,
    /// A fresh UUID for every version.
    pub state_id: String,
    /// When this version was written, RFC 3339 in UTC.
    pub timestamp: String,
}

impl CwmState {
    /// A new version of the state with a fresh id and the current time.
    pub fn new(state: Map<String, Value>) -> Self {
        Self {
            state,
            state_id: new_id(),
            timestamp: now_rfc3339(),
        }
    }
}

/// Checks that `value` is a JSON object of at most [`MAX_STATE_BYTES`] and returns the object.
/// Also used for a simulation's `initial_state`.
pub fn validate_state(value: Value) -> Result<Map<String, Value>, StateError> {
    let Value::Object(object) = value else {
        return Err(StateError::NotAnObject {
            found: json_type(&value),
        });
    };
    let mut counter = ByteCounter::default();
    // The counter fails the write once past the limit, so a huge state is not serialized in full.
    if serde_json::to_writer(&mut counter, &object).is_err() || counter.bytes > MAX_STATE_BYTES {
        return Err(StateError::TooLarge {
            limit: MAX_STATE_BYTES,
        });
    }
    Ok(object)
}

/// Counts serialized bytes without keeping them.
#[derive(Default)]
struct ByteCounter {
    bytes: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > MAX_STATE_BYTES {
            return Err(io::Error::other("state too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Storage of the current state. Call it through [`Cwm`], which validates and traces.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The current version.
    fn load(&self) -> Result<CwmState, StateError>;

    /// Makes `state` the current version.
    fn save(&self, state: CwmState) -> Result<(), StateError>;
}

/// The state in memory, lost at exit; starts as an empty object. Its `Debug` leaves the state out.
pub struct InMemoryStateStore {
    current: RwLock<CwmState>,
}

impl fmt::Debug for InMemoryStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStateStore").finish_non_exhaustive()
    }
}

impl Default for InMemoryStateStore {
    fn default() -> Self {
        Self {
            current: RwLock::new(CwmState::new(Map::new())),
        }
    }
}

impl StateStore for InMemoryStateStore {
    fn load(&self) -> Result<CwmState, StateError> {
        Ok(self.current.read().clone())
    }

    fn save(&self, state: CwmState) -> Result<(), StateError> {
        *self.current.write() = state;
        Ok(())
    }
}

/// The world state as the service uses it: a cheap-to-clone handle over any [`StateStore`].
#[derive(Clone, Debug)]
pub struct Cwm {
    store: Arc<dyn StateStore>,
}

impl Cwm {
    /// A state over the given store.
    pub fn new(store: impl StateStore + 'static) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// An empty state held in memory.
    pub fn in_memory() -> Self {
        Self::new(InMemoryStateStore::default())
    }

    /// The current state, in span `sophia.state.read` (with `state.id`).
    pub fn read(&self) -> Result<CwmState, StateError> {
        let span = tracing::info_span!("sophia.state.read", state.id = Empty);
        let _entered = span.enter();
        let current = self.store.load()?;
        span.record("state.id", current.state_id.as_str());
        Ok(current)
    }

    /// Replaces the state with `state` (a JSON object of at most [`MAX_STATE_BYTES`]) and returns
    /// the new version, in span `sophia.state.write` (with the new `state.id`).
    pub fn replace(&self, state: Value) -> Result<CwmState, StateError> {
        let span = tracing::info_span!("sophia.state.write", state.id = Empty);
        let _entered = span.enter();
        let next = CwmState::new(validate_state(state)?);
        span.record("state.id", next.state_id.as_str());
        self.store.save(next.clone())?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_initial_state_is_an_empty_object_with_an_id() {
        let cwm = Cwm::in_memory();
        let current = cwm.read().expect("read");
        assert!(current.state.is_empty());
        assert!(uuid::Uuid::parse_str(&current.state_id).is_ok());
        assert!(humantime::parse_rfc3339(&current.timestamp).is_ok());
    }

    #[test]
    fn every_replace_gives_a_new_id_and_is_read_back() {
        let cwm = Cwm::in_memory();
        let before = cwm.read().expect("read");

        let first = cwm
            .replace(json!({"robot": {"holding": null}}))
            .expect("replace");
        let second = cwm
            .replace(json!({"robot": {"holding": "block"}}))
            .expect("replace");

        assert_ne!(first.state_id, before.state_id);
        assert_ne!(second.state_id, first.state_id);
        let current = cwm.read().expect("read");
        assert_eq!(current, second);
        assert_eq!(
            Value::Object(current.state),
            json!({"robot": {"holding": "block"}})
        );
    }

    #[test]
    fn non_objects_are_rejected_and_leave_the_state_alone() {
        let cwm = Cwm::in_memory();
        let before = cwm.read().expect("read");

        for (value, found) in [
            (json!(null), "null"),
            (json!([1]), "an array"),
            (json!("s"), "a string"),
            (json!(3), "a number"),
            (json!(true), "a boolean"),
        ] {
            assert_eq!(cwm.replace(value), Err(StateError::NotAnObject { found }));
        }
        assert_eq!(cwm.read().expect("read"), before);
    }

    #[test]
    fn states_over_the_size_limit_are_rejected() {
        let cwm = Cwm::in_memory();
        let big = "x".repeat(MAX_STATE_BYTES);

        assert_eq!(
            cwm.replace(json!({ "blob": big })),
            Err(StateError::TooLarge {
                limit: MAX_STATE_BYTES
            })
        );
        // `{"blob":"…"}` adds 11 bytes of JSON around the string.
        let fits = "x".repeat(MAX_STATE_BYTES - 11);
        assert!(cwm.replace(json!({ "blob": fits })).is_ok());
        let one_over = "x".repeat(MAX_STATE_BYTES - 10);
        assert!(cwm.replace(json!({ "blob": one_over })).is_err());
    }
}
