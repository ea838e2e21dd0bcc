//! `apollo trace` and `apollo traces`: the diagnostics window of `apollo serve`, in the terminal.
//!
//! These commands read the window; they are not user actions, so they make no trace of their own
//! (watching must not fill what is watched).

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    cli::Report,
    config::{Cli, Command},
    diagnostics::window::parse_trace_id,
};

/// Columns of the widest bar: the whole trace.
const BAR_WIDTH: usize = 40;
/// Columns of the span column, indentation included.
const NAME_WIDTH: usize = 44;

/// Runs `trace` or `traces` against `apollo serve`; `None` for every other command.
pub async fn run(cli: &Cli) -> Option<Report> {
    let (path, render): (String, fn(&Value) -> String) = match &cli.command {
        Command::Trace { trace_id } => {
            // Checked here, so that what reaches the URL is 32 hex digits and nothing else.
            let trace_id = trace_id.trim();
            if parse_trace_id(trace_id).is_none() {
                return Some(failure(
                    cli.json,
                    "invalid_trace_id",
                    &format!("a trace id is 32 hex digits, not all zero: {trace_id:?}"),
                ));
            }
            (format!("/api/diagnostics/traces/{trace_id}"), render_trace)
        }
        Command::Traces {
            service,
            errors,
            limit,
        } => {
            let mut path = format!("/api/diagnostics/traces?limit={limit}");
            if let Some(service) = service {
                let _ = write!(path, "&service={}", encode(service));
            }
            if *errors {
                path.push_str("&error=true");
            }
            (path, render_list)
        }
        _ => return None,
    };
    let answer = fetch(
        &cli.apollo_url,
        &path,
        Duration::from_millis(cli.timeout_ms),
    )
    .await;
    Some(match answer {
        Ok(body) => Report {
            stdout: if cli.json {
                format!("{body}\n")
            } else {
                render(&body)
            },
            stderr: None,
            exit_code: 0,
        },
        Err((code, message)) => failure(cli.json, &code, &message),
    })
}

/// A failed command: one line on stderr (and the error object with `--json`), exit code 1.
fn failure(json: bool, code: &str, message: &str) -> Report {
    Report {
        stdout: if json {
            format!("{}\n", json!({"error": {"code": code, "message": message}}))
        } else {
            String::new()
        },
        stderr: Some(format!("apollo: {message}")),
        exit_code: 1,
    }
}

