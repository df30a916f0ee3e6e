// The Infrastructure Health Dashboard: every node's state (ready or fail-closed, and why),
// lease, policy, checkpoint, log and attestation; decision and denial rates by reason code and
// latency percentiles as uPlot charts, with a table of the latest numbers for screen readers.
// Polls /console/api/health/{nodes,series} every 2 s; never reloads the page.
import uPlot from "uplot";
import { start, api, el, badge, ApiError } from "../common/api.js";

const REFRESH_MS = 2000;
const RANGES = [[300, "Last 5 minutes"], [900, "Last 15 minutes"], [3600, "Last hour"]];
const PALETTE = ["#b3261e", "#0b57d0", "#7a4d00", "#5b2c83", "#00695c", "#ad1457", "#37474f", "#e65100"];

// -- formatting -----------------------------------------------------------------------------

function age(s) {
  if (s === null || s === undefined) return "unknown";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

function num(n, digits = 2) {
  if (n === null || n === undefined) return "—";
  return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(digits);
}

function short(digest) {
  return digest ? `${digest.slice(0, 12)}…` : "none";
}

// -- node cards -----------------------------------------------------------------------------

function figure(label, value, extra) {
  return el("div", { class: "figure" }, el("dt", {}, label), el("dd", {}, value, extra || null));
}

function leaseText(node) {
  const lease = node.lease;
  if (!lease) return node.this ? "no lease (embedded: its own log)" : "unknown";
  const base = lease.age_s === null || lease.age_s === undefined ? "never confirmed" : `${age(lease.age_s)} ago`;
  if (lease.lease_s === undefined) return base;
  return [base, ` (lease ${age(lease.lease_s)})`, lease.stale ? el("strong", { class: "bad" }, " stale") : null];
}

function attestationText(att) {
  if (!att) return "unknown";
  if (att.state === undefined) return att.digest ? `measured ${short(att.digest)}` : "not reported";
  const parts = [el("span", { class: att.state === "trusted" ? "good" : "bad" }, att.state)];
  if (att.digest) parts.push(" ", el("code", { title: att.digest }, short(att.digest)));
  if (att.problem) parts.push(el("span", { class: "detail" }, att.problem));
  return parts;
}

function checkpointText(cp) {
  if (!cp) return "same shared log: see this node";
  if (cp.problem) return el("span", { class: "bad" }, cp.problem);
  if (cp.age_s === null) return "none yet";
  return `${age(cp.age_s)} ago (size ${num(cp.size)})`;
}

function nodeCard(node) {
  const failed = node.state === "fail-closed";
  const id = `node-${node.node_id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const figures = [
    figure("Lease age", leaseText(node)),
    figure("Policy version", node.policy_version === null ? "none loaded" : `v${node.policy_version}`,
      node.policy_digest ? [" ", el("code", { title: node.policy_digest }, short(node.policy_digest))] : null),
    figure("Checkpoint age", checkpointText(node.checkpoint)),
    figure("Log size", node.log_size === null ? "unknown" : `${num(node.log_size)} entries`),
  ];
  if (node.this) figures.push(figure("Log growth", node.growth_per_s === null ? "measuring…" : `${num(node.growth_per_s)} entries/s`));
  figures.push(figure("Attestation", attestationText(node.attestation)));
  if (node.role === "fleet") {
    figures.push(figure("Last heartbeat", node.heartbeat_age_s === null ? "not yet written" : `${age(node.heartbeat_age_s)} ago`,
      node.silent ? el("strong", { class: "bad" }, " silent") : null));
  }
  const reasons = node.reasons.length
    ? el("ul", { class: "reasons", "aria-label": "Why it is fail-closed" },
      node.reasons.map((r) => el("li", {}, r.code ? el("code", { class: "code" }, r.code) : null, " ", el("span", {}, r.detail))))
    : null;
  return el(
    "article",
    { class: `node panel${node.this ? " this" : ""}${failed ? " failed" : ""}`, "aria-labelledby": id,
      dataset: { nodeId: node.node_id, state: node.state } },
    el("header", {},
      el("h3", { id }, el("code", {}, node.node_id)),
      el("div", { class: "tags" },
        badge(failed ? "deny state" : node.state === "silent" ? "running state" : "allow state", node.state),
        badge("role", node.role),
        node.this ? badge("role", "this node") : el("span", { class: "muted recorded" }, "as recorded at its last heartbeat"),
      ),
    ),
    reasons,
    el("dl", { class: "figures" }, figures),
  );
}

// -- charts ---------------------------------------------------------------------------------

class Chart {
  constructor(box, yLabel, { points = false } = {}) {
    this.box = box;
    this.yLabel = yLabel;
    // latency has gaps (buckets without a decision timed): isolated values need a point
    this.points = points;
    this.plot = null;
    this.key = "";
    new ResizeObserver(() => this.resize()).observe(box);
  }

  size() {
    return { width: Math.max(240, this.box.clientWidth), height: 220 };
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  draw(xs, series) {
    const key = series.map((s) => s.label).join("|");
    const data = [xs, ...series.map((s) => s.values)];
    if (this.plot && key === this.key) {
      this.plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.key = key;
    this.plot = new uPlot({
      ...this.size(),
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, spanGaps: false, points: { show: this.points, size: 6 } }))],
      axes: [{}, { label: this.yLabel, size: 60 }],
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      cursor: { drag: { x: false, y: false } },
    }, data, this.box);
    this.box.dataset.drawn = "true";
  }
}

function chartFigure(id, caption) {
  const box = el("div", { class: "chart", id, "aria-hidden": "true" });
  return { box, node: el("figure", { class: "panel" }, el("figcaption", {}, caption), box) };
}

// -- the page -------------------------------------------------------------------------------

start("health", async (main) => {
  const live = el("p", { id: "status", role: "status", "aria-live": "polite", class: "summary" }, "Loading…");
  const updated = el("span", { class: "muted", id: "updated" });
  const problem = el("div", { class: "notice error", role: "alert", hidden: true });
  const cards = el("div", { class: "nodes grid", id: "nodes" });
  const fleetNote = el("p", { class: "muted", hidden: true });
  const range = el("select", { id: "range" }, RANGES.map(([v, label]) => el("option", { value: v, selected: v === 900 }, label)));
  const rates = chartFigure("chart-rates", "Decisions per second, all nodes on the log (allowed and denied)");
  const codes = chartFigure("chart-codes", "Denials per second by reason code, all nodes on the log");
  const latency = chartFigure("chart-latency", "Decision latency of this node, ms (p50, p90, p99)");
  const tableBody = el("tbody");
  const table = el("table", { id: "latest" },
    el("caption", {}, "Latest numbers"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Measure"),
      el("th", { scope: "col" }, "This bucket, so far"), el("th", { scope: "col" }, "Previous bucket"))),
    tableBody);

  main.append(
    el("h1", {}, "Infrastructure Health Dashboard"),
    live,
    problem,
    el("section", { "aria-labelledby": "nodes-h" }, el("h2", { id: "nodes-h" }, "Nodes"), cards, fleetNote),
    el("section", { "aria-labelledby": "charts-h" },
      el("div", { class: "row heading" }, el("h2", { id: "charts-h" }, "Decisions over time"),
        el("label", { for: "range" }, "Time range", range), updated),
      el("div", { class: "charts" }, rates.node, codes.node, latency.node),
      el("div", { class: "table-wrap" }, table),
      el("p", { class: "muted source" },
        "Rates are counted from the ledger (every node's decisions on the log), in buckets; the current bucket's rate is over the seconds elapsed so far. ",
        "Latency is this node's, over HTTP, estimated from its decision-latency histogram (the one /metrics exports) sampled every 10 s.")),
  );

  const ratesChart = new Chart(rates.box, "per second");
  const codesChart = new Chart(codes.box, "denials per second");
  const latencyChart = new Chart(latency.box, "ms", { points: true });
  let lastSummary = "";

  function renderNodes(data) {
    cards.replaceChildren(...data.nodes.map(nodeCard));
    const me = data.nodes.find((n) => n.this);
    const failed = data.nodes.filter((n) => n.state === "fail-closed");
    let text = me.state === "ready"
      ? "This node is ready: it can allow."
      : `This node is fail-closed: every answer is deny (${me.reasons.map((r) => r.code || r.detail).join(", ")}).`;
    if (data.nodes.length > 1) text += ` ${data.nodes.length} nodes, ${failed.length} fail-closed.`;
    if (text !== lastSummary) {
      live.textContent = text;
      live.className = `summary ${me.state === "ready" ? "good" : "bad"}`;
      lastSummary = text;
    }
    fleetNote.hidden = !data.fleet_problem;
    fleetNote.textContent = data.fleet_problem ? `The fleet's node registry cannot be read: ${data.fleet_problem}` : "";
  }

  function renderSeries(s) {
    const xs = s.t;
    ratesChart.draw(xs, [
      { label: "allowed/s", color: "#0a6b2d", values: s.allows },
      { label: "denied/s", color: "#b3261e", values: s.denials },
    ]);
    const codeNames = Object.keys(s.denials_by_code);
    codesChart.draw(xs, codeNames.length
      ? codeNames.map((code, i) => ({ label: code, color: PALETTE[i % PALETTE.length], values: s.denials_by_code[code] }))
      : [{ label: "no denials", color: "#4a5058", values: xs.map(() => 0) }]);
    latencyChart.draw(xs, [
      { label: "p50 ms", color: "#0b57d0", values: s.latency_ms.p50 },
      { label: "p90 ms", color: "#7a4d00", values: s.latency_ms.p90 },
      { label: "p99 ms", color: "#b3261e", values: s.latency_ms.p99 },
    ]);
    // the current bucket (so far) and the one before it: the current one starts empty
    const last = xs.length - 1;
    const prev = Math.max(0, last - 1);
    const pair = (values, digits) => [num(values[last], digits), num(values[prev], digits)];
    const rows = [
      ["Decisions per second", ...pair(s.decisions)],
      ["Allowed per second", ...pair(s.allows)],
      ["Denied per second", ...pair(s.denials)],
      ...codeNames.map((code) => [`Denied ${code} per second (${s.denial_totals[code]} in range)`, ...pair(s.denials_by_code[code])]),
      ["Latency p50 (ms)", ...pair(s.latency_ms.p50, 3)],
      ["Latency p90 (ms)", ...pair(s.latency_ms.p90, 3)],
      ["Latency p99 (ms)", ...pair(s.latency_ms.p99, 3)],
      ["Decisions timed by this node", ...pair(s.latency_count)],
    ];
    tableBody.replaceChildren(...rows.map(([k, now, before]) =>
      el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, now), el("td", {}, before))));
    updated.textContent = `Updated ${s.now.replace("T", " ").replace(/\.\d+Z$/, "Z")}`;
  }

  async function refresh() {
    try {
      const [nodes, series] = await Promise.all([
        api("/console/api/health/nodes"),
        api(`/console/api/health/series?window=${range.value}&bucket=${Number(range.value) > 900 ? 30 : 10}`),
      ]);
      renderNodes(nodes);
      renderSeries(series);
      problem.hidden = true;
      problem.textContent = "";
    } catch (e) {
      problem.hidden = false;
      problem.textContent = e instanceof ApiError ? `The server refused: ${e.detail}` : `Cannot reach the server: ${e.message}`;
    }
  }

  // one polling chain at a time: changing the range restarts it
  let timer = null;
  let generation = 0;
  async function loop() {
    const mine = ++generation;
    clearTimeout(timer);
    await refresh();
    if (mine === generation) timer = setTimeout(loop, REFRESH_MS);
  }
  range.addEventListener("change", loop);
  await loop();
}, { needsSession: true });
