"""Hostile and careless input on the Slack side: nothing a user types, imports or replays
pings a channel, hangs the bot or crashes a listener, and every refusal says what to do.

Every payload check walks the whole message: each ``mrkdwn`` text and each top-level
``text`` (Slack reads both as mrkdwn). Once the escape tokens ``bot.mrkdwn`` writes and
the links the bot makes on purpose are taken out, no ``<`` or ``>`` may be left: Slack
only reads a mention, a channel link or a URL between them. ``plain_text`` objects are
never read for mentions or formatting, so a name is shown there as it is.
"""
from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import blocks, command, jobs, mrkdwn
from bot.command import Context, run
from bot.listeners.guard import request_key
from metrics import alerts, digests, engine
from metrics.importers import import_file
from metrics.store import Store

from .fake_slack import FakeSlack
from .test_slack import ROOT, TOKEN, _serve, post, sign, slash, start_serve

HOSTILE = ["<!channel> sale", "<@U0123ABCD> *bold*", "<#C999|x> _it_ ~strike~ `code`",
           "<https://evil.example|click here>", "<!subteam^S1|@ops> now", "> quoted",
           "```` *break* out", "&lt;!here&gt; fun & games"]
FORMATTED = ["*bold*", "_it_", "~strike~", "`code`", "*break*"]
H = 3600
T0 = 1_772_445_600           # 2026-03-02 10:00 UTC


def events(name: str, n: int = 40, opted: int = 10) -> str:
    rows = ["campaign,message_id,sent_at,recipient,status,opted_out,segment,error_code,currency,cost"]
    for i in range(n):
        rows.append(f'"{name.replace(chr(34), chr(34) * 2)}",{abs(hash(name)) % 10**9}-{i},'
                    f"2026-03-02T10:{i % 60:02d}:00Z,+1415555{i:04d},delivered,"
                    f'{int(i < opted)},"{name[:20].replace(chr(34), "")}",,USD,0.01')
    return "\n".join(rows) + "\n"


def message_texts(payload) -> list[str]:
    """Every string Slack reads as mrkdwn in a message payload."""
    out = []

    def walk(x, top=False):
        if isinstance(x, dict):
            if x.get("type") == "mrkdwn" and isinstance(x.get("text"), str):
                out.append(x["text"])
            if top and isinstance(x.get("text"), str):
                out.append(x["text"])
            for k, v in x.items():
                if k != "text" or not isinstance(v, str):
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(payload, top=True)
    return out


def assert_inert(payload, links=(), users=()) -> None:
    """No mention, link or formatting from data survives in ``payload``."""
    texts = message_texts(payload)
    assert texts, "no mrkdwn text at all"
    for text in texts:
        t = mrkdwn.ESCAPE_TOKEN.sub("", text)
        for cid in links:
            t = t.replace(f"<#{cid}>", "")
        for uid in users:
            t = t.replace(f"<@{uid}>", "")
        assert "<" not in t and ">" not in t, text
        prose = re.sub(r"```.*?```", "", t, flags=re.S)   # no formatting inside code blocks
        for f in FORMATTED:
            assert f not in prose, (f, text)


# -- the escaping itself -------------------------------------------------------------------

def test_escape_keeps_text_and_makes_mentions_links_and_formatting_inert():
    e = mrkdwn.escape
    assert e("<!channel> sale") == "&lt;!channel&gt; sale"
    assert e("a & b") == "a &amp; b"
    assert e("*bold*") == "<!date^00000000^{_}|*>bold<!date^00000000^{_}|*>"
    assert e("opt_out_rate and 3*4") == "opt_out_rate and 3*4"     # inside words: cannot format
    assert e("> quote\nnot > one") == "\u00ad&gt; quote\nnot &gt; one"
    assert e("in <#C1> and <#C2>", {"C1"}) == "in <#C1> and &lt;#C2&gt;"
    assert e("tab\there\x00\x07") == "tab\there"
    assert mrkdwn.code("a ``` <!here>") == "a \u02cb\u02cb\u02cb &lt;!here&gt;"
    assert mrkdwn.user("U12AB") == "<@U12AB>" and mrkdwn.user("U1><!channel") == "someone"
    assert mrkdwn.channel("C0ALERTS") == "<#C0ALERTS>" and mrkdwn.channel("#sales") == "#sales"
    cut = mrkdwn.cut(e("x" * 10 + "*" * 10), 15)
    assert cut.endswith("…") and len(cut) <= 15 and "<!date" not in cut


