// node --stack-size=4000 tools/strip_cf.mjs IN.bin OUT.bin [SheetsToMoveLast]: delete every conditional format, optionally reorder sheets, write toBytes()
import { readFileSync, writeFileSync } from "node:fs";
import { initSync, Model } from "@ironcalc/wasm";
initSync({ module: readFileSync(process.env.WASM || "node_modules/@ironcalc/wasm/wasm_bg.wasm") });
const [inp, out, names] = process.argv.slice(2);
const m = Model.from_bytes(readFileSync(inp), "en");
m.pauseEvaluation();
let n = 0;
m.getWorksheetsProperties().forEach((_, s) => {
  for (let k = m.getConditionalFormattingList(s).length - 1; k >= 0; k--) { m.deleteConditionalFormatting(s, k); n++; }
});
for (const name of (names || "").split(",").filter(Boolean)) {
  const props = m.getWorksheetsProperties();
  m.moveSheet(props.findIndex((p) => p.name === name), props.length - 1);
}
m.resumeEvaluation();
console.log(`deleted ${n} conditional formats; sheets ${m.getWorksheetsProperties().map((p) => p.name).join("|")}`);
writeFileSync(out, m.toBytes());
