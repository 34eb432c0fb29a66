"""Live data: Twilio's callbacks and Event Streams, /ingest, the inbox and the applier.

Requests go over real HTTP into the served WSGI app (waitress, port 0), signed with the
twilio library's own RequestValidator; the applier runs as `kpibot serve` runs it, or
step by step where a test needs to see the moment between two steps."""
from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from bot import live as live_mod
from bot.live import ApplierProcess, LiveWorker
from bot.serve import Background, webhook_server
from bot.webhooks import LiveSettings
from metrics import rollup
from metrics.importers import import_file
from metrics.live import events as E
from metrics.live.apply import CALL_RANK, MESSAGE_RANK, Applier, held_summary
from metrics.sources import SourcesFile
from metrics.store import Store

from .conftest import assert_attribution_exact

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "12345"
PUBLIC = "https://kpibot.example.com"
INGEST = "ingest-secret-token"
OUR = "+14155550100"


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


# -- the served app -------------------------------------------------------------------

class Served:
    """The webhook app on a real port, the store it writes and, unless ``manual``, the
    applier thread of `kpibot serve`."""

    def __init__(self, db: Path, manual: bool = False, sources: Path | None = None):
        self.db = db
        Store(db).close()
        self.worker = None if manual else LiveWorker(lambda: Store(db), idle_s=0.05)
        if sources is not None:
            os.environ["KPIBOT_SOURCES"] = str(sources)
        live = LiveSettings(twilio_token=TOKEN, public_url=PUBLIC, ingest_token=INGEST)
        self.server = webhook_server(live, lambda: Store(db), "127.0.0.1", 0, threads=4,
                                     wake=self.worker.wake if self.worker else None)
        self.bg = Background(self.server)
        self.base = f"http://127.0.0.1:{self.server.effective_port}"

    def __enter__(self) -> "Served":
        if self.worker:
            self.worker.start()
        self.bg.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bg.__exit__(*exc)
        if self.worker:
            self.worker.stop()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every acknowledged event is applied."""
        s = Store(self.db)
        try:
            deadline = time.monotonic() + timeout
            while Applier(s).pending():
                assert time.monotonic() < deadline, "events not applied in time"
                time.sleep(0.02)
        finally:
            s.close()


def request(url: str, body: bytes, headers: dict, method: str = "POST") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def twilio_post(app: Served, path: str, form: dict, *, token: str = TOKEN,
                signed_url: str | None = None, signature: str | None = None) -> tuple[int, bytes]:
    """A form callback as Twilio sends it: signed over PUBLIC + path (+ query) and the
    fields."""
    url = signed_url or PUBLIC + path
    sig = signature if signature is not None else \
        RequestValidator(token).compute_signature(url, form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sig:
        headers["X-Twilio-Signature"] = sig
    return request(app.base + path, urllib.parse.urlencode(form).encode(), headers)


def events_post(app: Served, events: list, query: str = "", *, token: str = TOKEN,
                tamper: bytes | None = None, hash_in_url: bool = True) -> tuple[int, bytes]:
    """An Event Streams delivery: a JSON array, signed over the URL with bodySHA256."""
    body = json.dumps(events)
    validator = RequestValidator(token)
    q = query
    if hash_in_url:
        q = (q + "&" if q else "") + "bodySHA256=" + validator.compute_hash(body)
    path = "/twilio/events" + (f"?{q}" if q else "")
    sig = validator.compute_signature(PUBLIC + path, {})
    return request(app.base + path, tamper or body.encode(),
                   {"Content-Type": "application/json", "X-Twilio-Signature": sig})


def ingest(app: Served, rows, token: str = INGEST, ndjson: bool = False) -> tuple[int, dict]:
    body = ("\n".join(json.dumps(r) for r in rows) if ndjson else json.dumps(rows)).encode()
    status, out = request(app.base + "/ingest", body,
                          {"Authorization": f"Bearer {token}",
                           "Content-Type": "application/x-ndjson" if ndjson else
                           "application/json"})
    return status, json.loads(out or b"{}")


def status_form(sid: str, status: str, to: str = phone(1), **extra) -> dict:
    return {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "From": OUR, "To": to, "AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01",
            **extra}


def inbound_form(sid: str, frm: str, body: str, **extra) -> dict:
    return {"MessageSid": sid, "From": frm, "To": OUR, "Body": body, "NumSegments": "1",
            "AccountSid": "AC" + "0" * 32, **extra}


def messages(db: Path) -> dict[str, tuple]:
    s = Store(db)
    try:
        return {k: (st, c) for k, st, c in s.conn.execute(
            "SELECT message_key, status, (SELECT name FROM campaigns WHERE id = campaign_id) "
            "FROM messages")}
    finally:
        s.close()


def inbox_count(db: Path) -> int:
    s = Store(db)
    try:
        return s.inbox.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        s.close()


def assert_rollups_exact(store: Store) -> None:
    """The rollups and reach tables equal a recount from the events."""
    def snapshot():
        return [sorted(store.conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("message_rollup", "call_rollup", "campaign_recipients", "deliveries")]
    kept = snapshot()
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_dirty").fetchone()[0] == 0
    with store.transaction(dry_run=True) as conn:
        rollup.rebuild(conn)
        assert snapshot() == kept


def card(db: Path, campaign: str) -> dict:
    from bot.command import Context, run
    s = Store(db)
    try:
        reply = run(f'"{campaign}"', Context(s))
        assert reply.ok, reply.text
        return {k.removeprefix("sms."): v for k, v in reply.data["metrics"].items()
                if not k.startswith("call.")}
    finally:
        s.close()


@pytest.fixture
def app(tmp_path):
    with Served(tmp_path / "kpibot.db") as a:
        yield a


@pytest.fixture
def manual(tmp_path):
    with Served(tmp_path / "kpibot.db", manual=True) as a:
        yield a


# -- signatures -----------------------------------------------------------------------

def test_twilio_published_test_vectors_hold_for_the_library_we_check_with():
    """The vectors of Twilio's webhook security docs, through the validator the app uses."""
    v = RequestValidator("12345")
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212", "Caller": "+14158675309"}
    assert v.compute_signature(url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert v.validate(url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    body = '{"property": "value", "boolean": true}'
    digest = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert v.compute_hash(body) == digest
    assert v.validate(f"{url}&bodySHA256={digest}", body, "a9nBmqA0ju/hNViExpshrM61xv4=")


def test_published_vector_through_the_served_app(tmp_path):
    """The published form vector, POSTed to the app whose public URL makes the signed URL
    exactly the vector's: accepted; any change to a field, the URL or the token: 403."""
    db = tmp_path / "kpibot.db"
    Store(db).close()
    live = LiveSettings(twilio_token="12345", public_url="https://mycompany.com")
    server = webhook_server(live, lambda: Store(db), "127.0.0.1", 0, threads=2)
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212", "Caller": "+14158675309", "CallStatus": "completed"}
    with Background(server):
        base = f"http://127.0.0.1:{server.effective_port}"
        path = "/twilio/calls/status?foo=1&bar=2"
        sig = RequestValidator("12345").compute_signature("https://mycompany.com" + path, params)
        h = {"X-Twilio-Signature": sig}
        assert request(base + path, urllib.parse.urlencode(params).encode(), h)[0] == 200
        forged = dict(params, CallStatus="busy")
        assert request(base + path, urllib.parse.urlencode(forged).encode(), h)[0] == 403
        assert request(base + "/twilio/calls/status?foo=1&bar=3",
                       urllib.parse.urlencode(params).encode(), h)[0] == 403
    assert inbox_count(db) == 1


@pytest.mark.parametrize("forgery", ["no signature", "wrong token", "another URL",
                                     "http, not https", "a field changed", "a field added",
                                     "campaign changed", "garbage signature"])
def test_forged_callbacks_get_403_and_store_nothing(manual, forgery):
    form = status_form("SM1", "delivered")
    path = "/twilio/messages/status?campaign=spring"
    kw: dict = {}
    if forgery == "no signature":
        kw["signature"] = ""
    elif forgery == "wrong token":
        kw["token"] = "54321"
    elif forgery == "another URL":
        kw["signed_url"] = "https://evil.example.com" + path
    elif forgery == "http, not https":
        kw["signed_url"] = PUBLIC.replace("https", "http") + path
    elif forgery == "garbage signature":
        kw["signature"] = "not-base64-at-all=="
    signed = twilio_post  # signs `form`; then what is sent differs for these:
    if forgery in ("a field changed", "a field added", "campaign changed"):
        sig = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
        sent = dict(form)
        send_path = path
        if forgery == "a field changed":
            sent["MessageStatus"] = "undelivered"
        elif forgery == "a field added":
            sent["ErrorCode"] = "30007"
        else:
            send_path = "/twilio/messages/status?campaign=other"
        status, _ = request(manual.base + send_path, urllib.parse.urlencode(sent).encode(),
                            {"X-Twilio-Signature": sig})
    else:
        status, _ = signed(manual, path, form, **kw)
    assert status == 403
    assert inbox_count(manual.db) == 0


def test_forged_event_streams_deliveries_get_403(manual):
    ev = [_ce("EZ1", "com.twilio.messaging.message.delivered",
              {"messageSid": "SM1", "messageStatus": "DELIVERED", "to": phone(1), "from": OUR})]
    assert events_post(manual, ev, token="54321")[0] == 403
    assert events_post(manual, ev, tamper=json.dumps(ev).replace("DELIVERED", "FAILED")
                       .encode())[0] == 403     # body no longer matches bodySHA256
    assert events_post(manual, ev, hash_in_url=False)[0] == 403
    assert inbox_count(manual.db) == 0
    assert events_post(manual, ev, "campaign=spring")[0] == 200
    assert inbox_count(manual.db) == 1


def test_without_a_token_the_twilio_paths_are_off_and_ingest_too(tmp_path):
    db = tmp_path / "kpibot.db"
    Store(db).close()
    server = webhook_server(LiveSettings(), lambda: Store(db), "127.0.0.1", 0, threads=2)
    with Background(server):
        base = f"http://127.0.0.1:{server.effective_port}"
        form = status_form("SM1", "delivered")
        sig = RequestValidator("").compute_signature(PUBLIC + "/twilio/messages/status", form)
        status, body = request(base + "/twilio/messages/status",
                               urllib.parse.urlencode(form).encode(),
                               {"X-Twilio-Signature": sig})
        assert status == 404 and b"TWILIO_AUTH_TOKEN" in body
        status, body = request(base + "/ingest", b"[]", {"Authorization": "Bearer "})
        assert status == 404 and b"KPIBOT_INGEST_TOKEN" in body
        assert request(base + "/healthz", b"", {}, method="GET")[0] == 200
    assert inbox_count(db) == 0


def test_ingest_needs_the_bearer_token(manual):
    row = {"kind": "message", "campaign": "x", "message_id": "1", "sent_at": "2026-12-01",
           "status": "sent"}
    assert ingest(manual, [row], token="wrong")[0] == 401
    status, _ = request(manual.base + "/ingest", json.dumps([row]).encode(), {})
    assert status == 401
    assert inbox_count(manual.db) == 0


# -- statuses: repeats and every order ------------------------------------------------

SMS_STATUSES = ["queued", "sent", "delivered", "undelivered", "failed", "read"]


def _final(statuses: list[str]) -> str:
    from metrics.importers.values import sms_status
    return max((sms_status(s) for s in statuses), key=MESSAGE_RANK.__getitem__)


@pytest.mark.parametrize("a,b", list(itertools.permutations(SMS_STATUSES, 2)))
def test_every_pair_of_statuses_in_either_order_ends_the_same(tmp_path, a, b):
    """A status only moves forward: a then b ends as b then a, at the higher of the two
    (pending < sent < failed < undelivered < delivered; read is delivered)."""
    store = Store(tmp_path / "k.db")
    evs = E.twilio_message_status(status_form("SM1", a), "spring") + \
        E.twilio_message_status(status_form("SM1", b), "spring")
    store.inbox_put(evs[:1], 1_800_000_000)
    Applier(store).run_once()
    store.inbox_put(evs[1:], 1_800_000_005)
    Applier(store).run_once()
    got = store.conn.execute("SELECT status FROM messages").fetchall()
    assert got == [(_final([a, b]),)]
    assert_rollups_exact(store)
    store.close()


def test_three_statuses_in_every_order_and_batch_split(tmp_path):
    for i, order in enumerate(itertools.permutations(["sent", "delivered", "read"])):
        for split in (1, 2, 3):
            store = Store(tmp_path / f"k{i}{split}.db")
            evs = [e for s in order for e in
                   E.twilio_message_status(status_form("SM1", s), "spring")]
            store.inbox_put(evs[:split], 1_800_000_000)
            Applier(store).run_once()
            store.inbox_put(evs[split:], 1_800_000_001)
            Applier(store).run_once()
            assert store.conn.execute("SELECT status FROM messages").fetchone()[0] == "delivered"
            m = store.conn.execute("SELECT sent, delivered FROM message_rollup WHERE dim = ''"
                                   ).fetchall()
            assert m == [(1, 1)]
            store.close()


@pytest.mark.parametrize("a,b", list(itertools.permutations(
    ["queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed"], 2)))
def test_call_statuses_only_move_forward(tmp_path, a, b):
    from metrics.importers.values import call_status
    store = Store(tmp_path / "k.db")
    for i, st in enumerate((a, b)):
        form = {"CallSid": "CA1", "CallStatus": st, "From": OUR, "To": phone(1),
                "Direction": "outbound-api", "Timestamp": "Tue, 01 Dec 2026 10:00:00 +0000"}
        if st == "completed":
            form["CallDuration"] = "61"
            form["AnsweredBy"] = "human"
        store.inbox_put(E.twilio_call_status(form, "dialer"), 1_800_000_000 + i)
        Applier(store).run_once()
    want = max((call_status(a), call_status(b)), key=CALL_RANK.__getitem__)
    assert store.conn.execute("SELECT status FROM calls").fetchall() == [(want,)]
    assert_rollups_exact(store)
    store.close()


def test_repeated_callbacks_count_once(app):
    for _ in range(3):
        assert twilio_post(app, "/twilio/messages/status?campaign=spring",
                           status_form("SM1", "delivered"))[0] == 200
    assert twilio_post(app, "/twilio/messages/status?campaign=spring",
                       status_form("SM2", "sent", to=phone(2)))[0] == 200
    app.settle()
    assert inbox_count(app.db) == 2
    m = card(app.db, "spring")
    assert (m["sent"]["value"], m["delivery_rate"]["numerator"]) == (2, 1)


def test_an_event_streams_batch_delivered_twice_counts_once(app):
    batch = [
        _ce("EZ1", "com.twilio.messaging.message.sent",
            {"messageSid": "SM1", "messageStatus": "SENT", "to": phone(1), "from": OUR}),
        _ce("EZ2", "com.twilio.messaging.message.delivered",
            {"messageSid": "SM1", "messageStatus": "DELIVERED", "to": phone(1), "from": OUR}),
        _ce("EZ3", "com.twilio.messaging.message.undelivered",
            {"messageSid": "SM2", "messageStatus": "UNDELIVERED", "errorCode": 30003,
             "to": phone(2), "from": OUR}),
        _ce("EZ4", "com.twilio.messaging.inbound-message.received",
            {"messageSid": "SM3", "from": phone(1), "to": OUR, "body": "Stop"}),
        _ce("EZ5", "com.twilio.daptbt.link-shortening.link-clicked",
            {"message_sid": "SM1", "to": phone(1), "link": "https://shop.example/x",
             "click_time": "2026-12-01T10:00:05Z"}),
        _ce("EZ6", "com.twilio.voice.status-callback.call.ringing", {"callSid": "CA1"}),
    ]
    assert events_post(app, batch, "campaign=spring")[0] == 200
    assert events_post(app, list(reversed(batch)), "campaign=spring")[0] == 200
    app.settle()
    assert inbox_count(app.db) == 5          # the voice event is not one kpibot uses
    m = card(app.db, "spring")
    assert m["sent"]["value"] == 2
    assert m["delivery_rate"]["numerator"] == 1
    assert m["opt_out_rate"]["numerator"] == 1
    assert m["ctr"]["numerator"] == 1
    s = Store(app.db)
    assert s.conn.execute("SELECT error_code FROM messages WHERE message_key = 'SM2'"
                          ).fetchone() == ("30003",)
    assert_rollups_exact(s)
    s.close()


# -- campaigns, replies, unassigned ---------------------------------------------------

def test_inbound_stop_is_credited_to_the_message_it_answers(app):
    """Two campaigns message the same number; the STOP goes to the latest one, and
    Twilio's OptOutType counts when the body is a custom keyword."""
    twilio_post(app, "/twilio/messages/status?campaign=spring", status_form("SM1", "delivered"))
    app.settle()
    time.sleep(1.1)     # a later second: the next message is the latest one
    twilio_post(app, "/twilio/messages/status?campaign=autumn", status_form("SM2", "delivered"))
    twilio_post(app, "/twilio/messages/status?campaign=autumn",
                status_form("SM3", "delivered", to=phone(2)))
    app.settle()
    time.sleep(1.1)
    assert twilio_post(app, "/twilio/messages/inbound",
                       inbound_form("SM9", phone(1), "stop"))[0] == 200
    twilio_post(app, "/twilio/messages/inbound",
                inbound_form("SM8", phone(2), "unsubscribe me", OptOutType="STOP"))
    twilio_post(app, "/twilio/messages/inbound", inbound_form("SM7", phone(2), "who is this?"))
    app.settle()
    assert card(app.db, "spring")["opt_out_rate"]["numerator"] == 0
    m = card(app.db, "autumn")
    assert m["opt_out_rate"]["numerator"] == 2
    assert m["response_rate"]["numerator"] == 1
    s = Store(app.db)
    assert s.conn.execute("SELECT COUNT(*) FROM messages WHERE direction = 'inbound' AND "
                          "campaign_id = (SELECT id FROM campaigns WHERE name = 'autumn')"
                          ).fetchone()[0] == 3
    assert_rollups_exact(s)
    s.close()


def test_campaign_comes_from_the_url_then_the_stored_message_then_the_sender(tmp_path, write):
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("tw.csv", "Sid,From,To,Body,Status,SentDate,Direction\n"
                         f"SMold,{OUR},{phone(5)},hi,sent,2026-12-01T09:00:00Z,outbound-api\n"),
                campaign="imported")
    s.close()
    sources = tmp_path / "sources.toml"
    sources.write_text('[campaign_by_sender]\n"+1 (415) 555-0100" = "by-sender"\n'
                       'MG11111111111111111111111111111111 = "by-service"\n')
    with Served(db, sources=sources) as a:
        twilio_post(a, "/twilio/messages/status", status_form("SMold", "delivered"))
        twilio_post(a, "/twilio/messages/status", status_form("SMnew", "delivered", to=phone(6)))
        twilio_post(a, "/twilio/messages/status?campaign=by-url",
                    status_form("SMurl", "delivered", to=phone(7)))
        form = status_form("SMsvc", "sent", to=phone(8), MessagingServiceSid="MG" + "1" * 32)
        form["From"] = "+12025550100"         # a number of the service's pool, not mapped
        twilio_post(a, "/twilio/messages/status", form)
        a.settle()
    got = messages(db)
    assert got == {"SMold": ("delivered", "imported"), "SMnew": ("delivered", "by-sender"),
                   "SMurl": ("delivered", "by-url"), "SMsvc": ("sent", "by-service")}


def test_unassigned_events_are_kept_listed_and_applied_once_a_campaign_is_known(tmp_path):
    db = tmp_path / "kpibot.db"
    sources = tmp_path / "sources.toml"
    with Served(db, sources=sources) as a:
        a.worker.retry_held_s = 0.05
        for i in range(3):
            twilio_post(a, "/twilio/messages/status", status_form(f"SM{i}", "delivered",
                                                                  to=phone(i)))
        twilio_post(a, "/twilio/messages/inbound", inbound_form("SMin", phone(50), "STOP"))
        twilio_post(a, "/twilio/calls/status", {"CallSid": "CA1", "CallStatus": "completed",
                                                "From": OUR, "To": phone(9),
                                                "CallDuration": "30"})
        a.settle()
        assert messages(db) == {}
        out = subprocess.run([sys.executable, "-m", "bot.cli", "list", "--db", str(db)],
                             cwd=ROOT, capture_output=True, text=True)
        assert "Unassigned live events: 5" in out.stdout
        assert "3 message statuses via +14155550100" in out.stdout
        assert "1 reply" in out.stdout and "1 call" in out.stdout
        assert phone(50) not in out.stdout and phone(9) not in out.stdout   # personal data
        sources.write_text(f'[campaign_by_sender]\n"{OUR}" = "spring"\n')
        deadline = time.monotonic() + 10
        while len(messages(db)) < 4:
            assert time.monotonic() < deadline, held_summary(Store(db))
            time.sleep(0.05)
    s = Store(db)
    assert held_summary(s) == []
    assert s.conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 1
    assert_rollups_exact(s)
    s.close()
    assert card(db, "spring")["opt_out_rate"]["numerator"] == 1


def test_a_click_before_its_message_is_kept_and_counts_when_it_arrives(manual, tmp_path):
    s = Store(manual.db)
    click = _ce("EZ9", "com.twilio.daptbt.link-shortening.link-clicked",
                {"message_sid": "SM1", "to": phone(1), "link": "https://x.example",
                 "click_time": "2026-12-01T10:00:00.125Z"})
    assert events_post(manual, [click])[0] == 200
    a = Applier(s)
    assert a.run_once().held == 0
    assert s.conn.execute("SELECT message_key, clicked_at FROM clicks").fetchall() == [
        ("SM1", 1796119200)]
    twilio_post(manual, "/twilio/messages/status?campaign=spring", status_form("SM1", "sent"))
    a.run_once()
    assert s.conn.execute("SELECT clicked FROM messages").fetchone() == (1,)
    assert_rollups_exact(s)
    s.close()


def test_conversions_arrive_live_and_are_credited(app):
    """Messages, a click from Event Streams and orders on /ingest: the orders go to the
    click's message, a delivery, or nowhere (listed); an order that arrives before its
    message is credited when the message does; a repeat counts once, an update updates."""
    rows = [_row(1, sent_at="2026-12-01T10:00:00Z"), _row(2, sent_at="2026-12-01T10:00:00Z")]
    assert ingest(app, rows)[0] == 202
    click = _ce("EZ1", "com.twilio.daptbt.link-shortening.link-clicked",
                {"message_sid": "x1", "to": phone(1), "link": "https://shop.example/a",
                 "click_time": "2026-12-01T10:05:00.000Z"})
    assert events_post(app, [click])[0] == 200
    orders = [
        {"kind": "conversion", "order_id": "A", "converted_at": "2026-12-03T09:00:00Z",
         "revenue": "40.00", "currency": "USD", "type": "sale", "recipient": phone(1)},
        {"kind": "conversion", "order_id": "B", "converted_at": "2026-12-01T12:00:00Z",
         "revenue": "10.00", "currency": "USD", "recipient": phone(2)},
        {"kind": "conversion", "order_id": "C", "converted_at": "2026-12-01T12:00:00Z",
         "revenue": "3.00", "currency": "USD", "type": "lead", "recipient": phone(5)},
        {"kind": "conversion", "order_id": "D", "converted_at": dt_iso(int(time.time()) + 1800),
         "revenue": "5.00", "currency": "USD", "recipient": phone(6)}]
    status, body = ingest(app, orders)
    assert status == 202, body
    assert ingest(app, orders)[1]["repeat"] is True
    app.settle()
    m = card(app.db, "feed")
    assert m["revenue"]["value"] == 50.0 and m["conversion_rate"]["numerator"] == 2
    # D's message is stored after it: a status callback (its time is now, half an hour
    # before the order), first 'sent' (no credit), then 'delivered'
    twilio_post(app, "/twilio/messages/status?campaign=feed",
                status_form("x6", "sent", to=phone(6)))
    app.settle()
    assert card(app.db, "feed")["revenue"]["value"] == 50.0
    twilio_post(app, "/twilio/messages/status?campaign=feed",
                status_form("x6", "delivered", to=phone(6)))
    app.settle()
    m = card(app.db, "feed")
    assert m["revenue"]["value"] == 55.0
    orders[0]["revenue"] = "45.00"
    assert ingest(app, orders[:1])[0] == 202
    app.settle()
    m = card(app.db, "feed")
    assert m["revenue"]["value"] == 60.0 and m["ctr"]["numerator"] == 1
    from bot.command import Context, run
    s = Store(app.db)
    listed = run("list", Context(s))
    assert "1 lead, 3.00 USD: no click or delivery to the customer" in listed.text
    assert_rollups_exact(s)
    assert_attribution_exact(s)
    s.close()


# -- /ingest --------------------------------------------------------------------------

def _row(i: int, **kw) -> dict:
    return {"kind": "message", "campaign": "feed", "message_id": f"x{i}",
            "sent_at": "2026-12-01T10:00:00Z", "recipient": phone(i), "status": "delivered",
            "cost": "0.0079", "currency": "USD", **kw}


def test_an_ingest_batch_with_one_bad_row_gets_422_and_stores_nothing(manual):
    rows = [_row(i) for i in range(5)]
    rows[3]["sent_at"] = "yesterday-ish"
    status, body = ingest(manual, rows)
    assert status == 422
    assert (body["row"], body["column"]) == (4, "sent_at")
    assert "not a date or time" in body["reason"]
    rows[3]["sent_at"] = "2026-12-01T10:00:00Z"
    rows[1]["status"] = "teleported"
    rows[4]["recipient"] = "call me maybe"
    status, body = ingest(manual, rows, ndjson=True)
    assert status == 422 and [e["row"] for e in body["errors"]] == [2, 5]
    assert body["errors"][0]["column"] == "status"
    assert body["errors"][1]["column"] == "recipient"
    assert "call me maybe" not in json.dumps(body)        # a number is never echoed
    assert inbox_count(manual.db) == 0
    for bad in ([{"kind": "sms"}], [{"kind": "message", "campaign": "x"}], ["not an object"],
                [{"kind": "conversion", "order_id": "1"}],
                [dict(_row(1), segment={"nested": 1})]):
        status, body = ingest(manual, bad)
        assert status == 422 and body["row"] == 1, (bad, body)
    assert inbox_count(manual.db) == 0


def test_an_ingest_batch_lands_whole_and_a_repeat_counts_once(app):
    rows = [_row(i) for i in range(50)] + [
        {"kind": "call", "campaign": "dial", "call_id": "c1", "started_at": "2026-12-01 10:00",
         "status": "completed", "duration_s": 42, "answered_by": "human"},
        {"kind": "click", "message_sid": "x3", "to": phone(3), "link": "https://x",
         "click_time": "2026-12-01T10:01:00Z"},
        _row(99, direction="inbound", body="STOP", status="received", recipient=phone(7))]
    status, body = ingest(app, rows)
    assert status == 202 and body == {"accepted": 53, "repeat": False}
    assert ingest(app, rows)[1]["repeat"] is True
    app.settle()
    m = card(app.db, "feed")
    assert m["sent"]["value"] == 50 and m["ctr"]["numerator"] == 1
    assert m["opt_out_rate"]["numerator"] == 1          # credited to x7
    assert m["cost"]["value"] == pytest.approx(51 * 0.0079)   # the reply has a cost too
    s = Store(app.db)
    assert s.conn.execute("SELECT duration_s FROM calls").fetchone() == (42.0,)
    assert_rollups_exact(s)
    s.close()


# -- durability -----------------------------------------------------------------------

def test_acknowledged_but_not_applied_events_are_applied_after_a_restart(manual):
    for i in range(20):
        assert twilio_post(manual, "/twilio/messages/status?campaign=spring",
                           status_form(f"SM{i}", "delivered", to=phone(i)))[0] == 200
    assert messages(manual.db) == {}                  # acknowledged, not applied: "crash"
    s = Store(manual.db)                              # a new process
    assert Applier(s).run_once().events == 20
    assert len(messages(manual.db)) == 20
    s.close()


def test_a_crash_inside_an_apply_applies_the_batch_once_later(manual, monkeypatch):
    for i in range(10):
        twilio_post(manual, "/twilio/messages/status?campaign=spring",
                    status_form(f"SM{i}", "delivered", to=phone(i)))
    s = Store(manual.db)

    def boom(self, old, new):
        raise KeyboardInterrupt("killed mid-apply")
    monkeypatch.setattr(rollup.Rollup, "apply_delta", boom)
    with pytest.raises(KeyboardInterrupt):
        Applier(s).run_once()
    assert messages(manual.db) == {} and Applier(s).applied_upto() == 0
    monkeypatch.undo()
    Applier(s).run_once()
    Applier(s).run_once()
    assert card(manual.db, "spring")["sent"]["value"] == 10
    assert_rollups_exact(s)
    s.close()


def test_callbacks_are_acknowledged_while_an_import_holds_the_store(app):
    """An import holds the main database's write lock for its whole run: callbacks are
    still acknowledged at once (they go to the inbox), and applied once it ends."""
    import sqlite3
    lock = sqlite3.connect(app.db, timeout=1)
    lock.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        for i in range(20):
            assert twilio_post(app, "/twilio/messages/status?campaign=spring",
                               status_form(f"SM{i}", "delivered", to=phone(i)))[0] == 200
        assert time.monotonic() - t0 < 5
        time.sleep(0.3)
        assert messages(app.db) == {}
    finally:
        lock.rollback()
        lock.close()
    app.worker.wake()
    app.settle(timeout=40)
    assert card(app.db, "spring")["sent"]["value"] == 20


def test_kill_9_loses_nothing_acknowledged_and_repeats_count_once(tmp_path):
    """`kpibot serve` killed with SIGKILL while callbacks pour in: every acknowledged
    event is there after a restart, and the provider's retries of the unacknowledged ones
    (and of some acknowledged ones) count once."""
    from .test_slack import SECRET, TOKEN as SLACK_TOKEN
    from .fake_slack import FakeSlack
    db = tmp_path / "kpibot.db"
    Store(db).close()
    acked: set[str] = set()

    def start(fake):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": fake.api_url, "KPIBOT_DB": str(db),
               "TWILIO_AUTH_TOKEN": TOKEN, "KPIBOT_PUBLIC_URL": PUBLIC}
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True)
        line = ""
        while "listening on" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "kpibot serve exited"
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        return proc, type("A", (), {"base": f"http://127.0.0.1:{port}"})

    def send(a, i):
        try:
            status, _ = twilio_post(a, "/twilio/messages/status?campaign=spring",
                                    status_form(f"SM{i}", "delivered", to=phone(i)))
        except (OSError, http.client.HTTPException):    # killed mid-answer: not acknowledged
            return
        if status == 200:
            acked.add(f"SM{i}")

    with FakeSlack() as fake:
        proc, a = start(fake)
        threads = [threading.Thread(target=lambda k=k: [send(a, i) for i in range(k, 400, 4)])
                   for k in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 100:
            time.sleep(0.005)
        (applier,) = _children(proc.pid)          # the applier process of kpibot serve
        os.kill(proc.pid, signal.SIGKILL)
        for t in threads:
            t.join()
        proc.wait()
        _gone(applier, 15)           # orphaned, it sees its pipe close and ends by itself
        assert 100 <= len(acked) < 400
        got = set(messages(db)) | _inbox_sids(db)
        assert acked <= got                   # nothing acknowledged is lost
        proc, a = start(fake)
        try:
            for i in range(400):              # the provider retries everything (at least once)
                send(a, i)
            deadline = time.monotonic() + 20
            while len(messages(db)) < 400:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(10)
    assert card(db, "spring")["sent"]["value"] == 400
    s = Store(db)
    assert_rollups_exact(s)
    s.close()


def _children(pid: int) -> list[int]:
    deadline = time.monotonic() + 10
    while True:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


def _gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":          # ended; its parent (this test run) has not reaped it
            return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def test_the_applier_process_applies_reports_restarts_and_stops(tmp_path, monkeypatch):
    """The applier of `kpibot serve` in a process of its own: woken through its pipe, it
    applies what the inbox holds and names the campaigns it changed; killed, it is started
    again and goes on; stopped, it ends."""
    monkeypatch.setattr(live_mod, "RESTART_S", (0.1, 0.5))
    db = tmp_path / "kpibot.db"
    s = Store(db)
    heard: list[set[int]] = []
    ap = ApplierProcess(db, on_applied=heard.append).start()
    try:
        for i in range(20):
            s.inbox_put(E.twilio_message_status(status_form(f"SM{i}", "delivered",
                                                            to=phone(i)), "spring"), 1_800_000_000)
        ap.wake()
        deadline = time.monotonic() + 20
        while len(messages(db)) < 20 or not heard:
            assert time.monotonic() < deadline, "the applier process applied nothing"
            time.sleep(0.05)
        (spring,) = s.conn.execute("SELECT id FROM campaigns WHERE name = 'spring'").fetchone()
        assert heard[0] == {spring}
        first = ap.proc.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while ap.proc.pid == first:
            assert time.monotonic() < deadline, "the applier was not started again"
            time.sleep(0.05)
        for i in range(20, 30):
            s.inbox_put(E.twilio_message_status(status_form(f"SM{i}", "delivered",
                                                            to=phone(i)), "spring"), 1_800_000_001)
        ap.wake()
        while len(messages(db)) < 30:
            assert time.monotonic() < deadline, "the new applier process applied nothing"
            time.sleep(0.05)
    finally:
        ap.stop()
    assert ap.proc.poll() is not None
    assert card(db, "spring")["sent"]["value"] == 30
    assert_rollups_exact(s)
    s.close()


def _inbox_sids(db: Path) -> set[str]:
    s = Store(db)
    try:
        return {json.loads(b)["sid"] for (b,) in s.inbox.execute("SELECT body FROM events")}
    finally:
        s.close()


# -- rollups under a random stream ----------------------------------------------------

def test_rollups_stay_exact_under_a_random_stream_with_imports_between(tmp_path, write):
    rng = random.Random(7)
    store = Store(tmp_path / "k.db")
    applier = Applier(store, SourcesFile(tmp_path / "none.toml"))
    t = 1_800_000_000
    for round_ in range(6):
        evs = []
        for _ in range(150):
            sid = f"SM{rng.randrange(120)}"
            to = phone(rng.randrange(40))
            kind = rng.random()
            if kind < 0.7:
                st = rng.choice(SMS_STATUSES)
                evs += E.twilio_message_status(status_form(sid, st, to=to),
                                               rng.choice(["a", "b", None]))
            elif kind < 0.85:
                evs += E.twilio_inbound(inbound_form(f"IN{rng.randrange(10**6)}", to,
                                                     rng.choice(["STOP", "thanks", "HELP"])))
            elif kind < 0.95:
                evs += E.cloud_events([_ce(f"EZ{rng.randrange(10**6)}",
                                           "com.twilio.daptbt.link-shortening.link-clicked",
                                           {"message_sid": sid, "to": to, "link": "l",
                                            "click_time": dt_iso(t - rng.randrange(7 * 86400))
                                            })])[0]
            else:       # an order, new or a later copy of one (with another amount)
                evs += E.ingest_events([{
                    "kind": "conversion", "order_id": f"o{rng.randrange(60)}",
                    "converted_at": dt_iso(t + rng.randrange(-3 * 86400, 3 * 86400)),
                    "revenue": f"{rng.randrange(1, 9999) / 100:.2f}", "recipient": to,
                    "message_id": sid if rng.random() < 0.1 else ""}], "UTC")
        store.inbox_put(evs, t)
        t += 400
        while applier.run_once(limit=rng.choice([7, 50, 500])).events:
            pass
        applier.retry_held(force=True)
        assert_rollups_exact(store)
        assert_attribution_exact(store)
        if round_ == 2:      # an import in between moves some messages on
            import_file(store, write("tw.csv", "Sid,From,To,Body,Status,SentDate,Direction\n"
                                     + "".join(f"SM{i},{OUR},{phone(i % 40)},hi,sent,"
                                               f"2027-01-0{1 + i % 5}T09:00:00Z,outbound-api\n"
                                               for i in range(0, 120, 3))),
                        campaign="a")
            assert_rollups_exact(store)
            assert_attribution_exact(store)
    assert store.conn.execute("SELECT COUNT(DISTINCT how) FROM conversions").fetchone()[0] >= 2
    store.close()


def dt_iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- helpers ----------------------------------------------------------------------------

def _ce(id_: str, type_: str, data: dict) -> dict:
    return {"specversion": "1.0", "type": type_, "source": "/2010-04-01/Accounts/AC0/Messages",
            "id": id_, "dataschema": "https://events-schemas.twilio.com/x/1",
            "datacontenttype": "application/json", "time": "2026-12-01T10:00:00.000Z",
            "data": data}


# -- reconciliation with Twilio's REST API ------------------------------------------------

def test_sync_pages_the_lists_retries_a_429_and_fills_what_callbacks_missed(manual):
    from metrics.live.sync import sync_twilio, twilio_client
    from .fake_twilio import ACCOUNT, TOKEN as TW_TOKEN, FakeTwilio
    now = int(time.time())
    # callbacks saw SM0 delivered and SM1 sent; they missed everything else
    twilio_post(manual, "/twilio/messages/status?campaign=spring",
                status_form("SM0", "delivered", to=phone(0)))
    twilio_post(manual, "/twilio/messages/status?campaign=spring",
                status_form("SM1", "sent", to=phone(1)))
    s = Store(manual.db)
    applier = Applier(s)
    applier.run_once()
    with FakeTwilio() as tw:
        for i in range(2_500):
            tw.add_message(f"SM{i}", now - 3600 + i, "sent" if i == 0 else
                           "delivered" if i % 10 else "undelivered", OUR, phone(i % 900),
                           price="-0.00790", error_code=None if i % 10 else 30003)
        tw.add_message("SMold", now - 5 * 86400, "delivered", OUR, phone(1))   # before --since
        tw.add_message("SMin", now - 60, "received", phone(5), OUR, direction="inbound",
                       body="STOP")
        for i in range(30):
            tw.add_call(f"CA{i}", now - 1800 + i, "completed", OUR, phone(i), 40 + i,
                        answered_by="human", price="-0.0130")
        tw.fail[2] = (429, {"Retry-After": "3"})
        tw.fail[3] = (503, {})
        waits = []
        client = twilio_client(ACCOUNT, TW_TOKEN, tw.url)
        since = dt_since(now - 48 * 3600)
        r = sync_twilio(s, client, since, campaign="spring", page_size=1000, sleep=waits.append)
        assert (r.messages, r.calls, r.retries) == (2_501, 30, 2)
        assert waits[0] == 3 and len(waits) == 2      # Retry-After honoured
        assert r.pages == 3 + 1                       # 2,501 messages, 30 calls
        assert any("Page=2" in p for p in tw.requests)
        while applier.run_once().events:
            pass
        assert sync_twilio(s, client, since, campaign="spring", sleep=waits.append).queued == 0
    got = messages(manual.db)
    assert len(got) == 2_501 and "SMold" not in got
    assert got["SM0"] == ("delivered", "spring")        # REST's older 'sent' moved nothing
    assert got["SM1"] == ("delivered", "spring")        # the missed 'delivered' filled in
    m = card(manual.db, "spring")
    assert m["sent"]["value"] == 2_500
    assert m["delivery_rate"]["numerator"] == 2_250 + 1   # SM0: the callback said delivered
    assert m["cost"]["value"] == pytest.approx(2_500 * 0.0079)     # the reply has no price
    assert m["opt_out_rate"]["numerator"] == 1
    row = s.conn.execute("SELECT sent_at, segments, currency FROM messages "
                         "WHERE message_key = 'SM0'").fetchone()
    assert row == (now - 3600, 1, "USD")                  # the time Twilio sent it
    assert s.conn.execute("SELECT COUNT(*), SUM(duration_s) FROM calls").fetchone() == \
        (30, sum(40 + i for i in range(30)))
    assert_rollups_exact(s)
    s.close()


def dt_since(ts: int):
    import datetime as dt
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def test_kpibot_sync_twilio_as_a_user_runs_it(tmp_path):
    from .fake_twilio import ACCOUNT, TOKEN as TW_TOKEN, FakeTwilio
    db = tmp_path / "kpibot.db"
    sources = tmp_path / "sources.toml"
    sources.write_text(f'[campaign_by_sender]\n"{OUR}" = "spring"\n')
    now = int(time.time())
    env = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TW_TOKEN,
           "KPIBOT_SOURCES": str(sources)}
    with FakeTwilio() as tw:
        for i in range(5):
            tw.add_message(f"SM{i}", now - 7200, "delivered", OUR, phone(i))
        tw.add_message("SMx", now - 7200, "delivered", "+12025550199", phone(9))
        env["KPIBOT_TWILIO_API_URL"] = tw.url
        run = subprocess.run([sys.executable, "-m", "bot.cli", "sync", "twilio", "--since",
                              "48h", "--db", str(db)], cwd=ROOT, env=env, capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
        assert "read 6 messages and 0 calls" in run.stdout
        assert "1 event(s) have no campaign yet" in run.stdout
        bad = {**env, "TWILIO_AUTH_TOKEN": "wrong"}
        run = subprocess.run([sys.executable, "-m", "bot.cli", "sync", "twilio", "--db",
                              str(db)], cwd=ROOT, env=bad, capture_output=True, text=True)
        assert run.returncode == 1 and "Twilio answered 401" in run.stderr
        assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "bot.cli", "sync", "twilio", "--db", str(db)],
                         cwd=ROOT, env={k: v for k, v in env.items()
                                        if k != "TWILIO_ACCOUNT_SID"},
                         capture_output=True, text=True)
    assert run.returncode == 1 and "needs TWILIO_ACCOUNT_SID" in run.stderr
    assert len(messages(db)) == 5


