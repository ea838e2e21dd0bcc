//! The planner: turns a goal and the clauses Hermes split it into into a plan of action steps, and
//! into the HCG batch that records goal, plan and steps. It makes no network calls, so the HTTP
//! handler drives it: [`PlanDraft::new`] validates the goal and opens the `sophia.plan` span, the
//! handler calls Hermes inside that span, then [`PlanDraft::steps_from_clauses`] and
//! [`PlanDraft::build`] finish the plan.
//!
//! A clause becomes a step by rules, not by a model: leading fillers ("please", "then", "first",
//! "and", "finally", "next", ...) are skipped; the first remaining word, lower-cased and
//! lemmatised, is the `action_type`; the rest is the `target`, minus one leading verb particle
//! ("up", "down", "out", "off", "away", "back") when more words follow, and minus one leading
//! article ("the", "a", "an"). So "Pick up the red block" is `pick` on "red block", and "place it
//! on the table" is `place` on "it on the table". The target keeps its original case.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::field::Empty;

use crate::hcg::{
    Edge, Entity, HcgBatch, REL_HAS_PLAN, REL_HAS_STEP, REL_PRECEDES, TYPE_GOAL, TYPE_PLAN,
    TYPE_STEP, new_id, now_rfc3339, to_i64,
};
use crate::state::{StateError, validate_state};

/// Longest goal description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Most steps a plan may have; each step costs the handler one embedding call.
pub const MAX_STEPS: usize = 64;
/// The `type` of every plan step.
pub const STEP_TYPE_ACTION: &str = "action";

/// Errors of planning. The intended HTTP status is given on each variant.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// The goal description is empty or only whitespace (400/422: bad input).
    #[error("goal description must not be empty")]
    EmptyDescription,
    /// The goal description is longer than [`MAX_DESCRIPTION_CHARS`] (400/422: bad input).
    #[error("goal description has {chars} characters, more than the limit of {limit}")]
    DescriptionTooLong {
        /// Characters given.
        chars: usize,
        /// The limit.
        limit: usize,
    },
    /// `target_state` is not an object (400/422) or too large (413).
    #[error("target_state {0}")]
    TargetState(#[from] StateError),
    /// A priority other than `low`, `normal` or `high` (400/422: bad input).
    #[error("priority must be one of low, normal, high; got '{0}'")]
    InvalidPriority(String),
    /// Neither the clauses nor the description contain an action (400/422: bad input).
    #[error("the goal description contains no action to plan")]
    NoSteps,
    /// More than [`MAX_STEPS`] steps (400/422: bad input).
    #[error("the goal has {steps} steps, more than the limit of {limit}")]
    TooManySteps {
        /// Steps found.
        steps: usize,
        /// The limit.
        limit: usize,
    },
}

/// What the user wants to achieve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Goal {
    /// The goal in natural language, e.g. "Pick up the red block, then place it on the table."
    pub description: String,
    /// The world state the goal should lead to, a JSON object when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub target_state: Option<Value>,
}

/// How urgent a goal is: the strings `low`, `normal` (the default) or `high`, case-insensitive.
/// A string scale was chosen over a number because nothing ranks goals finely yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Do first.
    High,
}

impl Priority {
    /// The priority's name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            _ => Err(PlanError::InvalidPriority(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Priority {
    type Error = PlanError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The body of `POST /plan`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct PlanRequest {
    /// The goal to plan for.
    pub goal: Goal,
    /// Its priority; `normal` when absent or null.
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// One step of a plan as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStep {
    /// The step's entity id in the HCG.
    pub id: String,
    /// The clause the step came from.
    pub name: String,
    /// Always [`STEP_TYPE_ACTION`].
    #[serde(rename = "type")]
    pub step_type: String,
    /// The lemmatised verb, e.g. `pick`.
    pub action_type: String,
    /// What the action applies to, e.g. `red block`; may be empty.
    pub target: String,
    /// Hermes' id for the clause's embedding, when it was embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_id: Option<String>,
}

/// A plan: the `POST /plan` response body, and what is stored on the plan entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// The plan's entity id in the HCG.
    pub plan_id: String,
    /// The goal as validated (description trimmed).
    pub goal: Goal,
    /// The goal's priority.
    pub priority: Priority,
    /// The steps in order; never empty. Named `plan` in JSON, as the API promises.
    #[serde(rename = "plan")]
    pub steps: Vec<PlanStep>,
    /// When the plan was made, RFC 3339 in UTC.
    pub created_at: String,
}

