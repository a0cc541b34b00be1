"""Run with venv083/bin/python: load an xlgpt .xlsx with ironcalc 0.8.3, write model.to_bytes(), evaluate, report."""
import json, os, resource, sys, time
import ironcalc

book, out = sys.argv[1], sys.argv[2]
prompt = sys.argv[3] if len(sys.argv) > 3 else None
# sheet index (0-based), row, col of cells behind defined names (from openpyxl)
CELLS = json.loads(os.environ["CELLS"])

t0 = time.perf_counter()
fd = os.dup(1); nul = os.open(os.devnull, os.O_WRONLY); os.dup2(nul, 1)
m = ironcalc.load_from_xlsx(book, "en", "UTC")
os.dup2(fd, 1)
t1 = time.perf_counter()
data = m.to_bytes()
with open(out, "wb") as f:
    f.write(data)
t2 = time.perf_counter()
m.evaluate()
t3 = time.perf_counter()
res = {"load_s": round(t1 - t0, 2), "to_bytes_s": round(t2 - t1, 2), "bytes": len(data), "eval_s": round(t3 - t2, 2)}
def val(name):
    s, r, c = CELLS[name][:3]
    return m.get_cell_value(s, r, c)
res["PredictedToken"] = val("PredictedToken")
if prompt is not None:
    s, r, c = CELLS["Prompt"][:3]
    m.set_user_input(s, r, c, prompt)
    t4 = time.perf_counter(); m.evaluate(); t5 = time.perf_counter()
    res["prompt_eval_s"] = round(t5 - t4, 2)
    res["prompt_PredictedToken"] = val("PredictedToken")
    s, r, c = CELLS["SheetTokenIds"][:3]
    res["prompt_SheetTokenIds"] = [m.get_cell_value(s, r, c + i) for i in range(32)]
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(res))
