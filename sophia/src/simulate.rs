//! Simulation: rolls a stored plan forward over the CWM state to imagine the states it leads to,
//! without changing the real state. The roll-out is deterministic: the same plan, `k_steps` and
//! initial state always give the same imagined states (only the simulation id and time differ).
//!
//! Imagined state `i` (1-based) applies plan step `(i - 1) mod step_count`, so a short plan repeats.
//! Applying a step sets `last_action`, `target` and `steps_taken` (= `i`) on a copy of the previous
//! state and marks `targets[<target>]` (or `targets[<action_type>]` when the target is empty) as
//! `{"status": "done", "last_action": ...}`; a non-object `targets` is replaced. Confidence starts
//! at 1 and is multiplied per step by 0.95 for an action the planner knows and by 0.8 for any other,
//! so it strictly decreases; `overall_confidence` is the last state's confidence, which is the
//! product of all the factors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::field::Empty;

use crate::hcg::{
    Edge, Entity, Hcg, HcgBatch, HcgError, REL_SIMULATED_BY, TYPE_SIMULATION, new_id, now_rfc3339,
};
use crate::planner::{Plan, PlanStep, is_known_action};
use crate::state::{Cwm, StateError, validate_state};

/// `k_steps` when the request gives none (the route applies it; [`SimulationRequest`] does too).
pub const DEFAULT_K_STEPS: i64 = 5;
/// Largest `k_steps` accepted.
pub const MAX_K_STEPS: i64 = 100;
/// The most imagined states an answer may hold, in bytes of the state times `k_steps`: each step
/// copies the whole state, so a large state over many steps would be hundreds of megabytes.
pub const MAX_IMAGINED_BYTES: usize = 2 * 1024 * 1024;
/// Per-step confidence factor for an action the planner knows.
pub const KNOWN_ACTION_DECAY: f64 = 0.95;
/// Per-step confidence factor for any other action: less is known about its effect.
pub const UNKNOWN_ACTION_DECAY: f64 = 0.8;

/// Errors of simulation. The intended HTTP status is given on each variant.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimulateError {
    /// `k_steps` outside `1..=100` (400/422: bad input).
    #[error("k_steps must be between 1 and {MAX_K_STEPS}, got {0}")]
    InvalidKSteps(i64),
    /// No plan has this id (404); also when the id names an entity that is not a plan.
    #[error("plan '{plan_id}' not found")]
    PlanNotFound {
        /// The id asked for.
        plan_id: String,
    },
    /// The plan has no steps, so there is nothing to roll forward (400/422).
    #[error("plan '{plan_id}' has no steps")]
    EmptyPlan {
        /// The plan's id.
        plan_id: String,
    },
    /// `initial_state` is not an object (400/422) or too large (413).
    #[error("initial_state {0}")]
    InitialState(#[source] StateError),
    /// The state times `k_steps` is over [`MAX_IMAGINED_BYTES`]: 413 when the request gave the
    /// state, 422 when it is the current world state.
    #[error(
        "{k_steps} steps of {} ({state_bytes} bytes) would be more than the {} KiB of imagined \
         states an answer may hold; ask for fewer steps{}",
        if *given { "initial_state" } else { "the current world state" },
        MAX_IMAGINED_BYTES / 1024,
        if *given { " or a smaller state" } else { "" }
    )]
    TooManyImaginedBytes {
        /// The steps asked for.
        k_steps: usize,
        /// The state's size, serialized.
        state_bytes: usize,
        /// Whether the request gave the state (`initial_state`).
        given: bool,
    },
    /// Reading the CWM state failed (500).
    #[error("reading the current state failed: {0}")]
    State(#[source] StateError),
    /// The stored plan entity cannot be read as a plan (500).
    #[error("stored plan '{plan_id}' is unreadable: {reason}")]
    CorruptPlan {
        /// The plan's id.
        plan_id: String,
        /// Why decoding failed.
        reason: String,
    },
    /// The graph failed (map as [`HcgError`]: in practice only `Backend`, 500).
    #[error(transparent)]
    Hcg(#[from] HcgError),
}

fn default_k_steps() -> i64 {
    DEFAULT_K_STEPS
}

/// The body of `POST /simulate`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct SimulationRequest {
    /// The plan to roll forward.
    pub plan_id: String,
    /// How many states to imagine, `1..=100`; [`DEFAULT_K_STEPS`] when absent. Signed so that a
    /// negative value gets [`SimulateError::InvalidKSteps`] rather than a parse error.
    #[serde(default = "default_k_steps")]
    #[schema(default = default_k_steps, minimum = 1, maximum = 100)]
    pub k_steps: i64,
    /// The state to start from, an object; the current CWM state when absent or null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub initial_state: Option<Value>,
}

