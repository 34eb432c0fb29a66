"""Files dropped into a DM with the bot (or shared with `@kpibot import`), through the
served bot over real HTTP and the fake Slack: downloaded with the bot token, imported by
the same importer as `kpibot import`, answered in the file's thread."""
from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request

import pytest

from metrics.importers import named
from metrics.store import Store

from .test_slack import TOKEN, sign
from .test_slack import served  # noqa: F401 (the fixture)

CSV = ("campaign,message_id,sent_at,recipient,status,cost,currency\n"
       "dm-drop,SMD1,2026-03-01T09:00:00Z,+14155550101,delivered,0.01,USD\n"
       "dm-drop,SMD2,2026-03-01T09:05:00Z,+14155550102,failed,0.01,USD\n")
BAD = CSV + "dm-drop,SMD3,yesterday-ish,+14155550103,delivered,0.01,USD\n"


def event(url: str, ev: dict, event_id: str = "Ev1", retry: int | None = None) -> int:
    body = json.dumps({"token": "legacy", "team_id": "T1", "api_app_id": "A1",
                       "type": "event_callback", "event_id": event_id,
                       "event_time": int(time.time()), "event": ev})
    headers = {**sign(body), "Content-Type": "application/json"}
    if retry is not None:
        headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def dm(file: dict, user: str = "UADMIN", text: str = "", ts: str = "1700000000.000100") -> dict:
    return {"type": "message", "subtype": "file_share", "channel": "D1", "channel_type": "im",
            "user": user, "text": text, "ts": ts, "files": [file]}


