// Build the browser tools into src/interlock/console/static/ (the files ship in the wheel).
//
//   npm ci && node build.mjs           # writes <tool>.html, <tool>.js, <tool>.css per tool
//   node build.mjs --check             # exit 1 if a shipped file differs from a fresh build
//
// Each tool is web/<tool>/{index.html,main.js,style.css}; main.js is bundled by esbuild with
// its npm dependencies (package-lock.json pins them), style.css after web/common/base.css.
// Nothing is inlined: the pages load /console/static/<tool>.{js,css} from their own origin,
// so the served Content-Security-Policy is `script-src 'self'` with no hashes or nonces.
// The Proof Viewer is built separately (scripts/build_proof_viewer.py), as one offline file.
import { readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const WEB = dirname(fileURLToPath(import.meta.url));
const OUT = join(WEB, "..", "src", "interlock", "console", "static");
export const TOOLS = ["console", "health", "lineage", "demo"];

async function bundle(tool) {
  const js = await esbuild.build({
    entryPoints: [join(WEB, tool, "main.js")],
    bundle: true,
    format: "esm",
    target: ["es2020"],
    minify: true,
    legalComments: "eof",
    write: false,
    logLevel: "silent",
  });
  const css = await esbuild.build({
    stdin: {
      contents: `@import "../common/base.css";\n@import "./style.css";\n`,
      resolveDir: join(WEB, tool),
      loader: "css",
    },
    bundle: true,
    minify: true,
    write: false,
    logLevel: "silent",
  });
  return {
    [`${tool}.html`]: readFileSync(join(WEB, tool, "index.html"), "utf8"),
    [`${tool}.js`]: js.outputFiles[0].text,
    [`${tool}.css`]: css.outputFiles[0].text,
  };
}

const check = process.argv.includes("--check");
let stale = 0;
for (const tool of TOOLS) {
  if (!existsSync(join(WEB, tool, "main.js"))) continue;
  const files = await bundle(tool);
  for (const [name, text] of Object.entries(files)) {
    const path = join(OUT, name);
    if (check) {
      const current = existsSync(path) ? readFileSync(path, "utf8") : null;
      if (current !== text) {
        console.error(`src/interlock/console/static/${name} is stale: run make web`);
        stale += 1;
      }
    } else {
      mkdirSync(OUT, { recursive: true });
      writeFileSync(path, text);
      console.log(`wrote src/interlock/console/static/${name} (${text.length} bytes)`);
    }
  }
}
process.exit(stale ? 1 : 0);
