"""``kpibot``: the command line.

    kpibot demo                      # a demo data set in ./kpibot.db
    kpibot import FILE... [--format F] [--campaign NAME] [--map MAP.toml] [--skip-bad-rows]
    kpibot ask "/kpi black-friday 7d by country" [--json] [--chart PNG]
    kpibot kpi CAMPAIGN [--since P] [--until D] [--by DIM] [--json] [--chart PNG]
    kpibot list
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import click

from metrics.errors import KpiBotError

FORMAT_CHOICES = ("events", "calls", "daily", "twilio-messages", "twilio-calls", "twilio-bulk")


def _store(db: str | None):
    from metrics.store import Store
    path = db or os.environ.get("KPIBOT_DB") or "kpibot.db"
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["kpibot.db"] = path     # for _Main's messages
    try:
        return Store.open(db)
    except KpiBotError as exc:   # says what, where and what to do (read-only, not a database, ...)
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"cannot open the database {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _environment_error(exc: Exception, db: str) -> str | None:
    """One line for a failure of the machine rather than of kpibot (a full disk, a locked or
    damaged database); None for anything else, whose traceback is wanted."""
    import errno
    import sqlite3
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        from metrics.store import no_space_message
        return no_space_message(db, exc)
    if type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return f"database error in {db}: {_one_line(exc)}"
    return None


class _Main(click.Group):
    """The command group: a kpibot error, or a full disk or a database error, that reaches
    it is shown as one line with a non-zero exit, not as a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KpiBotError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            db = ctx.meta.get("kpibot.db") or os.environ.get("KPIBOT_DB") or "kpibot.db"
            message = _environment_error(exc, db)
            if message is None:
                raise
            raise click.ClickException(message) from None


db_option = click.option("--db", metavar="PATH", envvar="KPIBOT_DB",
                         help="SQLite database file (default: $KPIBOT_DB or ./kpibot.db).")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpibot")
def main() -> None:
    """Campaign KPIs for SMS and call campaigns, from your providers' exports."""
    from metrics.importers.source import prepare_csv_reading
    prepare_csv_reading()   # process-wide CSV settings, set here rather than on import


class _Progress:
    """A tqdm bar over the bytes of one file, only on a terminal."""

    def __init__(self, name: str, enabled: bool):
        self.bar = None
        self.name = name
        self.enabled = enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.name[:30], leave=False, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES),
              help="The file's format (default: detected from the header).")
@click.option("--campaign", metavar="NAME",
              help="Campaign for every row (Twilio exports, or files without a campaign column).")
@click.option("--map", "mapping", metavar="MAP", type=click.Path(path_type=Path),
              help="A TOML mapping file for any other CSV (see examples/), or the name of one "
                   "kept with `kpibot mapping add`.")
@click.option("--skip-bad-rows", is_flag=True,
              help="Import the good rows and report the bad ones (default: a bad row rejects "
                   "the whole file).")
@click.option("--strict", "strict", is_flag=True, help="Reject a file with any bad row (the default).")
@click.option("--dry-run", is_flag=True, help="Check and count everything, change nothing.")
@click.option("--sheet", metavar="NAME",
              help="For a spreadsheet (.xlsx, .xls): the sheet to read, by name or number "
                   "from 1 (default: the first).")
@click.option("--region", metavar="CC", default=None,
              help="Country for numbers written without +country code (default: $KPIBOT_REGION or US).")
