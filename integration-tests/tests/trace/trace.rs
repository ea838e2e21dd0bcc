//! The trace of each user action (docs/architecture.md section 5), through the CLI and through
//! `apollo serve`: exactly the expected spans, parented across the three processes, with their
//! kinds and typed attributes.

use foundry::testing::{AttributeValue, Kind};
use serde_json::{Value, json};

use crate::{
    harness::{Stack, http},
    shape::{Expect, Trace, expect, wait_for_trace},
};

/// A goal of two clauses, so the plan has two steps.
pub const GOAL: &str = "open the door and pick up the red block";
const ALL: [&str; 3] = ["apollo", "sophia", "hermes"];

/// Where an action entered Apollo: a command (root `apollo.command`) or an API route (root:
/// Apollo's server span, named by method and route).
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// `apollo <command>`.
    Cli,
    /// `apollo serve`, this server span name.
    Api(&'static str),
}

/// Apollo's spans: the API's server span (for [`Entry::Api`]), `apollo.command`, the
/// `apollo.api.<service>` span and the client span of `call`.
pub fn apollo_rows(entry: Entry, api: &'static str, call: &'static str) -> Vec<Expect> {
    let mut rows = Vec::new();
    let command_parent = match entry {
        Entry::Cli => None,
        Entry::Api(route) => {
            rows.push(expect(1, "apollo", route, Kind::Server, None));
            Some(("apollo", route))
        }
    };
    rows.extend(apollo_chain(command_parent, api, call));
    rows
}

/// `apollo.command` (a child of `parent`), its `apollo.api.<service>` span, and the client span.
#[rustfmt::skip]
fn apollo_chain(
    parent: Option<(&'static str, &'static str)>,
    api: &'static str,
    call: &'static str,
) -> [Expect; 3] {
    [
        expect(1, "apollo", "apollo.command", Kind::Internal, parent),
        expect(1, "apollo", api,              Kind::Internal, Some(("apollo", "apollo.command"))),
        expect(1, "apollo", call,             Kind::Client,   Some(("apollo", api))),
    ]
}

/// Sophia's and Hermes' spans of a plan of `steps` steps, Sophia's server span a child of
/// `caller` (`None` when the caller is outside the system).
#[rustfmt::skip]
pub fn plan_rows(steps: usize, caller: Option<(&'static str, &'static str)>) -> Vec<Expect> {
    use Kind::{Client, Internal, Server};
    vec![
        expect(1,     "sophia", "POST /plan",       Server,   caller),
        expect(1,     "sophia", "sophia.plan",      Internal, Some(("sophia", "POST /plan"))),
        expect(1,     "sophia", "POST /simple_nlp", Client,   Some(("sophia", "sophia.plan"))),
        expect(steps, "sophia", "POST /embed_text", Client,   Some(("sophia", "sophia.plan"))),
        expect(1,     "sophia", "sophia.hcg.write", Internal, Some(("sophia", "sophia.plan"))),
        expect(1,     "hermes", "POST /simple_nlp", Server,   Some(("sophia", "POST /simple_nlp"))),
        expect(1,     "hermes", "hermes.nlp",       Internal, Some(("hermes", "POST /simple_nlp"))),
        expect(steps, "hermes", "POST /embed_text", Server,   Some(("sophia", "POST /embed_text"))),
        expect(steps, "hermes", "hermes.embed",     Internal, Some(("hermes", "POST /embed_text"))),
        expect(steps, "hermes", "hermes.milvus",    Internal, Some(("hermes", "POST /embed_text"))),
    ]
}

/// Asserts what every action's trace shares: well formed, exactly `rows`, no errors, and
/// `apollo.command` naming the command and its success as a boolean.
pub fn assert_action(
    trace: &Trace,
    entry: Entry,
    command: &str,
    rows: &[Expect],
    external_parent: Option<&str>,
) {
    let (root_name, route) = match entry {
        Entry::Cli => ("apollo.command", None),
        Entry::Api(name) => (name, name.split_once(' ').map(|(_, route)| route)),
    };
    trace.assert_well_formed("apollo", root_name, external_parent);
    trace.assert_spans(rows);
    trace.assert_no_errors();
    let tree = trace.tree();
    let command_span = trace.one("apollo", "apollo.command");
    assert_eq!(command_span.str("command.name"), Some(command), "{tree}");
    assert_eq!(command_span.bool("command.success"), Some(true), "{tree}");
    if let Some(route) = route {
        let server = trace.one("apollo", root_name);
        assert_eq!(server.str("http.route"), Some(route), "{tree}");
    }
}

