//! Storage and nearest-neighbour search of embeddings.
//!
//! [`VectorStore`] is the backend interface: an in-memory store today ([`MemoryVectorStore`]), a
//! Milvus-backed one later. Its operations return boxed futures so that a networked backend can
//! implement it without blocking the runtime, while the trait stays usable as `dyn VectorStore`.
//! Callers use [`InstrumentedStore`], which validates arguments once for every backend and wraps
//! each operation in a `hermes.milvus` span (`db.operation.name`, `db.system.name`).

use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tracing::Instrument;

/// Default number of entries the in-memory store keeps before evicting the oldest (about 15 MiB of
/// 384-dimensional vectors).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Default budget, in bytes, for the stored texts of the in-memory store.
pub const DEFAULT_TEXT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Largest `top_k` a search accepts.
pub const MAX_TOP_K: usize = 100;

/// A future returned by a [`VectorStore`] operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
///
/// `DimensionMismatch`, `InvalidTopK` and `InvalidVector` are client errors (bad input);
/// `Backend` is a failure of the storage backend (an upstream error for a networked store).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The vector does not have the store's dimension.
    #[error("vector has {actual} dimensions; the store holds {expected}-dimensional vectors")]
    DimensionMismatch {
        /// The store's dimension.
        expected: usize,
        /// The vector's dimension.
        actual: usize,
    },
    /// `top_k` is outside `1..=MAX_TOP_K`.
    #[error("top_k must be between 1 and {max}, got {top_k}")]
    InvalidTopK {
        /// The requested value, as the caller gave it (negative too).
        top_k: i64,
        /// The largest accepted value.
        max: usize,
    },
    /// The vector has a non-finite component or zero norm, so cosine similarity is undefined.
    #[error("invalid vector: {reason}")]
    InvalidVector {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The backend failed.
    #[error("vector store backend failed: {message}")]
    Backend {
        /// The backend's description of the failure.
        message: String,
    },
}

impl StoreError {
    /// Whether the caller's input caused the error (as opposed to the backend).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Backend { .. })
    }

    /// A stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DimensionMismatch { .. } => "dimension_mismatch",
            Self::InvalidTopK { .. } => "invalid_top_k",
            Self::InvalidVector { .. } => "invalid_vector",
            Self::Backend { .. } => "vector_store_unavailable",
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// Id given to the embedding when it was inserted.
    pub embedding_id: String,
    /// Cosine similarity to the query, in `-1.0..=1.0`.
    pub score: f32,
    /// The text that was embedded.
    pub text: String,
}

/// A backend that stores embeddings and finds the nearest ones.
///
/// Implementations may assume that [`InstrumentedStore`] has already validated the arguments:
/// vectors have [`dimension`](Self::dimension) components, are finite and non-zero, and `top_k` is
/// in `1..=MAX_TOP_K`.
pub trait VectorStore: Send + Sync {
    /// The `db.system.name` of this backend, e.g. `"memory"` or `"milvus"`.
    fn system_name(&self) -> &'static str;

    /// Number of components of every stored vector.
    fn dimension(&self) -> usize;

    /// Stores `text` with its `vector` and returns the new embedding id (a UUID v4 string).
    fn insert(&self, text: String, vector: Vec<f32>) -> StoreFuture<'_, String>;

    /// The `top_k` stored entries most similar to `query` by cosine similarity, best first; equal
    /// scores are ordered oldest entry first.
    fn search<'a>(&'a self, query: &'a [f32], top_k: usize) -> StoreFuture<'a, Vec<SearchHit>>;

    /// Number of stored entries.
    fn len(&self) -> StoreFuture<'_, usize>;

    /// Whether the store holds no entries.
    fn is_empty(&self) -> StoreFuture<'_, bool> {
        let len = self.len();
        Box::pin(async move { Ok(len.await? == 0) })
    }
}

/// The front door to a [`VectorStore`]: validates arguments and traces every operation.
///
/// Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct InstrumentedStore {
    backend: Arc<dyn VectorStore>,
}

