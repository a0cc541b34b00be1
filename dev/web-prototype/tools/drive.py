"""Serve site/ with python -m http.server on a free port, open it in headless Chromium via Playwright, type the
prompt, click run, wait for #predicted-token-id. Usage: drive.py BOOK WASM PROMPT [--js-flags=...]"""
import json, socket, subprocess, sys, time
from pathlib import Path
from playwright.sync_api import sync_playwright

book, wasm, prompt = sys.argv[1:4]
extra = sys.argv[4:]
site = Path(__file__).resolve().parent.parent / "site"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=site,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    time.sleep(0.5)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", *extra])
        page = browser.new_page()
        console = []
        page.on("console", lambda m: console.append(m.text))
        t0 = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/index.html?book={book}&wasm={wasm}")
        page.wait_for_function("document.getElementById('status').textContent === 'ready' || window.xlgptError", timeout=300_000)
        t_ready = time.perf_counter() - t0
        out = {"book": book, "wasm": wasm, "browser": browser.version, "page_ready_s": round(t_ready, 2)}
        err = page.evaluate("window.xlgptError || null")
        if not err:
            page.fill("#prompt", prompt)
            t1 = time.perf_counter()
            page.click("#run")
            page.wait_for_function("document.getElementById('predicted-token-id').textContent !== '' || window.xlgptError", timeout=300_000)
            out["click_to_result_s"] = round(time.perf_counter() - t1, 2)
            err = page.evaluate("window.xlgptError || null")
            out["predicted_token_id"] = page.text_content("#predicted-token-id")
            out["token_ids"] = page.text_content("#token-ids")
        out["timings"] = page.evaluate("window.timings")
        if err: out["error"] = err[:600]
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
        out["main_js_heap_mib"] = round(m.get("JSHeapUsedSize", 0) / 2**20)
        # renderer processes' RSS (the worker lives in the page's renderer)
        rss = subprocess.run("ps -C chromium -o rss=,args= | grep -- '--type=renderer' | awk '{s+=$1} END {print s}'",
                             shell=True, capture_output=True, text=True).stdout.strip()
        out["renderer_rss_mib"] = round(int(rss or 0) / 1024)
        print(json.dumps(out))
        browser.close()
finally:
    server.terminate(); server.wait()