/// The attributes of a plan's manual and server spans, against the plan Sophia returned.
pub fn assert_plan_attributes(trace: &Trace, goal: &str, plan: &Value) {
    let tree = trace.tree();
    let steps = plan["plan"].as_array().expect("plan steps");
    let server = trace.one("sophia", "POST /plan");
    assert_eq!(server.str("http.route"), Some("/plan"), "{tree}");
    assert_eq!(server.int("http.response.status_code"), Some(201), "{tree}");
    let span = trace.one("sophia", "sophia.plan");
    assert_eq!(span.str("plan.goal"), Some(goal), "{tree}");
    assert_eq!(span.str("plan.id"), plan["plan_id"].as_str(), "{tree}");
    assert_eq!(
        span.int("plan.step_count"),
        Some(steps.len() as i64),
        "{tree}"
    );
    let write = trace.one("sophia", "sophia.hcg.write");
    assert!(
        write.int("hcg.entity_count").is_some_and(|n| n > 0),
        "{tree}"
    );
    let nlp = trace.one("hermes", "hermes.nlp");
    assert_eq!(nlp.str("nlp.operations"), Some("sentences"), "{tree}");
    assert_eq!(
        nlp.int("nlp.text_length"),
        Some(goal.chars().count() as i64),
        "{tree}"
    );
    for embed in trace.all("hermes", "hermes.embed") {
        assert_eq!(embed.int("embedding.dimension"), Some(384), "{tree}");
        assert!(embed.str("embedding.model").is_some(), "{tree}");
        assert!(
            matches!(
                embed.attributes.get("embedding.text_length"),
                Some(AttributeValue::Int(_))
            ),
            "{tree}"
        );
    }
    for store in trace.all("hermes", "hermes.milvus") {
        assert_eq!(store.str("db.operation.name"), Some("insert"), "{tree}");
        assert_eq!(store.str("db.system.name"), Some("memory"), "{tree}");
    }
    let mut step_lengths: Vec<i64> = steps
        .iter()
        .map(|step| step["name"].as_str().unwrap().chars().count() as i64)
        .collect();
    let mut embedded: Vec<i64> = trace
        .all("hermes", "hermes.embed")
        .iter()
        .filter_map(|span| span.int("embedding.text_length"))
        .collect();
    step_lengths.sort_unstable();
    embedded.sort_unstable();
    assert_eq!(embedded, step_lengths, "each step was embedded:\n{tree}");
}

#[rustfmt::skip]
fn simulate_rows() -> Vec<Expect> {
    use Kind::{Internal, Server};
    vec![
        expect(1, "sophia", "POST /simulate",    Server,   Some(("apollo", "POST /simulate"))),
        expect(1, "sophia", "sophia.simulate",   Internal, Some(("sophia", "POST /simulate"))),
        expect(1, "sophia", "sophia.hcg.read",   Internal, Some(("sophia", "sophia.simulate"))),
        expect(1, "sophia", "sophia.state.read", Internal, Some(("sophia", "sophia.simulate"))),
        expect(1, "sophia", "sophia.hcg.write",  Internal, Some(("sophia", "sophia.simulate"))),
    ]
}

fn assert_simulate_attributes(trace: &Trace, simulation: &Value, k_steps: i64) {
    let tree = trace.tree();
    let server = trace.one("sophia", "POST /simulate");
    assert_eq!(server.int("http.response.status_code"), Some(201), "{tree}");
    let span = trace.one("sophia", "sophia.simulate");
    assert_eq!(span.int("simulation.k_steps"), Some(k_steps), "{tree}");
    assert_eq!(
        span.str("plan.id"),
        simulation["plan_id"].as_str(),
        "{tree}"
    );
    assert_eq!(
        span.double("simulation.confidence"),
        simulation["overall_confidence"].as_f64(),
        "{tree}"
    );
    assert_eq!(
        trace.one("sophia", "sophia.hcg.read").int("hcg.count"),
        Some(1),
        "{tree}"
    );
}