def test_a_bulkexport_day_file_imports_as_twilio_bulk(store, tmp_path):
    import gzip as gz
    path = tmp_path / "2026-11-30.json.gz"
    with gz.open(path, "wt") as f:
        for i in range(50):
            f.write(json.dumps({
                "sid": f"SM{i}", "account_sid": "AC0", "date_created": "2026-11-30T09:59:00Z",
                "date_sent": "2026-11-30T10:00:00Z", "date_updated": "2026-11-30T10:00:09Z",
                "status": "delivered" if i % 5 else "undelivered", "from": OUR,
                "to": phone(i), "body": "Sale", "num_segments": "2", "num_media": "0",
                "direction": "outbound-api", "price": "-0.01580",
                "error_code": None if i % 5 else 30003,
                "messaging_service_sid": "MG" + "1" * 32}) + "\n")
    r = import_file(store, path, campaign="bulk")          # detected: a gzip file
    assert (r.rows_new, r.format) == (50, "twilio-bulk (twilio-messages)")
    r = import_file(store, path, campaign="bulk", format="twilio-bulk")
    assert r.rows_new == 0 and r.seen_before
    m = store.conn.execute("SELECT COUNT(*), SUM(status = 'delivered'), SUM(cost_micros), "
                           "SUM(segments) FROM messages").fetchone()
    assert m == (50, 40, 50 * 15_800, 100)
    assert store.conn.execute("SELECT file FROM imports").fetchall()[0][0] == str(path)


