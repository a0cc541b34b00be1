"""Open site/index.html from file:// in headless Chromium and report what fails."""
from pathlib import Path
from playwright.sync_api import sync_playwright
url = (Path(__file__).resolve().parent.parent / "site" / "index.html").as_uri() + "?book=tokens&wasm=stock"
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
    page = b.new_page(); msgs = []
    page.on("console", lambda m: msgs.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: msgs.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: msgs.append(f"requestfailed: {r.url.split('/site/')[-1]} {r.failure}"))
    page.goto(url); page.wait_for_timeout(3000)
    print("status:", page.text_content("#status")); print("\n".join(msgs))
    b.close()
