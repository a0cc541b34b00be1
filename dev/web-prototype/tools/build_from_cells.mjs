// Build an xlgpt book inside IronCalc's wasm from a cells JSON (tools/cells_json.py), evaluate, read the result.
// node tools/build_from_cells.mjs BOOK.cells_full.json [PROMPT] [--bytes OUT.bin] [--dump VALUES.json]
import { readFileSync, writeFileSync } from "node:fs";
import { initSync, Model } from "@ironcalc/wasm";

const args = process.argv.slice(2);
const dumpOut = args.includes("--dump") ? args.splice(args.indexOf("--dump"), 2)[1] : null;
const bytesOut = args.includes("--bytes") ? args.splice(args.indexOf("--bytes"), 2)[1] : null;
const [cellsPath, prompt] = args;
const t = () => performance.now() / 1000;
const r2 = (x) => Math.round(x * 100) / 100;
const out = {};
let t0 = t();
const book = JSON.parse(readFileSync(cellsPath, "utf8"));
out.json_parse_s = r2(t() - t0);
t0 = t();
const wasm = initSync({ module: readFileSync(process.env.WASM || new URL("../node_modules/@ironcalc/wasm/wasm_bg.wasm", import.meta.url)) });
out.init_s = r2(t() - t0);
const mib = () => Math.round(wasm.memory.buffer.byteLength / 2 ** 20);

// --- read ---
const loc = {};
for (const [name, f] of book.names) {
  const m = f.match(/^'?(.*?)'?!\$?([A-Z]+)\$?(\d+)(?::\$?([A-Z]+)\$?(\d+))?$/);
  if (!m) continue;
  const col = (a) => [...a].reduce((x, ch) => x * 26 + ch.charCodeAt(0) - 64, 0);
  loc[name] = [book.sheets.indexOf(m[1]), +m[3], col(m[2]), +(m[5] || m[3]), col(m[4] || m[2])];
}
const get = (name, i = 0) => { const [s, r, c] = loc[name]; return model.getFormattedCellValue(s, r, c + i); };
const row = (name) => { const [s, r, c, , c2] = loc[name]; return Array.from({ length: c2 - c + 1 }, (_, i) => get(name, i)).filter((x) => x !== ""); };
// --- build ---
t0 = t();
let model = new Model("book", "en", "UTC", "en");
model.pauseEvaluation();
book.sheets.forEach((name, i) => { if (i > 0) model.newSheet(); model.renameSheet(i, name); });
for (const [name, formula] of book.names) model.newDefinedName(name, null, formula);
const tSheets = t();
let nStr = 0, requoted = 0, failed = [];
out.sheet_build_s = {};
book.cells.forEach((cells, s) => {
  const ts = t();
  for (const [r, c, kind, text, h, w] of cells) {
    try {
      if (kind === "a") model.setUserArrayFormula(s, r, c, w, h, "=" + text);
      else if (kind === "f") model.setUserInput(s, r, c, "=" + text);
      else if (kind === "s") {
        nStr++;
        if (text.startsWith("=") || text.startsWith("'")) { model.setUserInput(s, r, c, "'" + text); requoted++; continue; }
        model.setUserInput(s, r, c, text);
        if (model.getCellType(s, r, c) !== 2 || model.getCellContent(s, r, c) !== text) {
          model.setUserInput(s, r, c, "'" + text); requoted++;
        }
      } else model.setUserInput(s, r, c, text);
    } catch (e) {
      if (failed.length < 10) failed.push([book.sheets[s], r, c, kind, text.slice(0, 80), String(e).slice(0, 200)]);
    }
  }
  out.sheet_build_s[book.sheets[s]] = [cells.length, r2(t() - ts)];
});
out.cells = book.cells.reduce((a, c) => a + c.length, 0);
out.strings_requoted = `${requoted}/${nStr}`;
out.failed = failed;
out.build_s = r2(t() - t0);
out.build_cells_s = r2(t() - tSheets);
out.mem_after_build_mib = mib();
console.error("built", JSON.stringify(out));
if (process.env.ROUNDTRIP) { // toBytes + from_bytes before evaluating: the loaded model's evaluation order
  t0 = t(); const b = model.toBytes(); out.roundtrip_to_bytes_s = r2(t() - t0); out.roundtrip_bytes = b.length;
  model.free(); t0 = t(); model = Model.from_bytes(b, "en"); out.roundtrip_from_bytes_s = r2(t() - t0);
  console.error("roundtrip", out.roundtrip_to_bytes_s, out.roundtrip_from_bytes_s, b.length);
}
t0 = t();
model.resumeEvaluation();
out.resume_s = r2(t() - t0);
t0 = t();
model.evaluate();
out.eval_s = r2(t() - t0);
out.PredictedToken_pass1 = get("PredictedToken");
console.error("pass 1", out.eval_s, out.PredictedToken_pass1);
const passes = +(process.env.PASSES || 2); // pass 1 creates the array formulas' child cells (see report)
for (let p = 2; p <= passes; p++) { t0 = t(); model.evaluate(); out[`eval${p}_s`] = r2(t() - t0); out[`PredictedToken_pass${p}`] = get("PredictedToken"); }

out.mem_after_eval_mib = mib();
out.PredictedToken = get("PredictedToken");
if (process.env.PROBE) { // PROBE="sheet|formula;formula": array formulas in empty cells (row 3000+) after evaluation
  const [s, fs] = process.env.PROBE.split("|"); const list = fs.split(";");
  model.pauseEvaluation();
  list.forEach((f, i) => model.setUserArrayFormula(+s, 3000 + i, 3, 1, 1, f));
  model.resumeEvaluation(); model.evaluate();
  list.forEach((f, i) => console.error(f, "->", model.getFormattedCellValue(+s, 3000 + i, 3)));
}
if (process.env.DEBUG) { // DEBUG="sheet,row,col;..." prints content, structure, value
  for (const x of process.env.DEBUG.split(";")) {
    const [s, r, c] = x.split(",").map(Number);
    console.error(x, model.getCellContent(s, r, c), JSON.stringify(model.getCellArrayStructure(s, r, c)), model.getCellType(s, r, c), model.getFormattedCellValue(s, r, c));
  }
}
if (prompt !== undefined && loc.Prompt) {
  const [s, r, c] = loc.Prompt;
  t0 = t();
  model.setUserInput(s, r, c, prompt); // recalculates the book itself
  out.prompt_set_s = r2(t() - t0);
  out.prompt_PredictedToken = get("PredictedToken");
  out.prompt_SheetTokenIds = row("SheetTokenIds").join(",");
}
if (dumpOut) { // formatted value of every formula cell (array formulas: whole range), for tools/compare_values.py
  const d = book.cells.map((cells, s) => cells.filter((x) => x[2] === "f" || x[2] === "a").flatMap(([r, c, k, , h = 1, w = 1]) =>
    Array.from({ length: h * w }, (_, i) => [r + Math.floor(i / w), c + (i % w), model.getFormattedCellValue(s, r + Math.floor(i / w), c + (i % w))])));
  writeFileSync(dumpOut, JSON.stringify(d));
}
if (bytesOut) { t0 = t(); const b = model.toBytes(); writeFileSync(bytesOut, b); out.to_bytes_s = r2(t() - t0); out.bytes = b.length; }
out.wasm_memory_mib = mib();
out.rss_mib = Math.round(process.memoryUsage().rss / 2 ** 20);
console.log(JSON.stringify(out));