# -- the whole story: nobody imports, Slack follows ---------------------------------------

def test_with_nobody_importing_kpi_and_the_opt_out_alert_follow_the_campaign(tmp_path):
    """`kpibot serve` with Twilio pointed at it: the card follows the callbacks, and the
    opt-out alert posts while the spike happens, then once more when it is over."""
    from metrics import alerts
    from .fake_slack import FakeSlack
    from .test_slack import SECRET, TOKEN as SLACK_TOKEN, post, slash
    db = tmp_path / "kpibot.db"
    s = Store(db)
    alerts.add_rule(s, "*", "opt_out_rate", ">", 0.02, recovery=0.01, window_s=86400,
                    min_volume=50, channel="CALERTS")
    s.close()
    with FakeSlack() as fake:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": fake.api_url, "KPIBOT_DB": str(db), "TWILIO_AUTH_TOKEN": TOKEN,
               "KPIBOT_PUBLIC_URL": PUBLIC}
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "listening on" not in line:
                line = proc.stderr.readline()
                assert line or proc.poll() is None, "kpibot serve exited"
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            a = type("A", (), {"base": f"http://127.0.0.1:{port}"})
            for i in range(100):
                assert twilio_post(a, "/twilio/messages/status?campaign=spring-sale",
                                   status_form(f"SM{i}", "delivered", to=phone(i)))[0] == 200
            for i in range(8):
                assert twilio_post(a, "/twilio/messages/inbound",
                                   inbound_form(f"IN{i}", phone(i), "STOP"))[0] == 200
            (fire,) = fake.wait_for("chat.postMessage", timeout=30)
            assert fire.params["channel"] == "CALERTS"
            assert "spring-sale opt_out_rate is 8.00% (8 / 100)" in fire.params["text"]
            status, _ = post(f"{a.base}/slack/events", slash(fake, "spring-sale"))
            assert status == 200
            (resp,) = fake.wait_for("response")
            assert "Opt-out rate" in resp.params["text"] and "8 / 100" in resp.params["text"]
            for i in range(100, 1_000):           # the campaign goes on; opt-outs stay at 8
                twilio_post(a, "/twilio/messages/status?campaign=spring-sale",
                            status_form(f"SM{i}", "delivered", to=phone(i)))
            _, recovered = fake.wait_for("chat.postMessage", count=2, timeout=60)
            assert recovered.params["text"].startswith("✅ Recovered: spring-sale opt_out_rate "
                                                       "is 0.80% (8 / 1,000)")
            assert recovered.params["thread_ts"]
        finally:
            proc.terminate()
            proc.wait(10)