# -- alert posts: the reported defect ------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE)
def test_an_alert_on_a_hostile_campaign_name_pings_no_one(store, write, name):
    import_file(store, write("h.csv", events(name)))
    alerts.add_rule(store, "*", "opt_out_rate", ">", 0.02, window_s=86400, min_volume=10,
                    channel="CALERTS")
    with FakeSlack() as fake:
        from slack_sdk import WebClient
        client = WebClient(token=TOKEN, base_url=fake.api_url)
        assert jobs.check_alerts(store, client, T0 + 2 * H) == 1
        (post_,) = fake.of("chat.postMessage")
    params = dict(post_.params)
    params["blocks"] = json.loads(params["blocks"]) if isinstance(params["blocks"], str) \
        else params["blocks"]
    assert_inert({"text": params["text"], "blocks": params["blocks"]})
    shown = params["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert mrkdwn.ESCAPE_TOKEN.sub(lambda m: m.group(0)[-2], shown).startswith(
        f"🔴 Alert: {name} opt_out_rate is 25.00%")


# -- cards, errors, shares, digests ---------------------------------------------------------

@pytest.fixture
def hostile_store(tmp_path, write):
    s = Store(tmp_path / "kpibot.db")
    for i, name in enumerate(HOSTILE):
        import_file(s, write(f"h{i}.csv", events(name)))
    yield s
    s.close()


@pytest.mark.parametrize("name", HOSTILE)
def test_cards_and_errors_about_hostile_names_are_inert(hostile_store, name):
    ctx = Context(hostile_store, now=T0 + 2 * H)
    quoted = '"' + name.replace('"', "") + '"'
    for text_in in (quoted, quoted + " by segment", quoted + " 7x", "list",
                    quoted[:-3] + '"', "top opt_out_rate", "digest preview"):
        reply = run(text_in, ctx)
        assert_inert(blocks.message(reply, text_in))
    as_slack_sends_it = quoted.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    reply = run(as_slack_sends_it, ctx)
    assert reply.ok and reply.report.campaign.name == name


def test_digest_with_hostile_names_is_inert(hostile_store):
    start = T0 - 86400
    d = digests.build(hostile_store, start, start + 7 * 86400, start - 7 * 86400, start, "UTC")
    assert {ln.campaign for ln in d.lines} == set(HOSTILE)
    d.movers = [(n, "opt_out_rate", 0.05) for n in HOSTILE]
    d.alerts = [{"campaign": n, "metric": "opt_out_rate", "op": ">", "threshold": 0.02,
                 "unit": "percent", "rule_id": 1} for n in HOSTILE]
    assert_inert(blocks.digest_message(d, late="late: due 09:00"))


def test_a_user_mention_is_made_only_from_a_checked_id():
    assert mrkdwn.user("<!channel>") == "someone"
    assert mrkdwn.user("U1|x") == "someone"


# -- properties: random text through the parser and the builders ---------------------------

SPECIALS = st.sampled_from(["<!channel>", "<!here>", "<@U1>", "<#C1|x>", "<!subteam^S1>", "*",
                            "_", "~", "`", "```", "&", "<", ">", "\n", "\x00", "\u200b", "|",
                            '"', "“", "by", "7d", "in", "#x", "alert", "add", "*"])
