// Validates an AsyncAPI document with the official @asyncapi/parser (the spec's JSON Schema
// and its ruleset) and prints every diagnostic as one JSON array on stdout:
//   node tests/js/validate_asyncapi.mjs <document.json>
// [{"severity": "error" | "warning" | "information" | "hint", "code", "message", "path"}]
// Used by tests/test_asyncapi.py; exits 0 whatever the diagnostics say, 1 if it cannot run.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "information", "hint"];

const [path] = process.argv.slice(2);
if (!path) {
  process.stderr.write("usage: node validate_asyncapi.mjs <document.json>\n");
  process.exit(1);
}
const diagnostics = await new Parser().validate(await readFile(path, "utf8"));
const report = diagnostics.map((d) => ({
  severity: SEVERITIES[d.severity] ?? String(d.severity),
  code: d.code,
  message: d.message,
  path: d.path,
}));
process.stdout.write(JSON.stringify(report) + "\n");
