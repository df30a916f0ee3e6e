// The Governance Console: the decision stream and history, a decision's detail, principals,
// the approvals queue, policy versions with diff and impact, and the operator's actions.
import { start, api, el, badge, fmtTime, download, can, ApiError } from "../common/api.js";

const MAX_ROWS = 500; // rows kept in the table; older ones are a click on "Older" away
const FILTERS = ["principal", "action", "effect", "code", "since", "until"];

let session = null;
let statusLine = null;

function say(text, kind = "ok") {
  statusLine.className = `notice ${kind}`;
  statusLine.textContent = text;
  statusLine.hidden = false;
}

function failure(e) {
  say(e instanceof ApiError ? `${e.status}: ${e.detail}` : String(e), "error");
}

// -- a dialog asking for the operator's reason before an action ---------------------------------

function askReason(title, confirmLabel, danger = false) {
  return new Promise((resolve) => {
    const input = el("input", { id: "reason-input", name: "reason", required: true, autocomplete: "off" });
    const dialog = el(
      "dialog",
      { "aria-labelledby": "reason-title" },
      el(
        "form",
        { method: "dialog" },
        el("h2", { id: "reason-title" }, title),
        el("label", { for: "reason-input" }, "Reason (recorded on the ledger)"),
        input,
        el(
          "p",
          { class: "row" },
          el("button", { type: "submit", value: "ok", class: danger ? "danger" : "" }, confirmLabel),
          el("button", { type: "submit", value: "cancel", class: "secondary", formnovalidate: true }, "Cancel"),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && input.value.trim();
      dialog.remove();
      resolve(ok ? input.value.trim() : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

async function act(path, body, done) {
  try {
    const out = await api(path, { method: "POST", body });
    say(`${out.event || out.outcome || "done"}${out.ledger_index !== undefined ? ` — recorded at ledger index ${out.ledger_index}` : ""}`);
    await refreshOverview();
    if (done) await done();
  } catch (e) {
    failure(e);
  }
}

// -- what is in force ---------------------------------------------------------------------------

let overviewBox = null;

async function refreshOverview() {
  let o;
  try {
    o = await api("/console/api/overview");
  } catch (e) {
    overviewBox.replaceChildren(el("span", { class: "notice error" }, `Cannot read the state in force: ${e.message}`));
    return;
  }
  const ready = o.not_ready.length === 0;
  const items = [
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Node"), " ",
      badge(ready ? "allow" : "deny", ready ? "ready" : "fail-closed"),
      ready ? null : el("span", { class: "why", id: "not-ready" }, o.not_ready.join("; "))),
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Kill switch"), " ",
      badge(o.kill_switch ? "deny" : "allow", o.kill_switch ? "ON" : "off"), " ",
      can(session, "kill-switch")
        ? el("button", {
            type: "button", id: "kill-switch", class: o.kill_switch ? "secondary" : "danger",
            onclick: async () => {
              const reason = await askReason(o.kill_switch ? "Turn the kill switch off" : "Turn the kill switch ON: every action will be denied", o.kill_switch ? "Turn off" : "Turn on", !o.kill_switch);
              if (reason) await act("/console/api/actions/kill-switch", { on: !o.kill_switch, reason });
            },
          }, o.kill_switch ? "Turn off" : "Turn on")
        : null),
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Policy"), " ",
      o.policy.version === null || o.policy.version === undefined
        ? badge("deny", "none loaded")
        : el("span", {}, `v${o.policy.version} `, el("code", { title: o.policy.digest }, (o.policy.digest || "").slice(0, 12)))),
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Quarantined"), " ", String(o.quarantined.length)),
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Revocations"), " ", String(o.revocations)),
    el("div", { class: "fact" }, el("span", { class: "muted" }, "Ledger"), " ", `${o.ledger_size} entries`),
  ];
  overviewBox.replaceChildren(...items);
}

// -- decisions: stream, filters, history --------------------------------------------------------

function decisionRow(d, onOpen) {
  const tr = el(
    "tr",
    { class: "selectable", tabindex: "0", dataset: { index: String(d.index) }, "aria-label": `Decision ${d.index}: ${d.effect}` },
    el("td", { class: "mono" }, String(d.index)),
    el("td", { class: "hide-narrow" }, fmtTime(d.ts)),
    el("td", { class: "mono" }, d.principal || "—"),
    el("td", {}, d.action || "—"),
    el("td", { class: "mono hide-narrow" }, d.resource || "—"),
    el("td", {}, badge(d.effect)),
    el("td", { class: "mono code" }, d.code || ""),
  );
  tr.addEventListener("click", () => onOpen(d.index));
  tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onOpen(d.index); } });
  return tr;
}

function decisionsView(container) {
  const form = el("form", { class: "row panel", id: "filters", role: "search", "aria-label": "Filter decisions" });
  const inputs = {};
  const field = (name, label, input) => {
    inputs[name] = input;
    input.id = `f-${name}`;
    input.name = name;
    form.append(el("label", { for: input.id }, label, input));
  };
  field("principal", "Principal", el("input", { placeholder: "spiffe://…", autocomplete: "off" }));
  field("action", "Action", el("input", { placeholder: "tool.call", autocomplete: "off" }));
  field("effect", "Effect", el("select", {}, el("option", { value: "" }, "any"), el("option", { value: "allow" }, "allow"), el("option", { value: "deny" }, "deny")));
  field("code", "Reason code", el("input", { placeholder: "POLICY_FORBID", autocomplete: "off" }));
  field("since", "Since (UTC)", el("input", { type: "datetime-local", step: "1" }));
  field("until", "Until (UTC)", el("input", { type: "datetime-local", step: "1" }));
  const live = el("input", { type: "checkbox", id: "live", checked: true });
  form.append(
    el("button", { type: "submit" }, "Apply"),
    el("button", { type: "reset", class: "secondary" }, "Clear"),
    el("label", { for: "live", class: "inline" }, live, "Live"),
  );
  const counter = el("span", { class: "muted", id: "stream-state", "aria-live": "polite" });
  const tbody = el("tbody", { id: "decisions" });
  const table = el(
    "div", { class: "table-wrap" },
    el("table", { "aria-describedby": "stream-state" },
      el("caption", { class: "skip" }, "Recorded decisions, newest first"),
      el("thead", {}, el("tr", {}, ["Index", "Time", "Principal", "Action", "Resource", "Effect", "Code"].map((h, i) => el("th", { scope: "col", class: i === 1 || i === 4 ? "hide-narrow" : null }, h)))),
      tbody));
  const older = el("button", { type: "button", class: "secondary", id: "older" }, "Older");
  const detail = el("section", { id: "detail", class: "panel", hidden: true, "aria-label": "Decision detail", tabindex: "-1" });
  container.append(form, el("p", {}, counter), el("div", { class: "split" }, el("div", {}, table, el("p", {}, older)), detail));

  let source = null;
  let nextBefore = null;
  let received = 0;
  let total = 0;
  let lastRate = performance.now();

  const params = () => {
    const p = new URLSearchParams();
    for (const name of FILTERS) {
      let v = inputs[name].value.trim();
      if (!v) continue;
      if (name === "since" || name === "until") v = `${v}${v.length === 16 ? ":00" : ""}Z`;
      p.set(name, v);
    }
    return p;
  };
  const open = (index) => showDetail(detail, index);

  const load = async (append) => {
    const p = params();
    if (append && nextBefore !== null) p.set("before", String(nextBefore));
    try {
      const page = await api(`/console/api/decisions?${p}`);
      const rows = page.decisions.map((d) => decisionRow(d, open));
      if (append) tbody.append(...rows); else tbody.replaceChildren(...rows);
      nextBefore = page.next_before;
      older.disabled = nextBefore === null;
      const idx = page.indexed;
      counter.textContent = `${tbody.rows.length} shown · ledger ${idx.size} entries${idx.complete ? "" : ` · indexing history (from ${idx.oldest})`}${idx.problem ? ` · index problem: ${idx.problem}` : ""}`;
      return page;
    } catch (e) {
      failure(e);
      return null;
    }
  };

  const connect = (after) => {
    if (source) source.close();
    source = null;
    if (!live.checked || inputs.until.value) return;
    const p = params();
    p.delete("since");
    if (after !== undefined) p.set("after", String(after));
    source = new EventSource(`/console/api/stream?${p}`);
    source.addEventListener("decisions", (ev) => {
      const batch = JSON.parse(ev.data);
      received += batch.length;
      total += batch.length;
      tbody.dataset.received = String(total); // what the stream delivered (make bench reads it)
      const frag = document.createDocumentFragment();
      for (let i = batch.length - 1; i >= 0; i--) frag.append(decisionRow(batch[i], open));
      tbody.prepend(frag);
      while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
      nextBefore = tbody.rows.length ? Number(tbody.rows[tbody.rows.length - 1].dataset.index) : null;
      older.disabled = nextBefore === null;
      const now = performance.now();
      if (now - lastRate > 1000) {
        counter.textContent = `live · ${Math.round((received * 1000) / (now - lastRate))} decisions/s · ${tbody.rows.length} shown`;
        received = 0;
        lastRate = now;
      }
    });
    source.addEventListener("error", () => { counter.textContent = "stream interrupted: reconnecting…"; });
    source.addEventListener("open", () => { counter.textContent = "live"; });
  };

  const reload = async () => {
    const page = await load(false);
    const newest = page && page.decisions.length ? page.decisions[0].index : undefined;
    connect(newest);
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(); });
  form.addEventListener("reset", () => setTimeout(reload, 0));
  live.addEventListener("change", () => connect(tbody.rows.length ? Number(tbody.rows[0].dataset.index) : undefined));
  older.addEventListener("click", () => load(true));
  reload();
}

