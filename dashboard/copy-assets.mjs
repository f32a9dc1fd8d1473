// Copies the official minified builds (and the licence) of the dashboard's libraries into
// app/static/vendor/, where the web app serves them: no CDN, the store works offline.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "app", "static", "vendor");

const assets = {
  uplot: ["dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"],
};

for (const [pkg, files] of Object.entries(assets)) {
  const root = join(here, "node_modules", pkg);
  const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const out = join(vendor, pkg);
  mkdirSync(out, { recursive: true });
  for (const file of files) {
    copyFileSync(join(root, file), join(out, file.split("/").pop()));
  }
  console.log(`${pkg} ${version}: ${files.length} files -> ${out}`);
}
