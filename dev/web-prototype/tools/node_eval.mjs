// node tools/node_eval.mjs BOOK.icalc.bin CELLS.json [prompt]
import { readFileSync } from "node:fs";
import { initSync, Model } from "@ironcalc/wasm";

const [bin, cellsPath, prompt] = process.argv.slice(2);
const cells = JSON.parse(readFileSync(cellsPath, "utf8"));
const t = () => performance.now() / 1000;
const r2 = (x) => Math.round(x * 100) / 100;
let t0 = t();
initSync({ module: readFileSync(process.env.WASM || new URL("../node_modules/@ironcalc/wasm/wasm_bg.wasm", import.meta.url)) });
const tInit = t() - t0;
const bytes = readFileSync(bin);
t0 = t();
const model = Model.from_bytes(bytes, "en");
const tLoad = t() - t0;
t0 = t();
model.evaluate();
const tEval = t() - t0;
const get = (name, i = 0) => { const [s, r, c] = cells[name]; return model.getFormattedCellValue(s, r, c + i); };
const out = { init_s: r2(tInit), load_s: r2(tLoad), eval_s: r2(tEval), PredictedToken: get("PredictedToken") };
if (prompt !== undefined) {
  const [s, r, c] = cells.Prompt;
  t0 = t();
  model.setUserInput(s, r, c, prompt);
  const tSet = t() - t0;
  t0 = t();
  model.evaluate();
  out.prompt_set_s = r2(tSet);
  out.prompt_eval_s = r2(t() - t0);
  out.prompt_PredictedToken = get("PredictedToken");
  out.prompt_TokenizerStatus = get("TokenizerStatus");
  out.prompt_SheetTokenIds = Array.from({ length: 32 }, (_, i) => get("SheetTokenIds", i)).filter((x) => x !== "").join(",");
}
out.rss_mb = Math.round(process.memoryUsage().rss / 2 ** 20);
console.log(JSON.stringify(out));
