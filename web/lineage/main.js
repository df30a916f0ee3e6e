import { start, el } from "../common/api.js";

start("lineage", async (main) => {
  main.append(el("h1", {}, "Execution Lineage Explorer"), el("p", { class: "muted" }, "Not built yet."));
}, { needsSession: true });