#[rustfmt::skip]
fn state_rows() -> Vec<Expect> {
    use Kind::{Internal, Server};
    vec![
        expect(1, "sophia", "GET /state",        Server,   Some(("apollo", "GET /state"))),
        expect(1, "sophia", "sophia.state.read", Internal, Some(("sophia", "GET /state"))),
    ]
}

fn assert_state_attributes(trace: &Trace, state: &Value) {
    let span = trace.one("sophia", "sophia.state.read");
    assert_eq!(
        span.str("state.id"),
        state["state_id"].as_str(),
        "{}",
        trace.tree()
    );
}

#[rustfmt::skip]
fn embed_rows() -> Vec<Expect> {
    use Kind::{Internal, Server};
    vec![
        expect(1, "hermes", "POST /embed_text", Server,   Some(("apollo", "POST /embed_text"))),
        expect(1, "hermes", "hermes.embed",     Internal, Some(("hermes", "POST /embed_text"))),
        expect(1, "hermes", "hermes.milvus",    Internal, Some(("hermes", "POST /embed_text"))),
    ]
}

fn assert_embed_attributes(trace: &Trace, text: &str, answer: &Value) {
    let tree = trace.tree();
    let embed = trace.one("hermes", "hermes.embed");
    assert_eq!(embed.int("embedding.dimension"), Some(384), "{tree}");
    assert_eq!(answer["dimension"], json!(384));
    assert_eq!(
        embed.str("embedding.model"),
        answer["model"].as_str(),
        "{tree}"
    );
    assert_eq!(
        embed.int("embedding.text_length"),
        Some(text.chars().count() as i64),
        "{tree}"
    );
    let store = trace.one("hermes", "hermes.milvus");
    assert_eq!(store.str("db.operation.name"), Some("insert"), "{tree}");
}

#[rustfmt::skip]
fn search_rows() -> Vec<Expect> {
    use Kind::{Internal, Server};
    vec![
        expect(1, "hermes", "POST /search",  Server,   Some(("apollo", "POST /search"))),
        expect(1, "hermes", "hermes.embed",  Internal, Some(("hermes", "POST /search"))),
        expect(1, "hermes", "hermes.milvus", Internal, Some(("hermes", "POST /search"))),
    ]
}

fn assert_search_attributes(trace: &Trace, answer: &Value) {
    let tree = trace.tree();
    let results = answer["results"].as_array().expect("search results");
    assert!(
        !results.is_empty(),
        "the stored embedding is found: {answer}"
    );
    let store = trace.one("hermes", "hermes.milvus");
    assert_eq!(store.str("db.operation.name"), Some("search"), "{tree}");
    assert_eq!(
        store.int("db.response.returned_rows"),
        Some(results.len() as i64),
        "{tree}"
    );
}

#[rustfmt::skip]
fn chat_rows() -> Vec<Expect> {
    use Kind::{Internal, Server};
    vec![
        expect(1, "hermes", "POST /llm",   Server,   Some(("apollo", "POST /llm"))),
        expect(1, "hermes", "hermes.llm",  Internal, Some(("hermes", "POST /llm"))),
    ]
}

fn assert_chat_attributes(trace: &Trace, answer: &Value) {
    let tree = trace.tree();
    let llm = trace.one("hermes", "hermes.llm");
    assert_eq!(llm.str("gen_ai.system"), Some("echo"), "{tree}");
    assert_eq!(
        llm.str("gen_ai.request.model"),
        answer["model"].as_str(),
        "{tree}"
    );
    assert_eq!(
        llm.int("gen_ai.usage.input_tokens"),
        answer["usage"]["prompt_tokens"].as_i64(),
        "{tree}"
    );
    assert_eq!(
        llm.int("gen_ai.usage.output_tokens"),
        answer["usage"]["completion_tokens"].as_i64(),
        "{tree}"
    );
}

fn rows(parts: [Vec<Expect>; 2]) -> Vec<Expect> {
    parts.concat()
}

/// One user action's expected trace: Apollo's command, its `apollo.api.<service>` span and
/// call, the services the trace reaches, and their spans below Apollo's.
struct Action {
    command: &'static str,
    api: &'static str,
    call: &'static str,
    services: &'static [&'static str],
    downstream: Vec<Expect>,
}

