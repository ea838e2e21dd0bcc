//! The commands: turning arguments into actions, and outcomes into output and exit codes.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{
    config::{Cli, Command},
    services::{Action, ActionError, Outcome, Services},
};

/// Performs the command of `cli` (a user action: not `serve`, `trace` or `traces`) and renders
/// its outcome.
pub async fn run(cli: &Cli, services: &Services) -> Report {
    let Some(action) = action(&cli.command) else {
        return Report {
            stdout: String::new(),
            stderr: Some("apollo: serve, trace and traces are not user actions".into()),
            exit_code: 2,
        };
    };
    let outcome = services.perform(action).await;
    report(&cli.command, &outcome, cli.json)
}

/// The action a command asks for (`None` for `serve`, `trace`, `traces` and `config`, which are
/// not actions).
pub fn action(command: &Command) -> Option<Action> {
    Some(match command {
        Command::Status => Action::Status,
        Command::Plan { goal } => Action::Plan(json!({"goal": {"description": goal.join(" ")}})),
        Command::Simulate { plan_id, steps } => {
            Action::Simulate(json!({"plan_id": plan_id, "k_steps": steps}))
        }
        Command::State => Action::State,
        Command::Embed { text } => Action::Embed(json!({"text": text.join(" ")})),
        Command::Search { text, top_k } => {
            Action::Search(json!({"text": text.join(" "), "top_k": top_k}))
        }
        Command::Chat {
            prompt,
            provider,
            model,
            max_tokens,
        } => {
            let mut body = json!({"prompt": prompt.join(" ")});
            for (key, value) in [
                ("provider", provider.clone().map(Value::from)),
                ("model", model.clone().map(Value::from)),
                ("max_tokens", max_tokens.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            Action::Chat(body)
        }
        Command::Serve(_) | Command::Trace { .. } | Command::Traces { .. } | Command::Config => {
            return None;
        }
    })
}

/// What to print and how to exit.
#[derive(Debug, PartialEq)]
pub struct Report {
    /// For stdout.
    pub stdout: String,
    /// For stderr: one line, on failure.
    pub stderr: Option<String>,
    /// The process exit code: 0 on success, 1 when a service failed or refused.
    pub exit_code: i32,
}

impl Report {
    /// Prints the report and returns the exit code: 1 as well when the output could not be
    /// written (a full disk, a closed stdout), as the answer was lost.
    pub fn print(&self) -> std::process::ExitCode {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(self.stdout.as_bytes())
            .and_then(|()| stdout.flush());
        let mut stderr = std::io::stderr().lock();
        if let Some(line) = &self.stderr {
            let _ = writeln!(stderr, "{line}");
        }
        match written {
            // A closed pipe (`apollo state | head -1`) is the reader's choice, not a failure.
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = writeln!(stderr, "apollo: cannot write the output: {error}");
                std::process::ExitCode::from(1)
            }
            _ => std::process::ExitCode::from(u8::try_from(self.exit_code).unwrap_or(1)),
        }
    }
}

/// Renders `outcome` of `command` for people, or as one JSON object with `json`.
pub fn report(command: &Command, outcome: &Outcome, json: bool) -> Report {
    let trace_id = &outcome.trace_id;
    // Without telemetry there is no trace: `null` in JSON, and said so for people.
    let trace_line = format!(
        "trace_id: {}\n",
        trace_id
            .as_deref()
            .unwrap_or("none (telemetry is disabled)")
    );
    match &outcome.result {
        Ok(result) => Report {
            stdout: if json {
                format!("{}\n", json!({"trace_id": trace_id, "result": result}))
            } else {
                format!("{}{trace_line}", human(command, result))
            },
            stderr: None,
            exit_code: 0,
        },
        Err(error) => {
            let (code, message) = error_fields(error);
            Report {
                stdout: if json {
                    let mut error_json = json!({"code": code, "message": message});
                    // `status` keeps every service's answer, the healthy ones too.
                    if let ActionError::Unhealthy { services, .. } = error {
                        error_json["services"] = services.clone();
                    }
                    format!("{}\n", json!({"trace_id": trace_id, "error": error_json}))
                } else {
                    // `status` shows every service, the healthy ones too, before saying which
                    // are down.
                    let shown = match error {
                        ActionError::Unhealthy { services, .. } => human(command, services),
                        ActionError::Downstream(_) => String::new(),
                    };
                    format!("{shown}{trace_line}")
                },
                stderr: Some(format!("apollo: {message}")),
                exit_code: 1,
            }
        }
    }
}

fn error_fields(error: &ActionError) -> (String, String) {
    let message = error.to_string().replace('\n', " ");
    (
        foundry::http::ErrorResponse::from(error).code.into_owned(),
        message,
    )
}

/// A few readable lines per command; JSON for anything unexpected.
fn human(command: &Command, result: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let mut out = String::new();
    match command {
        Command::Status => {
            for service in ["sophia", "hermes"] {
                let answer = &result[service];
                if answer.get("error").is_some() {
                    let _ = writeln!(out, "{service:<7} down  {}", text(&answer["url"]));
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{service:<7} {:<4} v{:<8} {:>8.2} ms  {}",
                    text(&answer["status"]),
                    text(&answer["version"]),
                    answer["latency_ms"].as_f64().unwrap_or_default(),
                    text(&answer["url"]),
                );
            }
        }
        Command::Plan { .. } => {
            let _ = writeln!(
                out,
                "plan {}: {}",
                text(&result["plan_id"]),
                text(&result["goal"]["description"])
            );
            for (index, step) in result["plan"].as_array().into_iter().flatten().enumerate() {
                let _ = writeln!(
                    out,
                    "  {}. {} -> {}",
                    index + 1,
                    text(&step["action_type"]),
                    text(&step["target"])
                );
            }
        }
        Command::Simulate { .. } => {
            let _ = writeln!(
                out,
                "simulation {} of plan {}: overall confidence {:.3}",
                text(&result["simulation_id"]),
                text(&result["plan_id"]),
                result["overall_confidence"].as_f64().unwrap_or_default()
            );
            for state in result["imagined_states"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {:>3}. {} {} (confidence {:.3})",
                    state["step"],
                    text(&state["action_type"]),
                    text(&state["target"]),
                    state["confidence"].as_f64().unwrap_or_default()
                );
            }
        }
        Command::Embed { .. } => {
            let _ = writeln!(
                out,
                "embedding {}: {} dimensions, model {}",
                text(&result["embedding_id"]),
                result["dimension"],
                text(&result["model"])
            );
        }
        Command::Search { .. } => {
            for (index, hit) in result["results"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let _ = writeln!(
                    out,
                    "  {}. {:.3}  {}  {}",
                    index + 1,
                    hit["score"].as_f64().unwrap_or_default(),
                    text(&hit["embedding_id"]),
                    text(&hit["text"])
                );
            }
            if out.is_empty() {
                out.push_str("no stored embeddings yet\n");
            }
        }
        Command::Chat { .. } => {
            let _ = writeln!(out, "{}", text(&result["choices"][0]["message"]["content"]));
            let _ = writeln!(
                out,
                "({} / {}, {} tokens in, {} out)",
                text(&result["provider"]),
                text(&result["model"]),
                result["usage"]["prompt_tokens"],
                result["usage"]["completion_tokens"]
            );
        }
        Command::State
        | Command::Serve(_)
        | Command::Trace { .. }
        | Command::Traces { .. }
        | Command::Config => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(result).unwrap_or_default()
            );
        }
    }
    out
}