def test_an_event_that_cannot_be_applied_is_held_and_the_rest_go_on(manual, monkeypatch):
    """A bug or a refused total in one event must not stop every event behind it."""
    for i in range(5):
        twilio_post(manual, "/twilio/messages/status?campaign=spring",
                    status_form(f"SM{i}", "delivered", to=phone(i)))
    from metrics.live import apply as A
    real = A._Batch._status

    def poisoned(self, at, b):
        if b["sid"] == "SM2":
            raise ZeroDivisionError("a bug")
        return real(self, at, b)
    monkeypatch.setattr(A._Batch, "_status", poisoned)
    s = Store(manual.db)
    applier = Applier(s)
    while applier.run_once().events:
        pass
    assert sorted(messages(manual.db)) == ["SM0", "SM1", "SM3", "SM4"]
    (held,) = held_summary(s)
    assert "could not be applied" in held["reason"] or "unreadable event" in held["reason"]
    monkeypatch.setattr(A._Batch, "_status", real)
    assert applier.retry_held(force=True).released == 1
    assert len(messages(manual.db)) == 5
    assert_rollups_exact(s)
    s.close()


def test_a_new_inbox_is_read_from_its_start(manual):
    """The inbox database deleted (or restored from another day): the main database's
    "applied up to N" names the inbox it counted, so new events are not skipped."""
    for i in range(3):
        twilio_post(manual, "/twilio/messages/status?campaign=spring",
                    status_form(f"SM{i}", "delivered", to=phone(i)))
    s = Store(manual.db)
    Applier(s).run_once()
    s.close()
    manual.__exit__(None, None, None)
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(manual.db).replace(".db", ".inbox.db") + suffix)
        if p.exists():
            p.unlink()
    s = Store(manual.db)
    s.inbox_put(E.twilio_message_status(status_form("SM9", "sent", to=phone(9)), "spring"),
                int(time.time()))
    assert Applier(s).pending() == 1
    Applier(s).run_once()
    assert "SM9" in messages(manual.db)
    s.close()