impl Action {
    const SOPHIA: &'static [&'static str] = &["apollo", "sophia"];
    const HERMES: &'static [&'static str] = &["apollo", "hermes"];

    fn plan(steps: usize) -> Self {
        let downstream = plan_rows(steps, Some(("apollo", "POST /plan")));
        Self::new("plan", "apollo.api.sophia", "POST /plan", &ALL, downstream)
    }

    fn simulate() -> Self {
        let call = "POST /simulate";
        Self::new(
            "simulate",
            "apollo.api.sophia",
            call,
            Self::SOPHIA,
            simulate_rows(),
        )
    }

    fn state() -> Self {
        let call = "GET /state";
        Self::new(
            "state",
            "apollo.api.sophia",
            call,
            Self::SOPHIA,
            state_rows(),
        )
    }

    fn embed() -> Self {
        let call = "POST /embed_text";
        Self::new(
            "embed",
            "apollo.api.hermes",
            call,
            Self::HERMES,
            embed_rows(),
        )
    }

    fn search() -> Self {
        let call = "POST /search";
        Self::new(
            "search",
            "apollo.api.hermes",
            call,
            Self::HERMES,
            search_rows(),
        )
    }

    fn chat() -> Self {
        let call = "POST /llm";
        Self::new("chat", "apollo.api.hermes", call, Self::HERMES, chat_rows())
    }

    fn new(
        command: &'static str,
        api: &'static str,
        call: &'static str,
        services: &'static [&'static str],
        downstream: Vec<Expect>,
    ) -> Self {
        Self {
            command,
            api,
            call,
            services,
            downstream,
        }
    }

    /// Waits for `trace_id` to reach the action's services, asserts its spans as it entered
    /// by `entry`, and returns the trace for the action's attribute checks.
    async fn assert_trace(self, stack: &Stack, trace_id: &str, entry: Entry) -> Trace {
        let trace = wait_for_trace(&stack.receiver, trace_id, self.services, None).await;
        let expected = rows([apollo_rows(entry, self.api, self.call), self.downstream]);
        assert_action(&trace, entry, self.command, &expected, None);
        trace
    }
}

#[tokio::test]
async fn apollo_plan_is_one_trace_across_three_processes() {
    // Arrange
    let stack = Stack::start().await;

    // Act
    let run = stack.apollo(&["plan", GOAL]).await;

    // Assert
    let plan = run.result();
    assert_eq!(plan["goal"]["description"], GOAL);
    let steps = plan["plan"].as_array().expect("steps").len();
    assert_eq!(steps, 2, "one step per clause: {plan}");
    let trace = Action::plan(steps)
        .assert_trace(&stack, &run.trace_id(), Entry::Cli)
        .await;
    let services: std::collections::BTreeSet<&str> = trace
        .spans
        .iter()
        .map(|s| s.service_name.as_str())
        .collect();
    assert_eq!(services, ALL.into_iter().collect(), "{}", trace.tree());
    assert_plan_attributes(&trace, GOAL, plan);
}

#[tokio::test]
async fn apollo_simulate_and_state_are_one_trace_each() {
    // Arrange
    let stack = Stack::start().await;
    let plan = stack.apollo(&["plan", GOAL]).await;
    let plan_id = plan.result()["plan_id"].as_str().unwrap().to_owned();

    // Act
    let simulate = stack.apollo(&["simulate", &plan_id, "--steps", "3"]).await;
    let state = stack.apollo(&["state"]).await;

    // Assert
    let simulation = simulate.result();
    assert_eq!(simulation["plan_id"], plan_id.as_str());
    assert_eq!(
        simulation["imagined_states"].as_array().map(Vec::len),
        Some(3)
    );
    let trace = Action::simulate()
        .assert_trace(&stack, &simulate.trace_id(), Entry::Cli)
        .await;
    assert_simulate_attributes(&trace, simulation, 3);

    let trace = Action::state()
        .assert_trace(&stack, &state.trace_id(), Entry::Cli)
        .await;
    assert_state_attributes(&trace, state.result());
}