def answers(fake, n: int = 1, timeout: float = 15) -> list[str]:
    """The bot's posts in the DM, once there are ``n`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        got = [c.params["text"] for c in fake.of("chat.postMessage")
               if c.params.get("channel") == "D1"]
        if len(got) >= n or time.monotonic() > deadline:
            assert len(got) >= n, got
            return got
        time.sleep(0.05)


def messages(db, campaign: str) -> int:
    s = Store(db)
    try:
        return s.conn.execute("SELECT COUNT(*) FROM messages m JOIN campaigns p ON "
                              "p.id = m.campaign_id WHERE p.name = ?", (campaign,)).fetchone()[0]
    finally:
        s.close()


def test_an_admin_drops_a_csv_and_gets_the_summary_in_the_thread(served):
    fake, url, db, _ = served
    f = fake.add_file("F1", "log.csv", CSV.encode())
    t0 = time.monotonic()
    assert event(url, dm(f)) == 200 and time.monotonic() - t0 < 3
    (text,) = answers(fake)
    assert text.startswith("✓ log.csv: imported 2 new rows") and "dm-drop" in text
    post = fake.of("chat.postMessage")[-1].params
    assert post["thread_ts"] == "1700000000.000100"
    (dl,) = fake.of("download")
    assert dl.headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake.of("files.info")[0].params["file"] == "F1"
    assert messages(db, "dm-drop") == 2


def test_an_xlsx_with_options_in_the_comment(served, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    fake, url, db, _ = served
    wb = openpyxl.Workbook()
    wb.active.title = "Notes"
    ws = wb.create_sheet("Sends")
    ws.append(["message_id", "sent_at", "recipient", "status"])
    ws.append(["SMX1", "2026-03-01T09:00:00Z", 14155550101, "delivered"])
    ws.append(["SMX2", "2026-03-01T09:00:00Z", "+14155550102", "nonsense"])
    buf = io.BytesIO()
    wb.save(buf)
    f = fake.add_file("F2", "sends.xlsx", buf.getvalue())
    event(url, dm(f, text="import --campaign “Sheet Drop” --sheet Sends --skip-bad-rows"))
    (text,) = answers(fake)
    assert "sends.xlsx: imported 1 new row (events, sheet 'Sends'), 1 rejected" in text
    assert "line 3, column 'status'" in text            # the row the sheet shows
    assert messages(db, "Sheet Drop") == 1


def test_a_broken_file_is_answered_with_its_bad_rows_and_nothing_changes(served):
    fake, url, db, _ = served
    bad = BAD + "".join(f"dm-drop,SMB{i},not-a-time,+14155550101,delivered,0.01,USD\n"
                        for i in range(30))
    event(url, dm(fake.add_file("F3", "bad.csv", bad.encode())))
    (text,) = answers(fake)
    assert text.startswith("✗ *bad.csv*: rejected: 31 bad rows out of 33; nothing was imported")
    assert "line 4, column 'sent_at'" in text
    assert text.count("\n• ") == 20 and "… and 11 more" in text
    assert messages(db, "dm-drop") == 0


def test_a_non_admin_is_refused_and_nothing_is_downloaded(served):
    fake, url, db, _ = served
    event(url, dm(fake.add_file("F4", "log.csv", CSV.encode()), user="UNOBODY"))
    (text,) = answers(fake)
    assert "Only the bot's admins can import files" in text
    assert not fake.of("download") and not fake.of("files.info")
    assert messages(db, "dm-drop") == 0


def test_an_oversized_file_is_refused_before_download(served, monkeypatch):
    fake, url, db, _ = served
    monkeypatch.setenv("KPIBOT_MAX_UPLOAD_MB", "1")
    event(url, dm(fake.add_file("F5", "huge.csv", CSV.encode(), size=3 * 1024 * 1024)))
    (text,) = answers(fake)
    assert "huge.csv* is 3.0 MB; I import files up to 1.0 MB" in text
    assert "Nothing was downloaded" in text and not fake.of("download")


def test_a_file_larger_than_slack_said_stops_at_the_limit(served, monkeypatch):
    fake, url, db, _ = served
    monkeypatch.setenv("KPIBOT_MAX_UPLOAD_MB", "0.001")      # 1,048 bytes
    data = CSV.encode() + b"".join(
        f"dm-drop,SML{i},2026-03-01T09:00:00Z,+14155550101,delivered,0.01,USD\n".encode()
        for i in range(100))
    event(url, dm(fake.add_file("F6", "lies.csv", data, size=100)))
    (text,) = answers(fake)
    assert "could not download *lies.csv* from Slack (it is larger than" in text
    assert messages(db, "dm-drop") == 0


def test_a_repeated_event_imports_once_and_answers_once(served):
    fake, url, db, _ = served
    f = fake.add_file("F7", "log.csv", CSV.encode())
    assert event(url, dm(f), event_id="EvR") == 200
    assert event(url, dm(f), event_id="EvR", retry=1) == 200
    assert event(url, dm(f), event_id="EvR2") == 200   # the same file message, another event id
    answers(fake)
    time.sleep(1.0)
    assert len(answers(fake)) == 1 and len(fake.of("download")) == 1
    assert messages(db, "dm-drop") == 2


def test_a_download_failure_is_a_clear_answer_and_changes_nothing(served):
    fake, url, db, _ = served
    fake.script("download", (403, {}, b"forbidden"))
    event(url, dm(fake.add_file("F8", "log.csv", CSV.encode())))
    (text,) = answers(fake)
    assert text == "I could not download *log.csv* from Slack (HTTP 403); nothing was imported."
    assert messages(db, "dm-drop") == 0


def test_a_download_url_outside_slack_never_gets_the_token(served):
    fake, url, db, _ = served
    event(url, dm(fake.add_file("F9", "log.csv", CSV.encode(),
                                url_private_download="http://evil.example/steal")))
    (text,) = answers(fake)
    assert "its address is not Slack's" in text and not fake.of("download")


def test_a_mapping_by_name(served, write):
    fake, url, db, _ = served
    named.add(db, "shop-sends", write("m.toml", '[columns]\ncampaign = "Campaign"\n'
                                      'message_id = "Sid"\nsent_at = "Sent"\nrecipient = "To"\n'
                                      'status = "Status"\n'))
    data = ("Campaign,Sid,Sent,To,Status\n"
            "mapped,SMM1,2026-03-01T09:00:00Z,+14155550101,delivered\n").encode()
    event(url, dm(fake.add_file("F10", "shop.csv", data), text="import --map shop-sends"),
          event_id="EvM1")
    event(url, dm(fake.add_file("F11", "shop2.csv", data), text="import --map ../../etc/x",
                  ts="1700000000.000200"), event_id="EvM2")
    event(url, dm(fake.add_file("F12", "shop3.csv", data), text="import --map nope",
                  ts="1700000000.000300"), event_id="EvM3")
    texts = answers(fake, 3)
    assert any(t.startswith("✓ shop.csv: imported 1 new row (events via shop-sends.toml)")
               for t in texts), texts
    assert any("is not a mapping name" in t for t in texts)
    assert any("there is no mapping named `nope` (named mappings: `shop-sends`)" in t
               for t in texts)
    assert messages(db, "mapped") == 1


def test_chat_with_a_file_is_not_an_import_and_a_bad_comment_says_how(served):
    fake, url, db, _ = served
    event(url, dm(fake.add_file("F13", "log.csv", CSV.encode()), text="here is the log"),
          event_id="EvC1")
    event(url, dm(fake.add_file("F14", "log.csv", CSV.encode()), text="import --colour red",
                  ts="1700000000.000400"), event_id="EvC2")
    (text,) = answers(fake)
    assert "'--colour' is not an import option" in text and "import [--campaign NAME]" in text
    assert not fake.of("download")


def test_import_in_a_channel_by_mention(served):
    fake, url, db, _ = served
    f = fake.add_file("F15", "log.csv", CSV.encode())
    ev = {"type": "app_mention", "channel": "C9", "user": "UADMIN",
          "text": "<@UBOT> import --dry-run", "ts": "1700000001.000100", "files": [f]}
    event(url, ev, event_id="EvA")
    got = fake.wait_until(lambda c: c.method == "chat.postMessage"
                          and c.params.get("channel") == "C9")
    assert got.params["text"] == "✓ log.csv: would import 2 new rows (events); campaigns: dm-drop"
    assert got.params["thread_ts"] == ev["ts"]
    assert messages(db, "dm-drop") == 0


def test_a_large_file_gets_a_progress_note_updated_in_place(served, monkeypatch):
    from bot import slack_import
    monkeypatch.setattr(slack_import, "PROGRESS_FROM_BYTES", 100)
    monkeypatch.setattr(slack_import, "PROGRESS_EVERY_S", 0.0)
    fake, url, db, _ = served
    event(url, dm(fake.add_file("F16", "log.csv", CSV.encode())))
    texts = answers(fake, 2)
    assert texts[0] == "Importing *log.csv* (0.0 MB)…"
    assert texts[1].startswith("✓ log.csv: imported 2 new rows")
    updates = [c.params for c in fake.of("chat.update")]
    progress_ts = fake.of("chat.postMessage")[0].params["_ts"]
    assert updates and all(u["ts"] == progress_ts for u in updates)
    assert updates[-1]["text"] == "Imported *log.csv*: the answer follows."