def test_extra_ingest_fields_are_attributes_to_break_down_by(app):
    rows = [_row(i, store_region=["north", "south"][i % 2]) for i in range(10)]
    assert ingest(app, rows)[0] == 202
    app.settle()
    from bot.command import Context, run
    s = Store(app.db)
    reply = run('"feed" by store_region', Context(s))
    assert reply.ok, reply.text
    assert {b["store_region"] for b in reply.data["breakdown"]} == {"north", "south"}
    s.close()


def test_a_twilio_export_takes_its_campaigns_from_the_sources_file(store, write, tmp_path,
                                                                   monkeypatch):
    csv = write("tw.csv", "Sid,From,To,Body,Status,SentDate,Direction\n"
                f"SM1,{OUR},{phone(1)},hi,delivered,2026-12-01T09:00:00Z,outbound-api\n")
    sources = tmp_path / "sources.toml"
    monkeypatch.setenv("KPIBOT_SOURCES", str(sources))
    sources.write_text("[campaign_by_sender\n")
    from metrics.errors import ImportRejected
    with pytest.raises(ImportRejected, match="could not be read: sources.toml is not valid TOML"):
        import_file(store, csv)
    sources.write_text(f'[campaign_by_sender]\n"{OUR}" = "from-sources"\n')
    assert import_file(store, csv).campaigns == ["from-sources"]


