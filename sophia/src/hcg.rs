//! The HCG (hybrid causal graph): the entities Sophia reasons about (goals, plans, steps, simulations)
//! and the typed edges between them. Storage sits behind [`HcgStore`] so a persistent backend can
//! replace the in-memory one; callers go through [`Hcg`], which validates input and opens the
//! `sophia.hcg.read` / `sophia.hcg.write` spans, so every backend is traced the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::Empty;

/// Entity type of a goal.
pub const TYPE_GOAL: &str = "goal";
/// Entity type of a plan.
pub const TYPE_PLAN: &str = "plan";
/// Entity type of a plan step.
pub const TYPE_STEP: &str = "step";
/// Entity type of a recorded world state.
pub const TYPE_STATE: &str = "state";
/// Entity type of a simulation run.
pub const TYPE_SIMULATION: &str = "simulation";

/// Edge relation goal -> plan.
pub const REL_HAS_PLAN: &str = "has_plan";
/// Edge relation plan -> step.
pub const REL_HAS_STEP: &str = "has_step";
/// Edge relation step -> next step.
pub const REL_PRECEDES: &str = "precedes";
/// Edge relation plan -> simulation.
pub const REL_SIMULATED_BY: &str = "simulated_by";

/// Number of entities a list or snapshot returns when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest limit a list or snapshot accepts.
pub const MAX_LIMIT: usize = 1000;

/// Errors of the graph. The intended HTTP status is given on each variant.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HcgError {
    /// No entity has this id (404).
    #[error("entity '{id}' not found")]
    NotFound {
        /// The id that was asked for.
        id: String,
    },
    /// A limit outside `1..=1000` (400/422: bad input).
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    InvalidLimit(i64),
    /// A batch entity is malformed: empty id or type, or properties that are not an object
    /// (400/422: bad input).
    #[error("invalid entity '{id}': {reason}")]
    InvalidEntity {
        /// The offending entity's id (may be empty).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A batch edge is malformed or points at an entity that is neither stored nor in the batch
    /// (400/422: bad input).
    #[error("invalid edge '{from}' -[{relation}]-> '{to}': {reason}")]
    InvalidEdge {
        /// Source entity id.
        from: String,
        /// Target entity id.
        to: String,
        /// Edge relation.
        relation: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A batch entity reuses an id already stored or already in the batch (409).
    #[error("entity '{id}' already exists")]
    DuplicateEntity {
        /// The id used twice.
        id: String,
    },
    /// The storage backend failed; never produced by the in-memory store (500).
    #[error("graph storage failed: {0}")]
    Backend(String),
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    /// Unique id, a UUID string for entities Sophia creates.
    pub id: String,
    /// Kind of entity: `goal`, `plan`, `step`, `state`, `simulation`, ...
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Human-readable name.
    pub name: String,
    /// Free-form attributes; always a JSON object.
    #[schema(value_type = Object)]
    pub properties: Value,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
}

impl Entity {
    /// A new entity with a fresh UUID and the current time.
    pub fn new(
        entity_type: impl Into<String>,
        name: impl Into<String>,
        properties: Map<String, Value>,
    ) -> Self {
        Self::with_id(new_id(), entity_type, name, properties)
    }

    /// A new entity with a caller-chosen id (e.g. a plan id handed out before the plan exists)
    /// and the current time.
    pub fn with_id(
        id: impl Into<String>,
        entity_type: impl Into<String>,
        name: impl Into<String>,
        properties: Map<String, Value>,
    ) -> Self {
        Self {
            id: id.into(),
            entity_type: entity_type.into(),
            name: name.into(),
            properties: Value::Object(properties),
            created_at: now_rfc3339(),
        }
    }
}

/// A directed, typed edge between two entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Edge {
    /// Source entity id.
    pub from: String,
    /// Target entity id.
    pub to: String,
    /// Relation name: `has_plan`, `has_step`, `precedes`, `simulated_by`, ...
    pub relation: String,
}

impl Edge {
    /// An edge `from -[relation]-> to`.
    pub fn new(
        from: impl Into<String>,
        to: impl Into<String>,
        relation: impl Into<String>,
    ) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            relation: relation.into(),
        }
    }
}

