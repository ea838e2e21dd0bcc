//! The shape of a trace: waiting until one is complete, and the rules every LOGOS trace keeps
//! (one root, no orphans, each server span a child of its caller's client span in another
//! process, typed HTTP attributes), plus a table form for the exact spans one action makes.

use std::{collections::BTreeMap, fmt::Write as _};

use foundry::testing::{AttributeValue, Kind, OtlpReceiver, ReceivedSpan, Status};

use crate::harness::TRACE_DEADLINE;

/// The spans of one trace, as the receiver got them from every process.
#[derive(Debug)]
pub struct Trace {
    /// The trace id.
    pub trace_id: String,
    /// Its spans, in arrival order.
    pub spans: Vec<ReceivedSpan>,
}

/// Waits until the trace `trace_id` is complete: `services` all present, no span whose parent
/// is missing (but `external_parent`, the caller's span outside the system), and every client
/// span that got an answer has the server span of that answer. Spans end children first and
/// each process exports them in that order, so a complete-looking trace is complete. At the
/// deadline, whatever arrived is returned for the assertions to judge.
pub async fn wait_for_trace(
    receiver: &OtlpReceiver,
    trace_id: &str,
    services: &[&str],
    external_parent: Option<&str>,
) -> Trace {
    let spans = receiver
        .wait_for_trace(trace_id, TRACE_DEADLINE, |spans| {
            Trace {
                trace_id: trace_id.to_owned(),
                spans: spans.to_vec(),
            }
            .is_complete(services, external_parent)
        })
        .await;
    Trace {
        trace_id: trace_id.to_owned(),
        spans,
    }
}

impl Trace {
    /// Whether the trace looks complete: `services` all present, no orphan but a child of
    /// `external_parent`, and every client span that got an answer has its server span.
    pub fn is_complete(&self, services: &[&str], external_parent: Option<&str>) -> bool {
        services
            .iter()
            .all(|service| self.spans.iter().any(|s| s.service_name == *service))
            && self.orphans(external_parent).is_empty()
            && self.unanswered_clients().is_empty()
    }