/// The JSON answer of `GET {base}{path}`, or the error's code and message.
async fn fetch(base: &str, path: &str, timeout: Duration) -> Result<Value, (String, String)> {
    let unreachable = |error: reqwest::Error| {
        (
            "apollo_unavailable".to_owned(),
            format!(
                "cannot reach apollo serve at {base} (start it with `apollo serve`, or set \
                 --apollo-url / APOLLO_URL): {error}"
            ),
        )
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    Err((
        error["code"].as_str().unwrap_or("apollo_error").to_owned(),
        error["message"]
            .as_str()
            .map_or_else(|| format!("apollo serve answered {status}"), str::to_owned),
    ))
}

/// A query value with the characters that would end it escaped.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The list of `apollo traces`: one line per trace, newest first.
pub fn render_list(body: &Value) -> String {
    let traces = body["traces"].as_array().map_or(&[][..], Vec::as_slice);
    if traces.is_empty() {
        return "no traces in the window yet\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<27}  {:<24}  {:>5}  {:>10}  services",
        "trace_id", "start", "root", "spans", "duration"
    );
    for trace in traces {
        let _ = writeln!(
            out,
            "{:<32}  {:<27}  {:<24}  {:>5}  {:>7.2} ms{}  {}",
            text(&trace["trace_id"]),
            text(&trace["start_time"]),
            clip(&text(&trace["root_name"]), 24),
            trace["span_count"].as_u64().unwrap_or_default(),
            trace["duration_ms"].as_f64().unwrap_or_default(),
            if trace["error"] == true { " ✗" } else { "  " },
            trace["services"]
                .as_array()
                .map(|services| services.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        );
    }
    out
}

/// The waterfall of `apollo trace`: the span tree, each span's service, duration and a bar to
/// scale, `✗` on errors.
pub fn render_trace(body: &Value) -> String {
    let spans = body["spans"].as_array().map_or(&[][..], Vec::as_slice);
    let start = spans
        .iter()
        .filter_map(|span| span["start_time_unix_nano"].as_u64())
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|span| span["end_time_unix_nano"].as_u64())
        .max()
        .unwrap_or(start);
    let total = end.saturating_sub(start).max(1);
    let mut services: Vec<String> = spans.iter().map(|span| text(&span["service"])).collect();
    services.sort_unstable();
    services.dedup();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} spans, {} services ({}), {:.2} ms",
        text(&body["trace_id"]),
        spans.len(),
        services.len(),
        services.join(", "),
        total as f64 / 1e6
    );
    for (span, depth) in tree(spans) {
        let from = span["start_time_unix_nano"].as_u64().unwrap_or(start);
        let to = span["end_time_unix_nano"].as_u64().unwrap_or(from);
        let offset = scaled(from.saturating_sub(start), total).min(BAR_WIDTH - 1);
        let width = scaled(to.saturating_sub(from), total).clamp(1, BAR_WIDTH - offset);
        let error = span["status"]["code"] == "error";
        // Deeper than the column is wide, the indentation would be clipped away anyway.
        let name = format!(
            "{}{}",
            "  ".repeat(depth.min(NAME_WIDTH / 2)),
            text(&span["name"])
        );
        let _ = writeln!(
            out,
            "{:<7} {:<NAME_WIDTH$} {} {:>9.2} ms  {}{}",
            clip(&text(&span["service"]), 7),
            clip(&name, NAME_WIDTH),
            if error { "✗" } else { " " },
            to.saturating_sub(from) as f64 / 1e6,
            " ".repeat(offset),
            "█".repeat(width),
        );
    }
    out
}

/// The spans in tree order (each after its parent, siblings by start), with their depth; a span
/// whose parent is not in the trace starts a tree of its own, and so do spans whose parents form
/// a loop (which no root reaches), after the rest.
fn tree(spans: &[Value]) -> Vec<(&Value, usize)> {
    let ids: HashSet<&str> = spans.iter().map(span_id).collect();
    let mut children: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        match span["parent_span_id"].as_str() {
            Some(parent) if ids.contains(parent) && parent != span_id(span) => {
                children.entry(parent).or_default().push(span);
            }
            _ => roots.push(span),
        }
    }
    for kids in children.values_mut() {
        kids.sort_by_key(start_of);
    }
    roots.sort_by_key(start_of);
    let mut ordered = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    for root in roots {
        walk(root, &children, &mut seen, &mut ordered);
    }
    let mut unreached: Vec<&Value> = spans
        .iter()
        .filter(|span| !seen.contains(span_id(span)))
        .collect();
    unreached.sort_by_key(start_of);
    for span in unreached {
        walk(span, &children, &mut seen, &mut ordered);
    }
    ordered
}

/// Appends `root` and the spans below it, depth first, each once.
fn walk<'a>(
    root: &'a Value,
    children: &HashMap<&str, Vec<&'a Value>>,
    seen: &mut HashSet<&'a str>,
    ordered: &mut Vec<(&'a Value, usize)>,
) {
    let mut stack = vec![(root, 0)];
    while let Some((span, depth)) = stack.pop() {
        if !seen.insert(span_id(span)) {
            continue;
        }
        ordered.push((span, depth));
        if let Some(kids) = children.get(span_id(span)) {
            stack.extend(kids.iter().rev().map(|kid| (*kid, depth + 1)));
        }
    }
}

/// A span's id as the API writes it (hex).
fn span_id(span: &Value) -> &str {
    span["span_id"].as_str().unwrap_or_default()
}

/// When a span started, for ordering siblings.
fn start_of(span: &&Value) -> u64 {
    span["start_time_unix_nano"].as_u64().unwrap_or(0)
}

