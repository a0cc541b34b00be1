// Main thread: start the worker, forward the prompt, show results. ?book=prompt|tokens, ?wasm=stock|stack64
const params = new URLSearchParams(location.search);
const book = params.get("book") || "prompt";
const wasm = params.get("wasm") || "stack64";
const $ = (id) => document.getElementById(id);
$("book-name").textContent = book;
const log = (line) => { $("log").textContent += line + "\n"; };
const worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });
window.timings = {};
worker.onmessage = ({ data }) => {
  if (data.error) { $("status").textContent = "error"; log("error: " + data.error); window.xlgptError = data.error; return; }
  Object.assign(window.timings, data.timings || {});
  if (data.log) log(data.log);
  if (data.ready) {
    $("status").textContent = "ready";
    $("prompt").disabled = $("run").disabled = false;
    $("prompt").value = data.defaultInput || "";
  }
  if (data.result) {
    $("status").textContent = "done";
    $("token-ids").textContent = data.result.tokenIds.join(",");
    $("predicted-token-id").textContent = data.result.predicted;
    $("run").disabled = false;
  }
};
worker.onerror = (e) => { $("status").textContent = "error"; log("worker error: " + e.message); window.xlgptError = e.message; };
$("run").onclick = () => {
  $("run").disabled = true;
  $("status").textContent = "computing";
  $("predicted-token-id").textContent = "";
  worker.postMessage({ run: $("prompt").value });
};
worker.postMessage({ init: { book, wasm } });