def test_replies_find_their_message_whatever_the_order_and_follow_it(manual):
    """As an import credits them: a reply stored before the message it answers (the
    message came later, by a sync), and a message moved to another campaign with its
    reply; a later copy of the message on /ingest keeps what the reply earned."""
    now = int(time.time())
    s = Store(manual.db)
    a = Applier(s)
    twilio_post(manual, "/twilio/messages/inbound?campaign=a", inbound_form("IN1", phone(1), "thanks"))
    a.run_once()
    rec = {"t": "record", "kind": "message", "sid": "SM1", "status": "delivered",
           "sent": dt_since(now - 600).isoformat(), "from": OUR, "to": phone(1), "body": "",
           "segments": "1", "error": "", "price": "", "price_unit": "",
           "direction": "outbound-api", "service": "", "campaign": "a"}
    s.inbox_put([("rec1", "twilio-sync", json.dumps(rec))], now)
    a.run_once()
    row = s.conn.execute("SELECT replied, id FROM messages WHERE message_key = 'SM1'").fetchone()
    assert row[0] == 1
    assert s.conn.execute("SELECT reply_to FROM messages WHERE message_key = 'IN1'"
                          ).fetchone() == (row[1],)
    twilio_post(manual, "/twilio/messages/status?campaign=b", status_form("SM1", "read"))
    a.run_once()
    assert messages(manual.db)["IN1"][1] == "b"
    status, _ = ingest(manual, [{"kind": "message", "campaign": "b", "message_id": "SM1",
                                 "sent_at": dt_since(now - 600).isoformat(),
                                 "recipient": phone(1), "status": "delivered", "replied": 0}])
    assert status == 202
    a.run_once()
    assert s.conn.execute("SELECT replied FROM messages WHERE message_key = 'SM1'"
                          ).fetchone() == (1,)
    assert_rollups_exact(s)
    s.close()