function kv(label, value) {
  return [el("dt", {}, label), el("dd", {}, value === null || value === undefined || value === "" ? "—" : value)];
}

async function showDetail(panel, index) {
  panel.hidden = false;
  panel.replaceChildren(el("p", { class: "muted" }, `Loading decision ${index}…`));
  let d;
  try {
    d = await api(`/console/api/decisions/${index}`);
  } catch (e) {
    panel.replaceChildren(el("div", { class: "notice error", role: "alert" }, e.message));
    return;
  }
  const rec = d.record;
  const req = rec.request || {};
  const res = req.resource ? (typeof req.resource === "string" ? req.resource : `${req.resource.type}::${req.resource.id}`) : null;
  const actions = el("div", { class: "row" });
  if (d.proof) actions.append(el("button", { type: "button", id: "download-proof", class: "secondary", onclick: () => download(`decision-${index}.tlog-proof`, d.proof) }, "Download proof"));
  if (d.receipt) actions.append(el("button", { type: "button", id: "download-receipt", class: "secondary", onclick: () => download(`decision-${index}.receipt.json`, d.receipt, "application/json") }, "Download receipt"));
  actions.append(el("a", { href: "/console/proof", target: "_blank", rel: "noopener" }, "Open the Proof Viewer"));
  if (can(session, "revocation") && d.capability) {
    actions.append(el("button", { type: "button", id: "revoke", class: "danger", onclick: async () => {
      const reason = await askReason("Revoke the capability this decision presented (and every token attenuated from it)", "Revoke", true);
      if (reason) await act("/console/api/actions/revoke", { index, reason }, () => showDetail(panel, index));
    } }, "Revoke this capability"));
  }
  if (can(session, "quarantine") && req.principal) {
    actions.append(el("button", { type: "button", id: "quarantine", class: "danger", onclick: async () => {
      const reason = await askReason(`Quarantine ${req.principal}`, "Quarantine", true);
      if (reason) await act("/console/api/actions/quarantine", { principal: req.principal, reason });
    } }, "Quarantine principal"));
  }
  const cap = d.capability;
  panel.replaceChildren(
    el("h2", {}, `Decision ${index} `, badge(rec.effect)),
    el("dl", { class: "kv" },
      kv("Request id", el("code", {}, rec.id)),
      kv("Time", fmtTime(rec.ts)),
      kv("Stage", rec.stage),
      kv("Principal", req.principal ? el("code", {}, req.principal) : null),
      kv("Action", req.action),
      kv("Resource", res ? el("code", {}, res) : null),
      kv("Policy", d.policy ? `v${d.policy.policy_version} (${String(d.policy.policy_digest || "").slice(0, 12)})` : rec.snapshot),
      kv("Ledger index", String(d.index)),
      kv("Leaf hash", el("code", {}, d.leaf_hash)),
      kv("Parent", rec.parent ? el("code", {}, rec.parent) : null),
    ),
    el("h3", {}, "Reasons"),
    (rec.reasons || []).length ? "" : el("p", { class: "muted" }, "None: every check passed."),
    el("ul", { id: "reasons" }, (rec.reasons || []).map((r) => el("li", {}, el("code", {}, r.code), " ", r.detail, r.policy ? el("span", { class: "muted" }, ` (policy ${r.policy})`) : null))),
    el("h3", {}, "Capability chain"),
    cap
      ? el("dl", { class: "kv", id: "capability" },
          kv("Issued to", cap.principal ? el("code", {}, cap.principal) : null),
          kv("Delegated to", (cap.delegated_to || []).length ? cap.delegated_to.join(" → ") : null),
          kv("Rights", (cap.rights || []).join(", ")),
          kv("Expires", fmtTime(cap.expires_at)),
          kv("Blocks", cap.blocks ? String(cap.blocks.length) : null),
          kv("Revocation ids", (cap.revocation_ids || []).map((r) => r.slice(0, 16)).join(", ")))
      : el("p", { class: "muted" }, "No capability was presented."),
    el("h3", {}, "Lineage"),
    d.lineage.length
      ? el("ol", {}, d.lineage.map((l) => el("li", {}, el("code", {}, l.id), ` — ${l.status}${l.index !== null ? ` (index ${l.index})` : ""}`)))
      : el("p", { class: "muted" }, "A root request (no parent execution)."),
    d.request ? el("h3", {}, "Arguments and context") : "",
    d.request ? el("pre", { class: "json" }, JSON.stringify({ args: d.request.args, context: d.request.context }, null, 2)) : "",
    el("h3", {}, "Evidence"),
    actions,
  );
  panel.focus({ preventScroll: true });
}