/// The plan's fields kept on its entity (id and time are the entity's own).
#[derive(Deserialize)]
struct StoredPlan {
    goal: Goal,
    priority: Priority,
    plan: Vec<PlanStep>,
}

impl Plan {
    /// Reads a plan back from its HCG entity: `Ok(None)` when the entity is not a plan, `Err` when
    /// its properties are not a plan this module wrote.
    pub fn from_entity(entity: &Entity) -> Result<Option<Self>, serde_json::Error> {
        if entity.entity_type != TYPE_PLAN {
            return Ok(None);
        }
        let stored = StoredPlan::deserialize(&entity.properties)?;
        Ok(Some(Self {
            plan_id: entity.id.clone(),
            goal: stored.goal,
            priority: stored.priority,
            steps: stored.plan,
            created_at: entity.created_at.clone(),
        }))
    }
}

/// A step parsed from a clause, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDraft {
    /// The clause, trimmed of surrounding whitespace and trailing punctuation.
    pub name: String,
    /// The lemmatised verb.
    pub action_type: String,
    /// The object phrase; may be empty.
    pub target: String,
    /// Hermes' embedding id for `name`; the handler fills it in after embedding.
    pub embedding_id: Option<String>,
}

/// A finished plan and the HCG batch recording it (goal, plan and step entities; `has_plan`,
/// `has_step` and `precedes` edges).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGoal {
    /// The plan to return.
    pub plan: Plan,
    /// What to write to the HCG.
    pub batch: HcgBatch,
}

/// A validated goal with its plan id and its `sophia.plan` span, waiting for its steps.
#[derive(Debug)]
pub struct PlanDraft {
    plan_id: String,
    goal: Goal,
    priority: Priority,
    span: tracing::Span,
}

impl PlanDraft {
    /// Validates the goal (non-empty description of at most [`MAX_DESCRIPTION_CHARS`], object
    /// `target_state` within the state size limit), picks the plan id and opens span `sophia.plan`
    /// (`plan.id`, `plan.goal`; `plan.step_count` is recorded by [`PlanDraft::build`]) as a child of
    /// the current span. Run the Hermes calls and the HCG write inside [`PlanDraft::span`].
    pub fn new(goal: Goal, priority: Priority) -> Result<Self, PlanError> {
        let description = goal.description.trim();
        if description.is_empty() {
            return Err(PlanError::EmptyDescription);
        }
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(PlanError::DescriptionTooLong {
                chars,
                limit: MAX_DESCRIPTION_CHARS,
            });
        }
        let target_state = goal
            .target_state
            .map(|t| validate_state(t).map(Value::Object))
            .transpose()?;
        let goal = Goal {
            description: description.to_owned(),
            target_state,
        };
        let plan_id = new_id();
        let span = tracing::info_span!(
            "sophia.plan",
            plan.id = plan_id.as_str(),
            plan.goal = goal.description.as_str(),
            plan.step_count = Empty,
        );
        Ok(Self {
            plan_id,
            goal,
            priority,
            span,
        })
    }

    /// The id the plan will have.
    pub fn plan_id(&self) -> &str {
        &self.plan_id
    }

    /// The validated goal; send its description to Hermes.
    pub fn goal(&self) -> &Goal {
        &self.goal
    }

    /// The `sophia.plan` span, to instrument the rest of the request with.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Parses Hermes' clauses into steps, skipping clauses with no action. When no clause yields a
    /// step (Hermes returned nothing usable), the whole description is parsed as one clause;
    /// `NoSteps` when that fails too, `TooManySteps` past [`MAX_STEPS`].
    pub fn steps_from_clauses<S: AsRef<str>>(
        &self,
        clauses: &[S],
    ) -> Result<Vec<StepDraft>, PlanError> {
        let mut steps: Vec<StepDraft> = clauses
            .iter()
            .filter_map(|c| parse_clause(c.as_ref()))
            .collect();
        if steps.is_empty() {
            steps.extend(parse_clause(&self.goal.description));
        }
        check_step_count(steps.len())?;
        Ok(steps)
    }

    /// Gives each step an id and builds the plan and its HCG batch; records `plan.step_count`.
    pub fn build(self, steps: Vec<StepDraft>) -> Result<PlannedGoal, PlanError> {
        check_step_count(steps.len())?;
        let created_at = now_rfc3339();
        let steps: Vec<PlanStep> = steps
            .into_iter()
            .map(|s| PlanStep {
                id: new_id(),
                name: s.name,
                step_type: STEP_TYPE_ACTION.to_owned(),
                action_type: s.action_type,
                target: s.target,
                embedding_id: s.embedding_id,
            })
            .collect();
        self.span.record("plan.step_count", to_i64(steps.len()));
        let plan = Plan {
            plan_id: self.plan_id,
            goal: self.goal,
            priority: self.priority,
            steps,
            created_at,
        };
        let batch = plan_batch(&plan);
        Ok(PlannedGoal { plan, batch })
    }
}