/// Entities and edges written together: either all are stored or none is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HcgBatch {
    /// Entities to add; ids must be new.
    pub entities: Vec<Entity>,
    /// Edges to add; each end must be in this batch or already stored.
    pub edges: Vec<Edge>,
}

impl HcgBatch {
    /// Checks what can be checked without the store: non-empty ids, types and relations, object
    /// properties, no id twice in the batch. Backends check the rest against what they hold.
    pub fn validate(&self) -> Result<(), HcgError> {
        let mut seen = HashSet::with_capacity(self.entities.len());
        for entity in &self.entities {
            let invalid = |reason| HcgError::InvalidEntity {
                id: entity.id.clone(),
                reason,
            };
            if entity.id.trim().is_empty() {
                return Err(invalid("id is empty"));
            }
            if entity.entity_type.trim().is_empty() {
                return Err(invalid("type is empty"));
            }
            if !entity.properties.is_object() {
                return Err(invalid("properties must be a JSON object"));
            }
            if !seen.insert(entity.id.as_str()) {
                return Err(HcgError::DuplicateEntity {
                    id: entity.id.clone(),
                });
            }
        }
        for edge in &self.edges {
            if edge.relation.trim().is_empty() {
                return Err(invalid_edge(edge, "relation is empty"));
            }
        }
        Ok(())
    }
}

fn invalid_edge(edge: &Edge, reason: &'static str) -> HcgError {
    HcgError::InvalidEdge {
        from: edge.from.clone(),
        to: edge.to.clone(),
        relation: edge.relation.clone(),
        reason,
    }
}

/// A bounded view of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Up to `limit` entities, newest first.
    pub entities: Vec<Entity>,
    /// The edges whose two ends are both among `entities`, in insertion order, so the snapshot is
    /// a self-contained subgraph.
    pub edges: Vec<Edge>,
    /// Number of entities in the whole graph (more than `entities.len()` when truncated).
    pub entity_count: usize,
    /// Number of edges in the whole graph.
    pub edge_count: usize,
}

/// A validated number of entities to return: `1..=1000`, default 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(usize);

impl Limit {
    /// Validates a limit. Takes `i64` so a negative query value gets this error, not a parse error.
    pub fn new(limit: i64) -> Result<Self, HcgError> {
        match usize::try_from(limit) {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Self(n)),
            _ => Err(HcgError::InvalidLimit(limit)),
        }
    }

    /// The limit from an optional query parameter: the default when absent.
    pub fn from_query(limit: Option<i64>) -> Result<Self, HcgError> {
        limit.map_or(Ok(Self::default()), Self::new)
    }

    /// The number of entities.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(DEFAULT_LIMIT)
    }
}

/// Storage of the graph. Implementations must make [`HcgStore::insert_batch`] atomic and list
/// entities newest first (reverse insertion order). Call them through [`Hcg`], which validates
/// batches and limits and opens the spans.
pub trait HcgStore: Send + Sync + fmt::Debug {
    /// Stores an already [validated](HcgBatch::validate) batch, all or nothing: fails with
    /// `DuplicateEntity` when an id is already stored and `InvalidEdge` when an edge end is
    /// neither stored nor in the batch.
    fn insert_batch(&self, batch: HcgBatch) -> Result<(), HcgError>;

    /// The entity with this id, or `NotFound`.
    fn entity(&self, id: &str) -> Result<Entity, HcgError>;

    /// Up to `limit` entities, newest first, only of `entity_type` when given.
    fn entities(&self, entity_type: Option<&str>, limit: usize) -> Result<Vec<Entity>, HcgError>;

    /// Up to `limit` newest entities, the edges among them, and the graph's totals.
    fn snapshot(&self, limit: usize) -> Result<Snapshot, HcgError>;
}

/// The graph as the service uses it: a cheap-to-clone handle over any [`HcgStore`] that
/// validates input and traces every operation.
#[derive(Clone, Debug)]
pub struct Hcg {
    store: Arc<dyn HcgStore>,
}

