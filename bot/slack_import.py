"""Importing a file shared with the bot: a CSV, TSV or spreadsheet dropped into a direct
message (or shared in a channel with ``@kpibot import``), imported by the same importer as
``kpibot import``, answered in the file's thread.

The order of things: the comment is read (``import [--campaign NAME] [--map NAME]
[--format F] [--sheet S] [--skip-bad-rows] [--dry-run]``; none: a plain import); only
an admin's file goes further (others are told so, nothing downloaded); ``files.info``
gives the file's size, refused over ``KPIBOT_MAX_UPLOAD_MB`` before any byte is read;
the file is streamed with the bot token (to Slack's own hosts only) into a temporary
folder, removed afterwards whatever happens, and never past the limit either.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from metrics.errors import ImportRejected, KpiBotError, MappingError, StoreError
from metrics.importers import import_file, named
from metrics.importers.run import FORMAT_NAMES

from . import mrkdwn
from .deps import Deps
from .permissions import is_admin

log = logging.getLogger(__name__)

USAGE = ("import [--campaign NAME] [--map NAME] [--format F] [--sheet S] [--skip-bad-rows] "
         "[--dry-run]")
SHOWN_ERRORS = 20
SEEN_FOR_S = 600          # a file's event seen again within this is not imported again
PROGRESS_EVERY_S = 5.0
PROGRESS_FROM_BYTES = 1 << 20       # smaller files are answered once, without a progress note
_CHUNK = 1 << 20
_VALUED = {"--campaign": "campaign", "--map": "mapping", "--format": "format",
           "--sheet": "sheet"}
_FLAGS = {"--skip-bad-rows": "skip_bad_rows", "--dry-run": "dry_run"}
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


class BadComment(ValueError):
    pass


@dataclass
class Options:
    campaign: str | None = None
    mapping: str | None = None
    format: str | None = None
    sheet: str | None = None
    skip_bad_rows: bool = False
    dry_run: bool = False
    given: list[str] = field(default_factory=list)


def parse_comment(text: str) -> Options | None:
    """The options of a file's comment: None when the comment is not an import command
    (chat that came with a file); :class:`BadComment` for an import command that is
    wrong."""
    text = re.sub(r"<@[A-Z0-9]+(\|[^>]*)?>", " ", text or "")     # the mention of the bot
    text = (text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            .translate(_QUOTES).strip())
    if not text:
        return Options()
    try:
        words = shlex.split(text)
    except ValueError:
        raise BadComment("a quote is not closed") from None
    if not words or words[0].lower() != "import":
        return None
    out = Options()
    i = 1
    while i < len(words):
        word = words[i]
        key, eq, value = word.partition("=")
        if key in _VALUED:
            if not eq:
                if i + 1 >= len(words):
                    raise BadComment(f"{key} needs a value")
                i += 1
                value = words[i]
            setattr(out, _VALUED[key], value)
        elif word in _FLAGS:
            setattr(out, _FLAGS[word], True)
        else:
            raise BadComment(f"'{word[:40]}' is not an import option")
        out.given.append(key)
        i += 1
    if out.format is not None and out.format not in FORMAT_NAMES:
        raise BadComment(f"unknown format '{out.format[:30]}' (known: {', '.join(FORMAT_NAMES)})")
    if out.mapping is not None:
        try:
            named.check_name(out.mapping)
        except MappingError as exc:
            raise BadComment(str(exc)) from None
    return out


def max_upload_bytes() -> int:
    try:
        mb = float(os.environ.get("KPIBOT_MAX_UPLOAD_MB") or 200)
    except ValueError:
        mb = 200
    return int(max(mb, 0) * 1024 * 1024)


class Thread:
    """Answers in the file's thread: one message per file, a progress note updated in
    place for a large one."""

    def __init__(self, client: WebClient, channel: str, ts: str):
        self.client, self.channel, self.ts = client, channel, ts

    def post(self, text: str) -> str | None:
        got = self.client.chat_postMessage(channel=self.channel, thread_ts=self.ts,
                                           text=text, unfurl_links=False)
        return got.get("ts")

    def update(self, ts: str, text: str) -> None:
        self.client.chat_update(channel=self.channel, ts=ts, text=text)


def handle(deps: Deps, client: WebClient, event: dict, comment: str) -> None:
    """One ``message`` event with files (or an ``app_mention`` with one), after Bolt
    acknowledged it."""
    channel = event.get("channel", "")
    thread = Thread(client, channel, event.get("thread_ts") or event.get("ts", ""))
    files = [f for f in event.get("files") or [] if isinstance(f, dict) and f.get("id")]
    try:
        opts = parse_comment(comment)
    except BadComment as exc:
        thread.post(f"I did not import this: {mrkdwn.escape(str(exc))}. Write `{USAGE}` "
                    "as the file's comment (no comment imports it as it is).")
        return
    if opts is None or not files:
        if opts is not None:
            thread.post("Share a file with this comment and I will import it.")
        return
    user = event.get("user", "")
    if not is_admin(client, deps.settings.admins, user):
        thread.post("Only the bot's admins can import files (`KPIBOT_ADMINS`, else workspace "
                    "admins); nothing was downloaded or changed.")
        return
    store = deps.store()
    for f in files[:10]:
        if not store.first_seen(f"slack-file:{channel}:{event.get('ts')}:{f['id']}",
                                int(time.time()), SEEN_FOR_S):
            continue
        try:
            thread.post(_one(deps, client, store, thread, f, opts, user))
        except SlackApiError as exc:
            log.warning("could not answer about file %s: %s", f.get("id"),
                        exc.response.get("error"))


def _one(deps: Deps, client: WebClient, store, thread: Thread, f: dict, opts: Options,
         user: str) -> str:
    """Import one shared file; the answer for its thread."""
    try:
        info = client.files_info(file=f["id"]).get("file") or {}
    except SlackApiError as exc:
        return (f"I could not read that file's details from Slack "
                f"({mrkdwn.escape(str(exc.response.get('error', 'error')))}); nothing was "
                "imported.")
    name = str(info.get("name") or f.get("name") or f["id"])
    shown = f"*{mrkdwn.escape(mrkdwn.cut(name, 80))}*"
    if info.get("is_external") or info.get("mode") in ("external", "snippet", "post",
                                                       "tombstone", "hidden_by_limit"):
        return (f"{shown} is not a file I can import (a link or a snippet); share the CSV or "
                "spreadsheet file itself.")
    size = int(info.get("size") or 0)
    limit = max_upload_bytes()
    if size > limit:
        return (f"{shown} is {_mb(size)}; I import files up to {_mb(limit)} "
                "(`KPIBOT_MAX_UPLOAD_MB`). Nothing was downloaded. Split it, or import it on "
                "the server with `kpibot import`.")
    url = info.get("url_private_download") or info.get("url_private")
    if not url:
        return f"Slack gave no download address for {shown}; nothing was imported."
    folder = Path(tempfile.mkdtemp(prefix="kpibot-upload-"))
    progress_ts = None
    try:
        path = folder / _safe_name(name)
        try:
            _download(url, deps.settings.bot_token or "", deps.settings.api_url, path, limit,
                      deps.settings.timeout)
        except _DownloadError as exc:
            return f"I could not download {shown} from Slack ({exc}); nothing was imported."
        got = path.stat().st_size
        if got >= PROGRESS_FROM_BYTES:
            progress_ts = thread.post(f"Importing {shown} ({_mb(got)})…")
        answer = _import(store, path, name, shown, opts, user, f["id"],
                         _Progress(thread, progress_ts, shown))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if progress_ts:
        try:
            thread.update(progress_ts, f"Imported {shown}: the answer follows."
                          if not answer.startswith("✗") else f"{shown}: see below.")
        except SlackApiError:
            pass
    return answer


def _import(store, path: Path, name: str, shown: str, opts: Options, user: str,
            file_id: str, progress) -> str:
    mapping = named.path_of(store.path, opts.mapping) if opts.mapping else None
    if mapping is not None and not mapping.is_file():
        known = [m.name for m in named.listing(store.path)]
        return (f"✗ {shown}: there is no mapping named `{mrkdwn.escape(opts.mapping)}` "
                + (f"(named mappings: {', '.join(f'`{k}`' for k in known[:20])})" if known
                   else "(none yet: `kpibot mapping add NAME FILE.toml` on the server)")
                + "; nothing was imported.")
    try:
        result = import_file(store, path, format=opts.format, campaign=opts.campaign,
                             mapping=mapping, skip_bad_rows=opts.skip_bad_rows,
                             dry_run=opts.dry_run, imported_by=f"slack:{user}",
                             progress=progress, sheet=opts.sheet,
                             source_name=f"slack:{file_id}:{name}")
    except ImportRejected as exc:
        return _rejected(shown, exc)
    except StoreError as exc:
        return f"✗ {shown}: the database refused the import ({mrkdwn.escape(str(exc))})."
    except KpiBotError as exc:
        return f"✗ {shown}: {mrkdwn.escape(str(exc))}; nothing was imported."
    lines = [("✓ " if not result.rows_rejected else "! ")
             + mrkdwn.escape(result.summary())]
    lines += [f"note: {mrkdwn.escape(w)}" for w in result.warnings]
    if result.rows_rejected:
        lines.append(f"Skipped {result.rows_rejected:,} bad row"
                     f"{'s' * (result.rows_rejected != 1)}:")
        lines += _rows(result.errors, result.rows_rejected)
    return "\n".join(lines)


def _rejected(shown: str, exc: ImportRejected) -> str:
    head = mrkdwn.escape(str(exc.args[0]))
    lines = [f"✗ {shown}: {head}"]
    if exc.errors:
        lines += _rows(exc.errors, exc.total_errors)
    return "\n".join(lines)


def _rows(errors: list, total: int) -> list[str]:
    out = [f"• {mrkdwn.escape(mrkdwn.cut(str(e), 300))}" for e in errors[:SHOWN_ERRORS]]
    if total > SHOWN_ERRORS:
        out.append(f"… and {total - SHOWN_ERRORS:,} more")
    return out


class _Progress:
    """The import's progress (bytes read of the file), shown every few seconds in the
    progress note of a large file."""

    def __init__(self, thread: Thread, ts: str | None, shown: str):
        self.thread, self.ts, self.shown = thread, ts, shown
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.ts is None or now - self.last < PROGRESS_EVERY_S or not total:
            return
        self.last = now
        try:
            self.thread.update(self.ts, f"Importing {self.shown}: {min(done / total, 1):.0%}…")
        except SlackApiError:
            pass


class _DownloadError(Exception):
    pass


def _slack_host(url: str, api_url: str) -> bool:
    """Whether ``url`` is Slack's (or the API server's own host): the only places the
    bot token is sent."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    api_host = (urllib.parse.urlsplit(api_url).hostname or "").lower()
    return host == api_host or host == "slack.com" or host.endswith(".slack.com")


