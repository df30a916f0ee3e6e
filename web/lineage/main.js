// Execution Lineage Explorer: the graph of executions (parent → child) coloured and shaped by
// state, the same executions as a keyboard-operable list, a node's decision, receipt and
// proof, and "Prove chain": every hop from the root verified in this browser (verify.js).
//
// Data: /console/api/lineage/graph and /chain/{id} (claims), /console/api/decisions/{index}
// (each hop's tlog-proof, its receipt and the log's verifier key). The page links in with
// ?principal=, ?trace=, ?since=, ?until= or ?execution=<id> (that execution's tree, selected).
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { start, api, el, badge, fmtTime, download, ApiError } from "../common/api.js";
import { parseVkey, proveChain } from "./verify.js";

cytoscape.use(dagre);

// Colour is never the only cue: each state has its own shape in the graph and a glyph and a
// word in the graph's labels, the legend and the list.
const STATES = {
  allowed: { glyph: "✓", shape: "round-rectangle", color: "#0a6b2d", bg: "#e3f4e8", note: "decided, no run reported" },
  running: { glyph: "▶", shape: "diamond", color: "#7a4d00", bg: "#fff3d6", note: "" },
  ended: { glyph: "■", shape: "ellipse", color: "#4a5058", bg: "#eceff2", note: "" },
  terminated: { glyph: "⊘", shape: "hexagon", color: "#5b2c83", bg: "#f0e6f7", note: "authority lapsed" },
  denied: { glyph: "✕", shape: "octagon", color: "#b3261e", bg: "#fbe9e7", note: "" },
  unknown: { glyph: "?", shape: "rectangle", color: "#4a5058", bg: "#ffffff", note: "" },
};
const PIN_KEY = "interlock.proof-viewer.vkey"; // the Proof Viewer's pinned key (same origin)
const SVG = "http://www.w3.org/2000/svg";

const view = {
  cy: null,
  nodes: new Map(),
  selected: null,
  rows: new Map(),
  request: 0,
};

const stateOf = (node) => STATES[node.state] || STATES.unknown;
const short = (id) => (id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "");

function stateBadge(state) {
  const s = STATES[state] || STATES.unknown;
  const kind = state === "ended" || state === "unknown" ? "ended" : state;
  return el("span", { class: `badge ${kind}` }, `${s.glyph} ${state}`);
}

// A small picture of the graph's shape for a state (the legend).
function shapeIcon(state) {
  const s = STATES[state];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 20 20");
  svg.setAttribute("width", "18");
  svg.setAttribute("height", "18");
  svg.setAttribute("aria-hidden", "true");
  const points = {
    diamond: "10,1 19,10 10,19 1,10",
    octagon: "6,1 14,1 19,6 19,14 14,19 6,19 1,14 1,6",
    hexagon: "5,2 15,2 19,10 15,18 5,18 1,10",
  }[s.shape];
  let shape;
  if (points) {
    shape = document.createElementNS(SVG, "polygon");
    shape.setAttribute("points", points);
  } else if (s.shape === "ellipse") {
    shape = document.createElementNS(SVG, "circle");
    shape.setAttribute("cx", "10");
    shape.setAttribute("cy", "10");
    shape.setAttribute("r", "8");
  } else {
    shape = document.createElementNS(SVG, "rect");
    shape.setAttribute("x", "2");
    shape.setAttribute("y", "2");
    shape.setAttribute("width", "16");
    shape.setAttribute("height", "16");
    shape.setAttribute("rx", s.shape === "round-rectangle" ? "4" : "0");
  }
  shape.setAttribute("fill", s.bg);
  shape.setAttribute("stroke", s.color);
  shape.setAttribute("stroke-width", "2.5");
  svg.append(shape);
  return svg;
}

function legend() {
  return el(
    "ul",
    { class: "legend", "aria-label": "Legend: execution states" },
    Object.keys(STATES)
      .filter((k) => k !== "unknown")
      .map((k) => el("li", {}, shapeIcon(k), stateBadge(k), STATES[k].note ? el("span", { class: "muted small" }, STATES[k].note) : null)),
  );
}

// --- the search form ----------------------------------------------------------------------

function field(id, label, attrs = {}) {
  return el("label", { for: id }, label, el("input", { id, name: id, ...attrs }));
}