TEXT = st.lists(st.one_of(st.text(max_size=12), SPECIALS), max_size=40).map(" ".join)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TEXT)
def test_any_command_text_answers_and_stays_inert(hostile_store, text_in):
    ctx = Context(hostile_store, now=T0 + 2 * H, channel="C1", user="U1")
    reply = run(text_in, ctx)                 # never raises
    assert isinstance(reply.text, str) and reply.text
    assert_inert(blocks.message(reply, text_in), links=reply.links)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(min_size=1, max_size=200), TEXT.filter(bool)),
       other=st.text(max_size=50))
def test_any_name_segment_or_currency_in_a_card_alert_or_digest_is_inert(hostile_store, name,
                                                                         other):
    rep = engine.report(hostile_store, HOSTILE[0], None, "segment", now=T0 + 2 * H)
    camp = dataclasses.replace(rep.campaign, name=name)
    sec = rep.current["sms"]
    sec = dataclasses.replace(sec, currencies=[other], dispositions=[(other, 3, 0.5)])
    rep = dataclasses.replace(rep, campaign=camp, current={"sms": sec},
                              breakdown=[(other or "x", rep.breakdown[0][1])])
    from bot import text
    reply = command.Reply(text.card(rep), rep.as_json(), report=rep)
    assert_inert(blocks.message(reply, name))
    payload = {"kind": "firing", "rule_id": 1, "campaign": name, "campaign_id": 1,
               "metric": "opt_out_rate", "unit": "percent", "op": ">", "threshold": 0.02,
               "recovery": None, "value": 0.25, "numerator": 1, "denominator": 4,
               "window_text": "1d", "thread_key": None}
    assert_inert(blocks.alert_message(payload))
    d = digests.Digest(T0, T0 + 86400, "UTC", ("reach", [(name, sec.metrics["reach"])]),
                       [digests.Line(name, "sms", None, 4, [])], [(name, other, 0.1)],
                       [{**payload, "campaign": other}])
    assert_inert(blocks.digest_message(d))


# -- parsing in linear time -------------------------------------------------------------------

