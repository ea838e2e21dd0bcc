// The diagnostics page: the live list of traces, the waterfall of the selected one, its log
// lines and the RED table. Every value from telemetry is set as text (textContent), never as
// markup, so a span attribute cannot inject an element.
"use strict";

const state = {
  traces: new Map(), // trace_id -> summary
  selected: null,    // trace_id
  spans: [],
  selectedSpan: null,
  links: { jaeger: null, grafana: null },
  services: [],      // stable colour order
  refetch: null,
  render: null,
  reload: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function serviceClass(service) {
  let index = state.services.indexOf(service);
  if (index < 0) { state.services.push(service); index = state.services.length - 1; }
  return "service-" + (index % 5);
}

function ms(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(2);
}

async function getJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message);
  }
  return body;
}

// ---- The list of traces ----

function filters() {
  return {
    service: $("filter-service").value.trim(),
    name: $("filter-name").value.trim(),
    errors: $("filter-errors").checked,
  };
}

async function loadTraces() {
  const f = filters();
  const query = new URLSearchParams({ limit: "200" });
  if (f.service) query.set("service", f.service);
  if (f.name) query.set("name", f.name);
  if (f.errors) query.set("error", "true");
  try {
    const body = await getJson("/api/diagnostics/traces?" + query);
    state.traces = new Map(body.traces.map((trace) => [trace.trace_id, trace]));
    renderTraces();
  } catch (error) {
    $("traces-empty").textContent = "Cannot list traces: " + error.message;
  }
}

function matchesFilters(trace) {
  const f = filters();
  if (f.errors && !trace.error) return false;
  if (f.service && !trace.services.includes(f.service)) return false;
  return true;
}

function renderTraces() {
  const list = $("traces");
  const traces = [...state.traces.values()]
    .sort((a, b) => (a.start_time < b.start_time ? 1 : -1))
    .slice(0, 200);
  list.replaceChildren(...traces.map((trace) => {
    const item = el("li", null, trace.error ? "error" : "");
    if (trace.trace_id === state.selected) item.classList.add("selected");
    item.dataset.traceId = trace.trace_id;
    item.append(el("div", trace.root_name || "(root not received yet)", "root"));
    item.append(el("div", `${trace.services.join(", ")} · ${trace.span_count} spans · ${ms(trace.duration_ms)} ms`, "meta"));
    item.append(el("div", `${trace.start_time} · ${trace.trace_id}`, "meta"));
    item.addEventListener("click", () => selectTrace(trace.trace_id));
    return item;
  }));
  $("traces-empty").hidden = traces.length > 0;
}

// ---- One trace ----

async function selectTrace(traceId) {
  state.selected = traceId;
  state.selectedSpan = null;
  const url = new URL(window.location);
  url.searchParams.set("trace", traceId);
  window.history.replaceState(null, "", url);
  renderTraces();
  await loadTrace();
}

async function loadTrace() {
  const traceId = state.selected;
  if (!traceId) return;
  try {
    const [trace, logs] = await Promise.all([
      getJson("/api/diagnostics/traces/" + encodeURIComponent(traceId)),
      getJson("/api/diagnostics/logs?limit=200&trace_id=" + encodeURIComponent(traceId)),
    ]);
    if (traceId !== state.selected) return;
    state.spans = trace.spans;
    renderTrace(trace);
    renderLogs(logs.logs);
  } catch (error) {
    $("trace-title").textContent = "Trace " + traceId;
    $("trace-meta").textContent = error.message;
    $("waterfall").replaceChildren();
    $("trace-logs").replaceChildren();
    $("span-details").hidden = true;
  }
}

function tree(spans) {
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    const parent = span.parent_span_id;
    if (parent && parent !== span.span_id && ids.has(parent)) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(span);
    } else {
      roots.push(span);
    }
  }
  const byStart = (a, b) => a.start_time_unix_nano - b.start_time_unix_nano;
  const ordered = [];
  const seen = new Set();
  // Depth first with a stack of its own: a trace may nest deeper than the call stack.
  const walk = (root) => {
    const stack = [[root, 0]];
    while (stack.length > 0) {
      const [span, depth] = stack.pop();
      if (seen.has(span.span_id)) continue;
      seen.add(span.span_id);
      ordered.push([span, depth]);
      const kids = (children.get(span.span_id) || []).slice().sort(byStart);
      for (let i = kids.length - 1; i >= 0; i -= 1) stack.push([kids[i], depth + 1]);
    }
  };
  roots.sort(byStart).forEach(walk);
  // Spans whose parents form a loop are reached from no root: they are shown too, as roots.
  spans.filter((span) => !seen.has(span.span_id)).sort(byStart).forEach(walk);
  return ordered;
}

