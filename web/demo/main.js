// Runtime Governance Demo: pick a scenario, flip switches that break things, and watch one
// request pass the real gate of a throwaway home stage by stage. No credential: the server
// makes the home (POST /console/api/demo/sessions) and never touches its own.
import { start, api, el, ApiError } from "../common/api.js";

const BASE = "/console/api/demo";
const STEP_MS = 170; // the reveal of one stage: short, so it reads as live without slowing
const ICONS = { passed: "✓", denied: "✗", not_reached: "–", unknown: "?", pending: "…", idle: "·" };
const WORDS = {
  passed: "passed", denied: "denied", not_reached: "not reached", unknown: "unknown",
  pending: "checking…", idle: "not run yet",
};

let sessionId = null;

async function newSession() {
  const made = await api(`${BASE}/sessions`, { method: "POST", body: {} });
  sessionId = made.id;
  return sessionId;
}

/** POST to the session, making it first; once more with a new home if it expired. */
async function onSession(path, body, notice) {
  if (!sessionId) await newSession();
  try {
    return await api(`${BASE}/sessions/${sessionId}${path}`, { method: "POST", body });
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    notice("Your demo home had expired; a new one was made.");
    await newSession();
    return api(`${BASE}/sessions/${sessionId}${path}`, { method: "POST", body });
  }
}

function removeSession() {
  if (!sessionId) return;
  // keepalive: the page is going away; the server removes idle homes anyway
  fetch(`${BASE}/sessions/${sessionId}`, { method: "DELETE", keepalive: true, credentials: "same-origin" })
    .catch(() => {});
  sessionId = null;
}

function stageItem(stage, status = "pending") {
  const item = el(
    "li",
    { class: `stage ${status}`, dataset: { stage: stage.id, status } },
    el("span", { class: "icon", "aria-hidden": "true" }, ICONS[status]),
    el("span", { class: "name" }, stage.label),
    el("span", { class: "checks" }, stage.checks),
    el("span", { class: "state" }, WORDS[status]),
  );
  if (stage.code) item.append(el("code", { class: "code" }, stage.code));
  if (stage.detail) item.append(el("span", { class: "detail" }, stage.detail));
  return item;
}

