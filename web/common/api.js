// Shared by the console's tools: DOM building without innerHTML, the JSON client with the
// session's CSRF token, the top bar with navigation, and the sign-in form.
//
//   import { start, api, el } from "../common/api.js";
//   start("health", async (main, session) => { main.append(el("h1", {}, "Health")); });

/** Build an element. Children may be strings (always text, never HTML), nodes or arrays. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

let csrf = null;

/** Fetch JSON from this origin. Non-GET requests carry the session's CSRF token. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-Interlock-CSRF"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text.slice(0, 300) }; }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(response.status, detail);
  }
  return data;
}

export const TOOLS = [
  ["console", "/console", "Console"],
  ["health", "/console/health", "Health"],
  ["lineage", "/console/lineage", "Lineage"],
  ["proof", "/console/proof", "Proof Viewer"],
  ["demo", "/console/demo", "Demo"],
];

function topBar(current, session) {
  const who = el("div", { class: "who", "aria-live": "polite" });
  if (session && session.principal) {
    who.append("Signed in as ", el("code", {}, session.principal), " ");
    who.append(el("button", { class: "secondary", type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
  } else if (session && session.public) {
    who.append("Public read-only view");
  }
  return el(
    "header",
    { class: "top" },
    el("a", { class: "skip", href: "#main" }, "Skip to content"),
    el("span", { class: "brand" }, "Interlock"),
    el(
      "nav",
      { "aria-label": "Tools" },
      TOOLS.map(([id, href, label]) =>
        el("a", { href, "aria-current": id === current ? "page" : null }, label)),
    ),
    who,
  );
}

async function signOut() {
  try { await api("/console/api/session", { method: "DELETE" }); } catch { /* signed out anyway */ }
  csrf = null;
  location.reload();
}

function loginForm(onDone, problem) {
  const error = el("div", { class: "notice error", role: "alert", hidden: !problem }, problem || "");
  const field = el("textarea", {
    id: "token", name: "token", required: true, autocomplete: "off", spellcheck: "false",
    "aria-describedby": "token-help",
  });
  const form = el(
    "form",
    { class: "login panel", id: "login" },
    el("h1", {}, "Sign in"),
    el("p", { id: "token-help", class: "muted" },
      "Paste a capability granting admin:Admin::read (read-only) or more. ",
      "Issue one with: interlock token issue --principal <you> --right 'admin:Admin::read' --ttl 8h"),
    el("label", { for: "token" }, "Capability token"),
    field,
    error,
    el("p", {}, el("button", { type: "submit" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const session = await api("/console/api/session", { method: "POST", body: { token: field.value.trim() } });
      csrf = session.csrf;
      onDone(session);
    } catch (e) {
      error.hidden = false;
      error.textContent = e instanceof ApiError ? e.detail : String(e);
    }
  });
  return form;
}

/** Render a tool: the top bar, then sign-in if needed, then `render(main, session)`. */
export async function start(current, render, { needsSession = true } = {}) {
  const main = el("main", { id: "main", tabindex: "-1" });
  document.body.replaceChildren(topBar(current, null), main);
  let session = null;
  if (needsSession) {
    try {
      session = await api("/console/api/session");
      csrf = session.csrf;
    } catch (e) {
      if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 403)) {
        main.append(el("div", { class: "notice error", role: "alert" }, `Cannot reach the server: ${e.message}`));
        return;
      }
      const problem = e.status === 403 ? `Your credential no longer verifies: ${e.detail}` : null;
      await new Promise((resolve) => main.replaceChildren(loginForm((s) => { session = s; resolve(); }, problem)));
    }
  }
  document.body.replaceChildren(topBar(current, session), main);
  main.replaceChildren();
  await render(main, session);
}

/** True when the session may carry out admin `operation` from the console. */
export function can(session, operation) {
  return Boolean(session && Array.isArray(session.rights) && session.rights.includes(operation));
}

export function badge(kind, text = kind) {
  return el("span", { class: `badge ${kind}` }, text);
}

export function fmtTime(ts) {
  return ts ? ts.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

/** Save `text` as a file named `name` (receipts, proofs). */
export function download(name, text, type = "application/octet-stream") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