def test_odd_but_signed_payloads_get_4xx_or_are_kept_never_500(manual):
    deep = "[" * 100_000
    for body in (deep, '[{"n": ' + "9" * 5000 + "}]", '[{"kind": "message", "x": "\\ud800"}]'):
        status, _ = request(manual.base + "/ingest", body.encode(),
                            {"Authorization": f"Bearer {INGEST}"})
        assert status in (400, 422), body[:30]
    good = _ce("EZ1", "com.twilio.messaging.message.delivered",
               {"messageSid": "SM1", "to": phone(1), "from": OUR})
    odd = [{"type": "com.twilio.voice.x", "data": None}, "not an object",
           _ce("EZ2", "com.twilio.messaging.inbound-message.received",
               {"messageSid": "SM2", "from": phone(2), "to": OUR, "body": "hi \ud800"}),
           good]
    body = json.dumps(odd)          # a lone surrogate, escaped as JSON allows
    v = RequestValidator(TOKEN)
    q = "bodySHA256=" + v.compute_hash(body)
    sig = v.compute_signature(PUBLIC + "/twilio/events?" + q, {})
    status, _ = request(manual.base + "/twilio/events?" + q, body.encode(),
                        {"X-Twilio-Signature": sig})
    assert status == 200
    s = Store(manual.db)
    Applier(s).run_once()
    held = {h["what"]: h["reason"] for h in held_summary(s)}
    assert set(held) == {"message status", "unreadable event"}     # kept, both, not lost
    assert "not valid Unicode" in held["unreadable event"]
    assert inbox_count(manual.db) == 2
    s.close()