    /// The spans named `name` in `service`.
    pub fn all(&self, service: &str, name: &str) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| s.service_name == service && s.name == name)
            .collect()
    }

    /// The one span named `name` in `service`; panics with the trace if there is not exactly one.
    pub fn one(&self, service: &str, name: &str) -> &ReceivedSpan {
        match self.all(service, name).as_slice() {
            [span] => span,
            found => panic!(
                "expected one {service} span {name:?}, found {}:\n{}",
                found.len(),
                self.tree()
            ),
        }
    }

    /// The parent of `span` within the trace.
    pub fn parent(&self, span: &ReceivedSpan) -> Option<&ReceivedSpan> {
        self.spans
            .iter()
            .find(|s| !span.parent_span_id.is_empty() && s.span_id == span.parent_span_id)
    }

    /// The children of `span`.
    pub fn children(&self, span: &ReceivedSpan) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id == span.span_id)
            .collect()
    }

    /// The spans without a parent in the trace: its roots, with an external parent or none.
    pub fn roots(&self) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| self.parent(s).is_none())
            .collect()
    }

    /// Spans whose parent id is neither empty, nor `external_parent`, nor a span of the trace.
    fn orphans(&self, external_parent: Option<&str>) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| {
                !s.parent_span_id.is_empty()
                    && Some(s.parent_span_id.as_str()) != external_parent
                    && self.parent(s).is_none()
            })
            .collect()
    }

    /// Client spans that got an HTTP answer but whose server span is not (yet) in the trace.
    fn unanswered_clients(&self) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| {
                s.kind == Kind::Client && s.attributes.contains_key("http.response.status_code")
            })
            .filter(|s| !self.children(s).iter().any(|c| c.kind == Kind::Server))
            .collect()
    }

    /// The trace as an indented tree, for failure messages.
    pub fn tree(&self) -> String {
        fn walk(trace: &Trace, span: &ReceivedSpan, depth: usize, out: &mut String) {
            let _ = writeln!(
                out,
                "{:indent$}{} [{}] {:?} {:?} {}",
                "",
                span.name,
                span.service_name,
                span.kind,
                span.status,
                span.attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                indent = depth * 2
            );
            for child in trace.children(span) {
                walk(trace, child, depth + 1, out);
            }
        }
        let mut out = format!("trace {} ({} spans)\n", self.trace_id, self.spans.len());
        for root in self.roots() {
            if !root.parent_span_id.is_empty() {
                let _ = writeln!(out, "(parent {} not in the trace)", root.parent_span_id);
            }
            walk(self, root, 1, &mut out);
        }
        out
    }

    /// The rules of docs/architecture.md section 5 for any trace: exactly one root (`root_name` in
    /// `root_service`, whose parent is `external_parent` or none), no orphans, each server span
    /// the child of a client span of the same name in another process, typed HTTP attributes on
    /// both, and each manual span in the same process as its parent.
    pub fn assert_well_formed(
        &self,
        root_service: &str,
        root_name: &str,
        external_parent: Option<&str>,
    ) {
        let tree = self.tree();
        assert!(
            !self.spans.is_empty(),
            "no spans arrived for {}",
            self.trace_id
        );
        assert!(
            self.spans.iter().all(|s| s.trace_id == self.trace_id),
            "one trace id:\n{tree}"
        );
        let roots = self.roots();
        assert_eq!(roots.len(), 1, "exactly one root:\n{tree}");
        let root = roots[0];
        assert_eq!(
            (root.service_name.as_str(), root.name.as_str()),
            (root_service, root_name),
            "the root:\n{tree}"
        );
        assert_eq!(
            root.parent_span_id,
            external_parent.unwrap_or_default(),
            "the root's parent:\n{tree}"
        );
        assert!(
            self.orphans(external_parent).is_empty(),
            "no orphans: {:?}\n{tree}",
            self.orphans(external_parent)
        );
        let mut ids = BTreeMap::new();
        for span in &self.spans {
            assert!(
                ids.insert(span.span_id.as_str(), span).is_none(),
                "span ids are unique:\n{tree}"
            );
        }

        for span in &self.spans {
            let parent = self.parent(span);
            match span.kind {
                Kind::Server => {
                    assert_http_attributes(span, &tree);
                    let route = span
                        .str("http.route")
                        .unwrap_or_else(|| panic!("{} has http.route:\n{tree}", span.name));
                    assert_eq!(
                        span.name,
                        format!(
                            "{} {route}",
                            span.str("http.request.method").unwrap_or_default()
                        ),
                        "a server span is named by method and route:\n{tree}"
                    );
                    if let Some(parent) = parent {
                        assert_eq!(
                            parent.kind,
                            Kind::Client,
                            "{} [{}]'s parent is its caller's client span:\n{tree}",
                            span.name,
                            span.service_name
                        );
                        assert_ne!(
                            parent.service_name, span.service_name,
                            "{}'s caller is another process:\n{tree}",
                            span.name
                        );
                        assert_eq!(
                            parent.name, span.name,
                            "the client span names the route it calls:\n{tree}"
                        );
                    }
                }
                Kind::Client => {
                    assert_http_attributes(span, &tree);
                    let parent =
                        parent.unwrap_or_else(|| panic!("{} has a parent:\n{tree}", span.name));
                    assert_eq!(
                        parent.service_name, span.service_name,
                        "a client span is a child in its own process:\n{tree}"
                    );
                    let servers: Vec<_> = self
                        .children(span)
                        .into_iter()
                        .filter(|c| c.kind == Kind::Server)
                        .collect();
                    if span.attributes.contains_key("http.response.status_code") {
                        assert_eq!(
                            servers.len(),
                            1,
                            "{} [{}] has the server span of its answer:\n{tree}",
                            span.name,
                            span.service_name
                        );
                        assert_eq!(
                            servers[0].int("http.response.status_code"),
                            span.int("http.response.status_code"),
                            "client and server agree on the status:\n{tree}"
                        );
                    }
                }
                Kind::Internal => {
                    if let Some(parent) = parent {
                        assert_eq!(
                            parent.service_name, span.service_name,
                            "{} is a child in its own process:\n{tree}",
                            span.name
                        );
                    }
                }
                Kind::Producer | Kind::Consumer => panic!("no messaging spans:\n{tree}"),
            }
        }
    }

    /// Asserts the trace holds exactly the spans of `expected`, no more: each row a count, a
    /// service, a span name, a kind, and its parent's service and name (`None` for the root).
    pub fn assert_spans(&self, expected: &[Expect]) {
        let tree = self.tree();
        let mut counted = 0;
        for row in expected {
            let spans = self.all(row.service, row.name);
            assert_eq!(
                spans.len(),
                row.count,
                "{} [{}] spans:\n{tree}",
                row.name,
                row.service
            );
            counted += spans.len();
            for span in spans {
                assert_eq!(
                    span.kind, row.kind,
                    "{} [{}] kind:\n{tree}",
                    row.name, row.service
                );
                let parent = self
                    .parent(span)
                    .map(|p| (p.service_name.as_str(), p.name.as_str()));
                assert_eq!(
                    parent, row.parent,
                    "{} [{}] parent:\n{tree}",
                    row.name, row.service
                );
            }
        }
        assert_eq!(counted, self.spans.len(), "no other spans:\n{tree}");
    }

    /// Asserts that no span of the trace has status ERROR.
    pub fn assert_no_errors(&self) {
        let failed: Vec<_> = self
            .spans
            .iter()
            .filter(|s| s.status == Status::Error)
            .map(|s| (&s.service_name, &s.name))
            .collect();
        assert!(failed.is_empty(), "no errors: {failed:?}\n{}", self.tree());
    }
}

/// One row of [`Trace::assert_spans`].
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    count: usize,
    service: &'static str,
    name: &'static str,
    kind: Kind,
    parent: Option<(&'static str, &'static str)>,
}

/// How many spans `rows` expect in all.
pub fn span_total(rows: &[Expect]) -> usize {
    rows.iter().map(|row| row.count).sum()
}

/// `count` spans `name` of `kind` in `service`, each a child of `parent` (service, name).
pub fn expect(
    count: usize,
    service: &'static str,
    name: &'static str,
    kind: Kind,
    parent: Option<(&'static str, &'static str)>,
) -> Expect {
    Expect {
        count,
        service,
        name,
        kind,
        parent,
    }
}

/// Method and status code on an HTTP span, the status an integer and the method a string.
fn assert_http_attributes(span: &ReceivedSpan, tree: &str) {
    assert!(
        span.str("http.request.method").is_some(),
        "{} [{}] has http.request.method as a string:\n{tree}",
        span.name,
        span.service_name
    );
    if let Some(status) = span.attributes.get("http.response.status_code") {
        assert!(
            matches!(status, AttributeValue::Int(_)),
            "{} [{}] has http.response.status_code as an integer, not {status:?}:\n{tree}",
            span.name,
            span.service_name
        );
    }
    if span.kind == Kind::Server {
        assert!(
            span.int("http.response.status_code").is_some(),
            "{} [{}] has http.response.status_code:\n{tree}",
            span.name,
            span.service_name
        );
    }
}