function reducedMotion() {
  return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function verdictOf(trace) {
  const d = trace.decision;
  const allowed = d.effect === "allow";
  const first = d.reasons[0];
  const denied = trace.stages.find((s) => s.status === "denied");
  const record = trace.stages.find((s) => s.id === "record");
  const rows = [
    el("dt", {}, "Decision"),
    el("dd", {}, el("span", { id: "verdict", class: `badge ${allowed ? "allow" : "deny"}` },
      allowed ? "✓ ALLOW" : "✗ DENY")),
    el("dt", {}, "Executed"),
    el("dd", { id: "executed" }, trace.executed
      ? `yes — ${trace.output}`
      : "no — the action did not run"),
    el("dt", {}, "Reason"),
    el("dd", { id: "verdict-reason" }, allowed
      ? "every check passed"
      : [el("code", {}, first.code), denied ? ` at ${denied.label}: ` : ": ", first.detail]),
    el("dt", {}, "Ledger"),
    el("dd", { id: "ledger-index" }, d.ledger_index !== null
      ? `recorded at index ${d.ledger_index} of the demo ledger (${trace.ledger_size} entries)`
      : ["not recorded: ", record && record.detail ? record.detail : "the decision could not be recorded"]),
  ];
  return el("dl", { class: "facts" }, rows);
}

function requestOf(trace) {
  const r = trace.request;
  const lines = r.raw !== undefined
    ? [["raw bytes", r.raw]]
    : [
        ["principal", r.principal],
        ["action", r.action],
        ["resource", `${r.resource.type}::${r.resource.id}`],
        ["parent", r.parent || "none"],
        ["args", JSON.stringify(r.args)],
      ];
  lines.push(["capability", r.capability]);
  return el("details", { class: "request" },
    el("summary", {}, "The request"),
    el("dl", { class: "facts" }, lines.map(([k, v]) => [el("dt", {}, k), el("dd", {}, el("code", {}, v))])));
}

async function render(main) {
  main.append(
    el("h1", {}, "Runtime Governance Demo"),
    el("p", { class: "muted intro" },
      "Each run sends one request through a real Interlock gate on a throwaway home of its own — ",
      "its own keys, signed policy, tokens and ledger, in a private temporary folder on this server, ",
      "removed after 10 minutes without use. This node's own home and ledger are never touched."),
  );
  let meta;
  try {
    meta = await api(`${BASE}/scenarios`);
  } catch (e) {
    main.append(el("div", { class: "notice error", role: "alert" }, `Cannot load the demo: ${e.message}`));
    return;
  }

  const byId = Object.fromEntries(meta.scenarios.map((s) => [s.id, s]));
  const select = el("select", { id: "scenario", name: "scenario", "aria-describedby": "scenario-help" },
    meta.scenarios.map((s) => el("option", { value: s.id }, s.title)));
  const scenarioHelp = el("p", { id: "scenario-help", class: "help" });
  const describe = () => {
    const s = byId[select.value];
    scenarioHelp.replaceChildren(s.description, " ",
      el("span", { class: "expect" }, "Unbroken: ", s.expected === "allow" ? "allowed" : s.expected));
  };
  select.addEventListener("change", describe);
  describe();
  const scenarioField = el("div", { class: "scenario" },
    el("label", { for: "scenario" }, "Scenario"), select, scenarioHelp);

  const switchField = el("fieldset", { class: "switches" }, el("legend", {}, "Break something"));
  for (const s of meta.switches) {
    const id = `switch-${s.id}`;
    switchField.append(el("div", { class: "choice" },
      el("input", { type: "checkbox", name: s.id, id, "aria-describedby": `${id}-help` }),
      el("label", { for: id }, s.label),
      el("p", { id: `${id}-help`, class: "help" }, s.description)));
  }

  const runButton = el("button", { type: "submit", id: "run" }, "Run");
  const resetButton = el("button", { type: "button", class: "secondary", id: "reset" }, "Reset demo home");
  const status = el("p", { id: "status", class: "status", role: "status", "aria-live": "polite" });
  const problem = el("div", { class: "notice error", role: "alert", hidden: true });
  const form = el("form", { class: "panel controls", id: "demo-form", "aria-label": "Demo run" },
    el("div", { class: "fields" }, scenarioField, switchField),
    el("div", { class: "actions" }, runButton, resetButton, status),
    problem);

  const pipeline = el("ol", { class: "pipeline", id: "pipeline", "aria-label": "Pipeline stages" },
    meta.stages.map((s) => stageItem(s, "idle")));
  const result = el("section", { class: "panel result", id: "result", "aria-labelledby": "result-h", hidden: true });

  main.append(
    form,
    el("section", { "aria-labelledby": "pipeline-h" },
      el("h2", { id: "pipeline-h" }, "The pipeline, in the gate's order"),
      pipeline),
    result,
  );

  const notice = (text) => { status.textContent = text; };
  const busy = (on) => { runButton.disabled = on; resetButton.disabled = on; };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const scenario = select.value;
    const switches = Object.fromEntries(meta.switches.map((s) => [s.id, form.elements[s.id].checked]));
    busy(true);
    problem.hidden = true;
    result.hidden = true;
    pipeline.replaceChildren(...meta.stages.map((s) => stageItem(s, "pending")));
    pipeline.setAttribute("aria-busy", "true");
    notice("Running in the demo home…");
    try {
      const trace = await onSession("/runs", { scenario, switches }, notice);
      await reveal(trace);
    } catch (e) {
      pipeline.replaceChildren(...meta.stages.map((s) => stageItem(s, "idle")));
      problem.textContent = e instanceof ApiError ? e.detail : String(e);
      problem.hidden = false;
      notice("");
    } finally {
      pipeline.removeAttribute("aria-busy");
      busy(false);
    }
  });

  resetButton.addEventListener("click", async () => {
    busy(true);
    problem.hidden = true;
    try {
      await onSession("/reset", {}, notice);
      result.hidden = true;
      pipeline.replaceChildren(...meta.stages.map((s) => stageItem(s, "idle")));
      notice("A new demo home was made: new keys, an empty ledger.");
    } catch (e) {
      problem.textContent = e instanceof ApiError ? e.detail : String(e);
      problem.hidden = false;
    } finally {
      busy(false);
    }
  });

  async function reveal(trace) {
    const quick = reducedMotion();
    for (let i = 0; i < trace.stages.length; i += 1) {
      if (!quick) await pause(STEP_MS);
      const item = stageItem(trace.stages[i], trace.stages[i].status);
      item.classList.add("revealed");
      pipeline.children[i].replaceWith(item);
    }
    const d = trace.decision;
    const allowed = d.effect === "allow";
    const setup = trace.setup.length
      ? el("div", {}, el("h3", {}, "What the switches did"),
          el("ul", { class: "setup" }, trace.setup.map((line) => el("li", {}, line))))
      : null;
    const flipped = meta.switches.filter((s) => trace.switches[s.id]).map((s) => s.label.toLowerCase());
    result.className = `panel result ${allowed ? "allowed" : "denied"}`;
    result.replaceChildren(
      el("h2", { id: "result-h" }, "Verdict ",
        el("span", { class: "muted scenario-name" }, `— ${trace.scenario.title}`,
          flipped.length ? `, with ${flipped.join(", ")}` : ", nothing broken")),
      verdictOf(trace),
      setup,
      requestOf(trace),
    );
    result.hidden = false;
    const where = trace.stages.find((s) => s.status === "denied");
    notice(allowed
      ? `Allowed and executed; recorded at ledger index ${d.ledger_index}.`
      : `Denied ${d.reasons[0].code}${where ? ` at ${where.label}` : ""}; the action did not run.`);
  }

  window.addEventListener("pagehide", removeSession);
}

start("demo", render, { needsSession: false });
