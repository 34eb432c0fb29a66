"""The Slack app end to end, over real HTTP: signed form posts into the served app
(waitress, port 0), and the real WebClient talking to a local server that plays Slack's
Web API and response_urls (tests/fake_slack.py), recording every call."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from bot.deps import COMMAND_SCOPE, EVENT_SCOPES, METHOD_SCOPES, Settings
from bot.command import COMMANDS, USAGE
from bot.serve import Background, ServeError, check, http_server
from metrics.importers import import_file
from metrics.store import Store

from .fake_slack import FakeSlack
from .test_kpis import CALLS, SMS

ROOT = Path(__file__).resolve().parents[1]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-1234-5678-test-token"


@pytest.fixture
def served(tmp_path, write):
    """(fake Slack, URL of the served app, db path), with the test fixtures imported."""
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    import_file(s, write("calls.csv", CALLS))
    s.close()
    with FakeSlack(admins={"UADMIN"}, groups={"SOPS": ["UOPS"]}) as fake, \
            _serve(fake, db, admins=frozenset()) as app:
        yield fake, app.url, db, app.server


def _serve(fake, db, admins) -> Background:
    settings = Settings(bot_token=TOKEN, signing_secret=SECRET, api_url=fake.api_url,
                        admins=admins, timeout=5)
    return Background(http_server(settings, lambda: Store(db), "127.0.0.1", 0, threads=4))


def sign(body: str, ts: int | None = None, secret: str = SECRET) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}",
            "Content-Type": "application/x-www-form-urlencoded"}


def post(url: str, form: dict, headers: dict | None = None, **sign_args) -> tuple[int, bytes]:
    body = urllib.parse.urlencode(form)
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers=headers or sign(body, **sign_args))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def slash(fake, text: str, user: str = "U1", channel: str = "C1", name: str = "r1") -> dict:
    return {"token": "legacy", "team_id": "T1", "team_domain": "acme", "channel_id": channel,
            "channel_name": "marketing", "user_id": user, "user_name": "sam",
            "command": "/kpi", "text": text, "response_url": fake.response_url(name),
            "trigger_id": "1.2.3", "api_app_id": "A1"}


def test_kpi_is_acknowledged_at_once_and_answered_at_the_response_url(served):
    fake, url, _, _ = served
    t0 = time.monotonic()
    status, body = post(url, slash(fake, "kat"))
    assert status == 200 and time.monotonic() - t0 < 3
    (resp,) = fake.wait_for("response")
    msg = resp.params
    assert msg["response_type"] == "ephemeral"
    assert "Delivery rate" in msg["text"] and "4 / 8" in msg["text"]       # fallback text
    types = [b["type"] for b in msg["blocks"]]
    assert types[0] == "header" and types[-1] == "actions" and len(types) <= 50
    assert msg["blocks"][0]["text"]["text"] == "kat · SMS"
    fields = [f["text"] for b in msg["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    assert any(f.startswith("★ *Delivery rate*\n50.0%  (4 / 8)") for f in fields)   # headline
    button = msg["blocks"][-1]["elements"][0]
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        "kpi_share", "kat", "Share in channel")
    # the chart, through the files upload v2 flow, into the same channel
    (done,) = fake.wait_for("files.completeUploadExternal")
    assert done.params["channel_id"] == "C1"
    (upload,) = fake.of("upload")
    (asked,) = fake.of("files.getUploadURLExternal")
    assert upload.body[:8] == b"\x89PNG\r\n\x1a\n" and int(asked.params["length"]) == len(upload.body)
    assert fake.of("files.getUploadURLExternal")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_help_and_errors_are_ephemeral_with_usage(served):
    fake, url, _, _ = served
    post(url, slash(fake, "help", name="h"))
    post(url, slash(fake, "katt 7d", name="e"))
    fake.wait_for("response", 2)
    by = {c.params["_url"]: c.params for c in fake.of("response")}
    assert by["h"]["response_type"] == "ephemeral" and "/kpi list" in by["h"]["text"]
    assert "No campaign called 'katt'. Did you mean: kat?" in by["e"]["text"]
    assert by["e"]["response_type"] == "ephemeral"
    assert not fake.of("files.completeUploadExternal")


def test_share_button_posts_the_card_in_channel(served):
    fake, url, _, _ = served
    payload = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
               "channel": {"id": "C1"}, "api_app_id": "A1", "token": "legacy",
               "trigger_id": "1.2.3", "response_url": fake.response_url("share"),
               "container": {"type": "message"},
               "actions": [{"type": "button", "action_id": "kpi_share", "block_id": "b",
                            "value": "kc by agent", "action_ts": "1"}]}
    status, _ = post(url, {"payload": json.dumps(payload)})
    assert status == 200
    shared, deleted = fake.wait_for("response", 2)
    assert shared.params["response_type"] == "in_channel"
    assert "Answer rate" in shared.params["text"]
    assert all(b["type"] != "actions" for b in shared.params["blocks"])
    assert "shared by <@U1>" in json.dumps(shared.params["blocks"])
    assert deleted.params == {"delete_original": True, "_url": "share"}


@pytest.mark.parametrize("how", ["forged", "stale", "unsigned"])
def test_bad_or_stale_signatures_are_refused_with_no_side_effect(served, how):
    fake, url, db, _ = served
    form = slash(fake, "goal kat sales", user="UADMIN")
    body = urllib.parse.urlencode(form)
    headers = {"forged": sign(body, secret="not-the-secret"),
               "stale": sign(body, ts=int(time.time()) - 6 * 60),
               "unsigned": {"Content-Type": "application/x-www-form-urlencoded"}}[how]
    status, _ = post(url, form, headers=headers)
    assert status == 401
    time.sleep(0.5)
    assert not [c for c in fake.calls if c.method != "auth.test"]
    s = Store(db)
    assert s.conn.execute("SELECT goal FROM campaigns WHERE name = 'kat'").fetchone()[0] is None
    s.close()


def test_state_changes_are_for_admins_only(served):
    fake, url, db, _ = served
    post(url, slash(fake, "goal kat sales", user="U1", name="u1"))
    post(url, slash(fake, 'alert add * opt_out_rate > 2%', user="U1", name="u2"))
    fake.wait_for("response", 2)
    for c in fake.of("response"):
        assert "only admins can change settings" in c.params["text"]
    s = Store(db)
    assert s.conn.execute("SELECT goal FROM campaigns WHERE name = 'kat'").fetchone()[0] is None
    post(url, slash(fake, "goal kat sales", user="UADMIN", name="a1"))     # a workspace admin
    fake.wait_for("response", 3)
    assert s.conn.execute("SELECT goal FROM campaigns WHERE name = 'kat'").fetchone()[0] == "sales"
    assert [c.params["user"] for c in fake.of("users.info")] == ["U1", "U1", "UADMIN"]
    s.close()


def test_kpibot_admins_lists_users_and_user_groups(tmp_path, write):
    db = tmp_path / "k.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    with FakeSlack(groups={"SOPS": ["UOPS"]}) as fake, \
            _serve(fake, db, admins=frozenset({"UBOSS", "SOPS"})) as app:
        for user, goal in (("UOPS", "sales"), ("UBOSS", "info"), ("UADMIN", "awareness")):
            post(app.url, slash(fake, f"goal kat {goal}", user=user, name=user))
        fake.wait_for("response", 3)
        replies = {c.params["_url"]: c.params["text"] for c in fake.of("response")}
        assert replies["UOPS"].startswith("Goal of kat is now sales")
        assert replies["UBOSS"].startswith("Goal of kat is now info")
        assert "only admins" in replies["UADMIN"]      # workspace admin, but not listed
        assert not fake.of("users.info")
    s.close()


def test_slack_answering_429_then_200_is_retried_after_retry_after(served):
    fake, url, _, _ = served
    fake.script("files.getUploadURLExternal",
                (429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}))
    fake.script("response", (500, {}, b"oops"))
    post(url, slash(fake, "kat"))
    fake.wait_for("files.completeUploadExternal")
    first, second = fake.of("files.getUploadURLExternal")
    assert second.at - first.at >= 0.9
    responses = fake.wait_for("response", 2)
    assert "Delivery rate" in responses[1].params["text"]       # the 500 was retried


def test_not_in_channel_tells_how_to_invite_and_the_text_still_arrives(served):
    fake, url, _, _ = served
    fake.script("files.completeUploadExternal",
                (200, {}, {"ok": False, "error": "not_in_channel"}))
    post(url, slash(fake, "kc", channel="CPRIVATE"))
    card, hint = fake.wait_for("response", 2)
    assert "Answer rate" in card.params["text"]
    assert "/invite @kpibot" in hint.params["text"] and hint.params["response_type"] == "ephemeral"


def test_tokens_never_reach_a_log(served, caplog):
    fake, url, _, _ = served
    caplog.set_level(logging.DEBUG)
    for name in ("slack_sdk", "slack_bolt", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    post(url, slash(fake, "kat"))
    fake.wait_for("files.completeUploadExternal")
    time.sleep(0.3)
    assert "Bearer" in caplog.text or "Authorization" in caplog.text   # headers were logged...
    assert TOKEN not in caplog.text and SECRET not in caplog.text      # ...without the token


def test_a_chatty_logger_writes_one_line_a_minute_and_counts_the_rest():
    from bot.logs import AtMostEvery
    now = [1000.0]
    flt = AtMostEvery(60, clock=lambda: now[0])
    lg = logging.getLogger("kpibot-test.chatty")
    lg.propagate = False
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    lg.addHandler(handler)
    lg.addFilter(flt)
    for depth in range(1, 501):           # a burst: every request found the threads busy
        lg.warning("Task queue depth is %d", depth)
        now[0] += 0.05
    assert seen == ["Task queue depth is 1"]
    now[0] += 60
    lg.warning("Task queue depth is %d", 3)
    assert seen[1] == "Task queue depth is 3 (499 more such in the last 85 s)"


def test_serve_says_what_is_missing():
    with pytest.raises(ServeError, match="SLACK_BOT_TOKEN"):
        check(Settings())
    with pytest.raises(ServeError, match="SLACK_SIGNING_SECRET"):
        check(Settings(bot_token="xoxb-1"))
    check(Settings(bot_token="xoxb-1", app_token="xapp-1"))
    assert "xoxb" not in repr(Settings(bot_token="xoxb-1", signing_secret="s"))


def test_manifest_readme_and_help_agree_with_the_registered_subcommands():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    (cmd,) = manifest["features"]["slash_commands"]
    assert cmd["command"] == "/kpi" and manifest["settings"]["interactivity"]["is_enabled"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == {COMMAND_SCOPE} | {s for ss in METHOD_SCOPES.values() for s in ss} | {
        s for ss in EVENT_SCOPES.values() for s in ss}
    events = manifest["settings"]["event_subscriptions"]
    assert set(events["bot_events"]) == set(EVENT_SCOPES)
    assert manifest["features"]["app_home"]["messages_tab_enabled"]
    readme = (ROOT / "README.md").read_text()
    from bot.command import Context, run
    help_text = run("help", Context(None)).text
    for name in COMMANDS:
        assert f"/kpi {name}" in readme, name
        assert f"/kpi {name}" in help_text, name
    for name in set(USAGE) - {"card"}:
        assert USAGE[name] in help_text
    hint_words = set(re.findall(r"[a-z]+", cmd["usage_hint"]))
    assert {"list", "goal", "help"} <= hint_words and hint_words <= set(COMMANDS) | {
        "spring", "sale", "d", "by", "country", "sales"}


def test_the_app_calls_only_methods_whose_scopes_the_manifest_asks_for(served):
    fake, url, _, _ = served
    post(url, slash(fake, "kat"))
    post(url, slash(fake, "goal kat sales", user="U1", name="g"))
    fake.wait_for("files.completeUploadExternal")
    fake.wait_for("users.info")
    used = {c.method for c in fake.calls if c.method not in ("upload", "response")}
    assert used <= set(METHOD_SCOPES), used - set(METHOD_SCOPES)


def test_blocks_stay_within_slack_limits_for_big_answers(store, write):
    """200 campaigns in /kpi list, a breakdown with 300 values, a 150-character name."""
    from bot.blocks import message
    from bot.command import Context, run
    long_name = "Ж" * 150 + " ქართული 春"
    rows = ["campaign,message_id,sent_at,recipient,status,segment"]
    rows += [f"c{i:03d}-a-long-campaign-name-for-the-list,m{i},2026-03-02T10:00:00Z,"
             f"+1415555{i:04d},delivered,s" for i in range(200)]
    rows += [f'"{long_name}",x{i},2026-03-02T10:{i % 60:02d}:00Z,+1415666{i:04d},delivered,'
             f"seg-{i}" for i in range(300)]
    import_file(store, write("many.csv", "\n".join(rows)))
    ctx = Context(store, now=int(time.time()))
    for text in ("list", "help", f'"{long_name}" by segment', f'"{long_name}" by hour',
                 "nope"):
        reply = run(text, ctx)
        msg = message(reply, text)          # validates every block (raises past a limit)
        assert len(msg["blocks"]) <= 50 and len(msg["text"]) <= 3000
        for b in msg["blocks"]:
            if b["type"] == "section" and "text" in b:
                assert len(b["text"]["text"]) <= 3000
            if b["type"] == "header":
                assert len(b["text"]["text"]) <= 150
            assert len(b.get("fields", [])) <= 10
        assert json.dumps(msg)
    assert sum("c199-a-long" in b["text"]["text"] for b in message(run("list", ctx), "list")[
        "blocks"] if "text" in b) == 1     # all 200 campaigns, split over sections


def start_serve(fake, db) -> tuple:
    """`kpibot serve` in its own process over HTTP, configured only through the
    environment: (the process, once it listens; its /slack/events URL)."""
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": fake.api_url, "KPIBOT_DB": str(db)}
    env.pop("SLACK_APP_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("kpibot serve exited")
    return proc, f"http://127.0.0.1:{port}/slack/events"


def test_kpibot_serve_as_a_user_runs_it(tmp_path, write):
    """`kpibot serve` in its own process, configured only through the environment."""
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    s.close()
    with FakeSlack() as fake:
        proc, url = start_serve(fake, db)
        try:
            status, _ = post(url, slash(fake, "kat"))
            assert status == 200
            (resp,) = fake.wait_for("response")
            assert "Delivery rate" in resp.params["text"]
            fake.wait_for("files.completeUploadExternal")
        finally:
            proc.terminate()
            out = proc.communicate(timeout=10)[1]
    assert TOKEN not in out and SECRET not in out


def test_kpibot_serve_in_socket_mode(tmp_path, write):
    """Socket Mode: `kpibot serve` with SLACK_APP_TOKEN opens a WebSocket from the URL that
    apps.connections.open gives, acknowledges a /kpi envelope and answers it."""
    import os
    import subprocess
    import sys
    ws_server = pytest.importorskip("websockets.sync.server")
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    s.close()
    acks, errors = [], []

    def session(ws):
        try:
            ws.send(json.dumps({"type": "hello", "num_connections": 1,
                                "debug_info": {"host": "fake"}}))
            ws.send(json.dumps({"envelope_id": "env-1", "type": "slash_commands",
                                "accepts_response_payload": True,
                                "payload": slash(fake, "kat", name="socket")}))
            while True:
                msg = json.loads(ws.recv(timeout=20))
                if msg.get("envelope_id"):
                    acks.append(msg)
        except Exception as exc:      # the client went away at the end
            errors.append(exc)

    with ws_server.serve(session, "127.0.0.1", 0) as wss:
        threading.Thread(target=wss.serve_forever, daemon=True).start()
        port = wss.socket.getsockname()[1]
        with FakeSlack(socket_url=f"ws://127.0.0.1:{port}/link") as fake:
            env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": "xapp-1-test",
                   "SLACK_API_URL": fake.api_url, "KPIBOT_DB": str(db),
                   "TWILIO_AUTH_TOKEN": "tw-token", "KPIBOT_PUBLIC_URL": "https://bot.example"}
            env.pop("SLACK_SIGNING_SECRET", None)
            import socket
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                http_port = sock.getsockname()[1]
            proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host",
                                     "127.0.0.1", "--port", str(http_port)], cwd=ROOT,
                                    env=env, stderr=subprocess.PIPE, text=True)
            try:
                (resp,) = fake.wait_for("response", timeout=30)
                # the live-data paths still listen on --port, Slack's does not
                from twilio.request_validator import RequestValidator
                form = {"MessageSid": "SM1", "MessageStatus": "delivered", "From": "+14155550100",
                        "To": "+14155550123"}
                path = "/twilio/messages/status?campaign=kat"
                sig = RequestValidator("tw-token").compute_signature("https://bot.example" + path,
                                                                     form)
                base = f"http://127.0.0.1:{http_port}"
                status, _ = post(base + path, form, headers={"X-Twilio-Signature": sig})
                assert status == 200
                assert post(base + "/slack/events", slash(fake, "kat"))[0] == 404
                with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
                    assert r.status == 200
                assert "Delivery rate" in resp.params["text"]
                assert fake.of("apps.connections.open")[0].headers["Authorization"] == \
                    "Bearer xapp-1-test"
                deadline = time.monotonic() + 10
                while not acks and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert acks and acks[0]["envelope_id"] == "env-1"
            finally:
                proc.terminate()
                out = proc.communicate(timeout=10)[1]
            wss.shutdown()
    assert "xapp-1-test" not in out and TOKEN not in out


def test_alert_buttons_snooze_and_mute_for_admins_only(served):
    from metrics import alerts
    fake, url, db, _ = served
    s = Store(db)
    rule = alerts.add_rule(s, "kat", "opt_out_rate", ">", 0.02, channel="CALERTS")
    cid = s.conn.execute("SELECT id FROM campaigns WHERE name = 'kat'").fetchone()[0]

    def click(action, value, user, name):
        payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T1"},
                   "channel": {"id": "CALERTS"}, "api_app_id": "A1", "token": "legacy",
                   "trigger_id": "1.2.3", "response_url": fake.response_url(name),
                   "container": {"type": "message"},
                   "actions": [{"type": "button", "action_id": action, "block_id": "b",
                                "value": value, "action_ts": "1"}]}
        assert post(url, {"payload": json.dumps(payload)})[0] == 200
        return fake.wait_until(lambda c: c.method == "response" and c.params["_url"] == name)

    denied = click("alert_snooze", f"{rule.id}:{cid}", "U1", "n1")
    assert "Only admins" in denied.params["text"]
    assert alerts.states(s, rule.id) == []
    ok = click("alert_snooze", f"{rule.id}:{cid}", "UADMIN", "a1")
    assert "snoozed alert #1" in ok.params["text"]
    (state,) = alerts.states(s, rule.id)
    assert abs(state["snoozed_until"] - (time.time() + 86400)) < 60
    click("alert_mute", str(rule.id), "UADMIN", "a2")
    assert alerts.get_rule(s, rule.id).muted
    s.close()


def test_ab_test_answered_in_slack_with_its_chart(served, write):
    from .test_ab import events
    fake, url, db, _ = served
    s = Store(db)
    import_file(s, write("ab.csv", events({"A": (1000, 50, 0), "B": (1000, 80, 0)})))
    s.close()
    status, _ = post(url, slash(fake, "ab spring-sale"))
    assert status == 200
    (resp,) = fake.wait_for("response")
    msg = resp.params
    assert msg["text"].startswith("B wins: 8.00% against 5.00% for A")
    shown = json.dumps(msg["blocks"], ensure_ascii=False)
    assert "B wins" in shown and "80 / 1,000" in shown and "50 / 1,000" in shown
    (done,) = fake.wait_for("files.completeUploadExternal")
    (upload,) = fake.of("upload")
    assert done.params["channel_id"] == "C1" and upload.body[:8] == b"\x89PNG\r\n\x1a\n"
