import { start, el } from "../common/api.js";

start("demo", async (main) => {
  main.append(el("h1", {}, "Runtime Governance Demo"), el("p", { class: "muted" }, "Not built yet."));
}, { needsSession: false });
