import { start, el } from "../common/api.js";

start("health", async (main) => {
  main.append(el("h1", {}, "Infrastructure Health Dashboard"), el("p", { class: "muted" }, "Not built yet."));
}, { needsSession: true });