impl Hcg {
    /// A graph over the given store.
    pub fn new(store: impl HcgStore + 'static) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// An empty graph held in memory.
    pub fn in_memory() -> Self {
        Self::new(InMemoryHcg::default())
    }

    /// An in-memory graph of at most `capacity` entities.
    pub fn in_memory_with_capacity(capacity: usize) -> Self {
        Self::new(InMemoryHcg::with_capacity(capacity))
    }

    /// Writes a batch atomically, in span `sophia.hcg.write`.
    pub fn write(&self, batch: HcgBatch) -> Result<(), HcgError> {
        let span = tracing::info_span!(
            "sophia.hcg.write",
            hcg.entity_count = to_i64(batch.entities.len()),
            hcg.edge_count = to_i64(batch.edges.len()),
        );
        let _entered = span.enter();
        batch.validate()?;
        self.store.insert_batch(batch)
    }

    /// The entity with this id, or `NotFound`, in span `sophia.hcg.read`.
    pub fn get(&self, id: &str) -> Result<Entity, HcgError> {
        let span = read_span(None);
        let _entered = span.enter();
        let entity = self.store.entity(id)?;
        span.record("hcg.count", 1_i64);
        Ok(entity)
    }

    /// Up to `limit` entities, newest first, only of `entity_type` when given (an empty type means
    /// no filter, as `?type=` does), in span `sophia.hcg.read`.
    pub fn list(&self, entity_type: Option<&str>, limit: Limit) -> Result<Vec<Entity>, HcgError> {
        let entity_type = entity_type.filter(|t| !t.is_empty());
        let span = read_span(entity_type);
        let _entered = span.enter();
        let entities = self.store.entities(entity_type, limit.get())?;
        span.record("hcg.count", to_i64(entities.len()));
        Ok(entities)
    }

    /// Up to `limit` newest entities with the edges among them, in span `sophia.hcg.read`
    /// (`hcg.count` is the number of entities returned).
    pub fn snapshot(&self, limit: Limit) -> Result<Snapshot, HcgError> {
        let span = read_span(None);
        let _entered = span.enter();
        let snapshot = self.store.snapshot(limit.get())?;
        span.record("hcg.count", to_i64(snapshot.entities.len()));
        Ok(snapshot)
    }
}

fn read_span(entity_type: Option<&str>) -> tracing::Span {
    // Fields left Empty are not exported, so `hcg.entity_type` only appears when filtering.
    let span = tracing::info_span!(
        "sophia.hcg.read",
        hcg.entity_type = Empty,
        hcg.count = Empty
    );
    if let Some(entity_type) = entity_type {
        span.record("hcg.entity_type", entity_type);
    }
    span
}

/// Converts a count to `i64` for span attributes: tracing-opentelemetry exports unsigned values as
/// strings.
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A fresh UUID v4 string.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The current time as RFC 3339 in UTC, with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The graph in memory, lost at exit. Entities keep insertion order so "newest first" does not
/// depend on timestamps, which tie within a millisecond. It holds at most `capacity` entities:
/// past that, the oldest tenth is evicted with the edges that touch them, so a long-running
/// Sophia keeps flat memory (a plan evicted that way is then unknown to `/simulate`).
pub struct InMemoryHcg {
    graph: RwLock<Graph>,
    capacity: usize,
    max_bytes: usize,
}

/// Its capacity, not its contents: a graph of 100 000 entities is no debug line.
impl fmt::Debug for InMemoryHcg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryHcg")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// Entities an in-memory graph keeps by default (a plan of three steps is five entities).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The memory budget of an in-memory graph per entity of its capacity, in bytes (as
/// `entity_bytes` counts them): most entities are a few hundred bytes, but a goal and its plan
/// may each carry a target state of 256 KiB, and the budget, not the count, bounds those.
pub const BYTES_PER_ENTITY: usize = 2 * 1024;

impl Default for InMemoryHcg {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl InMemoryHcg {
    /// A graph that keeps at most `capacity` entities (at least 10), and about
    /// [`BYTES_PER_ENTITY`] for each of them; the oldest go first.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(10);
        Self {
            graph: RwLock::new(Graph::default()),
            capacity,
            max_bytes: capacity.saturating_mul(BYTES_PER_ENTITY),
        }
    }
}

/// About what `entity` takes in memory: its strings, and a few words for each JSON value (a
/// state of a thousand numbers is a thousand values, whatever its text).
fn entity_bytes(entity: &Entity) -> usize {
    const VALUE: usize = 32;
    /// A value's share: its node, its strings, and its members'.
    fn value_bytes(value: &Value) -> usize {
        VALUE
            + match value {
                Value::String(text) => text.len(),
                Value::Array(items) => items.iter().map(value_bytes).sum(),
                Value::Object(map) => map
                    .iter()
                    .map(|(key, value)| key.len() + VALUE + value_bytes(value))
                    .sum(),
                Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            }
    }
    4 * VALUE
        + entity.id.len()
        + entity.entity_type.len()
        + entity.name.len()
        + entity.created_at.len()
        + value_bytes(&entity.properties)
}

#[derive(Debug, Default)]
struct Graph {
    /// Oldest first; the entity with sequence number `n` is at `n - evicted`.
    entities: VecDeque<Entity>,
    /// Entity id to sequence number.
    index: HashMap<String, usize>,
    /// How many entities were evicted from the front so far.
    evicted: usize,
    edges: Vec<Edge>,
    /// The entities' [`entity_bytes`], summed.
    bytes: usize,
}

impl Graph {
    fn get(&self, id: &str) -> Option<&Entity> {
        self.index
            .get(id)
            .and_then(|&sequence| self.entities.get(sequence - self.evicted))
    }

