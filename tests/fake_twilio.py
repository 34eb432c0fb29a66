"""A local stand-in for Twilio's REST API, enough for `kpibot sync twilio`: the Messages
and Calls lists of one account, with Twilio's paging (``next_page_uri``), its date
filters, HTTP basic auth, and scripted failures (a 429 with Retry-After, a 500)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

ACCOUNT = "AC" + "a" * 32
TOKEN = "twilio-auth-token"


def rfc2822(ts: int) -> str:
    return format_datetime(dt.datetime.fromtimestamp(ts, dt.timezone.utc), usegmt=True)


class FakeTwilio:
    def __init__(self):
        self.messages: list[dict] = []
        self.calls: list[dict] = []
        self.requests: list[str] = []
        self.fail: dict[int, tuple[int, dict]] = {}    # request number -> (status, headers)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                n = len(fake.requests)
                auth = self.headers.get("Authorization", "")
                want = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
                if auth != want:
                    return self._send(401, {"code": 20003, "message": "Authenticate"})
                if n in fake.fail:
                    status, headers = fake.fail[n]
                    return self._send(status, {"code": 20429, "message": "Too Many Requests"},
                                      headers)
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json":
                    rows, key, field = fake.messages, "messages", "DateSent>"
                elif url.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json":
                    rows, key, field = fake.calls, "calls", "StartTime>"
                else:
                    return self._send(404, {"code": 20404, "message": "not found"})
                since = q.get(field)
                if since:
                    start = dt.datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
                    rows = [r for r in rows if r["_at"] >= start]
                size = int(q.get("PageSize", 50))
                page = int(q.get("Page", 0))
                chunk = rows[page * size:(page + 1) * size]
                nxt = None
                if (page + 1) * size < len(rows):
                    nq = {k: v for k, v in q.items() if k not in ("Page", "PageToken")}
                    nq.update(Page=page + 1, PageToken=f"PA{page + 1}")
                    nxt = url.path + "?" + urlencode(nq)
                self._send(200, {key: [{k: v for k, v in r.items() if k != "_at"}
                                       for r in chunk],
                                 "page": page, "page_size": size, "next_page_uri": nxt,
                                 "first_page_uri": url.path, "previous_page_uri": None,
                                 "start": page * size, "end": page * size + len(chunk),
                                 "uri": self.path})

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "FakeTwilio":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_message(self, sid: str, at: int, status: str, frm: str, to: str,
                    direction: str = "outbound-api", body: str = "hi", price: str | None = None,
                    error_code: int | None = None, service: str | None = None) -> None:
        self.messages.append({
            "sid": sid, "account_sid": ACCOUNT, "date_created": rfc2822(at - 1),
            "date_sent": rfc2822(at), "date_updated": rfc2822(at + 5), "status": status,
            "from": frm, "to": to, "body": body, "num_segments": "1", "num_media": "0",
            "direction": direction, "price": price, "price_unit": "USD" if price else None,
            "error_code": error_code, "error_message": None, "api_version": "2010-04-01",
            "messaging_service_sid": service, "uri": f"/Messages/{sid}.json", "_at": at})

    def add_call(self, sid: str, at: int, status: str, frm: str, to: str, duration: int,
                 answered_by: str | None = None, price: str | None = None) -> None:
        self.calls.append({
            "sid": sid, "account_sid": ACCOUNT, "date_created": rfc2822(at - 2),
            "start_time": rfc2822(at), "end_time": rfc2822(at + duration), "status": status,
            "from": frm, "to": to, "duration": str(duration), "direction": "outbound-api",
            "answered_by": answered_by, "price": price, "price_unit": "USD" if price else None,
            "uri": f"/Calls/{sid}.json", "_at": at})