fn check_step_count(steps: usize) -> Result<(), PlanError> {
    match steps {
        0 => Err(PlanError::NoSteps),
        n if n > MAX_STEPS => Err(PlanError::TooManySteps {
            steps: n,
            limit: MAX_STEPS,
        }),
        _ => Ok(()),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn plan_batch(plan: &Plan) -> HcgBatch {
    let description = &plan.goal.description;
    let mut goal_props = object(json!({
        "description": description,
        "priority": plan.priority,
    }));
    if let Some(target) = &plan.goal.target_state {
        goal_props.insert("target_state".into(), target.clone());
    }
    let goal = Entity::new(TYPE_GOAL, description.as_str(), goal_props);
    // The plan entity carries the whole plan so a simulation needs one read, not a graph walk.
    let mut plan_entity = Entity::with_id(
        &plan.plan_id,
        TYPE_PLAN,
        description.as_str(),
        object(json!({
            "goal": plan.goal,
            "priority": plan.priority,
            "plan": plan.steps,
            "step_count": plan.steps.len(),
        })),
    );
    plan_entity.created_at.clone_from(&plan.created_at);

    let mut entities = Vec::with_capacity(plan.steps.len() + 2);
    let mut edges = Vec::with_capacity(2 * plan.steps.len());
    edges.push(Edge::new(&goal.id, &plan.plan_id, REL_HAS_PLAN));
    entities.push(goal);
    entities.push(plan_entity);
    for (index, step) in plan.steps.iter().enumerate() {
        let mut props = object(json!({
            "index": index,
            "action_type": step.action_type,
            "target": step.target,
        }));
        if let Some(embedding_id) = &step.embedding_id {
            props.insert("embedding_id".into(), embedding_id.as_str().into());
        }
        let mut entity = Entity::with_id(&step.id, TYPE_STEP, step.name.as_str(), props);
        entity.created_at.clone_from(&plan.created_at);
        entities.push(entity);
        edges.push(Edge::new(&plan.plan_id, &step.id, REL_HAS_STEP));
    }
    for pair in plan.steps.windows(2) {
        edges.push(Edge::new(&pair[0].id, &pair[1].id, REL_PRECEDES));
    }
    HcgBatch { entities, edges }
}

/// Words skipped at the start of a clause.
const FILLERS: &[&str] = &[
    "please",
    "then",
    "first",
    "firstly",
    "and",
    "finally",
    "next",
    "also",
    "lastly",
    "afterwards",
    "now",
];
/// Particles of phrasal verbs ("pick up"), dropped from the front of the target.
const PARTICLES: &[&str] = &["up", "down", "out", "off", "away", "back"];
const ARTICLES: &[&str] = &["the", "a", "an"];
const TRAILING_PUNCTUATION: &[char] = &['.', ',', ';', ':', '!', '?'];

/// Parses one clause into a step; `None` when it holds nothing but fillers and punctuation.
pub fn parse_clause(clause: &str) -> Option<StepDraft> {
    let name = clause
        .trim()
        .trim_end_matches(TRAILING_PUNCTUATION)
        .trim_end();
    let mut words = name.split_whitespace().skip_while(|w| {
        let w = bare(w);
        w.is_empty() || FILLERS.contains(&w.to_lowercase().as_str())
    });
    let verb = lemmatise(bare(words.next()?));
    if verb.is_empty() {
        return None;
    }
    let mut rest: Vec<&str> = words.collect();
    if rest.len() > 1 && PARTICLES.contains(&rest[0].to_lowercase().as_str()) {
        rest.remove(0);
    }
    if rest.len() > 1 && ARTICLES.contains(&rest[0].to_lowercase().as_str()) {
        rest.remove(0);
    }
    let target = rest.join(" ");
    Some(StepDraft {
        name: name.to_owned(),
        action_type: verb,
        target: target.trim_end_matches(TRAILING_PUNCTUATION).to_owned(),
        embedding_id: None,
    })
}

/// The word without surrounding punctuation ("First," -> "First").
fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_alphanumeric())
}