    /// Drops the oldest entities, and every edge that touched them, until at most `keep` are left
    /// and they hold at most `keep_bytes`; the `newest` entities (the batch just written) stay.
    fn evict_to(&mut self, keep: usize, keep_bytes: usize, newest: usize) {
        let oldest = self.entities.len().saturating_sub(newest);
        let mut excess = self.entities.len().saturating_sub(keep).min(oldest);
        let mut bytes = self.bytes;
        for entity in self.entities.iter().take(excess) {
            bytes -= entity_bytes(entity);
        }
        while bytes > keep_bytes && excess < oldest {
            bytes -= entity_bytes(&self.entities[excess]);
            excess += 1;
        }
        if excess == 0 {
            return;
        }
        self.bytes = bytes;
        for entity in self.entities.drain(..excess) {
            self.index.remove(&entity.id);
        }
        self.evicted += excess;
        let index = &self.index;
        self.edges
            .retain(|edge| index.contains_key(&edge.from) && index.contains_key(&edge.to));
    }
}

impl HcgStore for InMemoryHcg {
    fn insert_batch(&self, batch: HcgBatch) -> Result<(), HcgError> {
        let mut graph = self.graph.write();
        // Check everything before touching the graph so a failed batch leaves no trace.
        for entity in &batch.entities {
            if graph.index.contains_key(&entity.id) {
                return Err(HcgError::DuplicateEntity {
                    id: entity.id.clone(),
                });
            }
        }
        let batch_ids: HashSet<&str> = batch.entities.iter().map(|e| e.id.as_str()).collect();
        let known = |id: &str| batch_ids.contains(id) || graph.index.contains_key(id);
        for edge in &batch.edges {
            if !known(&edge.from) {
                return Err(invalid_edge(edge, "source entity does not exist"));
            }
            if !known(&edge.to) {
                return Err(invalid_edge(edge, "target entity does not exist"));
            }
        }
        let written = batch.entities.len();
        for entity in batch.entities {
            let sequence = graph.evicted + graph.entities.len();
            graph.index.insert(entity.id.clone(), sequence);
            graph.bytes += entity_bytes(&entity);
            graph.entities.push_back(entity);
        }
        graph.edges.extend(batch.edges);
        if graph.entities.len() > self.capacity || graph.bytes > self.max_bytes {
            // A tenth at a time, so the edge sweep is paid rarely.
            graph.evict_to(
                self.capacity - self.capacity / 10,
                self.max_bytes - self.max_bytes / 10,
                written,
            );
        }
        Ok(())
    }

    fn entity(&self, id: &str) -> Result<Entity, HcgError> {
        self.graph
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| HcgError::NotFound { id: id.to_owned() })
    }