@db_option
def import_cmd(files, fmt, campaign, mapping, skip_bad_rows, strict, dry_run, sheet, region,
               db) -> None:
    """Import CSV exports or spreadsheets (XLSX, XLS): canonical events, calls, daily
    totals, clicks, orders (conversions), Twilio logs, or any table through a mapping
    file. Each file lands whole or not at all; rows already imported are counted once."""
    from metrics.errors import ImportRejected, StoreError
    from metrics.importers import import_file

    if strict and skip_bad_rows:
        raise click.UsageError("--strict and --skip-bad-rows contradict each other")
    store = _store(db)
    failed = 0
    tty = sys.stderr.isatty()
    for path in files:
        progress = _Progress(path.name, tty)
        try:
            result = import_file(store, path, format=fmt, campaign=campaign, mapping=mapping,
                                 skip_bad_rows=skip_bad_rows, dry_run=dry_run,
                                 default_region=region, progress=progress, sheet=sheet)
        except StoreError as exc:   # the database itself (full disk, read-only): stop here
            progress.close()
            store.close()
            raise click.ClickException(f"{path.name}: {exc}") from None
        except ImportRejected as exc:
            progress.close()
            failed += 1
            click.secho(f"✗ {exc}", fg="red", err=True)
            continue
        except KpiBotError as exc:
            progress.close()
            failed += 1
            click.secho(f"✗ {path.name}: {exc}", fg="red", err=True)
            continue
        progress.close()
        click.echo(("✓ " if not result.rows_rejected else "! ") + result.summary())
        for w in result.warnings:
            click.echo(f"  note: {w}")
        if result.rows_rejected:
            click.echo(f"  skipped {result.rows_rejected:,} bad row"
                       f"{'s' * (result.rows_rejected != 1)}:")
            for e in result.errors[:20]:
                click.echo(f"    {e}")
            if result.rows_rejected > 20:
                click.echo(f"    … and {result.rows_rejected - 20:,} more "
                           f"(all are listed in the database's import_rejects table)"
                           if len(result.errors) > 20 else
                           f"    … and {result.rows_rejected - 20:,} more")
    store.close()
    if failed:
        raise SystemExit(1)


@main.command()
@click.option("--messages", default=60_000, show_default=True, help="SMS events to generate.")
@click.option("--calls", default=12_000, show_default=True, help="Call events to generate.")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same data).")
@db_option
def demo(messages: int, calls: int, seed: int, db: str | None) -> None:
    """Fill the database with a realistic demo: five SMS and three call campaigns over the
    last eight weeks (re-running it adds nothing twice)."""
    from metrics.demo import CALL_CAMPAIGNS, SMS_CAMPAIGNS, write_call_events, write_message_events
    from metrics.importers import import_file
    from metrics.names import name_key

    store = _store(db)
    end = dt.datetime.now(dt.timezone.utc)
    click.echo(f"Demo data into {store.path.resolve()}")
    with tempfile.TemporaryDirectory(prefix="kpibot-demo-") as tmp:
        files = [write_message_events(Path(tmp) / "demo-sms-events.csv", messages, seed=seed,
                                      end=end),
                 write_call_events(Path(tmp) / "demo-call-events.csv", calls, seed=seed + 1,
                                   end=end)]
        for path in files:
            progress = _Progress(path.name, sys.stderr.isatty())
            result = import_file(store, path, progress=progress, imported_by="kpibot demo")
            progress.close()
            click.echo("  " + result.summary())
    ids = {name_key(c["name"]): c["id"] for c in store.campaigns()}
    for camp in SMS_CAMPAIGNS + CALL_CAMPAIGNS:
        store.set_goal(ids[name_key(camp.name)], camp.goal)
    click.echo()
    click.echo(campaign_table(store))
    first = SMS_CAMPAIGNS[0].name
    chart = Path("kpibot-demo-chart.png")
    click.echo(f"\nThe card of {first} (`kpibot ask \"/kpi {first}\"`), chart in {chart}:\n")
    store.close()
    _answer(f'"{first}"', db, False, chart, None)


def campaign_table(store) -> str:
    """Every campaign with its channel, goal, volume and dates, as aligned text."""
    from metrics import engine

    from .text import campaign_list
    return campaign_list(engine.campaigns(store))


