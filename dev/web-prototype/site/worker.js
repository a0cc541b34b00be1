// Web Worker: load IronCalc's wasm and the book's serialized model, set the input, recalculate, read the result.
import init, { Model } from "./ironcalc/wasm.js";

let model, cells, memory;
const now = () => performance.now();
const secs = (t) => Math.round((now() - t) / 10) / 100;
const value = (name, i = 0) => { const [s, r, c] = cells[name]; return model.getFormattedCellValue(s, r, c + i); };
const row = (name) => { const [s, r, c, , c2] = cells[name]; return Array.from({ length: c2 - c + 1 }, (_, i) => value(name, i)); };
const mib = () => Math.round(memory.buffer.byteLength / 2 ** 20);

self.onmessage = async ({ data }) => {
  try {
    if (data.init) {
      const { book, wasm } = data.init;
      let t = now();
      const file = wasm === "stock" ? "wasm_bg.wasm" : "wasm_bg_stack64.wasm";
      const out = await init({ module_or_path: new URL(`./ironcalc/${file}`, import.meta.url) });
      memory = out.memory;
      const tInit = secs(t);
      t = now();
      cells = await (await fetch(`books/${book}.json`)).json();
      const bytes = new Uint8Array(await (await fetch(`books/${book}.bin`)).arrayBuffer());
      const tFetch = secs(t);
      t = now();
      model = Model.from_bytes(bytes, "en"); // parses every formula (evaluates only conditional formats)
      const tLoad = secs(t);
      t = now();
      model.evaluate();
      const tEval = secs(t);
      const defaultInput = cells.Prompt ? value("Prompt") : row("TokenIds").join(",");
      self.postMessage({
        ready: true, defaultInput,
        timings: { wasm_init_s: tInit, fetch_s: tFetch, from_bytes_s: tLoad, evaluate_s: tEval, bytes: bytes.length, wasm_memory_mib_after_load: mib() },
        log: `loaded ${book} (${bytes.length} bytes) with ${file}: init ${tInit} s, fetch ${tFetch} s, from_bytes ${tLoad} s, evaluate ${tEval} s; predicted ${value("PredictedToken")}`,
      });
    }
    if (data.run !== undefined) {
      const t = now();
      if (cells.Prompt) {
        const [s, r, c] = cells.Prompt;
        model.setUserInput(s, r, c, data.run); // a UserModel edit recalculates the book
      } else {
        const ids = data.run.split(",").map((x) => x.trim());
        const [s, r, c] = cells.TokenIds;
        model.pauseEvaluation();
        ids.forEach((id, i) => model.setUserInput(s, r, c + i, id));
        model.resumeEvaluation();
        model.evaluate();
      }
      const tEval = secs(t);
      const tokenIds = (cells.SheetTokenIds ? row("SheetTokenIds") : row("TokenIds")).filter((x) => x !== "");
      const result = { predicted: value("PredictedToken"), tokenIds };
      self.postMessage({ result, timings: { run_s: tEval, wasm_memory_mib_after_run: mib() }, log: `run: ${tEval} s -> ${result.predicted}` });
    }
  } catch (e) {
    self.postMessage({ error: String(e && e.stack || e) });
  }
};