#[tokio::test]
async fn apollo_embed_search_and_chat_are_one_trace_each() {
    // Arrange
    let stack = Stack::start().await;
    let text = "the red block is on the table";

    // Act
    let embed = stack.apollo(&["embed", text]).await;
    let search = stack.apollo(&["search", "red block", "--top-k", "3"]).await;
    let chat = stack.apollo(&["chat", "say", "hello"]).await;

    // Assert
    let trace = Action::embed()
        .assert_trace(&stack, &embed.trace_id(), Entry::Cli)
        .await;
    assert_embed_attributes(&trace, text, embed.result());

    assert_eq!(search.result()["results"][0]["text"], text);
    let trace = Action::search()
        .assert_trace(&stack, &search.trace_id(), Entry::Cli)
        .await;
    assert_search_attributes(&trace, search.result());

    let trace = Action::chat()
        .assert_trace(&stack, &chat.trace_id(), Entry::Cli)
        .await;
    assert_chat_attributes(&trace, chat.result());
}

/// The trace id of an API answer, from its `traceparent` header.
fn response_trace_id(response: &reqwest::Response) -> String {
    let header = response
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("the answer carries traceparent: {:?}", response.headers()));
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {header}");
    parts[1].to_owned()
}

/// Sends one API request; returns the status, the trace id of the answer and its JSON body.
async fn api(method: &str, url: String, body: Option<Value>) -> (u16, String, Value) {
    let client = http();
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(&body.unwrap_or(Value::Null)),
    };
    let response = request.send().await.expect("apollo serve answers");
    let status = response.status().as_u16();
    let trace_id = response_trace_id(&response);
    let body = response.json().await.expect("a JSON answer");
    (status, trace_id, body)
}

#[tokio::test]
async fn apollo_serve_actions_are_one_trace_each() {
    // Arrange
    let stack = Stack::start().await;
    let serve = stack.apollo_serve().await;
    let url = |path: &str| format!("{}{path}", serve.url);

    // Act and Assert, one route after the other (simulate and search need what came before).
    let (status, trace_id, plan) = api("POST", url("/api/plan"), Some(json!({"goal": GOAL}))).await;
    assert_eq!(status, 201, "{plan}");
    let steps = plan["plan"].as_array().expect("steps").len();
    let entry = Entry::Api("POST /api/plan");
    let trace = Action::plan(steps)
        .assert_trace(&stack, &trace_id, entry)
        .await;
    assert_plan_attributes(&trace, GOAL, &plan);

    let plan_id = plan["plan_id"].as_str().unwrap();
    let body = json!({"plan_id": plan_id, "k_steps": 4});
    let (status, trace_id, simulation) = api("POST", url("/api/simulate"), Some(body)).await;
    assert_eq!(status, 201, "{simulation}");
    let entry = Entry::Api("POST /api/simulate");
    let trace = Action::simulate()
        .assert_trace(&stack, &trace_id, entry)
        .await;
    assert_simulate_attributes(&trace, &simulation, 4);

    let (status, trace_id, state) = api("GET", url("/api/state"), None).await;
    assert_eq!(status, 200, "{state}");
    let entry = Entry::Api("GET /api/state");
    let trace = Action::state().assert_trace(&stack, &trace_id, entry).await;
    assert_state_attributes(&trace, &state);

    let text = "a green cup";
    let (status, trace_id, embedding) =
        api("POST", url("/api/embed"), Some(json!({"text": text}))).await;
    assert_eq!(status, 200, "{embedding}");
    let entry = Entry::Api("POST /api/embed");
    let trace = Action::embed().assert_trace(&stack, &trace_id, entry).await;
    assert_embed_attributes(&trace, text, &embedding);

    let body = json!({"text": "green cup", "top_k": 2});
    let (status, trace_id, hits) = api("POST", url("/api/search"), Some(body)).await;
    assert_eq!(status, 200, "{hits}");
    let entry = Entry::Api("POST /api/search");
    let trace = Action::search()
        .assert_trace(&stack, &trace_id, entry)
        .await;
    assert_search_attributes(&trace, &hits);

    let body = json!({"prompt": "hello apollo"});
    let (status, trace_id, answer) = api("POST", url("/api/chat"), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let entry = Entry::Api("POST /api/chat");
    let trace = Action::chat().assert_trace(&stack, &trace_id, entry).await;
    assert_chat_attributes(&trace, &answer);
}