function renderTrace(trace) {
  const spans = trace.spans;
  const start = Math.min(...spans.map((span) => span.start_time_unix_nano));
  const end = Math.max(...spans.map((span) => span.end_time_unix_nano));
  const total = Math.max(end - start, 1);
  const services = [...new Set(spans.map((span) => span.service))].sort();
  $("trace-title").textContent = "Trace " + trace.trace_id;
  $("trace-meta").textContent = `${spans.length} spans · ${services.join(", ")} · ${ms(total / 1e6)} ms`;
  renderLinks(trace.trace_id);
  $("waterfall").replaceChildren(...tree(spans).map(([span, depth]) => {
    const row = el("div", null, "row");
    row.setAttribute("role", "listitem");
    row.dataset.spanId = span.span_id;
    row.dataset.service = span.service;
    if (span.status.code === "error") row.classList.add("error");
    if (span.span_id === state.selectedSpan) row.classList.add("selected");
    const colour = serviceClass(span.service);
    row.append(el("span", span.service, "service " + colour));
    const name = el("span", span.name, "name");
    name.style.paddingLeft = depth * 1.1 + "em";
    name.title = span.name;
    row.append(name);
    row.append(el("span", ms((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6) + " ms", "duration"));
    const track = el("span", null, "track");
    const bar = el("span", null, "bar " + colour);
    bar.style.left = ((span.start_time_unix_nano - start) / total) * 100 + "%";
    bar.style.width = ((span.end_time_unix_nano - span.start_time_unix_nano) / total) * 100 + "%";
    track.append(bar);
    row.append(track);
    row.addEventListener("click", () => selectSpan(span.span_id));
    return row;
  }));
  if (state.selectedSpan) selectSpan(state.selectedSpan);
}

function renderLinks(traceId) {
  const links = [];
  if (state.links.jaeger) {
    links.push(link("Open in Jaeger", state.links.jaeger + "/trace/" + traceId));
  }
  if (state.links.grafana) {
    const panes = { a: { datasource: "tempo", queries: [{ refId: "A", datasource: { type: "tempo", uid: "tempo" }, queryType: "traceql", query: traceId }], range: { from: "now-1h", to: "now" } } };
    links.push(link("Open in Grafana", state.links.grafana + "/explore?schemaVersion=1&panes=" + encodeURIComponent(JSON.stringify(panes))));
  }
  $("trace-links").replaceChildren(...links);
}

function link(text, href) {
  const anchor = el("a", text);
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer";
  return anchor;
}

function selectSpan(spanId) {
  state.selectedSpan = spanId;
  const span = state.spans.find((candidate) => candidate.span_id === spanId);
  for (const row of $("waterfall").children) {
    row.classList.toggle("selected", row.dataset.spanId === spanId);
  }
  if (!span) { $("span-details").hidden = true; return; }
  $("span-details").hidden = false;
  $("span-title").textContent = `${span.name} (${span.service}, ${span.kind}, status ${span.status.code}${span.status.message ? ": " + span.status.message : ""})`;
  const rows = Object.entries(span.attributes).map(([key, value]) => {
    const row = el("tr");
    row.append(el("td", key), el("td", JSON.stringify(value)));
    return row;
  });
  $("span-attributes").tBodies[0].replaceChildren(...rows);
  const events = span.events.map((event) =>
    el("li", `${event.name} ${Object.keys(event.attributes).length ? JSON.stringify(event.attributes) : ""}`));
  $("span-events").replaceChildren(...(events.length ? events : [el("li", "none", "muted")]));
}

function logLine(log) {
  const time = new Date(Number(log.time_unix_nano) / 1e6).toISOString().slice(11, 23);
  const body = typeof log.body === "string" ? log.body : JSON.stringify(log.body);
  const attributes = Object.keys(log.attributes || {}).length ? " " + JSON.stringify(log.attributes) : "";
  return el("li", `${time} ${log.service} ${log.severity || ""} ${body}${attributes}`, log.severity || "");
}

function renderLogs(logs) {
  $("trace-logs").replaceChildren(...(logs.length ? logs.map(logLine) : [el("li", "none received", "muted")]));
}

// ---- The RED table and the live feed ----

function renderTelemetry(message) {
  const rows = message.metrics.map((metric) => {
    const row = el("tr");
    row.append(
      el("td", metric.service, serviceClass(metric.service)), el("td", metric.route),
      el("td", metric.requests), el("td", Number(metric.request_rate).toFixed(2)),
      el("td", (Number(metric.error_rate) * 100).toFixed(1) + " %"),
      el("td", ms(metric.p50_ms)), el("td", ms(metric.p95_ms)), el("td", ms(metric.p99_ms)));
    return row;
  });
  $("red").tBodies[0].replaceChildren(...rows);
  const w = message.window;
  $("window-stats").textContent = `${w.traces} traces · ${w.spans} / ${w.max_spans} spans · ${w.logs} log lines · ${message.websockets} viewers`;
  const llm = message.llm;
  $("llm").textContent = llm.calls
    ? `LLM: ${llm.calls} calls, mean ${ms(llm.mean_latency_ms)} ms, last ${ms(llm.last_latency_ms)} ms, ${llm.input_tokens} tokens in, ${llm.output_tokens} out`
    : "LLM: no calls yet";
}

// Under load, trace messages come by the thousand a second: the list is drawn at most four
// times a second, and keeps the newest 200.
function scheduleRender() {
  if (state.render) return;
  state.render = setTimeout(() => {
    state.render = null;
    const newest = [...state.traces.values()]
      .sort((a, b) => (a.start_time < b.start_time ? 1 : -1))
      .slice(0, 200);
    state.traces = new Map(newest.map((trace) => [trace.trace_id, trace]));
    renderTraces();
  }, 250);
}

function scheduleReload() {
  if (state.reload) return;
  state.reload = setTimeout(() => { state.reload = null; loadTraces(); }, 1000);
}

function scheduleRefetch() {
  if (state.refetch) return;
  state.refetch = setTimeout(() => { state.refetch = null; loadTrace(); }, 300);
}

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}/ws/diagnostics`);
  const badge = $("connection");
  socket.addEventListener("open", () => { badge.textContent = "live"; badge.className = "badge live"; });
  const pinger = setInterval(() => {
    if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
  }, 20000);
  socket.addEventListener("close", () => {
    clearInterval(pinger);
    badge.textContent = "disconnected, retrying"; badge.className = "badge down";
    setTimeout(connect, 2000);
  });
  socket.addEventListener("message", (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    if (message.type === "telemetry") {
      renderTelemetry(message);
    } else if (message.type === "trace") {
      if (filters().name && !state.traces.has(message.trace.trace_id)) {
        // A summary names services, not spans: whether a new trace has a span of that name,
        // the server says, in a reload shortly after.
        scheduleReload();
      } else if (matchesFilters(message.trace)) {
        state.traces.set(message.trace.trace_id, message.trace);
        scheduleRender();
      }
      if (message.trace.trace_id === state.selected) scheduleRefetch();
    } else if (message.type === "log") {
      if (message.log.trace_id && message.log.trace_id === state.selected) {
        $("trace-logs").querySelectorAll(".muted").forEach((placeholder) => placeholder.remove());
        $("trace-logs").append(logLine(message.log));
      }
    }
  });
}

async function start() {
  for (const id of ["filter-service", "filter-name", "filter-errors"]) {
    $(id).addEventListener("change", loadTraces);
  }
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); loadTraces(); });
  state.links = await getJson("/api/diagnostics/links").catch(() => state.links);
  const wanted = new URLSearchParams(window.location.search).get("trace");
  await loadTraces();
  if (wanted) await selectTrace(wanted.trim().toLowerCase());
  connect();
}

start();