fn scaled(part: u64, total: u64) -> usize {
    usize::try_from(u128::from(part) * BAR_WIDTH as u128 / u128::from(total)).unwrap_or(BAR_WIDTH)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// At most `width` characters, the last one `…` when cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, start: u64, end: u64) -> Value {
        json!({
            "span_id": id, "parent_span_id": parent, "name": format!("op-{id}"),
            "service": service, "start_time_unix_nano": start, "end_time_unix_nano": end,
            "status": {"code": if id == "c" { "error" } else { "unset" }, "message": ""},
        })
    }

    #[test]
    fn the_waterfall_indents_children_and_draws_bars_to_scale() {
        // Arrange: a root of 40 ms, a child over its second half, and a failing grandchild.
        let body = json!({"trace_id": "ab".repeat(16), "spans": [
            span("c", Some("b"), "hermes", 30_000_000, 40_000_000),
            span("a", None, "apollo", 0, 40_000_000),
            span("b", Some("a"), "sophia", 20_000_000, 40_000_000),
        ]});

        // Act
        let lines: Vec<String> = render_trace(&body).lines().map(str::to_owned).collect();

        // Assert
        assert_eq!(
            lines[0],
            format!(
                "trace {}: 3 spans, 3 services (apollo, hermes, sophia), 40.00 ms",
                "ab".repeat(16)
            )
        );
        assert!(lines[1].starts_with("apollo  op-a "), "{}", lines[1]);
        assert!(lines[2].starts_with("sophia    op-b "), "{}", lines[2]);
        assert!(lines[3].starts_with("hermes      op-c "), "{}", lines[3]);
        assert!(
            lines[1].ends_with(&format!("40.00 ms  {}", "█".repeat(40))),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(&format!("{}{}", " ".repeat(20), "█".repeat(20))));
        assert!(lines[3].ends_with(&format!("{}{}", " ".repeat(30), "█".repeat(10))));
        assert!(lines[3].contains(" ✗ "), "{}", lines[3]);
        assert!(!lines[2].contains('✗'), "{}", lines[2]);
    }

    #[test]
    fn a_span_whose_parent_is_missing_starts_its_own_tree() {
        let body = json!({"trace_id": "ab".repeat(16), "spans": [
            span("a", None, "apollo", 0, 10),
            span("x", Some("gone"), "sophia", 5, 10),
        ]});

        let waterfall = render_trace(&body);

        assert!(waterfall.contains("\nsophia  op-x "), "{waterfall}");
    }

    #[test]
    fn spans_whose_parents_form_a_loop_are_shown_too() {
        let body = json!({"trace_id": "ab".repeat(16), "spans": [
            span("a", None, "apollo", 0, 10),
            span("b", Some("a"), "apollo", 1, 10),
            span("s", Some("s"), "sophia", 2, 10),
            span("x", Some("y"), "hermes", 3, 10),
            span("y", Some("x"), "hermes", 4, 10),
        ]});

        let waterfall = render_trace(&body);

        let lines: Vec<&str> = waterfall.lines().skip(1).collect();
        assert_eq!(lines.len(), 5, "{waterfall}");
        for name in ["op-a", "op-b", "op-s", "op-x", "op-y"] {
            assert!(waterfall.contains(name), "{name}: {waterfall}");
        }
    }

    #[test]
    fn the_list_aligns_its_span_counts() {
        let trace = json!({"trace_id": "ab".repeat(16), "start_time": "t", "root_name": "r",
            "span_count": 7, "duration_ms": 1.0, "error": false, "services": ["apollo"]});

        let list = render_list(&json!({"traces": [trace]}));

        // The count ends where its heading does.
        let lines: Vec<&str> = list.lines().collect();
        let heading_end = lines[0].find("spans").expect("a heading") + "spans".len();
        assert_eq!(lines[1].chars().nth(heading_end - 1), Some('7'), "{list}");
    }

    #[test]
    fn the_list_says_when_the_window_is_empty() {
        assert_eq!(
            render_list(&json!({"traces": []})),
            "no traces in the window yet\n"
        );
    }
}