/// One imagined state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImaginedState {
    /// 1-based number of the state in the roll-out.
    pub step: usize,
    /// The action applied to reach it.
    pub action_type: String,
    /// The action's target.
    pub target: String,
    /// The world as imagined after the action.
    pub state: Map<String, Value>,
    /// Confidence in this state, in `(0, 1)`, decreasing with `step`.
    pub confidence: f64,
}

/// A simulation: the `POST /simulate` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Simulation {
    /// The simulation's entity id in the HCG.
    pub simulation_id: String,
    /// The plan simulated.
    pub plan_id: String,
    /// Number of imagined states.
    pub k_steps: usize,
    /// The imagined states in order.
    pub imagined_states: Vec<ImaginedState>,
    /// The last imagined state's confidence (the product of every step's factor).
    pub overall_confidence: f64,
    /// When the simulation ran, RFC 3339 in UTC.
    pub created_at: String,
}

/// A simulation and the HCG batch that records it (a `simulation` entity and a `simulated_by`
/// edge from the plan).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationOutcome {
    /// The simulation to return.
    pub simulation: Simulation,
    /// What to write to the HCG.
    pub batch: HcgBatch,
}

/// Checks `k_steps` is in `1..=100`.
pub fn validate_k_steps(k_steps: i64) -> Result<usize, SimulateError> {
    if (1..=MAX_K_STEPS).contains(&k_steps) {
        usize::try_from(k_steps).map_err(|_| SimulateError::InvalidKSteps(k_steps))
    } else {
        Err(SimulateError::InvalidKSteps(k_steps))
    }
}

/// The confidence factor of one step of `action_type`.
pub fn step_decay(action_type: &str) -> f64 {
    if is_known_action(action_type) {
        KNOWN_ACTION_DECAY
    } else {
        UNKNOWN_ACTION_DECAY
    }
}

/// Rolls `plan` forward `k_steps` from `initial_state` (see the module documentation for the
/// rules). Pure apart from the new simulation id and time; opens no span, so it can be tested alone.
pub fn simulate(
    plan: &Plan,
    k_steps: i64,
    initial_state: Map<String, Value>,
) -> Result<SimulationOutcome, SimulateError> {
    let k = validate_k_steps(k_steps)?;
    if plan.steps.is_empty() {
        return Err(SimulateError::EmptyPlan {
            plan_id: plan.plan_id.clone(),
        });
    }
    let state_bytes = serde_json::to_vec(&initial_state).map_or(usize::MAX, |json| json.len());
    if state_bytes.saturating_mul(k) > MAX_IMAGINED_BYTES {
        return Err(SimulateError::TooManyImaginedBytes {
            k_steps: k,
            state_bytes,
            given: true,
        });
    }
    let mut state = initial_state;
    let mut confidence = 1.0_f64;
    let mut imagined_states = Vec::with_capacity(k);
    for (i, step) in (1..=k).zip(plan.steps.iter().cycle()) {
        apply_step(&mut state, step, i);
        confidence *= step_decay(&step.action_type);
        imagined_states.push(ImaginedState {
            step: i,
            action_type: step.action_type.clone(),
            target: step.target.clone(),
            state: state.clone(),
            confidence,
        });
    }
    let simulation = Simulation {
        simulation_id: new_id(),
        plan_id: plan.plan_id.clone(),
        k_steps: k,
        imagined_states,
        overall_confidence: confidence,
        created_at: now_rfc3339(),
    };
    let batch = simulation_batch(&simulation);
    Ok(SimulationOutcome { simulation, batch })
}