// -- principals ---------------------------------------------------------------------------------

async function principalsView(container) {
  const body = el("tbody", { id: "principals" });
  const detail = el("section", { class: "panel", id: "principal-detail", hidden: true, tabindex: "-1", "aria-label": "Principal detail" });
  container.append(el("div", { class: "split" },
    el("div", { class: "table-wrap" }, el("table", {},
      el("caption", { class: "skip" }, "Principals"),
      el("thead", {}, el("tr", {}, ["Principal", "Decisions", "Allows", "Denies", "Last seen", "State"].map((h) => el("th", { scope: "col" }, h)))),
      body)),
    detail));
  const refresh = async () => {
    let data;
    try { data = await api("/console/api/principals"); } catch (e) { failure(e); return; }
    body.replaceChildren(...data.principals.map((p) => {
      const tr = el("tr", { class: "selectable", tabindex: "0", dataset: { principal: p.principal } },
        el("td", { class: "mono" }, p.principal),
        el("td", {}, String(p.decisions)), el("td", {}, String(p.allows)), el("td", {}, String(p.denies)),
        el("td", {}, fmtTime(p.last_ts)),
        el("td", {}, p.quarantined ? badge("deny", "quarantined") : badge("allow", "active"), p.restricted.length ? ` restricted: ${p.restricted.join(", ")}` : ""));
      const open = () => showPrincipal(detail, p.principal, refresh);
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
      return tr;
    }));
  };
  await refresh();
}