/// Verbs a plan is likely to start with, in base form. Inflected forms are reduced to one of these
/// when a suffix rule allows, which keeps "placed" -> "place" apart from "picked" -> "pick".
/// (A stemmer crate such as rust-stemmers gives stems, not lemmas: "plac", not "place".)
const VERBS: &[&str] = &[
    "align",
    "analyse",
    "analyze",
    "approach",
    "arrange",
    "assemble",
    "attach",
    "bring",
    "build",
    "carry",
    "check",
    "clean",
    "close",
    "collect",
    "compare",
    "confirm",
    "count",
    "create",
    "deliver",
    "describe",
    "detach",
    "drop",
    "explore",
    "fetch",
    "fill",
    "find",
    "fold",
    "follow",
    "get",
    "give",
    "go",
    "grab",
    "grasp",
    "hand",
    "hold",
    "identify",
    "insert",
    "inspect",
    "lift",
    "load",
    "locate",
    "look",
    "lower",
    "make",
    "measure",
    "move",
    "navigate",
    "open",
    "pick",
    "place",
    "plan",
    "position",
    "pour",
    "press",
    "pull",
    "push",
    "put",
    "raise",
    "reach",
    "release",
    "remove",
    "report",
    "retrieve",
    "return",
    "rotate",
    "scan",
    "search",
    "select",
    "send",
    "set",
    "slide",
    "sort",
    "stack",
    "start",
    "stop",
    "store",
    "summarise",
    "summarize",
    "take",
    "transport",
    "turn",
    "unload",
    "unstack",
    "update",
    "verify",
    "wait",
    "walk",
    "wipe",
];

const IRREGULAR: &[(&str, &str)] = &[
    ("brought", "bring"),
    ("built", "build"),
    ("did", "do"),
    ("does", "do"),
    ("done", "do"),
    ("found", "find"),
    ("gave", "give"),
    ("given", "give"),
    ("gone", "go"),
    ("got", "get"),
    ("held", "hold"),
    ("made", "make"),
    ("sent", "send"),
    ("taken", "take"),
    ("took", "take"),
    ("went", "go"),
];

/// Whether `action_type` is one of the verbs the lemmatiser knows; the simulator trusts these more.
pub fn is_known_action(action_type: &str) -> bool {
    VERBS.contains(&action_type) || IRREGULAR.iter().any(|(_, lemma)| *lemma == action_type)
}

/// Lower-cases a verb and reduces it to its base form by suffix rules checked against `VERBS`.
/// An unknown verb loses only `-ing`, `-ies`/`-ied` and a plural `-s`: stripping `-ed` from
/// unknown words would break "embed" or "need".
pub fn lemmatise(word: &str) -> String {
    let word = word.to_lowercase();
    if let Some((_, lemma)) = IRREGULAR.iter().find(|(form, _)| *form == word) {
        return (*lemma).to_owned();
    }
    if VERBS.contains(&word.as_str()) {
        return word;
    }
    const RULES: &[(&str, &str)] = &[
        ("ies", "y"),
        ("ied", "y"),
        ("ing", ""),
        ("ing", "e"),
        ("ed", ""),
        ("ed", "e"),
        ("es", ""),
        ("s", ""),
    ];
    for (suffix, ending) in RULES {
        if let Some(stem) = word.strip_suffix(suffix) {
            let candidate = format!("{stem}{ending}");
            if VERBS.contains(&candidate.as_str()) {
                return candidate;
            }
            // "stopped" -> "stopp" -> "stop"
            if ending.is_empty() && ends_with_double_consonant(stem) {
                let single = &stem[..stem.len() - 1];
                if VERBS.contains(&single) {
                    return single.to_owned();
                }
            }
        }
    }
    fallback_lemma(word)
}

fn ends_with_double_consonant(stem: &str) -> bool {
    let mut tail = stem.chars().rev();
    match (tail.next(), tail.next()) {
        (Some(a), Some(b)) => a == b && a.is_ascii_alphabetic() && !"aeiou".contains(a),
        _ => false,
    }
}