// datetime-local values are local times; the server takes RFC 3339.
const toIso = (value) => (value ? new Date(value).toISOString() : "");
function toLocal(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function searchForm(onSearch) {
  const form = el(
    "form",
    { class: "panel search", id: "search", role: "search", "aria-label": "Search executions" },
    field("principal", "Principal", { type: "text", placeholder: "spiffe://…", maxlength: 512, autocomplete: "off", spellcheck: "false" }),
    field("trace", "Trace id", { type: "text", placeholder: "32 hex digits", maxlength: 32, pattern: "[0-9a-fA-F]{32}", autocomplete: "off", spellcheck: "false" }),
    field("since", "Since", { type: "datetime-local" }),
    field("until", "Until", { type: "datetime-local" }),
    el("label", { class: "check", for: "linked" }, el("input", { id: "linked", name: "linked", type: "checkbox", checked: true }), "Only executions in a chain"),
    el(
      "div",
      { class: "buttons" },
      el("button", { type: "submit" }, "Search"),
      el("button", { type: "button", class: "secondary", id: "clear" }, "Clear"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSearch(readForm(form));
  });
  form.querySelector("#clear").addEventListener("click", () => {
    form.reset();
    form.querySelector("#linked").checked = true;
    onSearch(readForm(form));
  });
  return form;
}

function readForm(form) {
  const v = (id) => form.querySelector(`#${id}`).value.trim();
  return {
    principal: v("principal"),
    trace: v("trace").toLowerCase(),
    since: toIso(v("since")),
    until: toIso(v("until")),
    linked: form.querySelector("#linked").checked,
  };
}

function fillForm(form, q) {
  form.querySelector("#principal").value = q.principal || "";
  form.querySelector("#trace").value = q.trace || "";
  form.querySelector("#since").value = q.since ? toLocal(q.since) : "";
  form.querySelector("#until").value = q.until ? toLocal(q.until) : "";
  form.querySelector("#linked").checked = q.linked !== false;
}

function queryString(q) {
  const p = new URLSearchParams();
  for (const key of ["principal", "trace", "since", "until", "root"]) if (q[key]) p.set(key, q[key]);
  if (!q.root && q.linked) p.set("linked", "true");
  return p.toString();
}

// --- the graph and the list ---------------------------------------------------------------

function nodeLabel(n) {
  const s = stateOf(n);
  return `${s.glyph} ${n.state}\n#${n.index}`;
}

function drawGraph(container, data) {
  if (view.cy) view.cy.destroy();
  view.cy = null;
  if (!data.nodes.length) return;
  const elements = [
    ...data.nodes.map((n) => {
      const s = stateOf(n);
      return {
        group: "nodes",
        data: { id: n.id, label: nodeLabel(n), shape: s.shape, color: s.color, bg: s.bg },
        classes: `state-${n.state}`,
      };
    }),
    ...data.edges.map((e) => ({ group: "edges", data: { id: `${e.source}>${e.target}`, source: e.source, target: e.target } })),
  ];
  const cy = cytoscape({
    container,
    elements,
    boxSelectionEnabled: false,
    selectionType: "single",
    wheelSensitivity: 0.4,
    minZoom: 0.2,
    maxZoom: 2.5,
    style: [
      {
        selector: "node",
        style: {
          shape: "data(shape)",
          width: 30,
          height: 30,
          "background-color": "data(bg)",
          "border-width": 3,
          "border-color": "data(color)",
          label: "data(label)",
          "text-wrap": "wrap",
          "text-valign": "bottom",
          "text-margin-y": 5,
          "font-size": 11,
          "font-family": "system-ui, sans-serif",
          color: "#1a1d21",
          "text-background-color": "#ffffff",
          "text-background-opacity": 0.85,
          "text-background-padding": 1,
        },
      },
      { selector: "node:selected", style: { "border-width": 6, "border-color": "#0b57d0", "overlay-opacity": 0 } },
      { selector: "node.hop-pass", style: { "underlay-color": "#0a6b2d", "underlay-opacity": 0.25, "underlay-padding": 7 } },
      { selector: "node.hop-fail", style: { "underlay-color": "#b3261e", "underlay-opacity": 0.35, "underlay-padding": 7 } },
      {
        selector: "edge",
        style: {
          width: 2,
          "line-color": "#8a929c",
          "target-arrow-shape": "triangle",
          "target-arrow-color": "#8a929c",
          "curve-style": "bezier",
        },
      },
      { selector: "edge.chain", style: { width: 4, "line-color": "#0b57d0", "target-arrow-color": "#0b57d0" } },
    ],
    layout: { name: "dagre", rankDir: "TB", nodeSep: 70, rankSep: 60, padding: 30, fit: true },
  });
  if (cy.zoom() > 1.4) {
    cy.zoom(1.4);
    cy.center();
  }
  cy.on("tap", "node", (event) => select(event.target.id(), "graph"));
  view.cy = cy;
}

// Depth first from each root (by ledger index), so that the list reads as the tree does.
function treeOrder(nodes) {
  const ids = new Set(nodes.map((n) => n.id));
  const kids = new Map();
  const roots = [];
  for (const n of [...nodes].sort((a, b) => a.index - b.index)) {
    if (n.parent && ids.has(n.parent)) {
      if (!kids.has(n.parent)) kids.set(n.parent, []);
      kids.get(n.parent).push(n);
    } else roots.push(n);
  }
  const out = [];
  const walk = (n, level) => {
    out.push([n, level]);
    for (const k of kids.get(n.id) || []) walk(k, level + 1);
  };
  for (const r of roots) walk(r, 0);
  return out;
}

function drawList(tbody, data) {
  view.rows.clear();
  tbody.replaceChildren(
    ...treeOrder(data.nodes).map(([n, level]) => {
      const button = el(
        "button",
        {
          type: "button",
          class: "link",
          dataset: { id: n.id },
          "aria-label": `Execution ${n.index}, ${n.state}, ${n.principal || "unknown principal"}`,
          onclick: () => select(n.id, "list"),
        },
        `#${n.index}`,
      );
      const first = el("td", { class: "exec" }, level ? el("span", { class: "branch", "aria-hidden": "true" }, "└ ") : null, button);
      first.style.paddingLeft = `${8 + Math.min(level, 12) * 14}px`;
      const row = el(
        "tr",
        { class: `state-${n.state}`, dataset: { id: n.id } },
        first,
        el("td", {}, stateBadge(n.state), n.code && n.state === "denied" ? el("div", { class: "mono small" }, n.code) : null),
        el("td", { class: "mono" }, n.principal || "—"),
        el("td", {}, n.action || "—", el("div", { class: "mono small" }, n.resource || "")),
        el("td", {}, String(n.depth ?? "—")),
        el("td", { class: "time" }, fmtTime(n.ts)),
      );
      view.rows.set(n.id, row);
      return row;
    }),
  );
}

// --- selection and the detail panel -------------------------------------------------------

let detailPanel = null;
let graphBox = null;

function select(id, from) {
  const node = view.nodes.get(id);
  if (!node) return;
  view.selected = id;
  graphBox.dataset.selected = id;
  for (const [rid, row] of view.rows) {
    if (rid === id) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  if (view.cy) {
    view.cy.nodes(":selected").unselect();
    const cyNode = view.cy.getElementById(id);
    cyNode.select();
    const at = cyNode.position();
    const box = view.cy.extent();
    const inView = at.x > box.x1 && at.x < box.x2 && at.y > box.y1 && at.y < box.y2;
    if (from === "list" && !inView) view.cy.animate({ center: { eles: cyNode } }, { duration: 200 });
  }
  if (from === "graph") view.rows.get(id)?.scrollIntoView({ block: "nearest" });
  clearChainMarks();
  showDetail(node);
}

function clearChainMarks() {
  if (view.cy) view.cy.elements().removeClass("hop-pass hop-fail chain");
}

function dl(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function showDetail(node) {
  const body = el("div", { class: "detail-body" }, el("p", { class: "muted" }, "Loading the decision…"));
  detailPanel.replaceChildren(
    el("h2", { id: "detail-title" }, "Execution ", el("code", {}, short(node.id)), " ", stateBadge(node.state)),
    body,
  );
  let d;
  try {
    d = await api(`/console/api/decisions/${node.index}`);
  } catch (e) {
    if (view.selected !== node.id) return;
    body.replaceChildren(el("div", { class: "notice error", role: "alert" }, `Cannot read decision ${node.index}: ${e instanceof ApiError ? e.detail : e.message}`));
    return;
  }
  if (view.selected !== node.id) return;
  const rec = d.record || {};
  const parent = node.parent
    ? view.nodes.has(node.parent)
      ? el("button", { type: "button", class: "link", id: "select-parent", onclick: () => select(node.parent, "list") }, short(node.parent))
      : el("code", {}, node.parent)
    : "none (a root)";
  const reasons = (rec.reasons || []).map((r) =>
    el("li", {}, el("code", {}, r.code), r.detail ? ` — ${r.detail}` : "", r.policy ? el("span", { class: "muted" }, ` (policy ${r.policy})`) : null),
  );
  const actions = el(
    "div",
    { class: "actions" },
    d.proof ? el("button", { type: "button", class: "secondary", id: "download-proof", onclick: () => download(`decision-${node.index}.tlog-proof`, d.proof) }, "Download proof") : null,
    d.receipt ? el("button", { type: "button", class: "secondary", id: "download-receipt", onclick: () => download(`decision-${node.index}.receipt.json`, d.receipt, "application/json") }, "Download receipt") : null,
    el("button", { type: "button", class: "secondary", id: "show-tree", onclick: () => search({ root: node.id }, node.id) }, "Show its tree"),
  );
  const parts = [
    dl([
      ["Execution id", el("code", { id: "detail-id" }, node.id)],
      ["Ledger index", String(node.index)],
      ["Principal", el("code", {}, node.principal || "—")],
      ["Action", node.action],
      ["Resource", el("code", {}, node.resource || "—")],
      ["Time", fmtTime(node.ts)],
      ["Depth", String(node.depth ?? "—")],
      ["Parent", parent],
      ["Trace id", node.trace ? el("code", {}, node.trace) : null],
    ]),
    el("h3", {}, "Decision"),
    el("p", { id: "detail-decision" }, badge(rec.effect === "allow" ? "allow" : "deny", rec.effect || "deny"), " at stage ", el("code", {}, rec.stage || "—")),
    reasons.length ? el("ul", { class: "reasons", id: "detail-reasons" }, reasons) : null,
    rec.snapshot ? el("p", { class: "small" }, "Policy snapshot ", el("code", {}, short(rec.snapshot))) : null,
    el("h3", {}, "Receipt and proof"),
    el("p", { class: "muted small" }, "The proof (C2SP tlog-proof: the entry, its inclusion path, a signed checkpoint) and the node's DSSE receipt; check either offline in the Proof Viewer."),
    actions,
    chainSection(node, d),
  ];
  body.replaceChildren(...parts.filter(Boolean));
}

// --- proving a chain ----------------------------------------------------------------------

function pinnedKey() {
  try {
    return localStorage.getItem(PIN_KEY);
  } catch {
    return null;
  }
}

function chainSection(node, d) {
  const pinned = pinnedKey();
  const vkey = el("input", { id: "vkey", type: "text", value: pinned || d.vkey || "", autocomplete: "off", spellcheck: "false", "aria-describedby": "vkey-help" });
  const help = el(
    "p",
    { id: "vkey-help", class: "muted small" },
    pinned
      ? "The key pinned in the Proof Viewer. "
      : "As this server states it: check it against `interlock ledger vkey`, or paste your own. ",
    "Each hop is verified with it here, in the browser.",
  );
  const result = el("div", { id: "chain-result" });
  const button = el("button", { type: "button", id: "prove-chain" }, "Prove chain");
  button.addEventListener("click", () => proveSelected(node, vkey.value.trim(), result, button));
  return el(
    "section",
    { class: "chain", "aria-labelledby": "chain-title" },
    el("h3", { id: "chain-title" }, "Chain from the root"),
    el("label", { for: "vkey" }, "Log verifier key"),
    vkey,
    help,
    el("p", {}, button),
    result,
  );
}

const STATUS = { pass: "pass", fail: "FAIL", skip: "not checked" };

function hopItem(hop, i, count) {
  const role = i === 0 ? "root" : i === count - 1 ? "selected" : `depth ${hop.depth}`;
  return el(
    "li",
    { class: "hop pending", dataset: { hop: String(i), id: hop.id } },
    el("div", { class: "hop-head" },
      el("strong", {}, `Hop ${i + 1} of ${count}`), " ",
      el("span", { class: "mono" }, `#${hop.index} ${short(hop.id)}`), " ",
      el("span", { class: "muted" }, `(${role}, ${hop.state})`), " ",
      el("span", { class: "verdict" }, "…")),
    el("ol", { class: "steps" }),
  );
}

function showHop(item, result) {
  item.classList.remove("pending");
  item.classList.add(result.ok ? "pass" : "fail");
  item.querySelector(".verdict").replaceChildren(result.ok ? el("span", { class: "badge allow" }, "✓ pass") : el("span", { class: "badge deny" }, "✕ FAIL"));
  item.querySelector(".steps").replaceChildren(
    ...result.steps.map((s) =>
      el("li", { class: `step ${s.status}`, dataset: { step: s.id } },
        el("span", { class: "mark", "aria-hidden": "true" }, s.status === "pass" ? "✓" : "✕"),
        el("span", {}, `${s.title}: `, el("strong", {}, STATUS[s.status])),
        s.detail ? el("div", { class: "mono small" }, s.detail) : null),
    ),
  );
}

async function proveSelected(node, vkeyText, result, button) {
  button.disabled = true;
  clearChainMarks();
  const verdict = el("p", { id: "chain-verdict", role: "status", dataset: { verdict: "running" } }, "Proving…");
  result.replaceChildren(verdict);
  try {
    let key;
    try {
      key = await parseVkey(vkeyText);
    } catch (e) {
      verdict.dataset.verdict = "fail";
      verdict.setAttribute("role", "alert");
      verdict.textContent = `Cannot prove anything: the verifier key is unusable (${e.message}).`;
      return;
    }
    let chain;
    try {
      chain = await api(`/console/api/lineage/chain/${node.id}`);
    } catch (e) {
      verdict.dataset.verdict = "fail";
      verdict.setAttribute("role", "alert");
      verdict.textContent = `Cannot read the chain: ${e instanceof ApiError ? e.detail : e.message}`;
      return;
    }
    const hops = chain.hops;
    const items = hops.map((h, i) => hopItem(h, i, hops.length));
    result.append(el("ol", { class: "hops", id: "chain-hops", "aria-label": "Hops, root first" }, items));
    const outcome = await proveChain(
      hops,
      async (hop) => (await api(`/console/api/decisions/${hop.index}`)).proof,
      key,
      (i, r) => {
        showHop(items[i], r);
        if (view.cy) {
          view.cy.getElementById(hops[i].id).addClass(r.ok ? "hop-pass" : "hop-fail");
          if (i > 0 && r.ok) view.cy.getElementById(`${hops[i - 1].id}>${hops[i].id}`).addClass("chain");
        }
      },
    );
    for (const item of items.slice(outcome.hops.length)) {
      item.classList.replace("pending", "skip");
      item.querySelector(".verdict").textContent = "not checked";
    }
    verdict.scrollIntoView({ block: "nearest" });
    if (outcome.ok && chain.complete) {
      verdict.dataset.verdict = "pass";
      verdict.textContent = `Chain proven: ${hops.length} hop${hops.length === 1 ? "" : "s"} from the root, each decision included in the log ${key.name} under a signed checkpoint, each linked to its parent by parent_leaf.`;
    } else if (outcome.ok) {
      verdict.dataset.verdict = "fail";
      verdict.setAttribute("role", "alert");
      verdict.textContent = "Each hop shown is proven, but the chain is not complete: a parent is missing from the log.";
    } else {
      const i = outcome.failedAt;
      const failed = outcome.hops[i].failed;
      verdict.dataset.verdict = "fail";
      verdict.dataset.failedHop = String(i + 1);
      verdict.dataset.failedStep = failed.id;
      verdict.setAttribute("role", "alert");
      verdict.textContent = `Chain NOT proven: hop ${i + 1} of ${hops.length} (#${hops[i].index}) failed at “${failed.title}”: ${failed.detail}`;
    }
  } finally {
    button.disabled = false;
  }
}

// --- loading ------------------------------------------------------------------------------

let statusLine = null;
let graphTable = null;
let form = null;

async function search(q, selectId = null) {
  const request = ++view.request;
  const qs = queryString(q);
  history.replaceState(null, "", `${location.pathname}${q.root ? `?execution=${q.root}` : qs ? `?${qs}` : ""}`);
  statusLine.className = "status muted";
  statusLine.textContent = "Searching…";
  statusLine.setAttribute("aria-busy", "true");
  let data;
  try {
    data = await api(`/console/api/lineage/graph${qs ? `?${qs}` : ""}`);
  } catch (e) {
    if (request !== view.request) return;
    statusLine.className = "status notice error";
    statusLine.textContent = `Search failed: ${e instanceof ApiError ? e.detail : e.message}`;
    searched(request);
    return;
  }
  if (request !== view.request) return;
  view.nodes = new Map(data.nodes.map((n) => [n.id, n]));
  view.selected = null;
  delete graphBox.dataset.selected;
  const parts = [`${data.nodes.length} execution${data.nodes.length === 1 ? "" : "s"}, ${data.edges.length} link${data.edges.length === 1 ? "" : "s"}`];
  if (q.root) parts.push("the tree of one execution");
  if (data.truncated) parts.push(`more match: showing the first ${data.limit}; narrow the search`);
  if (!data.indexed.complete) parts.push("older history is still being indexed");
  statusLine.className = data.truncated ? "status notice error" : "status muted";
  statusLine.textContent = data.nodes.length ? parts.join(" · ") : "No executions match.";
  graphBox.setAttribute("aria-label", `Lineage graph of ${data.nodes.length} executions; the table below lists the same executions`);
  drawGraph(graphBox, data);
  drawList(graphTable, data);
  detailPanel.replaceChildren(el("h2", {}, "Execution"), el("p", { class: "muted" }, "Select an execution in the graph or the list to see its decision, receipt and proof, and to prove its chain."));
  if (selectId && view.nodes.has(selectId)) select(selectId, "list");
  document.documentElement.dataset.ready = "true";
  searched(request);
}

// The latest search has drawn its answer (or its error): the status line is no longer busy,
// and <html data-searched> counts the searches answered (a test waits for its own).
function searched(request) {
  statusLine.removeAttribute("aria-busy");
  document.documentElement.dataset.searched = String(request);
}

start("lineage", async (main) => {
  const params = new URLSearchParams(location.search);
  const execution = params.get("execution");
  const initial = {
    principal: params.get("principal") || "",
    trace: params.get("trace") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    linked: params.get("linked") !== "false",
  };
  form = searchForm((q) => search(q));
  fillForm(form, initial);
  statusLine = el("p", { id: "lineage-status", class: "status muted", role: "status" });
  graphBox = el("div", { id: "graph", role: "img", "aria-label": "Lineage graph" });
  graphTable = el("tbody", {});
  detailPanel = el("aside", { id: "detail", class: "panel", "aria-label": "Selected execution" });
  main.append(
    el("h1", {}, "Execution Lineage Explorer"),
    el("p", { class: "muted intro" }, "Executions and the children they started, from the ledger. Select one to see its decision, and prove its chain from the root hop by hop in this browser."),
    form,
    statusLine,
    el(
      "div",
      { class: "lineage" },
      el("section", { class: "graph-area", "aria-label": "Lineage graph" }, legend(), graphBox),
      detailPanel,
    ),
    el(
      "section",
      { class: "list-area", "aria-labelledby": "list-title" },
      el("h2", { id: "list-title" }, "Executions"),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { id: "node-list", "aria-labelledby": "list-title" },
          el("thead", {}, el("tr", {}, ["Execution", "State", "Principal", "Action · resource", "Depth", "Time"].map((h) => el("th", { scope: "col" }, h)))),
          graphTable,
        ),
      ),
    ),
  );
  // the cytoscape renderer keeps its graph sized to its box
  await search(execution ? { root: execution } : initial, execution);
});

// For tests and the curious: what the graph holds (the canvas has no DOM to read).
globalThis.interlockLineage = {
  graphNodes: () =>
    view.cy
      ? view.cy.nodes().map((n) => ({ id: n.id(), classes: n.classes(), selected: n.selected(), position: n.renderedPosition() }))
      : [],
  graphEdges: () => (view.cy ? view.cy.edges().map((e) => ({ source: e.data("source"), target: e.data("target"), classes: e.classes() })) : []),
};
