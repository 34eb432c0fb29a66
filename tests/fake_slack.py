"""A local HTTP server that plays Slack: the Web API methods kpibot calls, the upload URLs
of the files upload v2 flow, and response_urls. It records every request, and can be told
to answer a method with an error, a 429 or a 500 a given number of times."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    path: str
    method: str            # Web API method, or "upload" / "response"
    params: dict
    headers: dict
    at: float = field(default_factory=time.monotonic)
    body: bytes = b""


class FakeSlack:
    def __init__(self, admins: set[str] = frozenset(), groups: dict | None = None,
                 socket_url: str | None = None):
        self.socket_url = socket_url      # what apps.connections.open hands out
        self.calls: list[Call] = []
        self.scripted: dict[str, list[tuple[int, dict, dict]]] = {}
        self.delays: dict[str, float] = {}       # method -> seconds to wait before answering
        self.admins = set(admins)
        self.files: dict[str, dict] = {}         # id -> files.info's file (+ "_data": bytes)
        self.groups = groups or {}
        self.lock = threading.Lock()
        self.responses = threading.Condition(self.lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # quiet
                pass

            def do_GET(self):      # a file's url_private_download
                status, headers, data = fake.download(self.path, dict(self.headers))
                self.send_response(status)
                for k, v in {"Content-Type": "application/octet-stream", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, payload = fake.handle(self.path, dict(self.headers), body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "FakeSlack":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/response/{name}"

    # -- scripting and inspection ------------------------------------------------------------
    def script(self, method: str, *responses: tuple[int, dict, dict]) -> None:
        """Answer the next calls of ``method`` with (status, headers, json) in order."""
        self.scripted.setdefault(method, []).extend(responses)

    def of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def wait_until(self, match, timeout: float = 10.0) -> Call:
        """The first recorded call for which ``match(call)`` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        with self.responses:
            while True:
                for c in self.calls:
                    if match(c):
                        return c
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching call arrived")
                self.responses.wait(left)

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self.responses:
            while True:
                found = [c for c in self.calls if c.method == method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} {method} call(s), got {len(found)}: "
                                         f"{[c.method for c in self.calls]}")
                self.responses.wait(left)

    def add_file(self, file_id: str, name: str, data: bytes, **info) -> dict:
        """A file shared in Slack: files.info describes it, its download URL serves it."""
        self.files[file_id] = {"id": file_id, "name": name, "size": len(data), "mode": "hosted",
                               "url_private_download":
                                   f"http://127.0.0.1:{self.port}/files/{file_id}/{name}",
                               **info, "_data": data}
        return {"id": file_id, "name": name}

    # -- behaviour ---------------------------------------------------------------------------
    def download(self, path: str, headers: dict):
        parts = path.lstrip("/").split("/")
        file_id = parts[1] if len(parts) > 2 and parts[0] == "files" else ""
        call = Call(path, "download", {"file_id": file_id}, headers)
        with self.responses:
            self.calls.append(call)
            queued = self.scripted.get("download")
            scripted = queued.pop(0) if queued else None
            self.responses.notify_all()
        if scripted is not None:
            status, hdrs, payload = scripted
            return status, hdrs, payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        f = self.files.get(file_id)
        if f is None:
            return 404, {}, b"not found"
        return 200, {}, f["_data"]

    def handle(self, path: str, headers: dict, body: bytes):
        kind, _, rest = path.lstrip("/").partition("/")
        ctype = headers.get("Content-Type", "")
        if kind == "api":
            method = rest.split("?")[0]
            if "json" in ctype:
                params = json.loads(body or b"{}")
            else:
                params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        elif kind == "response":
            method, params = "response", json.loads(body or b"{}")
            params["_url"] = rest
        else:
            method, params = "upload", {"file_id": rest, "size": len(body)}
        call = Call(path, method, params, headers, body=body if kind == "upload" else b"")
        with self.responses:
            self.calls.append(call)
            queued = self.scripted.get(method)
            scripted = queued.pop(0) if queued else None
            self.responses.notify_all()
        if method in self.delays:
            time.sleep(self.delays[method])
        if scripted is not None:
            return scripted
        if kind == "response":
            return 200, {}, b"ok"
        if kind == "upload":
            return 200, {}, b"OK - " + str(len(body)).encode()
        return 200, {}, self.default(method, params)

    def default(self, method: str, p: dict) -> dict:
        if method == "auth.test":
            return {"ok": True, "user_id": "UBOT", "team_id": "T1", "bot_id": "BBOT",
                    "url": "https://example.slack.com/"}
        if method == "files.getUploadURLExternal":
            return {"ok": True, "file_id": "F1",
                    "upload_url": f"http://127.0.0.1:{self.port}/upload/F1"}
        if method == "files.completeUploadExternal":
            files = json.loads(p.get("files", "[]")) if isinstance(p.get("files"), str) \
                else p.get("files", [])
            return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")}
                                          for f in files]}
        if method == "chat.postMessage":
            self.ts = getattr(self, "ts", 1_700_000_000) + 1
            p["_ts"] = f"{self.ts}.000100"
            return {"ok": True, "channel": p.get("channel"), "ts": p["_ts"]}
        if method == "chat.update":
            return {"ok": True, "channel": p.get("channel"), "ts": p.get("ts")}
        if method == "files.info":
            f = self.files.get(p.get("file"))
            if f is None:
                return {"ok": False, "error": "file_not_found"}
            return {"ok": True, "file": {k: v for k, v in f.items() if k != "_data"}}
        if method in ("conversations.history", "conversations.replies"):
            return self.history(method, p)
        if method == "apps.connections.open" and self.socket_url:
            return {"ok": True, "url": self.socket_url}
        if method == "users.info":
            uid = p.get("user")
            return {"ok": True, "user": {"id": uid, "is_admin": uid in self.admins,
                                         "is_owner": False}}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.groups.get(p.get("usergroup"), [])}
        return {"ok": False, "error": "unknown_method"}

    def history(self, method: str, p: dict) -> dict:
        """The channel's messages (or one thread's), newest first, as Slack returns them:
        metadata only with include_all_metadata, in pages of ``limit`` with a cursor."""
        def truthy(v):
            return v in (True, "true", "1", 1)
        msgs = []
        for c in self.of("chat.postMessage"):
            q = c.params
            if q.get("channel") != p.get("channel") or "_ts" not in q:
                continue
            if float(q["_ts"]) < float(p.get("oldest") or 0):
                continue
            thread = q.get("thread_ts")
            if method == "conversations.replies":
                if q["_ts"] != p.get("ts") and thread != p.get("ts"):
                    continue
            elif thread and not truthy(q.get("reply_broadcast")):
                continue        # a thread reply shows in the channel only when broadcast
            m = {"type": "message", "ts": q["_ts"], "text": q.get("text", "")}
            meta = q.get("metadata")
            if isinstance(meta, str):
                meta = json.loads(meta)
            if meta and truthy(p.get("include_all_metadata")):
                m["metadata"] = meta
            msgs.append(m)
        msgs.sort(key=lambda m: float(m["ts"]), reverse=method == "conversations.history")
        start = int(p.get("cursor") or 0)
        limit = int(p.get("limit") or 100)
        page = msgs[start:start + limit]
        more = start + limit < len(msgs)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}