fn fallback_lemma(word: String) -> String {
    let has_vowel = |s: &str| s.chars().any(|c| "aeiouy".contains(c));
    if let Some(stem) = word
        .strip_suffix("ies")
        .or_else(|| word.strip_suffix("ied"))
        && stem.len() >= 2
    {
        return format!("{stem}y");
    }
    if let Some(stem) = word.strip_suffix("ing")
        && stem.len() >= 3
        && has_vowel(stem)
    {
        return stem.to_owned();
    }
    let plural_s = !["ss", "us", "is"].iter().any(|e| word.ends_with(e));
    if let Some(stem) = word.strip_suffix('s')
        && plural_s
        && stem.len() >= 3
    {
        return stem.to_owned();
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOAL: &str = "Pick up the red block, then place it on the table and report the result.";

    fn goal(description: &str) -> Goal {
        Goal {
            description: description.into(),
            target_state: None,
        }
    }

    fn plan_example() -> PlannedGoal {
        let draft = PlanDraft::new(goal(GOAL), Priority::High).expect("draft");
        let clauses = [
            "Pick up the red block",
            "place it on the table",
            "report the result",
        ];
        let mut steps = draft.steps_from_clauses(&clauses).expect("steps");
        for (i, step) in steps.iter_mut().enumerate() {
            step.embedding_id = Some(format!("emb-{i}"));
        }
        draft.build(steps).expect("plan")
    }

    #[test]
    fn the_example_goal_becomes_pick_place_report() {
        let PlannedGoal { plan, .. } = plan_example();

        let actions: Vec<(&str, &str, &str)> = plan
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.action_type.as_str(), s.target.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("Pick up the red block", "pick", "red block"),
                ("place it on the table", "place", "it on the table"),
                ("report the result", "report", "result"),
            ]
        );
        assert!(plan.steps.iter().all(|s| s.step_type == "action"));
        assert_eq!(plan.steps[2].embedding_id.as_deref(), Some("emb-2"));
        assert_eq!(plan.goal.description, GOAL);
        assert!(humantime::parse_rfc3339(&plan.created_at).is_ok());
    }

    #[test]
    fn the_plan_serializes_as_the_api_promises() {
        let PlannedGoal { plan, .. } = plan_example();

        let body = serde_json::to_value(&plan).expect("serialize");

        assert_eq!(body["plan_id"], plan.plan_id.as_str());
        assert_eq!(body["goal"]["description"], GOAL);
        assert_eq!(body["priority"], "high");
        assert!(body["created_at"].is_string());
        let first = &body["plan"][0];
        for key in ["id", "name", "type", "action_type", "target"] {
            assert!(first.get(key).is_some(), "step lacks {key}: {first}");
        }
        assert_eq!(first["type"], "action");
        assert!(body["goal"].get("target_state").is_none());
    }

    #[test]
    fn the_batch_links_goal_plan_and_steps() {
        let PlannedGoal { plan, batch } = plan_example();
        let s = &plan.steps;

        let goal = batch
            .entities
            .iter()
            .find(|e| e.entity_type == "goal")
            .expect("goal entity");
        let expected = vec![
            Edge::new(&goal.id, &plan.plan_id, "has_plan"),
            Edge::new(&plan.plan_id, &s[0].id, "has_step"),
            Edge::new(&plan.plan_id, &s[1].id, "has_step"),
            Edge::new(&plan.plan_id, &s[2].id, "has_step"),
            Edge::new(&s[0].id, &s[1].id, "precedes"),
            Edge::new(&s[1].id, &s[2].id, "precedes"),
        ];
        assert_eq!(batch.edges, expected);
        let types: Vec<&str> = batch
            .entities
            .iter()
            .map(|e| e.entity_type.as_str())
            .collect();
        assert_eq!(types, vec!["goal", "plan", "step", "step", "step"]);
        assert_eq!(batch.entities[2].properties["embedding_id"], "emb-0");
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn a_plan_is_read_back_from_its_stored_entity() {
        let PlannedGoal { plan, batch } = plan_example();
        let hcg = crate::hcg::Hcg::in_memory();
        hcg.write(batch).expect("write");

        let entity = hcg.get(&plan.plan_id).expect("plan entity");

        assert_eq!(
            Plan::from_entity(&entity).expect("decode"),
            Some(plan.clone())
        );
        let step = hcg.get(&plan.steps[0].id).expect("step entity");
        assert_eq!(Plan::from_entity(&step).expect("decode"), None);
    }

    #[test]
    fn empty_or_oversized_goals_are_rejected() {
        assert_eq!(
            PlanDraft::new(goal("  \n "), Priority::Normal).err(),
            Some(PlanError::EmptyDescription)
        );
        let long = "a".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert!(matches!(
            PlanDraft::new(goal(&long), Priority::Normal),
            Err(PlanError::DescriptionTooLong { .. })
        ));
        let bad_target = Goal {
            description: "go".into(),
            target_state: Some(json!([1])),
        };
        assert!(matches!(
            PlanDraft::new(bad_target, Priority::Normal),
            Err(PlanError::TargetState(StateError::NotAnObject { .. }))
        ));
    }

    #[test]
    fn clauses_without_actions_fall_back_to_the_description() {
        let draft = PlanDraft::new(goal("Please open the door."), Priority::Low).expect("draft");

        let steps = draft
            .steps_from_clauses(&["", " and then ", "..."])
            .expect("steps");

        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].name, "Please open the door");
        assert_eq!(
            (steps[0].action_type.as_str(), steps[0].target.as_str()),
            ("open", "door")
        );
        let empty = PlanDraft::new(goal("please, then."), Priority::Low).expect("draft");
        assert_eq!(
            empty.steps_from_clauses::<&str>(&[]),
            Err(PlanError::NoSteps)
        );
        assert_eq!(empty.build(vec![]), Err(PlanError::NoSteps));
    }

    #[test]
    fn too_many_steps_are_rejected() {
        let draft = PlanDraft::new(goal("wait"), Priority::Low).expect("draft");
        let clauses = vec!["wait"; MAX_STEPS + 1];
        assert!(matches!(
            draft.steps_from_clauses(&clauses),
            Err(PlanError::TooManySteps { steps: 65, .. })
        ));
    }

    #[test]
    fn fillers_particles_and_articles_are_stripped() {
        let cases = [
            ("First, pick up the cube", "pick", "cube"),
            (
                "and then finally Place a cup on the shelf.",
                "place",
                "cup on the shelf",
            ),
            ("next: move An apple", "move", "apple"),
            ("Picked up", "pick", "up"),
            ("stop", "stop", ""),
            ("put the", "put", "the"),
        ];
        for (clause, action, target) in cases {
            let step = parse_clause(clause).expect(clause);
            assert_eq!(
                (step.action_type.as_str(), step.target.as_str()),
                (action, target)
            );
        }
        assert_eq!(parse_clause("please and then"), None);
        assert_eq!(parse_clause("  ...  "), None);
        let dashed = parse_clause("- then lift the lid").expect("dashed");
        assert_eq!(
            (dashed.action_type.as_str(), dashed.target.as_str()),
            ("lift", "lid")
        );
    }

    #[test]
    fn verbs_are_lemmatised() {
        let cases = [
            ("picks", "pick"),
            ("picked", "pick"),
            ("picking", "pick"),
            ("Placed", "place"),
            ("places", "place"),
            ("placing", "place"),
            ("pushes", "push"),
            ("stopped", "stop"),
            ("carried", "carry"),
            ("took", "take"),
            ("REPORT", "report"),
            ("embed", "embed"),
            ("jumps", "jump"),
            ("jumping", "jump"),
            ("process", "process"),
            ("sing", "sing"),
        ];
        for (word, lemma) in cases {
            assert_eq!(lemmatise(word), lemma, "{word}");
        }
    }

    #[test]
    fn priorities_parse_case_insensitively_and_reject_others() {
        let request: PlanRequest =
            serde_json::from_value(json!({"goal": {"description": "go"}, "priority": "HIGH"}))
                .expect("request");
        assert_eq!(request.priority, Some(Priority::High));
        let request: PlanRequest =
            serde_json::from_value(json!({"goal": {"description": "go"}})).expect("request");
        assert_eq!(request.priority.unwrap_or_default(), Priority::Normal);
        let err = serde_json::from_value::<PlanRequest>(
            json!({"goal": {"description": "go"}, "priority": "urgent"}),
        )
        .expect_err("bad priority");
        assert!(err.to_string().contains("low, normal, high"), "{err}");
        assert_eq!(
            "urgent".parse::<Priority>(),
            Err(PlanError::InvalidPriority("urgent".into()))
        );
    }
}
