// tusk-events console: plain JS, no build step. Every value from the server goes into the page
// through textContent (el() below), never as HTML, so payloads cannot inject markup.
"use strict";

const CSRF = document.querySelector('meta[name="tusk-csrf"]').content;
const main = document.getElementById("main");
let timer = null;
let lastCounts = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter(n => n !== null && n !== undefined));
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Tusk-CSRF": CSRF},
    body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({error: res.statusText}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h => el("th", {text: h})))),
    el("tbody", {}, rows));
}

function num(v) { return el("td", {class: "num", text: v === null || v === undefined ? "–" : v}); }
function pretty(v) { return el("pre", {text: typeof v === "string" ? v : JSON.stringify(v, null, 2)}); }
function when(ts) {
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(String(ts).replace(" ", "T") + "Z");
  return isNaN(d) ? String(ts) : d.toISOString().replace("T", " ").replace("Z", "");
}

// -- Overview ------------------------------------------------------------------------------

async function overview() {
  const [data, graph] = await Promise.all([api("/api/overview"), api("/api/graph")]);
  document.getElementById("where").textContent = `bus ${data.bus} · store ${data.store}`;
  const rates = {};
  if (lastCounts) {
    const dt = data.time - lastCounts.time;
    for (const s of data.services) {
      const before = lastCounts.processed[s.name];
      if (dt > 0 && before !== undefined) rates[s.name] = Math.max(0, (s.processed - before) / dt).toFixed(1);
    }
  }
  lastCounts = {time: data.time, processed: Object.fromEntries(data.services.map(s => [s.name, s.processed]))};
  const rows = data.services.map(s => el("tr", {"data-service": s.name},
    el("td", {text: s.name}), el("td", {text: s.delivery}), el("td", {text: s.group || "–"}),
    el("td", {text: s.types.join(", ")}), num(s.consumers), num(rates[s.name] ?? "…"), num(s.pending),
    num(s.lag),
    el("td", {class: "num"}, s.dead_letters ? el("a", {href: `#/dlq?service=${encodeURIComponent(s.name)}`,
      class: "bad", text: s.dead_letters}) : String(s.dead_letters ?? "–"))));
  const parts = [
    el("h2", {text: "Services"}),
    data.bus_error ? el("p", {class: "bad", text: `bus: ${data.bus_error}`}) : null,
    table(["service", "delivery", "group", "types", "consumers", "events/s", "pending", "lag", "DLQ"], rows),
    el("h2", {text: "Architecture"}),
    graph.svg ? el("img", {class: "graph", src: "/api/graph.svg", alt: "architecture graph"})
              : pretty(graph.mermaid),
  ];
  show(...parts);
}

// -- Events --------------------------------------------------------------------------------

async function events(params) {
  const q = new URLSearchParams();
  for (const k of ["type", "since", "until", "trace_id", "before"]) if (params.get(k)) q.set(k, params.get(k));
  const data = await api("/api/events?" + q);
  const form = el("form", {class: "filters", onsubmit: e => {
    e.preventDefault();
    const f = new URLSearchParams();
    for (const input of form.querySelectorAll("input")) if (input.value) f.set(input.name, input.value);
    location.hash = "#/events?" + f;
  }},
    el("input", {name: "type", placeholder: "event type", value: params.get("type") || ""}),
    el("input", {name: "since", placeholder: "since (2026-01-31 12:00)", value: params.get("since") || ""}),
    el("input", {name: "until", placeholder: "until", value: params.get("until") || ""}),
    el("input", {name: "trace_id", placeholder: "trace id", value: params.get("trace_id") || ""}),
    el("button", {type: "submit", text: "Filter"}));
  const rows = data.events.map(e => el("tr", {"data-event": e.id},
    num(e.position), el("td", {text: when(e.timestamp)}), el("td", {text: e.type}),
    el("td", {}, e.trace_id ? el("a", {href: `#/trace/${encodeURIComponent(e.trace_id)}`, class: "trace-link",
      text: e.trace_id.slice(0, 12) + "…"}) : "–"),
    el("td", {}, pretty(e.payload))));
  const next = data.more ? el("a", {href: "#/events?" + new URLSearchParams({...Object.fromEntries(q),
    before: data.next_before}), text: "older →"}) : null;
  show(el("h2", {text: "Events"}), form,
    table(["#", "time (UTC)", "type", "trace", "payload"], rows),
    data.events.length ? next : el("p", {class: "muted", text: "no events match"}));
}

// -- Dead letters --------------------------------------------------------------------------