def _answer(text_in: str, db: str | None, as_json: bool, chart: Path | None,
            chart_dir: Path | None) -> None:
    """Run one /kpi command and print what Slack would show (or its JSON)."""
    import json

    from .command import Context, run
    from .text import file_name
    store = _store(db)
    try:
        reply = run(text_in, Context(store))
        if as_json:
            click.echo(json.dumps(reply.data, ensure_ascii=False, indent=2, default=str))
        else:
            click.echo(reply.text)
        if reply.ok and (chart or chart_dir):
            charts = reply.charts(every=chart_dir is not None)
            for i, (name, png) in enumerate(charts):
                if chart and i == 0:
                    path = chart
                elif chart_dir:
                    path = chart_dir / file_name(name)
                else:
                    continue
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(png)
                except OSError as exc:
                    raise click.ClickException(
                        f"cannot write the chart to {path} ({exc.strerror or exc}): name a "
                        "file in a folder you can write to") from None
                click.echo(f"chart: {path}", err=True)
        if not reply.ok:
            sys.exit(2)
    finally:
        store.close()


chart_options = [
    click.option("--json", "as_json", is_flag=True, help="Print the structured result instead."),
    click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), metavar="PNG",
                 help="Write the main chart to this PNG file."),
    click.option("--chart-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                 help="Write every chart of the answer into this folder."),
]


def _with_chart_options(f):
    for opt in reversed(chart_options):
        f = opt(f)
    return f


@main.command()
@click.argument("text_in", metavar='"/kpi ..."')
@_with_chart_options
@db_option
def ask(text_in: str, as_json: bool, chart: Path | None, chart_dir: Path | None,
        db: str | None) -> None:
    """Answer a /kpi command exactly as Slack would (text, or --json)."""
    _answer(text_in, db, as_json, chart, chart_dir)


@main.command()
@click.argument("campaign")
@click.option("--since", metavar="PERIOD", help="7d, 30d, 24h, today, this-week, last-week, "
              "a month (2026-10) or a date.")
@click.option("--until", metavar="DATE", help="Last day of a date range (with --since DATE).")
@click.option("--by", metavar="DIMENSION", help="day, week, hour, weekday, segment, variant, "
              "country, status, error, disposition or an attribute column.")
@_with_chart_options
@db_option
def kpi(campaign: str, since: str | None, until: str | None, by: str | None, as_json: bool,
        chart: Path | None, chart_dir: Path | None, db: str | None) -> None:
    """The KPI card of one campaign."""
    parts = ['"' + campaign.replace('"', "") + '"']
    if since:
        parts.append(since)
    if until:
        parts.append(until)
    if by:
        parts += ["by", by]
    _answer(" ".join(parts), db, as_json, chart, chart_dir)


@main.command()
@click.option("--port", default=3000, show_default=True, envvar="PORT",
              help="HTTP port for Slack's requests (not used in Socket Mode).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@db_option
def serve(port: int, host: str, db: str | None) -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on
    /slack/events. Needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN)."""
    import logging

    from metrics.store import Store

    from .deps import Settings
    from .serve import serve as run_server
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    path = db or os.environ.get("KPIBOT_DB") or "kpibot.db"
    _store(path).close()     # a clear error now if the database cannot be opened
    try:
        run_server(settings, lambda: Store(path), host, port)
    except KpiBotError as exc:
        raise click.ClickException(str(exc))


@main.group()
def sync() -> None:
    """Fill in what live callbacks missed, from a provider's API."""


@sync.command("twilio")
@click.option("--since", default="48h", show_default=True, metavar="PERIOD",
              help="How far back: 48h, 7d, or a date (2026-11-01).")
@click.option("--campaign", metavar="NAME",
              help="Campaign of records whose sender is not in [campaign_by_sender].")