fn apply_step(state: &mut Map<String, Value>, step: &PlanStep, number: usize) {
    state.insert("last_action".into(), step.action_type.as_str().into());
    state.insert("target".into(), step.target.as_str().into());
    state.insert("steps_taken".into(), number.into());
    let key = if step.target.is_empty() {
        &step.action_type
    } else {
        &step.target
    };
    let targets = state
        .entry("targets")
        .and_modify(|t| {
            if !t.is_object() {
                *t = Value::Object(Map::new());
            }
        })
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(targets) = targets {
        targets.insert(
            key.clone(),
            json!({"status": "done", "last_action": step.action_type}),
        );
    }
}

fn simulation_batch(simulation: &Simulation) -> HcgBatch {
    // The imagined states stay out of the graph: up to 100 copies of a 256 KiB state is too much
    // to keep per run.
    let mut properties = Map::new();
    properties.insert("plan_id".into(), simulation.plan_id.as_str().into());
    properties.insert("k_steps".into(), simulation.k_steps.into());
    properties.insert(
        "overall_confidence".into(),
        simulation.overall_confidence.into(),
    );
    let mut entity = Entity::with_id(
        &simulation.simulation_id,
        TYPE_SIMULATION,
        format!("simulation of plan {}", simulation.plan_id),
        properties,
    );
    entity.created_at.clone_from(&simulation.created_at);
    HcgBatch {
        entities: vec![entity],
        edges: vec![Edge::new(
            &simulation.plan_id,
            &simulation.simulation_id,
            REL_SIMULATED_BY,
        )],
    }
}