async function deadLetters(params) {
  const service = params.get("service") || "";
  const after = params.get("after") || "";
  const q = new URLSearchParams();
  if (service) q.set("service", service);
  if (after) q.set("after", after);
  const data = await api("/api/dlq?" + q);
  const act = async (action, svc, ids) => {
    const what = ids ? `${ids.length} letter(s)` : `every letter of ${svc}`;
    if (action === "purge" && !confirm(`Purge ${what}? This cannot be undone.`)) return;
    try {
      const result = await api(`/api/dlq/${action}`, {service: svc, ids});
      await route();
      document.getElementById("done").textContent = `${action}: ${Object.values(result)[0]} letter(s)`;
    } catch (e) {
      showError(e.message);
    }
  };
  const pick = el("select", {onchange: e => { location.hash = "#/dlq?" + new URLSearchParams(
    e.target.value ? {service: e.target.value} : {}); }},
    el("option", {value: "", text: `all services (${data.total})`}),
    Object.entries(data.counts).map(([s, n]) => el("option", {value: s, selected: s === service,
      text: `${s} (${n})`})));
  const rows = data.letters.map(d => el("tr", {"data-letter": d.id},
    el("td", {}, el("input", {type: "checkbox", "data-service": d.service, value: d.id})),
    el("td", {text: d.service}), el("td", {text: d.event.type}), el("td", {text: d.reason}),
    num(d.attempts), el("td", {class: "nowrap", text: when(d.first_failed_at)}),
    el("td", {class: "detail"}, el("details", {}, el("summary", {text: "traceback & event"}), pretty(d.traceback),
      pretty(d.event.payload),
      d.event.metadata && d.event.metadata.trace_id ? el("a", {href: `#/trace/${encodeURIComponent(
        d.event.metadata.trace_id)}`, text: "trace"}) : null)),
    el("td", {}, el("button", {class: "redrive", text: "Redrive", onclick: () => act("redrive", d.service, [d.id])}),
      " ", el("button", {class: "danger purge", text: "Purge", onclick: () => act("purge", d.service, [d.id])}))));
  const selected = () => {
    const by = {};
    for (const box of main.querySelectorAll("input[type=checkbox]:checked"))
      (by[box.dataset.service] ||= []).push(box.value);
    return by;
  };
  const bulk = async action => {
    for (const [svc, ids] of Object.entries(selected())) await act(action, svc, ids);
  };
  const allOf = async action => {
    for (const svc of service ? [service] : Object.keys(data.counts)) {
      if (data.counts[svc]) await act(action, svc, null);
    }
  };
  const pager = [];
  if (after) pager.push(el("a", {href: "#/dlq?" + new URLSearchParams(service ? {service} : {}),
    text: "← first page"}), " ");
  if (data.next_after) pager.push(el("a", {id: "dlq-more", href: "#/dlq?" + new URLSearchParams(
    {...(service ? {service} : {}), after: data.next_after}), text: "more →"}));
  show(el("h2", {text: "Dead letters"}),
    el("div", {class: "filters"}, pick,
      el("button", {id: "redrive-selected", text: "Redrive selected", onclick: () => bulk("redrive")}),
      el("button", {class: "danger", text: "Purge selected", onclick: () => bulk("purge")}),
      el("button", {id: "redrive-all", text: "Redrive all", onclick: () => allOf("redrive")}),
      el("button", {class: "danger", text: "Purge all", onclick: () => allOf("purge")}),
      el("span", {id: "done", class: "ok"})),
    data.letters.length ? table(["", "service", "type", "reason", "attempts", "first failure (UTC)", "", ""], rows)
                        : el("p", {class: "muted", text: "no dead letters"}),
    el("p", {}, pager));
}

// -- Trace ---------------------------------------------------------------------------------

function traceNode(n) {
  return el("li", {"data-event": n.id},
    el("span", {text: `+${n.offset_ms} ms `, class: "muted"}), el("strong", {text: n.type}),
    el("span", {class: "muted", text: ` ${n.id}`}),
    el("details", {}, el("summary", {text: "payload"}), pretty(n.payload)),
    el("ul", {}, n.steps.map(s => el("li", {class: `step ${s.status}`},
      el("span", {text: `${s.service}: ${s.status}`}),
      s.reason ? el("span", {text: ` — ${s.reason} (${s.attempts} attempts)`}) : null,
      s.published.length ? el("ul", {}, s.published.map(traceNode)) : null))));
}

async function trace(id) {
  const form = el("form", {class: "filters", onsubmit: e => {
    e.preventDefault();
    location.hash = "#/trace/" + encodeURIComponent(form.querySelector("input").value.trim());
  }}, el("input", {name: "trace", placeholder: "trace id or event id", value: id || "", size: 40}),
    el("button", {type: "submit", text: "Follow"}));
  if (!id) { show(el("h2", {text: "Trace"}), form); return; }
  const t = await api("/api/trace/" + encodeURIComponent(id));
  show(el("h2", {text: `Trace ${t.trace_id}`}), form,
    el("p", {class: "muted", text: `${t.events} events in ${t.duration_ms} ms` +
      (t.bus_consulted ? "" : " (bus not consulted: handled records and dead letters not shown)")}),
    el("div", {class: "tree"}, el("ul", {}, t.roots.map(traceNode))));
}

// -- Contracts -----------------------------------------------------------------------------

function contracts() {
  show(el("h2", {text: "Contracts (AsyncAPI)"}),
    el("iframe", {class: "contracts", src: "/contracts", title: "AsyncAPI document"}));
}

// -- routing -------------------------------------------------------------------------------

async function route() {
  clearInterval(timer);
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(query || "");
  const page = path.split("/")[1] || "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  try {
    if (page === "overview") {
      await overview();
      timer = setInterval(() => overview().catch(e => showError(e.message)), 2000);
    } else if (page === "events") await events(params);
    else if (page === "dlq") await deadLetters(params);
    else if (page === "trace") await trace(decodeURIComponent(path.split("/")[2] || ""));
    else if (page === "contracts") contracts();
    else show(el("p", {text: `no page ${page}`}));
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

window.addEventListener("hashchange", route);
route();