    fn entities(&self, entity_type: Option<&str>, limit: usize) -> Result<Vec<Entity>, HcgError> {
        let graph = self.graph.read();
        Ok(graph
            .entities
            .iter()
            .rev()
            .filter(|e| entity_type.is_none_or(|t| e.entity_type == t))
            .take(limit)
            .cloned()
            .collect())
    }

    fn snapshot(&self, limit: usize) -> Result<Snapshot, HcgError> {
        let graph = self.graph.read();
        let entities: Vec<Entity> = graph.entities.iter().rev().take(limit).cloned().collect();
        let ids: HashSet<&str> = entities.iter().map(|e| e.id.as_str()).collect();
        let edges = graph
            .edges
            .iter()
            .filter(|e| ids.contains(e.from.as_str()) && ids.contains(e.to.as_str()))
            .cloned()
            .collect();
        Ok(Snapshot {
            entities,
            edges,
            entity_count: graph.entities.len(),
            edge_count: graph.edges.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(entity_type: &str, name: &str) -> Entity {
        Entity::new(entity_type, name, Map::new())
    }

    #[test]
    fn a_full_graph_evicts_its_oldest_entities_and_their_edges() {
        let hcg = InMemoryHcg::with_capacity(10);
        let mut previous: Option<Entity> = None;
        let mut all = Vec::new();
        for i in 0..12 {
            let next = entity("step", &format!("step {i}"));
            let edges = previous
                .iter()
                .map(|p| Edge::new(&p.id, &next.id, "precedes"))
                .collect();
            hcg.insert_batch(HcgBatch {
                entities: vec![next.clone()],
                edges,
            })
            .expect("insert");
            all.push(next.clone());
            previous = Some(next);
        }

        // 11 entities went over 10: the oldest tenth plus the excess went, 9 remain, then 1 more.
        let snapshot = hcg.snapshot(100).expect("snapshot");
        assert_eq!(snapshot.entity_count, 10);
        assert!(matches!(
            hcg.entity(&all[0].id),
            Err(HcgError::NotFound { .. })
        ));
        assert!(matches!(
            hcg.entity(&all[1].id),
            Err(HcgError::NotFound { .. })
        ));
        assert_eq!(
            hcg.entity(&all[11].id).expect("newest kept").name,
            "step 11"
        );
        assert_eq!(
            snapshot.edge_count, 9,
            "edges to evicted entities went with them"
        );
        assert!(snapshot.edges.iter().all(|e| e.from != all[1].id));
    }

    #[test]
    fn large_entities_are_evicted_by_their_bytes_before_the_count() {
        // Room for 100 entities, so 200 KiB; each carries a state of 2 000 numbers (about 64 KiB).
        let hcg = InMemoryHcg::with_capacity(100);
        let large = |i: usize| {
            let mut properties = Map::new();
            properties.insert("target_state".into(), json!({"readings": vec![i; 2_000]}));
            Entity::new(TYPE_GOAL, format!("goal {i}"), properties)
        };
        let mut all = Vec::new();

        for i in 0..20 {
            let goal = large(i);
            all.push(goal.id.clone());
            hcg.insert_batch(HcgBatch {
                entities: vec![goal],
                edges: vec![],
            })
            .expect("insert");
        }

        let bytes = hcg.graph.read().bytes;
        assert!(bytes <= 100 * BYTES_PER_ENTITY, "{bytes}");
        let kept = hcg.snapshot(100).expect("snapshot").entity_count;
        assert!((1..20).contains(&kept), "{kept}");
        assert!(hcg.entity(&all[19]).is_ok(), "the newest is kept");
        assert!(hcg.entity(&all[0]).is_err(), "the oldest went");
        let counted: usize = hcg.graph.read().entities.iter().map(entity_bytes).sum();
        assert_eq!(counted, bytes);
    }

    #[test]
    fn a_batch_larger_than_the_budget_is_kept_and_the_older_entities_go() {
        // Room for 10 entities, so 20 KiB; the goal's state alone counts about 64 KiB.
        let hcg = InMemoryHcg::with_capacity(10);
        let older = entity(TYPE_STEP, "older");
        hcg.insert_batch(HcgBatch {
            entities: vec![older.clone()],
            edges: vec![],
        })
        .expect("insert");
        let mut properties = Map::new();
        properties.insert("target_state".into(), json!({"readings": vec![0; 2_000]}));
        let goal = Entity::new(TYPE_GOAL, "large", properties);
        let plan = entity(TYPE_PLAN, "p");

        hcg.insert_batch(HcgBatch {
            entities: vec![goal.clone(), plan.clone()],
            edges: vec![Edge::new(&goal.id, &plan.id, REL_HAS_PLAN)],
        })
        .expect("insert");

        assert!(hcg.entity(&older.id).is_err(), "the older entity went");
        assert!(hcg.entity(&goal.id).is_ok() && hcg.entity(&plan.id).is_ok());
        assert_eq!(hcg.snapshot(100).expect("snapshot").edge_count, 1);
    }

    fn ids(entities: &[Entity]) -> Vec<&str> {
        entities.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn a_written_batch_can_be_read_back() {
        let hcg = Hcg::in_memory();
        let goal = entity(TYPE_GOAL, "stack blocks");
        let plan = entity(TYPE_PLAN, "plan");
        let edge = Edge::new(&goal.id, &plan.id, REL_HAS_PLAN);

        hcg.write(HcgBatch {
            entities: vec![goal.clone(), plan.clone()],
            edges: vec![edge.clone()],
        })
        .expect("write");

        assert_eq!(hcg.get(&goal.id).expect("goal"), goal);
        assert_eq!(hcg.get(&plan.id).expect("plan"), plan);
        let snapshot = hcg.snapshot(Limit::default()).expect("snapshot");
        assert_eq!(snapshot.edges, vec![edge]);
        assert_eq!((snapshot.entity_count, snapshot.edge_count), (2, 1));
    }

    #[test]
    fn entities_serialize_with_a_type_key_and_an_rfc3339_time() {
        let e = Entity::new(TYPE_STEP, "pick", Map::new());
        let value = serde_json::to_value(&e).expect("serialize");
        assert_eq!(value["type"], "step");
        assert!(uuid::Uuid::parse_str(&e.id).is_ok());
        assert!(
            humantime::parse_rfc3339(&e.created_at).is_ok(),
            "{}",
            e.created_at
        );
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let hcg = Hcg::in_memory();
        assert_eq!(
            hcg.get("nope"),
            Err(HcgError::NotFound { id: "nope".into() })
        );
    }

    #[test]
    fn a_batch_with_a_dangling_edge_stores_nothing() {
        let hcg = Hcg::in_memory();
        let goal = entity(TYPE_GOAL, "g");

        let result = hcg.write(HcgBatch {
            entities: vec![goal.clone()],
            edges: vec![Edge::new(&goal.id, "missing", REL_HAS_PLAN)],
        });

        assert!(
            matches!(result, Err(HcgError::InvalidEdge { .. })),
            "{result:?}"
        );
        assert!(matches!(hcg.get(&goal.id), Err(HcgError::NotFound { .. })));
        let snapshot = hcg.snapshot(Limit::default()).expect("snapshot");
        assert_eq!((snapshot.entity_count, snapshot.edge_count), (0, 0));
    }

    #[test]
    fn a_batch_reusing_a_stored_id_stores_nothing() {
        let hcg = Hcg::in_memory();
        let first = entity(TYPE_GOAL, "first");
        hcg.write(HcgBatch {
            entities: vec![first.clone()],
            edges: vec![],
        })
        .expect("first write");
        let fresh = entity(TYPE_PLAN, "fresh");

        let result = hcg.write(HcgBatch {
            entities: vec![fresh.clone(), first.clone()],
            edges: vec![Edge::new(&first.id, &fresh.id, REL_HAS_PLAN)],
        });

        assert_eq!(result, Err(HcgError::DuplicateEntity { id: first.id }));
        assert!(hcg.get(&fresh.id).is_err());
        assert_eq!(
            hcg.snapshot(Limit::default()).expect("snapshot").edge_count,
            0
        );
    }

    #[test]
    fn malformed_batches_are_rejected() {
        let hcg = Hcg::in_memory();
        let mut no_id = entity(TYPE_GOAL, "g");
        no_id.id = " ".into();
        let mut bad_props = entity(TYPE_GOAL, "g");
        bad_props.properties = json!([1, 2]);
        let twice = entity(TYPE_GOAL, "g");
        let a = entity(TYPE_GOAL, "a");

        let cases = [vec![no_id], vec![bad_props], vec![twice.clone(), twice]];
        for entities in cases {
            assert!(
                hcg.write(HcgBatch {
                    entities,
                    edges: vec![]
                })
                .is_err()
            );
        }
        let no_relation = HcgBatch {
            entities: vec![a.clone()],
            edges: vec![Edge::new(&a.id, &a.id, "")],
        };
        assert!(matches!(
            hcg.write(no_relation),
            Err(HcgError::InvalidEdge { .. })
        ));
        assert_eq!(
            hcg.snapshot(Limit::default())
                .expect("snapshot")
                .entity_count,
            0
        );
    }

    #[test]
    fn lists_filter_by_type_newest_first() {
        let hcg = Hcg::in_memory();
        let entities: Vec<Entity> = ["goal", "step", "step", "plan", "step"]
            .iter()
            .map(|t| entity(t, t))
            .collect();
        for e in &entities {
            hcg.write(HcgBatch {
                entities: vec![e.clone()],
                edges: vec![],
            })
            .expect("write");
        }

        let steps = hcg.list(Some("step"), Limit::default()).expect("list");
        assert_eq!(
            ids(&steps),
            vec![&*entities[4].id, &*entities[2].id, &*entities[1].id]
        );
        let all = hcg.list(None, Limit::default()).expect("list");
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].id, entities[4].id);
        assert_eq!(hcg.list(Some(""), Limit::default()).expect("list").len(), 5);
        assert!(
            hcg.list(Some("nothing"), Limit::default())
                .expect("list")
                .is_empty()
        );
        let two = hcg
            .list(Some("step"), Limit::new(2).expect("limit"))
            .expect("list");
        assert_eq!(ids(&two), vec![&*entities[4].id, &*entities[2].id]);
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(Limit::from_query(None), Ok(Limit(DEFAULT_LIMIT)));
        assert_eq!(Limit::new(1).map(Limit::get), Ok(1));
        assert_eq!(Limit::new(1000).map(Limit::get), Ok(1000));
        for bad in [0, -1, 1001, i64::MIN, i64::MAX] {
            assert_eq!(Limit::new(bad), Err(HcgError::InvalidLimit(bad)));
        }
    }

    #[test]
    fn a_truncated_snapshot_keeps_totals_and_only_internal_edges() {
        let hcg = Hcg::in_memory();
        let goal = entity(TYPE_GOAL, "g");
        let plan = entity(TYPE_PLAN, "p");
        let step = entity(TYPE_STEP, "s");
        hcg.write(HcgBatch {
            entities: vec![goal.clone(), plan.clone(), step.clone()],
            edges: vec![
                Edge::new(&goal.id, &plan.id, REL_HAS_PLAN),
                Edge::new(&plan.id, &step.id, REL_HAS_STEP),
            ],
        })
        .expect("write");

        let snapshot = hcg
            .snapshot(Limit::new(2).expect("limit"))
            .expect("snapshot");

        assert_eq!(ids(&snapshot.entities), vec![&*step.id, &*plan.id]);
        assert_eq!(
            snapshot.edges,
            vec![Edge::new(&plan.id, &step.id, REL_HAS_STEP)]
        );
        assert_eq!((snapshot.entity_count, snapshot.edge_count), (3, 2));
    }

    #[test]
    fn edges_may_point_at_entities_stored_earlier() {
        let hcg = Hcg::in_memory();
        let plan = entity(TYPE_PLAN, "p");
        hcg.write(HcgBatch {
            entities: vec![plan.clone()],
            edges: vec![],
        })
        .expect("write plan");
        let sim = entity(TYPE_SIMULATION, "s");

        hcg.write(HcgBatch {
            entities: vec![sim.clone()],
            edges: vec![Edge::new(&plan.id, &sim.id, REL_SIMULATED_BY)],
        })
        .expect("write simulation");

        assert_eq!(
            hcg.snapshot(Limit::default()).expect("snapshot").edge_count,
            1
        );
    }
}