async function showPrincipal(panel, principal, refresh) {
  panel.hidden = false;
  let d;
  try { d = await api(`/console/api/principals/detail?${new URLSearchParams({ principal })}`); } catch (e) { failure(e); return; }
  const buttons = el("div", { class: "row" });
  if (can(session, "quarantine")) {
    buttons.append(d.quarantined
      ? el("button", { type: "button", id: "release", onclick: async () => {
          const reason = await askReason(`Release ${principal}`, "Release");
          if (reason) await act("/console/api/actions/release", { principal, reason }, async () => { await refresh(); await showPrincipal(panel, principal, refresh); });
        } }, "Release")
      : el("button", { type: "button", id: "quarantine-principal", class: "danger", onclick: async () => {
          const reason = await askReason(`Quarantine ${principal}`, "Quarantine", true);
          if (reason) await act("/console/api/actions/quarantine", { principal, reason }, async () => { await refresh(); await showPrincipal(panel, principal, refresh); });
        } }, "Quarantine"));
  }
  panel.replaceChildren(
    el("h2", {}, el("code", {}, principal), " ", d.quarantined ? badge("deny", "quarantined") : badge("allow", "active")),
    d.restricted.length ? el("p", {}, `Restricted after boundary violations: ${d.restricted.join(", ")}`) : null,
    buttons,
    el("h3", {}, `Capabilities in use (newest ${d.decisions} decisions)`),
    d.capabilities.length
      ? el("table", { id: "capabilities" },
          el("thead", {}, el("tr", {}, ["Token", "Rights", "Expires", "Uses", "State"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, d.capabilities.map((c) => el("tr", {},
            el("td", { class: "mono" }, c.sha256.slice(0, 12)),
            el("td", {}, (c.rights || []).join(", ") || (c.unreadable ? "unreadable" : "—")),
            el("td", {}, fmtTime(c.expires_at)),
            el("td", {}, String(c.uses)),
            el("td", {}, c.revoked ? badge("deny", "revoked") : badge("allow", "valid"))))))
      : el("p", { class: "muted" }, "No capability presented in the indexed decisions."),
  );
  panel.focus({ preventScroll: true });
}

// -- approvals ----------------------------------------------------------------------------------

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function canonical(obj) {
  // RFC 8785 for what an approval holds: ASCII strings and a small integer, keys sorted
  return `{${Object.keys(obj).sort().map((k) => `${JSON.stringify(k)}:${JSON.stringify(obj[k])}`).join(",")}}`;
}

/** Sign an approval of `digest` with a PKCS#8 PEM Ed25519 key, in the browser. */
async function signApproval(pem, digest, ttlSeconds) {
  const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
  const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const pub = Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (jwk.x.length % 4)) % 4)), (c) => c.charCodeAt(0));
  const approver = Array.from(pub, (b) => b.toString(16).padStart(2, "0")).join("");
  const expires = new Date((Math.floor(Date.now() / 1000) + ttlSeconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  const doc = { approver, expires, request_digest: digest, type: "interlock.approval", v: 1 };
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, new TextEncoder().encode(canonical(doc))));
  doc.sig = b64(sig);
  return b64url(new TextEncoder().encode(canonical(doc)));
}