impl std::fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedStore")
            .field("system_name", &self.backend.system_name())
            .field("dimension", &self.backend.dimension())
            .finish()
    }
}

impl InstrumentedStore {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn VectorStore>) -> Self {
        Self { backend }
    }

    /// An in-memory store of `dimension`-sized vectors with the default limits.
    pub fn in_memory(dimension: usize) -> Self {
        Self::in_memory_with_capacity(dimension, DEFAULT_CAPACITY)
    }

    /// An in-memory store of at most `capacity` vectors of `dimension`.
    pub fn in_memory_with_capacity(dimension: usize, capacity: usize) -> Self {
        Self::new(Arc::new(MemoryVectorStore::new(dimension, capacity)))
    }

    /// The backend's `db.system.name`.
    pub fn system_name(&self) -> &'static str {
        self.backend.system_name()
    }

    /// The backend's vector dimension.
    pub fn dimension(&self) -> usize {
        self.backend.dimension()
    }

    /// Validates and stores an embedding inside a `hermes.milvus` span (`insert`); returns its id.
    ///
    /// # Errors
    /// [`StoreError::DimensionMismatch`] or [`StoreError::InvalidVector`] for a bad vector,
    /// [`StoreError::Backend`] when the backend fails.
    pub async fn insert(&self, text: String, vector: Vec<f32>) -> Result<String, StoreError> {
        let span = self.span("insert");
        let result = match self.validate_vector(&vector) {
            Ok(()) => {
                self.backend
                    .insert(text, vector)
                    .instrument(span.clone())
                    .await
            }
            Err(err) => Err(err),
        };
        record_outcome(&span, &result);
        result
    }

    /// Validates and runs a nearest-neighbour search inside a `hermes.milvus` span (`search`).
    ///
    /// # Errors
    /// [`StoreError::InvalidTopK`], [`StoreError::DimensionMismatch`] or
    /// [`StoreError::InvalidVector`] for bad arguments, [`StoreError::Backend`] when the backend fails.
    pub async fn search(&self, query: &[f32], top_k: i64) -> Result<Vec<SearchHit>, StoreError> {
        let span = self.span("search");
        let checked =
            validate_top_k(top_k).and_then(|top_k| self.validate_vector(query).map(|()| top_k));
        let result = match checked {
            Ok(top_k) => {
                self.backend
                    .search(query, top_k)
                    .instrument(span.clone())
                    .await
            }
            Err(err) => Err(err),
        };
        if let Ok(hits) = &result {
            span.record(
                "db.response.returned_rows",
                i64::try_from(hits.len()).unwrap_or(i64::MAX),
            );
        }
        record_outcome(&span, &result);
        result
    }

    /// Number of stored entries.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub async fn len(&self) -> Result<usize, StoreError> {
        self.backend.len().await
    }

    /// Whether the store holds no entries.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        self.backend.is_empty().await
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "hermes.milvus",
            db.operation.name = operation,
            db.system.name = self.backend.system_name(),
            db.response.returned_rows = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        )
    }

    fn validate_vector(&self, vector: &[f32]) -> Result<(), StoreError> {
        let expected = self.backend.dimension();
        if vector.len() != expected {
            return Err(StoreError::DimensionMismatch {
                expected,
                actual: vector.len(),
            });
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::InvalidVector {
                reason: "components must be finite numbers",
            });
        }
        if vector.iter().all(|x| *x == 0.0) {
            return Err(StoreError::InvalidVector {
                reason: "a zero vector has no direction to compare",
            });
        }
        Ok(())
    }
}

