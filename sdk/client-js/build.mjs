// Builds @switchyard/client (dist/: ESM bundle + .d.ts) and the demo app's checked-in
// bundles (sdk/demo/assets/), which media-node embeds for `switchyard dev`.
//
//   node build.mjs              build everything (then commit sdk/demo/assets)
//   node build.mjs --dist-only  only dist/ (what the tests import; leaves the checked-in bundles alone)
//   node build.mjs --check      fail if the checked-in demo bundles differ from a fresh build
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const demo = join(here, "..", "demo");
const check = process.argv.includes("--check");

const common = { bundle: true, format: "esm", target: "es2022", platform: "browser", legalComments: "none", logLevel: "warning" };
// The demo app loads the SDK the page's server serves at /switchyard.js rather than
// carrying a second copy of it.
const sdkFromServer = {
  name: "sdk-from-server",
  setup(b) {
    b.onResolve({ filter: /client-js\/src\/index\.js$/ }, () => ({ path: "/switchyard.js", external: true }));
  },
};
// Checked in: the SDK as `switchyard dev` serves it at /switchyard.js, and the demo app.
const assets = [
  { entry: join(here, "src/index.ts"), out: join(demo, "assets/switchyard.js") },
  { entry: join(demo, "app.ts"), out: join(demo, "assets/app.js"), plugins: [sdkFromServer] },
];

if (check) {
  let stale = [];
  for (const a of assets) {
    const r = await build({ ...common, plugins: a.plugins ?? [], entryPoints: [a.entry], write: false, outfile: a.out });
    const fresh = r.outputFiles[0].text;
    let committed = "";
    try { committed = readFileSync(a.out, "utf8"); } catch {}
    if (fresh !== committed) stale.push(a.out);
  }
  if (stale.length) {
    console.error(`stale: ${stale.join(", ")}; run 'npm run build' in sdk/client-js and commit`);
    process.exit(1);
  }
  process.exit(0);
}

execFileSync(join(here, "node_modules/.bin/tsc"), ["-p", here], { stdio: "inherit" });
await build({ ...common, entryPoints: [join(here, "src/index.ts")], outfile: join(here, "dist/index.js") });
if (process.argv.includes("--dist-only")) process.exit(0);
mkdirSync(join(demo, "assets"), { recursive: true });
for (const a of assets) await build({ ...common, plugins: a.plugins ?? [], entryPoints: [a.entry], outfile: a.out });