async function approvalsView(container) {
  const list = el("div", { id: "approvals" });
  const keyInput = el("input", { type: "file", id: "approver-key", accept: ".pem,.key,text/plain" });
  const ttl = el("select", { id: "approval-ttl" }, [["600", "10 minutes"], ["3600", "1 hour"], ["28800", "8 hours"]].map(([v, l]) => el("option", { value: v }, l)));
  const mayAnswer = can(session, "approval");
  container.append(
    el("p", { class: "muted" }, "Requests a policy sent for human approval. An approval is signed here, in your browser, with your approver key; the key never leaves this page. Hand the approval to the agent: it resubmits the same request with it."),
    mayAnswer ? el("div", { class: "row panel" },
      el("label", { for: "approver-key" }, "Approver key (PKCS#8 PEM, Ed25519)", keyInput),
      el("label", { for: "approval-ttl" }, "Valid for", ttl)) : null,
    list,
  );
  const refresh = async () => {
    let data;
    try { data = await api("/console/api/approvals"); } catch (e) { failure(e); return; }
    if (!data.approvals.length) { list.replaceChildren(el("p", { class: "muted" }, "No request is waiting for an approval.")); return; }
    list.replaceChildren(...data.approvals.map((a) => {
      const out = el("div", { class: "answer", "aria-live": "polite" });
      if (a.answer) {
        out.append(a.answer.outcome === "approved" ? badge("allow", "approved") : badge("deny", "refused"), ` by ${a.answer.by}`);
        if (a.answer.approval) out.append(el("label", {}, "Approval (give it to the agent)", el("textarea", { readonly: true, class: "mono approval-text", rows: 3 }, a.answer.approval)));
        if (a.answer.reason) out.append(` — ${a.answer.reason}`);
      }
      const card = el("article", { class: "panel approval", dataset: { index: String(a.index) } },
        el("h3", {}, `Decision ${a.index}: `, el("code", {}, a.action || ""), " on ", el("code", {}, typeof a.resource === "string" ? a.resource : a.resource ? `${a.resource.type}::${a.resource.id}` : "")),
        el("dl", { class: "kv" },
          kv("Principal", el("code", {}, a.principal || "")),
          kv("Time", fmtTime(a.ts)),
          kv("Policy", a.policy),
          kv("Request digest", el("code", {}, a.request_digest || ""))),
        a.args !== null ? el("pre", { class: "json" }, JSON.stringify({ args: a.args, context: a.context }, null, 2)) : null,
        out);
      if (mayAnswer && !a.answer && a.request_digest) {
        card.append(el("div", { class: "row" },
          el("button", { type: "button", class: "approve", onclick: async () => {
            const file = keyInput.files && keyInput.files[0];
            if (!file) { say("Choose your approver key file first.", "error"); keyInput.focus(); return; }
            try {
              const approval = await signApproval(await file.text(), a.request_digest, Number(ttl.value));
              await act(`/console/api/approvals/${a.index}`, { approval }, refresh);
            } catch (e) { failure(e); }
          } }, "Approve this exact request"),
          el("button", { type: "button", class: "danger refuse", onclick: async () => {
            const reason = await askReason("Refuse this request", "Refuse", true);
            if (reason) await act(`/console/api/approvals/${a.index}`, { refuse: reason }, refresh);
          } }, "Refuse")));
      }
      return card;
    }));
  };
  await refresh();
}

