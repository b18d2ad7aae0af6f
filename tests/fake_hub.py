"""A Hugging Face hub on loopback, just enough of it for huggingface-hub's hf_hub_download and list_repo_files:
``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` and ``GET /api/models/{repo}/tree/{revision}``. Point HF_ENDPOINT
at ``FakeHub.url``; nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "c" * 40


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos  # repo -> file name -> content
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                hub.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?", 1)[0]
                tree = re.match(r"^/api/models/([^/]+/[^/]+)/tree/[^/]+$", path)
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
                if tree:
                    files = hub.repos.get(tree[1])
                    if files is None:
                        return self.missing("RepoNotFound")
                    listing = [{"type": "file", "path": name, "size": len(data), "oid": _sha1(data)}
                               for name, data in files.items()]
                    return self.send(json.dumps(listing).encode(), "application/json", body)
                if resolve:
                    files = hub.repos.get(resolve[1])
                    if files is None:
                        return self.missing("RepoNotFound")
                    if resolve[2] not in files:
                        return self.missing("EntryNotFound")
                    data = files[resolve[2]]
                    return self.send(data, "application/octet-stream", body, {
                        "X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
                if path == "/":
                    return self.send(b"fake hub", "text/plain", body)
                return self.missing("EntryNotFound")

            def missing(self, code: str):
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                payload = json.dumps({"error": code}).encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def send(self, data: bytes, kind: str, body: bool, headers: dict | None = None):
                self.send_response(200)
                for name, value in {"Content-Type": kind, "Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