class _SlackRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects followed only to Slack's hosts (the token goes along)."""

    def __init__(self, api_url: str):
        self.api_url = api_url

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _slack_host(newurl, self.api_url):
            raise _DownloadError("it redirected outside Slack")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, token: str, api_url: str, to: Path, limit: int, timeout: int) -> None:
    if not url.lower().startswith(("https://", "http://")) or not _slack_host(url, api_url):
        raise _DownloadError("its address is not Slack's")
    opener = urllib.request.build_opener(_SlackRedirectsOnly(api_url))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    got = 0
    try:
        with opener.open(req, timeout=max(timeout, 30)) as r, open(to, "wb") as out:
            ctype = r.headers.get("Content-Type", "")
            if ctype.startswith("text/html"):     # Slack's sign-in page: the token lacks files:read
                raise _DownloadError("Slack answered with a web page: the bot may lack the "
                                     "files:read scope")
            while chunk := r.read(_CHUNK):
                got += len(chunk)
                if got > limit:
                    raise _DownloadError(f"it is larger than {_mb(limit)}")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise _DownloadError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _DownloadError(mrkdwn.escape(str(reason))[:80]) from None
    if got == 0:
        raise _DownloadError("it was empty")


def _safe_name(name: str) -> str:
    base = re.sub(r"[^\w.\- ]", "_", Path(name).name)[:100].strip(". ") or "upload"
    return base


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):,.1f} MB"