// -- policy: versions, diff, impact -------------------------------------------------------------

async function policyView(container) {
  let data;
  try { data = await api("/console/api/policies"); } catch (e) { failure(e); return; }
  const versions = data.versions;
  const option = (v) => el("option", { value: v.digest }, `v${v.version} — ${v.digest.slice(0, 12)} (${fmtTime(v.ts)})${v.digest === data.loaded.digest ? " · loaded" : ""}`);
  const a = el("select", { id: "diff-a" }, versions.map(option));
  const b = el("select", { id: "diff-b" }, versions.map(option));
  if (versions.length > 1) a.selectedIndex = 1;
  const diffOut = el("div", { id: "diff-out" });
  const fileSel = el("select", { id: "impact-file" });
  const editor = el("textarea", { id: "impact-editor", rows: 14, spellcheck: "false", class: "mono" });
  const candidate = el("select", { id: "impact-candidate" }, el("option", { value: "" }, "the loaded bundle, edited below"), versions.filter((v) => v.digest !== data.loaded.digest).map(option));
  const impactOut = el("div", { id: "impact-out", "aria-live": "polite" });
  const edits = {};
  let baseFiles = {};
  try {
    baseFiles = data.loaded.digest ? (await api(`/console/api/policies/${data.loaded.digest}`)).files : {};
  } catch (e) { failure(e); }
  for (const path of Object.keys(baseFiles)) if (path.endsWith(".cedar") || path.endsWith(".json")) fileSel.append(el("option", { value: path }, path));
  const showFile = () => { editor.value = edits[fileSel.value] ?? baseFiles[fileSel.value] ?? ""; };
  fileSel.addEventListener("change", showFile);
  editor.addEventListener("input", () => { edits[fileSel.value] = editor.value; });
  showFile();

  container.append(
    el("h2", {}, "Versions"),
    el("table", { id: "versions" },
      el("thead", {}, el("tr", {}, ["Version", "Digest", "Loaded at", "Ledger index"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, versions.map((v) => el("tr", {},
        el("td", {}, `v${v.version} `, v.digest === data.loaded.digest ? badge("allow", "in force") : null),
        el("td", { class: "mono" }, v.digest.slice(0, 16)), el("td", {}, fmtTime(v.ts)), el("td", {}, String(v.index)))))),
    el("h2", {}, "Diff"),
    el("form", { class: "row", id: "diff-form", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const d = await api(`/console/api/policies/diff?${new URLSearchParams({ a: a.value, b: b.value })}`);
        diffOut.replaceChildren(...(d.files.length ? d.files.map((f) => el("div", {}, el("h3", {}, `${f.path} (${f.status})`),
          el("pre", { class: "diff" }, f.diff.split("\n").map((line) => el("span", { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" }, `${line}\n`))))) : [el("p", {}, "The two versions hold the same files.")]));
      } catch (e) { failure(e); }
    } },
      el("label", { for: "diff-a" }, "From", a), el("label", { for: "diff-b" }, "To", b), el("button", { type: "submit" }, "Show diff")),
    diffOut,
    el("h2", {}, "Impact of a candidate"),
    el("p", { class: "muted" }, "Re-evaluates the newest recorded decisions (stored arguments and context) under the loaded bundle and a candidate, and lists those whose answer would change. Nothing is installed."),
    el("form", { id: "impact-form", onsubmit: async (ev) => {
      ev.preventDefault();
      impactOut.replaceChildren(el("p", { class: "muted" }, "Evaluating…"));
      const body = candidate.value ? { candidate: candidate.value } : { files: edits };
      try {
        const r = await api("/console/api/policies/impact", { method: "POST", body });
        impactOut.replaceChildren(
          el("p", { id: "impact-summary" }, `${r.changed.length} of ${r.requests} recorded decision(s) would change.`),
          r.changed.length ? el("table", { id: "impact-table" },
            el("thead", {}, el("tr", {}, ["Index", "Principal", "Action", "Resource", "Now", "Candidate"].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, r.changed.map((c) => el("tr", {},
              el("td", {}, String(c.index)), el("td", { class: "mono" }, c.principal), el("td", {}, c.action),
              el("td", { class: "mono" }, typeof c.resource === "string" ? c.resource : `${c.resource.type}::${c.resource.id}`),
              el("td", {}, c.before.permitted ? badge("allow") : badge("deny", c.before.code)),
              el("td", {}, c.after.permitted ? badge("allow") : badge("deny", c.after.code)))))) : null);
      } catch (e) { impactOut.replaceChildren(el("div", { class: "notice error", role: "alert" }, e instanceof ApiError ? e.detail : String(e))); }
    } },
      el("div", { class: "row" }, el("label", { for: "impact-candidate" }, "Candidate", candidate), el("label", { for: "impact-file" }, "File to edit", fileSel)),
      el("label", { for: "impact-editor" }, "Policy text", editor),
      el("p", {}, el("button", { type: "submit" }, "Evaluate impact"))),
    impactOut,
  );
}

// -- the page -----------------------------------------------------------------------------------

const TABS = [
  ["decisions", "Decisions", decisionsView],
  ["principals", "Principals", principalsView],
  ["approvals", "Approvals", approvalsView],
  ["policy", "Policy", policyView],
];

start("console", async (main, s) => {
  session = s;
  statusLine = el("div", { id: "status", role: "status", hidden: true });
  overviewBox = el("div", { class: "overview panel", id: "overview", "aria-label": "State in force" });
  const tablist = el("div", { role: "tablist", class: "tabs", "aria-label": "Console views" });
  const panels = el("div", {});
  main.append(el("h1", {}, "Governance Console"), overviewBox, statusLine, tablist, panels);
  const buttons = [];
  const select = async (i, focus = false) => {
    buttons.forEach((b, j) => { b.setAttribute("aria-selected", String(i === j)); b.tabIndex = i === j ? 0 : -1; });
    const [id, , view] = TABS[i];
    const panel = el("section", { role: "tabpanel", id: `panel-${id}`, "aria-labelledby": `tab-${id}` });
    panels.replaceChildren(panel);
    if (focus) buttons[i].focus();
    await view(panel);
  };
  TABS.forEach(([id, label], i) => {
    const b = el("button", { type: "button", role: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`, class: "tab" }, label);
    b.addEventListener("click", () => select(i));
    b.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowRight") select((i + 1) % TABS.length, true);
      if (ev.key === "ArrowLeft") select((i + TABS.length - 1) % TABS.length, true);
    });
    buttons.push(b);
    tablist.append(b);
  });
  // the state in force and the first view load side by side: neither waits for the other
  await Promise.all([refreshOverview(), select(0)]);
  setInterval(refreshOverview, 3000);
});