/// A vector's length, in `f64`: in `f32` the squares of components near the ends of its range
/// underflow to 0 or overflow to infinity, and a score of 0/0 or ∞/∞ is NaN.
fn norm(vector: &[f32]) -> f64 {
    vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// `top_k` as the count the backend takes, when it is in `1..=MAX_TOP_K`.
fn validate_top_k(top_k: i64) -> Result<usize, StoreError> {
    usize::try_from(top_k)
        .ok()
        .filter(|top_k| (1..=MAX_TOP_K).contains(top_k))
        .ok_or(StoreError::InvalidTopK {
            top_k,
            max: MAX_TOP_K,
        })
}

/// Marks the span as failed only for backend failures: a bad argument is the caller's error, and
/// the server span already reports it through its 4xx status.
fn record_outcome<T>(span: &tracing::Span, result: &Result<T, StoreError>) {
    if let Err(err) = result {
        span.record("error.type", err.code());
        if !err.is_client_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
}

struct Entry {
    sequence: u64,
    id: String,
    text: String,
    vector: Vec<f32>,
    norm: f64,
}

#[derive(Default)]
struct Entries {
    entries: VecDeque<Entry>,
    text_bytes: usize,
    next_sequence: u64,
}

/// An in-memory [`VectorStore`] with bounded size: past `capacity` entries, or past the text byte
/// budget, the oldest entries are evicted first, so a long-running service's memory stays flat.
///
/// Search is an exact linear scan, which at the default capacity costs a few milliseconds; an
/// approximate index would only pay off far beyond it.
pub struct MemoryVectorStore {
    dimension: usize,
    capacity: usize,
    text_budget_bytes: usize,
    inner: RwLock<Entries>,
}

impl std::fmt::Debug for MemoryVectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVectorStore")
            .field("dimension", &self.dimension)
            .field("capacity", &self.capacity)
            .field("text_budget_bytes", &self.text_budget_bytes)
            .field("len", &self.inner.read().entries.len())
            .finish()
    }
}

impl MemoryVectorStore {
    /// A store of `dimension`-sized vectors holding at most `capacity` entries (at least one) and
    /// [`DEFAULT_TEXT_BUDGET_BYTES`] of text.
    pub fn new(dimension: usize, capacity: usize) -> Self {
        Self {
            dimension,
            capacity: capacity.max(1),
            text_budget_bytes: DEFAULT_TEXT_BUDGET_BYTES,
            inner: RwLock::new(Entries::default()),
        }
    }

    /// Sets the budget for stored text, in bytes. A single text larger than the budget is still
    /// stored, alone.
    #[must_use]
    pub fn with_text_budget(mut self, bytes: usize) -> Self {
        self.text_budget_bytes = bytes;
        self
    }