@db_option
def sync_twilio_cmd(since: str, campaign: str | None, db: str | None) -> None:
    """Read Twilio's Messages and Calls lists since --since and apply what the store does
    not have yet (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)."""
    from metrics.live.apply import Applier, held_summary
    from metrics.live.sync import SyncError, since_of, sync_twilio, twilio_client

    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if not sid or not token:
        raise click.ClickException("kpibot sync twilio needs TWILIO_ACCOUNT_SID and "
                                   "TWILIO_AUTH_TOKEN (Twilio Console > Account Info)")
    store = _store(db)
    tty = sys.stderr.isatty()

    def progress(r) -> None:
        if tty:
            click.echo(f"\r  {r.messages:,} messages, {r.calls:,} calls read", nl=False,
                       err=True)
    try:
        result = sync_twilio(store, twilio_client(sid, token), since_of(since),
                             campaign=campaign, progress=progress)
        if tty:
            click.echo(err=True)
        applier = Applier(store)
        while applier.run_once().events:
            pass
        applier.retry_held(force=True)
    except (SyncError, KpiBotError) as exc:
        store.close()
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary())
    held = sum(h["events"] for h in held_summary(store))
    if held:
        click.echo(f"  {held:,} event(s) have no campaign yet: see `kpibot list`")
    store.close()


@main.group()
def alerts() -> None:
    """Threshold alerts (rules are managed with `/kpi alert ...`, or `kpibot ask`)."""


@alerts.command("check")
@click.option("--dry-run", is_flag=True, help="Show what would be posted; change nothing.")
@db_option
def alerts_check(dry_run: bool, db: str | None) -> None:
    """Evaluate every alert rule now and show the transitions."""
    import time

    from metrics import alerts as al

    from .text import notice_text
    store = _store(db)
    try:
        if not dry_run:
            from .deps import Settings, web_client
            from .jobs import check_alerts
            settings = Settings.from_env()
            if not settings.bot_token:
                raise click.ClickException("set SLACK_BOT_TOKEN to post alerts (or use "
                                           "--dry-run to see what would be posted)")
            sent = check_alerts(store, web_client(settings), int(time.time()))
            click.echo(f"{len(al.rules(store))} rule(s) checked: {sent} post(s) sent.")
            return
        notices = al.evaluate(store, int(time.time()), dry_run=True)
        if not notices:
            click.echo(f"{len(al.rules(store))} rule(s) checked: nothing to post.")
        for n in notices:
            click.echo(f"would post in {n.rule.channel or '(no channel)'}: {notice_text(n.payload())}")
    finally:
        store.close()


@main.group()
def digest() -> None:
    """Digests (subscriptions are managed with `/kpi digest ...`)."""


@digest.command("preview")
@click.option("--daily", is_flag=True, help="Yesterday instead of the last seven days.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")
@db_option
def digest_preview(daily: bool, as_json: bool, db: str | None) -> None:
    """The digest as it would be posted now."""
    _answer("digest preview" + (" daily" if daily else ""), db, as_json, None, None)


@main.group()
def mapping() -> None:
    """Named mappings: mapping files kept beside the database (in mappings/), named by
    an import with --map NAME (from Slack too)."""


def _db_path(db: str | None) -> str:
    return db or os.environ.get("KPIBOT_DB") or "kpibot.db"


@mapping.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace a mapping of that name.")
@db_option
def mapping_add(name: str, file: Path, replace: bool, db: str | None) -> None:
    """Check FILE (a mapping's TOML) and keep it as NAME."""
    from metrics.errors import MappingError
    from metrics.importers import named
    try:
        got = named.add(_db_path(db), name, file, replace=replace)
    except MappingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"✓ mapping '{got.name}' ({got.format or 'events'} rows) kept as {got.path}; "
               f"import with --map {got.name}")


@mapping.command("list")
@db_option
def mapping_list(db: str | None) -> None:
    """The named mappings, with what each reads."""
    from metrics.importers import named
    found = named.listing(_db_path(db))
    if not found:
        click.echo(f"no named mappings in {named.folder(_db_path(db))}")
    for m in found:
        click.echo(f"{m.name}\t{m.problem and 'cannot be read: ' + m.problem or m.format}")


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")
@db_option
def list_cmd(as_json: bool, db: str | None) -> None:
    """Every campaign with channel, goal, dates and volume."""
    _answer("list", db, as_json, None, None)


if __name__ == "__main__":
    main()