def test_long_command_texts_are_refused_before_parsing(hostile_store, monkeypatch):
    lookups = []
    monkeypatch.setattr(engine, "lookup_campaign",
                        lambda *a, _f=engine.lookup_campaign: lookups.append(a) or _f(*a))
    ctx = Context(hostile_store)
    for size in (16_000, 120_000):
        reply = run(" ".join(["a", "b"] * (size // 4)), ctx)
        assert not reply.ok and "/kpi reads at most 1,000" in reply.text
        assert "characters long" in reply.text
    reply = run(" ".join(["a", "b"] * 30), ctx)
    assert "reads at most 40" in reply.text and "quotes" in reply.text
    assert lookups == []


def test_the_longest_accepted_text_costs_a_bounded_number_of_lookups(hostile_store, monkeypatch):
    """40 words: at most a lookup per way to cut them, and one fuzzy search for hints."""
    import difflib
    lookups, fuzzy = [], []
    monkeypatch.setattr(engine, "lookup_campaign",
                        lambda *a, _f=engine.lookup_campaign: lookups.append(a) or _f(*a))
    monkeypatch.setattr(difflib, "get_close_matches",
                        lambda *a, _f=difflib.get_close_matches, **k: fuzzy.append(a) or _f(*a, **k))
    ctx = Context(hostile_store)
    for head in ("", "compare ", "ab ", "goal ", "alert add "):
        lookups.clear()
        fuzzy.clear()
        words = " ".join(["a", "b"] * 19)
        reply = run(head + words, ctx)
        assert not reply.ok
        assert len(lookups) <= 2 * command.MAX_WORDS and len(fuzzy) <= 2, (head, len(lookups))


def test_a_long_name_against_many_campaigns_is_matched_in_bounded_work(store, write,
                                                                        monkeypatch):
    """Suggestions for an unknown name: one fuzzy search, over names cut to 100
    characters (difflib's cost is the product of the two lengths)."""
    import difflib
    searched = []
    real = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches",
                        lambda word, names, *a, **k: searched.append((word, names))
                        or real(word, names, *a, **k))
    rows = ["date,campaign,channel,sent,delivered"]
    rows += [f"2026-03-01,campaign number {i} of the spring sale {'x' * 150},sms,10,9"
             for i in range(3000)]
    import_file(store, write("many.csv", "\n".join(rows) + "\n"))
    reply = run('"' + "spring sale " * 80 + '"', Context(store))
    assert not reply.ok and "No campaign called" in reply.text
    ((word, names),) = searched
    assert len(word) <= 100 and len(names) == 3000 and max(map(len, names)) <= 100


# -- replays -------------------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path, write):
    from .test_kpis import SMS
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    s.close()
    with FakeSlack(admins={"UADMIN"}) as fake, _serve(fake, db, admins=frozenset()) as app:
        yield fake, app.url, db


def test_a_replayed_signed_request_runs_once(served):
    fake, url, db = served
    import urllib.parse
    form = slash(fake, "alert add kat opt_out_rate > 2%", user="UADMIN", name="r")
    body = urllib.parse.urlencode(form)
    headers = sign(body)
    assert post(url, form, headers=headers)[0] == 200
    assert post(url, form, headers=headers)[0] == 200      # the same bytes, within 5 minutes
    fake.wait_for("response")
    time.sleep(0.5)
    assert len(fake.of("response")) == 1
    s = Store(db)
    assert s.conn.execute("SELECT COUNT(*) FROM alert_rules").fetchone()[0] == 1
    # the same command typed again (a new timestamp, so a new signature) runs again
    time.sleep(1.1)
    assert post(url, form)[0] == 200
    fake.wait_for("response", 2)
    assert s.conn.execute("SELECT COUNT(*) FROM alert_rules").fetchone()[0] == 2
    s.close()


def test_requests_are_answered_at_once_while_an_import_holds_the_database(served):
    """An import holds the database's write lock for as long as it runs (15 s for a
    million rows): the replay check writes to the inbox instead, and the answer only
    reads, so /kpi is acknowledged and answered meanwhile."""
    import sqlite3
    fake, url, db = served
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE settings SET value = value")
    try:
        t0 = time.monotonic()
        assert post(url, slash(fake, "kat"))[0] == 200
        assert time.monotonic() - t0 < 3
        (reply,) = fake.wait_for("response", timeout=10)
        assert "Delivery rate" in reply.params["text"]
    finally:
        holder.rollback()
        holder.close()


def test_event_retries_are_known_by_their_event_id():
    from slack_bolt import BoltRequest
    body = json.dumps({"type": "event_callback", "event_id": "Ev1", "team_id": "T1",
                       "event": {"type": "message"}})
    one = BoltRequest(body=body, headers={"x-slack-signature": "v0=a",
                                          "content-type": "application/json"})
    retry = BoltRequest(body=body, headers={"x-slack-signature": "v0=b", "x-slack-retry-num": "1",
                                            "content-type": "application/json"})
    assert request_key(one) == request_key(retry) == "slack-event:Ev1"
    form = BoltRequest(body="command=%2Fkpi&text=x", headers={"x-slack-signature": "v0=c"})
    assert request_key(form) == "slack-sig:v0=c"


def test_seen_requests_are_forgotten_after_their_window(store):
    assert store.first_seen("k", 1000, 600)
    assert not store.first_seen("k", 1500, 600)
    assert store.first_seen("k2", 2000, 600)          # and k is forgotten on the way
    assert store.first_seen("k", 2100, 600)


# -- listeners that answer whatever happens -----------------------------------------------------

def click(fake, url, action, value, user="UADMIN", name="b"):
    payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T1"},
               "channel": {"id": "C1"}, "api_app_id": "A1", "token": "legacy",
               "trigger_id": "1.2.3", "response_url": fake.response_url(name),
               "container": {"type": "message"},
               "actions": [{"type": "button", "action_id": action, "block_id": "b",
                            "value": value, "action_ts": "1"}]}
    t0 = time.monotonic()
    status, _ = post(url, {"payload": json.dumps(payload)})
    assert status == 200 and time.monotonic() - t0 < 3
    return fake.wait_until(lambda c: c.method == "response" and c.params["_url"] == name)


def test_snooze_for_a_campaign_that_no_longer_exists_answers_clearly(served):
    fake, url, db = served
    s = Store(db)
    rule = alerts.add_rule(s, "kat", "opt_out_rate", ">", 0.02)
    reply = click(fake, url, "alert_snooze", f"{rule.id}:999999", name="gone")
    assert "That alert cannot be changed: its campaign no longer exists" in reply.params["text"]
    for value, name in (("x:y", "v1"), ("1:2:3", "v2"), ("²", "v3"), ("", "v4")):
        reply = click(fake, url, "alert_snooze", value, name=name)
        assert "does not name an alert" in reply.params["text"]
        assert "invalid literal" not in reply.params["text"]
    reply = click(fake, url, "alert_mute", "12345", name="m")
    assert "there is no alert #12345" in reply.params["text"]
    s.close()


def test_a_listener_that_fails_still_answers(served, monkeypatch):
    fake, url, _ = served
    from bot.listeners import commands

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(commands, "run", broken)
    t0 = time.monotonic()
    assert post(url, slash(fake, "kat", name="x"))[0] == 200
    assert time.monotonic() - t0 < 3
    (reply,) = fake.wait_for("response")
    assert reply.params["text"] == ("Sorry, something went wrong answering that; it has been "
                                    "logged.")


@pytest.mark.parametrize("text_in, said", [
    ("alert add kat opt_out_rate > 2% min 100000000000000000000", "min needs a whole number"),
    ("alert add kat opt_out_rate > 2% min 99999999999999", "beyond any campaign's volume"),
    ("alert add kat opt_out_rate > -2%", "between 0% and 100%"),
    ("alert add kat opt_out_rate > 150%", "between 0% and 100%"),
    ("alert add kat opt_out_rate > 1e400%", "is not a number"),
    ("alert add kat cost > -5", "cannot be below 0"),
    ("alert add kat opt_out_rate > 2% recover -1%", "between 0% and 100%"),
    ("alert add kat opt_out_rate > 2% window 99999w", "at most 366 days"),
    ("alert add kat opt_out_rate > 2% in <#C1<!channel>|x>", "is not a channel"),
    ("alert add kat opt_out_rate > 2% in \"#sales\"", "is not a channel"),
    ("alert remove ²", "which alert?"),
    ("alert snooze 99999999999999999999 1d", "which alert?"),
    ("digest remove ¹", "which digest?"),
    ("alert add kat ctr > 1e-320%", "too small to tell from 0"),
    ("digest add daily 09:00 right/Europe/Berlin", "counts leap seconds"),
])
def test_thresholds_outside_sense_are_refused_with_what_to_do(store, write, text_in, said):
    from .test_kpis import SMS
    import_file(store, write("sms.csv", SMS))
    reply = run(text_in, Context(store, channel="C1"))
    assert not reply.ok and said in reply.text, reply.text
    assert store.conn.execute("SELECT COUNT(*) FROM alert_rules").fetchone()[0] == 0


def test_share_never_posts_a_refusal_or_a_change_in_the_channel(served):
    fake, url, db = served
    for value, name in (("alert add * opt_out_rate > 2%", "s1"), ("nosuch", "s2"),
                        ("goal kat sales", "s3")):
        reply = click(fake, url, "kpi_share", value, user="U1", name=name)
        assert reply.params["response_type"] == "ephemeral", reply.params
    time.sleep(0.3)
    assert all(c.params.get("response_type") != "in_channel" for c in fake.of("response"))
    s = Store(db)
    assert s.conn.execute("SELECT COUNT(*) FROM alert_rules").fetchone()[0] == 0
    s.close()


def test_chart_file_names_have_one_extension_and_stay_in_their_folder(tmp_path, store, write):
    from bot.text import file_name
    assert file_name("", "top") == "top.png"
    assert file_name("Spring sale", "by-../../etc") == "Spring-sale-by-etc.png"
    from .test_kpis import SMS
    import_file(store, write("sms.csv", SMS))
    db = str(store.path)
    out = tmp_path / "charts"
    for text_in in ("top ctr", "ab kat", "kat by segment"):
        r = subprocess.run([sys.executable, "-m", "bot.cli", "ask", text_in, "--db", db,
                            "--chart-dir", str(out)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["top.png", "ab.png", "by-segment.png", "trend.png"]), names


def test_serve_stops_promptly_on_sigterm_while_a_listener_is_busy(tmp_path, write):
    from .test_kpis import SMS
    db = tmp_path / "kpibot.db"
    s = Store(db)
    import_file(s, write("sms.csv", SMS))
    s.close()
    with FakeSlack() as fake:
        fake.delays["response"] = 60              # the listener waits on Slack for a minute
        proc, url = start_serve(fake, db)
        try:
            assert post(url, slash(fake, "kat"))[0] == 200
            fake.wait_for("response")                  # the listener is now blocked in it
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            assert time.monotonic() - t0 < 10
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate(timeout=10)[1]
    assert "stopping" in err


def test_snoozes_are_bounded_too(store, write):
    from .test_kpis import SMS
    import_file(store, write("sms.csv", SMS))
    ctx = Context(store, channel="C1")
    assert run("alert add kat opt_out_rate > 2%", ctx).ok
    reply = run("alert snooze 1 99999w", ctx)
    assert not reply.ok and "snooze for at most 366 days" in reply.text
    assert "/kpi alert remove 1" in reply.text


CHART_NAMES = ["🔥 促销 sale", "$\\undefinedmacro$ and $x^2$", "👍", "ok ☃ ✓", "ﷺ", "a\u0301b"]


@pytest.mark.parametrize("name", CHART_NAMES)
def test_names_any_chart_can_draw(tmp_path, store, write, name):
    """An emoji or a script without a font is drawn as a box, `$...$` as text: the chart
    always comes."""
    rows = ["campaign,message_id,sent_at,recipient,status,clicked,segment,variant"]
    rows += [f'"{name}",m{i},2026-03-02T{10 + i % 8}:00:00Z,+1415555{i:04d},delivered,'
             f'{i % 3 == 0},"{name} {i % 2}","{name}{i % 2}"' for i in range(60)]
    import_file(store, write("c.csv", "\n".join(rows) + "\n"))
    quoted = '"' + name + '"'
    for text_in in (quoted, quoted + " by segment", quoted + " by weekday_hour",
                    "ab " + quoted, "top ctr"):
        reply = run(text_in, Context(store))
        assert reply.ok, reply.text
        for chart_name, png in reply.charts(every=True):
            assert png[:8] == b"\x89PNG\r\n\x1a\n", chart_name


def test_a_chart_that_cannot_be_written_is_one_line(tmp_path, store, write):
    from .test_kpis import SMS
    import_file(store, write("sms.csv", SMS))
    for flag, where in (("--chart", "/proc/nope.png"), ("--chart-dir", "/proc/nope")):
        r = subprocess.run([sys.executable, "-m", "bot.cli", "ask", "kat", "--db",
                            str(store.path), flag, where], cwd=ROOT, capture_output=True,
                           text=True)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "cannot write the chart to /proc/nope" in r.stderr


def test_look_alike_names_are_one_campaign_and_bidi_never_reaches_slack(store, write):
    names = ["sale", "sa\u200ble", "sale\u2066", "\u200fsale\ufeff"]
    rows = ["campaign,message_id,sent_at,recipient,status"]
    rows += [f"{n},m{i},2026-03-02T10:00:00Z,+1415555{i:04d},delivered"
             for i, n in enumerate(names)]
    import_file(store, write("zw.csv", "\n".join(rows) + "\n"))
    assert [c["name"] for c in store.campaigns()] == ["sale"]
    assert mrkdwn.escape("\u202eelas \u2066x\u2069") == "elas x"
    assert run("sa\u200ble", Context(store)).ok          # pasted with a zero-width space