/// Loads a plan from the graph (span `sophia.hcg.read`); `PlanNotFound` when the id is unknown or
/// is not a plan.
pub fn load_plan(hcg: &Hcg, plan_id: &str) -> Result<Plan, SimulateError> {
    let not_found = || SimulateError::PlanNotFound {
        plan_id: plan_id.to_owned(),
    };
    let entity = match hcg.get(plan_id) {
        Ok(entity) => entity,
        Err(HcgError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    match Plan::from_entity(&entity) {
        Ok(Some(plan)) => Ok(plan),
        Ok(None) => Err(not_found()),
        Err(e) => Err(SimulateError::CorruptPlan {
            plan_id: plan_id.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Serves a simulation request end to end in span `sophia.simulate` (`simulation.k_steps`,
/// `simulation.confidence`, `plan.id`): validates it, loads the plan, takes `initial_state` or
/// else the current CWM state, simulates, and records the simulation in the HCG. The CWM state is
/// never changed.
pub fn run(hcg: &Hcg, cwm: &Cwm, request: SimulationRequest) -> Result<Simulation, SimulateError> {
    let span = tracing::info_span!(
        "sophia.simulate",
        simulation.k_steps = request.k_steps,
        simulation.confidence = Empty,
        plan.id = request.plan_id.as_str(),
    );
    let _entered = span.enter();
    validate_k_steps(request.k_steps)?;
    let given_state = request
        .initial_state
        .map(validate_state)
        .transpose()
        .map_err(SimulateError::InitialState)?;
    let plan = load_plan(hcg, &request.plan_id)?;
    let given = given_state.is_some();
    let initial_state = match given_state {
        Some(state) => state,
        None => cwm.read().map_err(SimulateError::State)?.state,
    };
    let SimulationOutcome { simulation, batch } = simulate(&plan, request.k_steps, initial_state)
        .map_err(|error| match error {
        SimulateError::TooManyImaginedBytes {
            k_steps,
            state_bytes,
            ..
        } => SimulateError::TooManyImaginedBytes {
            k_steps,
            state_bytes,
            given,
        },
        other => other,
    })?;
    hcg.write(batch)?;
    span.record("simulation.confidence", simulation.overall_confidence);
    Ok(simulation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcg::{Limit, TYPE_GOAL};
    use crate::planner::{Goal, PlanDraft, Priority};

    fn plan_with(clauses: &[&str]) -> Plan {
        let goal = Goal {
            description: clauses.join(", "),
            target_state: None,
        };
        let draft = PlanDraft::new(goal, Priority::Normal).expect("draft");
        let steps = draft.steps_from_clauses(clauses).expect("steps");
        draft.build(steps).expect("plan").plan
    }

    fn example_plan() -> Plan {
        plan_with(&[
            "Pick up the red block",
            "place it on the table",
            "report the result",
        ])
    }

    fn stored_example(hcg: &Hcg) -> Plan {
        let goal = Goal {
            description: "Pick up the red block, then place it on the table.".into(),
            target_state: None,
        };
        let draft = PlanDraft::new(goal, Priority::Normal).expect("draft");
        let steps = draft
            .steps_from_clauses(&["Pick up the red block", "place it on the table"])
            .expect("steps");
        let planned = draft.build(steps).expect("plan");
        hcg.write(planned.batch).expect("write plan");
        planned.plan
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn confidence_decays_monotonically_and_overall_is_the_product() {
        let plan = example_plan();

        let sim = simulate(&plan, 7, Map::new()).expect("simulate").simulation;

        let confidences: Vec<f64> = sim.imagined_states.iter().map(|s| s.confidence).collect();
        assert_eq!(confidences.len(), 7);
        assert!(
            confidences.windows(2).all(|w| w[1] < w[0]),
            "{confidences:?}"
        );
        for (i, c) in confidences.iter().enumerate() {
            let expected = KNOWN_ACTION_DECAY.powi(i32::try_from(i + 1).expect("small"));
            assert!(close(*c, expected), "state {i}: {c} != {expected}");
        }
        assert_eq!(sim.overall_confidence, confidences[6]);
        assert!(close(sim.overall_confidence, 0.95_f64.powi(7)));
    }

    #[test]
    fn unknown_actions_lower_confidence_faster() {
        let plan = plan_with(&["frobnicate the widget"]);
        assert_eq!(plan.steps[0].action_type, "frobnicate");

        let sim = simulate(&plan, 3, Map::new()).expect("simulate").simulation;

        assert!(close(sim.overall_confidence, UNKNOWN_ACTION_DECAY.powi(3)));
        let known = simulate(&example_plan(), 3, Map::new()).expect("simulate");
        assert!(sim.overall_confidence < known.simulation.overall_confidence);
    }

    #[test]
    fn k_steps_must_be_between_1_and_100() {
        let plan = example_plan();
        for bad in [0, -1, 101, i64::MIN] {
            assert_eq!(
                simulate(&plan, bad, Map::new()).err(),
                Some(SimulateError::InvalidKSteps(bad))
            );
        }
        for good in [1, 100] {
            let sim = simulate(&plan, good, Map::new())
                .expect("simulate")
                .simulation;
            assert_eq!(
                sim.imagined_states.len(),
                usize::try_from(good).expect("small")
            );
            assert_eq!(sim.k_steps, sim.imagined_states.len());
        }
    }

    #[test]
    fn steps_cycle_through_the_plan_and_accumulate_in_the_state() {
        let plan = example_plan();
        let initial =
            validate_state(json!({"robot": "idle", "targets": "not an object"})).expect("object");

        let sim = simulate(&plan, 4, initial).expect("simulate").simulation;

        let actions: Vec<&str> = sim
            .imagined_states
            .iter()
            .map(|s| s.action_type.as_str())
            .collect();
        assert_eq!(actions, vec!["pick", "place", "report", "pick"]);
        let second = &sim.imagined_states[1];
        assert_eq!(second.step, 2);
        assert_eq!(
            Value::Object(second.state.clone()),
            json!({
                "robot": "idle",
                "last_action": "place",
                "target": "it on the table",
                "steps_taken": 2,
                "targets": {
                    "red block": {"status": "done", "last_action": "pick"},
                    "it on the table": {"status": "done", "last_action": "place"},
                },
            })
        );
        assert_eq!(sim.imagined_states[3].state["steps_taken"], 4);
    }

    #[test]
    fn the_same_inputs_imagine_the_same_states() {
        let plan = example_plan();
        let first = simulate(&plan, 10, Map::new())
            .expect("simulate")
            .simulation;
        let second = simulate(&plan, 10, Map::new())
            .expect("simulate")
            .simulation;
        assert_eq!(first.imagined_states, second.imagined_states);
        assert_ne!(first.simulation_id, second.simulation_id);
    }

    #[test]
    fn run_uses_the_cwm_state_and_records_the_simulation() {
        let hcg = Hcg::in_memory();
        let cwm = Cwm::in_memory();
        let plan = stored_example(&hcg);
        let before = cwm.replace(json!({"gripper": "open"})).expect("state");
        let request: SimulationRequest =
            serde_json::from_value(json!({"plan_id": plan.plan_id})).expect("request");
        assert_eq!(request.k_steps, DEFAULT_K_STEPS);

        let sim = run(&hcg, &cwm, request).expect("run");

        assert_eq!(sim.k_steps, 5);
        assert_eq!(sim.imagined_states[0].state["gripper"], "open");
        assert_eq!(
            cwm.read().expect("read"),
            before,
            "the real state is untouched"
        );
        let recorded = hcg.get(&sim.simulation_id).expect("simulation entity");
        assert_eq!(recorded.entity_type, "simulation");
        assert_eq!(
            recorded.properties["overall_confidence"],
            sim.overall_confidence
        );
        let snapshot = hcg.snapshot(Limit::default()).expect("snapshot");
        assert!(snapshot.edges.contains(&Edge::new(
            &plan.plan_id,
            &sim.simulation_id,
            "simulated_by"
        )));
    }

    #[test]
    fn run_prefers_the_given_initial_state_and_validates_it() {
        let hcg = Hcg::in_memory();
        let cwm = Cwm::in_memory();
        let plan = stored_example(&hcg);
        let request = |initial_state| SimulationRequest {
            plan_id: plan.plan_id.clone(),
            k_steps: 2,
            initial_state,
        };

        let sim = run(&hcg, &cwm, request(Some(json!({"door": "shut"})))).expect("run");
        assert_eq!(sim.imagined_states[1].state["door"], "shut");

        assert!(matches!(
            run(&hcg, &cwm, request(Some(json!([])))),
            Err(SimulateError::InitialState(StateError::NotAnObject { .. }))
        ));
    }

    #[test]
    fn a_state_too_large_for_its_steps_is_refused_before_it_is_copied() {
        let hcg = Hcg::in_memory();
        let cwm = Cwm::in_memory();
        let plan = stored_example(&hcg);
        // About 40 KiB: five steps of it fit in the budget, a hundred do not.
        let state = json!({"readings": vec![1_000_000; 5_000]});
        let request = |k_steps| SimulationRequest {
            plan_id: plan.plan_id.clone(),
            k_steps,
            initial_state: Some(state.clone()),
        };

        assert!(run(&hcg, &cwm, request(5)).is_ok());
        assert!(matches!(
            run(&hcg, &cwm, request(100)),
            Err(SimulateError::TooManyImaginedBytes { k_steps: 100, state_bytes, given: true })
                if state_bytes * 100 > MAX_IMAGINED_BYTES
        ));
        // The same state as the current world state: not the request's doing.
        cwm.replace(state.clone()).expect("the state is written");
        let from_the_world = SimulationRequest {
            initial_state: None,
            ..request(100)
        };
        assert!(matches!(
            run(&hcg, &cwm, from_the_world),
            Err(SimulateError::TooManyImaginedBytes { given: false, .. })
        ));
    }

    #[test]
    fn unknown_plans_and_non_plans_are_not_found() {
        let hcg = Hcg::in_memory();
        let cwm = Cwm::in_memory();
        let goal = Entity::new(TYPE_GOAL, "g", Map::new());
        hcg.write(HcgBatch {
            entities: vec![goal.clone()],
            edges: vec![],
        })
        .expect("write");

        for plan_id in ["missing".to_owned(), goal.id] {
            let request = SimulationRequest {
                plan_id: plan_id.clone(),
                k_steps: 1,
                initial_state: None,
            };
            assert_eq!(
                run(&hcg, &cwm, request),
                Err(SimulateError::PlanNotFound { plan_id })
            );
        }
        let bad_k = SimulationRequest {
            plan_id: "missing".into(),
            k_steps: 0,
            initial_state: None,
        };
        assert_eq!(run(&hcg, &cwm, bad_k), Err(SimulateError::InvalidKSteps(0)));
    }
}