# -- alert checks after live events ------------------------------------------------------

def test_every_nudge_is_followed_by_an_alert_check_that_starts_after_it(monkeypatch):
    """Events applied while a check is due, or running, still get a check of their own
    (at most one every NUDGE_EVERY_S), which starts in a later second than theirs (a
    check counts up to the second it starts in, that one excluded); nudges before a
    check starts share it."""
    import datetime as dt

    from apscheduler.schedulers.background import BackgroundScheduler

    from bot import scheduler as S
    monkeypatch.setattr(S, "NUDGE_EVERY_S", 0.3)
    starts: list[float] = []
    release = threading.Event()

    def check(store_factory, client):
        starts.append(time.time())
        if len(starts) == 1:
            release.wait(5)           # the first check is still running when events come
    monkeypatch.setattr(S, "_alerts_job", check)
    sched = BackgroundScheduler(timezone=dt.timezone.utc)
    # the regular job, due now: what a nudge used to take as "already asked for"
    sched.add_job(check, "interval", seconds=3600, id="alerts", args=[None, None],
                  next_run_time=dt.datetime.now(dt.timezone.utc))
    sched.start()
    try:
        nudges = [time.time()]
        S.nudge_alerts(sched)
        deadline = time.monotonic() + 8
        while len(starts) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(3):                     # events while the first check runs
            nudges.append(time.time())
            S.nudge_alerts(sched)
            time.sleep(0.02)
        release.set()
        while not starts or max(starts) < nudges[-1]:
            assert time.monotonic() < deadline, f"no check after the last nudge: {starts}"
            time.sleep(0.01)
        time.sleep(0.5)
        for n in nudges:
            assert any(int(s) > int(n) for s in starts)
        assert len(starts) <= 4               # nudges before a check starts share it
    finally:
        sched.shutdown(wait=False)
