import { start, el } from "../common/api.js";

start("console", async (main) => {
  main.append(el("h1", {}, "Governance Console"), el("p", { class: "muted" }, "Not built yet."));
}, { needsSession: true });
