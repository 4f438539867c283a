// Builds @switchyard/react: dist/index.js (ESM; react and @switchyard/client stay
// imports) and its .d.ts.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
execFileSync(join(here, "node_modules/.bin/tsc"), ["-p", here], { stdio: "inherit" });
await build({
  entryPoints: [join(here, "src/index.tsx")],
  outfile: join(here, "dist/index.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  external: ["react", "react-dom", "react/jsx-runtime", "@switchyard/client"],
  logLevel: "warning",
});
