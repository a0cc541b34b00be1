"""A stand-in for the Hugging Face hub on 127.0.0.1, speaking exactly what hf_hub_download (huggingface_hub
2.x) needs, so the tests run the real client code against a real HTTP server, offline.

What the client does (huggingface_hub/file_download.py, get_hf_file_metadata / _get_metadata_or_catch_error):
  HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}, redirects not followed across hosts. It needs
    X-Repo-Commit  the commit the revision points at (refs/main and the snapshot directory are named by it)
    ETag           the blob name in the cache (quotes and W/ stripped), or X-Linked-Etag when redirected
    Content-Length the size, or X-Linked-Size when redirected
  then GET on the same URL, or on the redirect's Location for large (LFS) files, which the real hub serves
  from a CDN on another host. A broken GET is resumed with `Range: bytes=N-` (after a 1 s sleep, up to 5
  times in a row without progress). Errors are told apart by X-Error-Code (RepoNotFound, EntryNotFound,
  RevisionNotFound). No X-Xet-* header is ever sent, so the Xet download path stays off.
  The only /api/ call is GET /api/agent-harnesses (a once-a-day registry used to tag the User-Agent; the
  client swallows any failure); it gets an empty registry here.

Modes (they only affect model.safetensors, the LFS file):
  normal    serve the repo
  missing   every request answers 404 RepoNotFound
  truncate  the CDN promises the full Content-Length but never gets past the middle of the file: every
            attempt (resumed with Range or not) sends bytes up to there, then closes the connection.
            (The client buffers 10 MB chunks, so on a small file it keeps none of a broken attempt
            and retries from 0, five times, sleeping 1 s before each.)
  short     the CDN answers with a well-formed response that is half the size the HEAD announced
  corrupt   the file has its full length but a garbled safetensors header
"""

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "4f3a5c0d9e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3"
LFS_FILES = {"model.safetensors"}
MODES = ("normal", "missing", "truncate", "short", "corrupt")


def free_port():
    """A port nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeHub:
    def __init__(self, repo_id, files, mode="normal"):
        assert mode in MODES, mode
        self.repo_id, self.mode = repo_id, mode
        self.files = dict(files)
        if mode == "corrupt":
            data = self.files["model.safetensors"]
            self.files["model.safetensors"] = data[:8] + b"#" * 8 + data[16:]
        self.requests = []  # (method, path, Range header) of every request, for the tests to inspect
        self.unexpected = []  # requests this fake does not know: a sign the client changed its protocol
        self._connections = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # loopback only
        self._server.daemon_threads = True
        self._server.hub = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A different host name for the same server: the client treats it as a CDN (no redirect following,
        # no auth header), as it does with the real hub's LFS downloads.
        self.cdn = f"http://localhost:{self.port}/cdn"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # short poll: stop() returns at once

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        for conn in list(self._connections):  # keep-alive connections the client pooled
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _etag(data):
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real hub; Content-Length on every response
    timeout = 10  # an idle pooled connection does not pin a thread forever

    def setup(self):
        super().setup()
        self.server.hub._connections.add(self.connection)

    def finish(self):
        self.server.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        hub = self.server.hub
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        path = unquote(self.path.split("?")[0])
        if path.startswith("/cdn/"):
            return self._blob(path.removeprefix("/cdn/"), head)
        if path == "/api/agent-harnesses" and not head:
            return self._reply(
                200, head, {"Content-Type": "application/json"}, b'{"standardEnvVars": [], "harnesses": {}}'
            )
        match = re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", path)
        if not match:
            hub.unexpected.append((self.command, self.path))
            return self._reply(404, head, {"X-Error-Message": "Not Found"})
        repo_id, revision, filename = match.groups()
        if hub.mode == "missing" or repo_id != hub.repo_id:
            return self._reply(404, head, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if revision not in ("main", COMMIT):
            return self._reply(404, head, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        if filename not in hub.files:
            return self._reply(
                404,
                head,
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": COMMIT},
            )
        data = hub.files[filename]
        if filename in LFS_FILES:
            return self._reply(
                302,
                head,
                {
                    "Location": f"{hub.cdn}/{_etag(data)}",
                    "X-Repo-Commit": COMMIT,
                    "X-Linked-Etag": f'"{_etag(data)}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                },
            )
        return self._reply(200, head, {"ETag": f'"{_etag(data)}"', "X-Repo-Commit": COMMIT}, data)

    def _blob(self, etag, head):
        hub = self.server.hub
        data = next((d for f, d in hub.files.items() if f in LFS_FILES and _etag(d) == etag), None)
        if data is None:
            return self._reply(404, head, {})
        range_match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(range_match.group(1)) if range_match else 0
        headers = {"ETag": f'"{etag}"'}
        if range_match:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if hub.mode == "short":
            body = data[start : len(data) // 2]
        if hub.mode != "truncate":
            return self._reply(206 if range_match else 200, head, headers, body)
        # Promise the whole rest, deliver only up to the middle of the file, hang up.
        self.send_response(206 if range_match else 200)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data[start : max(start, len(data) // 2)])
            self.wfile.flush()
        self.close_connection = True

    def _reply(self, status, head, headers, body=b""):
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