    /// The maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn insert_now(&self, text: String, vector: Vec<f32>) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let norm = norm(&vector);
        let mut inner = self.inner.write();
        while inner.entries.len() >= self.capacity
            || (!inner.entries.is_empty() && inner.text_bytes + text.len() > self.text_budget_bytes)
        {
            match inner.entries.pop_front() {
                Some(evicted) => inner.text_bytes -= evicted.text.len(),
                None => break,
            }
        }
        let sequence = inner.next_sequence;
        inner.next_sequence += 1;
        inner.text_bytes += text.len();
        inner.entries.push_back(Entry {
            sequence,
            id: id.clone(),
            text,
            vector,
            norm,
        });
        id
    }

    fn search_now(&self, query: &[f32], top_k: usize) -> Vec<SearchHit> {
        let query_norm = norm(query);
        let inner = self.inner.read();
        // A bounded heap whose top is the worst kept candidate keeps the scan O(n log k) without
        // allocating per entry.
        let mut best: BinaryHeap<Candidate> = BinaryHeap::with_capacity(top_k + 1);
        for (position, entry) in inner.entries.iter().enumerate() {
            let dot: f64 = entry
                .vector
                .iter()
                .zip(query)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let candidate = Candidate {
                // A cosine, within -1..=1: nothing is lost but precision.
                score: (dot / (entry.norm * query_norm)) as f32,
                sequence: entry.sequence,
                position,
            };
            if best.len() < top_k {
                best.push(candidate);
            } else if best.peek().is_some_and(|worst| candidate < *worst) {
                best.pop();
                best.push(candidate);
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .filter_map(|candidate| {
                inner
                    .entries
                    .get(candidate.position)
                    .map(|entry| SearchHit {
                        embedding_id: entry.id.clone(),
                        score: candidate.score,
                        text: entry.text.clone(),
                    })
            })
            .collect()
    }
}

/// Ordered so that "less" means "better": higher score first, then older entry first.
struct Candidate {
    score: f32,
    sequence: u64,
    position: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.sequence.cmp(&other.sequence))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Candidate {}

impl VectorStore for MemoryVectorStore {
    fn system_name(&self) -> &'static str {
        "memory"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn insert(&self, text: String, vector: Vec<f32>) -> StoreFuture<'_, String> {
        let id = self.insert_now(text, vector);
        Box::pin(std::future::ready(Ok(id)))
    }

    fn search<'a>(&'a self, query: &'a [f32], top_k: usize) -> StoreFuture<'a, Vec<SearchHit>> {
        let hits = self.search_now(query, top_k);
        Box::pin(std::future::ready(Ok(hits)))
    }

    fn len(&self) -> StoreFuture<'_, usize> {
        let len = self.inner.read().entries.len();
        Box::pin(std::future::ready(Ok(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: usize) -> InstrumentedStore {
        InstrumentedStore::new(Arc::new(MemoryVectorStore::new(3, capacity)))
    }

    #[tokio::test]
    async fn insert_returns_a_uuid_and_counts() {
        let store = store(10);
        let id = store
            .insert("a".into(), vec![1.0, 0.0, 0.0])
            .await
            .expect("insert");
        let parsed = uuid::Uuid::parse_str(&id).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(store.len().await.expect("len"), 1);
        assert!(!store.is_empty().await.expect("is_empty"));
        assert!(
            InstrumentedStore::in_memory(3)
                .is_empty()
                .await
                .expect("is_empty")
        );
        assert_eq!(store.system_name(), "memory");
    }

    #[tokio::test]
    async fn search_orders_by_cosine_similarity() {
        let store = store(10);
        let x = store
            .insert("x".into(), vec![1.0, 0.0, 0.0])
            .await
            .expect("x");
        store
            .insert("y".into(), vec![0.0, 1.0, 0.0])
            .await
            .expect("y");
        let xy = store
            .insert("xy".into(), vec![1.0, 1.0, 0.0])
            .await
            .expect("xy");
        store
            .insert("-x".into(), vec![-1.0, 0.0, 0.0])
            .await
            .expect("-x");

        let hits = store.search(&[2.0, 0.0, 0.0], 3).await.expect("search");

        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        assert_eq!(texts, ["x", "xy", "y"]);
        assert_eq!(hits[0].embedding_id, x);
        assert_eq!(hits[1].embedding_id, xy);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        assert!((hits[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(hits[2].score.abs() < 1e-6);
    }

    #[tokio::test]
    async fn vectors_near_the_ends_of_the_f32_range_have_finite_scores() {
        let store = store(10);
        for (text, component) in [("tiny", 1e-30_f32), ("huge", 3e38_f32)] {
            store
                .insert(text.into(), vec![component; 3])
                .await
                .expect("stored");
        }

        for query in [[1e-30_f32; 3], [3e38_f32; 3], [-3e38_f32, 0.0, 1e-30]] {
            let hits = store.search(&query, 2).await.expect("search");

            assert_eq!(hits.len(), 2);
            for hit in hits {
                assert!(
                    (-1.0..=1.0).contains(&hit.score),
                    "{query:?}: {}",
                    hit.score
                );
            }
        }
    }

    #[tokio::test]
    async fn equal_scores_come_oldest_first() {
        let store = store(10);
        let mut ids = Vec::new();
        for text in ["first", "second", "third", "fourth"] {
            ids.push(
                store
                    .insert(text.into(), vec![0.0, 0.0, 1.0])
                    .await
                    .expect("insert"),
            );
        }
        let hits = store.search(&[0.0, 0.0, 5.0], 3).await.expect("search");
        let hit_ids: Vec<&str> = hits.iter().map(|h| h.embedding_id.as_str()).collect();
        assert_eq!(hit_ids, [&ids[0], &ids[1], &ids[2]]);
    }

    #[tokio::test]
    async fn top_k_larger_than_the_store_returns_everything() {
        let store = store(10);
        store
            .insert("a".into(), vec![1.0, 0.0, 0.0])
            .await
            .expect("a");
        let hits = store.search(&[1.0, 0.0, 0.0], 100).await.expect("search");
        assert_eq!(hits.len(), 1);
        assert!(store.search(&[1.0, 0.0, 0.0], 5).await.is_ok());
        let empty = InstrumentedStore::in_memory(3);
        assert!(
            empty
                .search(&[1.0, 0.0, 0.0], 5)
                .await
                .expect("search")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn the_oldest_entry_is_evicted_at_capacity() {
        let store = store(2);
        store
            .insert("old".into(), vec![1.0, 0.0, 0.0])
            .await
            .expect("old");
        store
            .insert("mid".into(), vec![1.0, 0.1, 0.0])
            .await
            .expect("mid");
        store
            .insert("new".into(), vec![1.0, 0.2, 0.0])
            .await
            .expect("new");

        assert_eq!(store.len().await.expect("len"), 2);
        let hits = store.search(&[1.0, 0.0, 0.0], 10).await.expect("search");
        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        assert_eq!(texts, ["mid", "new"]);
    }

    #[tokio::test]
    async fn the_text_budget_evicts_too() {
        let backend = MemoryVectorStore::new(3, 100).with_text_budget(10);
        let store = InstrumentedStore::new(Arc::new(backend));
        for text in ["aaaa", "bbbb", "cccc"] {
            store
                .insert(text.into(), vec![1.0, 0.0, 0.0])
                .await
                .expect("insert");
        }
        assert_eq!(store.len().await.expect("len"), 2);
        store
            .insert("x".repeat(50), vec![1.0, 0.0, 0.0])
            .await
            .expect("big");
        assert_eq!(store.len().await.expect("len"), 1);
    }

    #[tokio::test]
    async fn a_dimension_mismatch_is_a_client_error() {
        let store = store(10);
        let err = store.search(&[1.0, 0.0], 1).await.expect_err("mismatch");
        assert_eq!(
            err,
            StoreError::DimensionMismatch {
                expected: 3,
                actual: 2
            }
        );
        assert!(err.is_client_error());
        let err = store
            .insert("a".into(), vec![1.0; 4])
            .await
            .expect_err("mismatch");
        assert_eq!(err.code(), "dimension_mismatch");
        assert_eq!(store.len().await.expect("len"), 0);
    }

    #[tokio::test]
    async fn top_k_must_be_between_1_and_100() {
        let store = store(10);
        let max = i64::try_from(MAX_TOP_K).expect("a small number");
        for top_k in [-1, 0, max + 1] {
            let err = store
                .search(&[1.0, 0.0, 0.0], top_k)
                .await
                .expect_err("range");
            assert_eq!(
                err,
                StoreError::InvalidTopK {
                    top_k,
                    max: MAX_TOP_K
                }
            );
        }
        assert!(store.search(&[1.0, 0.0, 0.0], max).await.is_ok());
    }

    #[tokio::test]
    async fn zero_and_non_finite_vectors_are_rejected() {
        let store = store(10);
        for vector in [
            vec![0.0; 3],
            vec![f32::NAN, 1.0, 0.0],
            vec![f32::INFINITY, 0.0, 0.0],
        ] {
            let err = store.insert("a".into(), vector).await.expect_err("invalid");
            assert_eq!(err.code(), "invalid_vector");
        }
    }

    #[tokio::test]
    async fn it_stores_real_embeddings() {
        let store = InstrumentedStore::in_memory(crate::embed::EMBEDDING_DIMENSION);
        for text in [
            "pick up the red block",
            "place it on the table",
            "report the result",
        ] {
            let embedding = crate::embed::embed(text, None).expect("embed");
            store
                .insert(text.into(), embedding.vector)
                .await
                .expect("insert");
        }
        let query = crate::embed::embed("put it on the table", None).expect("embed");
        let hits = store.search(&query.vector, 1).await.expect("search");
        assert_eq!(hits[0].text, "place it on the table");
    }
}
