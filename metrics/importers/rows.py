"""Row builders: a batch of CSV rows, read through a format's bound fields, becomes the
columns of its table rows (messages, calls, daily totals), or a :class:`RowProblem`
naming the first bad column."""
from __future__ import annotations

import datetime as dt
import json
from itertools import repeat
from operator import itemgetter
from typing import Callable, Sequence

from ..phones import BadPhoneNumber
from ..times import check_day, parse_time
from . import values as V
from .binding import Context, Fields, Memo, RowProblem
from .fields import NULL, Format
from .values import campaign_name


def _attrs(extras: list[tuple[str, int]], fields: Sequence[str]) -> str:
    d = {name: fields[i].strip() for name, i in extras if fields[i].strip()}
    return json.dumps(d, ensure_ascii=False, separators=(",", ":")) if d else NULL


class _Common:
    """What the message and call builders share: campaigns, recipients, keys, attributes.
    Nothing here has side effects until :meth:`finish`, which runs only for a batch whose
    every value was read."""

    def __init__(self, ctx: Context, fmt: Format, cols: Fields, extras, channel: str,
                 id_field: str, key_prefix: str, no_sender: str):
        self.ctx, self.cols, self.extras = ctx, cols, extras
        self.twilio = twilio = fmt.twilio
        self.channel, self.key_prefix, self.no_sender = channel, key_prefix, no_sender
        self.m_dir = Memo(V.direction)
        self.m_flag, self.m_text = Memo(V.flag), Memo(V.text, null=True)
        # Twilio writes charges as negative prices
        self.m_cost = Memo(self._money(absolute=twilio), null=True)
        self.m_money = Memo(self._money(absolute=False), null=True)
        # whether an amount so far was written with a currency ($12, EUR 3): from then on
        # each row's amounts are held against its currency column, if it has one
        self.marked = False
        self.m_mark = Memo(V.money_mark)
        self.has_currency = cols.has("currency")
        self.r_cur = cols.reader("currency")
        R = cols.reader
        self.r_dir = R("direction")
        self.r_campaign, self.r_rcpt, self.r_id = R("campaign"), R("recipient"), R(id_field)
        self.r_from, self.r_to, self.r_service = R("from"), R("to"), R("service")
        self.m_name = Memo(campaign_name)
        self.m_campaign = Memo(lambda name: ctx.campaign_id(name, channel))
        senders = ctx.senders
        self.m_sender = Memo(lambda s: senders.get(V.sender_key(s)))

    def _money(self, absolute: bool) -> Callable[[str], int | None]:
        money = V.money

        def read(s: str) -> int | None:
            if not s:
                return None
            micros, mark = money(s, absolute=absolute)
            if mark is not None:
                self.marked = True
            return micros
        return read

    def check_currency(self, amounts: Sequence[str], C, n: int) -> None:
        """Each amount written with a currency ($12, 12 USD) against its row's currency
        column: ``¥1000`` in a USD row is a bad value."""
        marks = self.m_mark
        for amount, currency in zip(amounts, self.r_cur(C, n)):
            mark = marks[amount]
            if mark is not None and currency:
                why = V.currency_conflict(amount, mark, currency)
                if why:
                    raise V.BadValue(why)

    def read_parties(self, rows: Sequence[Sequence[str]]) -> tuple:
        """The batch's size and columns, each row's direction, campaign name and the other
        party's number as table cells."""
        n = len(rows)
        C = list(zip(*rows))
        self.col = "direction"
        try:
            direction = self.m_dir.column(self.r_dir(C, n))
            names, raw_to = self.names_and_numbers(C, n, direction)
            cells = self.ctx.phones.cells(raw_to)
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(self.cols.labels.get(self.col, self.col), str(exc)) from None
        return n, C, direction, names, cells

    def names_and_numbers(self, C, n: int, direction: list[str]) -> tuple[list, Sequence[str]]:
        """Each row's campaign name and the other party's raw number. Sets ``self.col``
        to the column being read, for the error message."""
        if not self.twilio:
            self.col = "campaign"
            names = self.m_name.column(self.r_campaign(C, n))
            self.col = "recipient"
            return names, self.r_rcpt(C, n)
        ctx = self.ctx
        froms, tos = self.r_from(C, n), self.r_to(C, n)
        out = [d == "outbound" for d in direction]
        if ctx.campaign:
            names = [ctx.campaign] * n
        else:
            own = [f if o else t for o, f, t in zip(out, froms, tos)]
            names = self.m_sender.column(own)
            if None in names:
                services = self.r_service(C, n)
                for j, name in enumerate(names):
                    if not name:
                        name = names[j] = ctx.senders.get(services[j])
                        if not name:
                            self.col = "from" if out[j] else "to"
                            raise V.BadValue(self.no_sender)
        self.col = "to" if out[0] else "from"   # what a one-row batch names
        return names, [t if o else f for o, f, t in zip(out, froms, tos)]

    def finish(self, rows: Sequence[Sequence[str]], C, n: int, names: list[str],
               cells: list[tuple]) -> tuple[list[int], list[str], list[str]]:
        """Campaign ids, row keys and attributes for a batch that read cleanly."""
        ctx = self.ctx
        cids = self.m_campaign.column(names)   # only now: a rejected row creates no campaign
        keys = list(map(str.strip, self.r_id(C, n)))
        if "" in keys:
            for j, k in enumerate(keys):
                if not k:
                    keys[j] = ctx.content_key(f"{self.key_prefix}{cids[j]}", rows[j])
        if self.extras:
            extras = self.extras
            attrs = [_attrs(extras, r) for r in rows]
            names_ = [name for name, _ in extras]
            for cid, a in zip(cids, attrs):
                if a:
                    ctx.attributes.update((cid, name) for name in names_)
        else:
            attrs = [NULL] * n
        ctx.phones.invalid += n - sum(map(itemgetter(2), cells))
        return cids, keys, attrs


def _message_builder(fmt, ctx: Context, cols: Fields, extras):
    tz, labels = ctx.tz, cols.labels
    R = cols.reader
    r_time, r_status, r_err, r_body = R("sent_at"), R("status"), R("error_code"), R("body")
    r_cost, r_cur, r_segments, r_revenue = R("cost"), R("currency"), R("segments"), R("revenue")
    r_flags = [(f, R(f)) for f in ("clicked", "converted", "opted_out", "replied",
                                   "spam_complaint")]
    r_segment, r_variant = R("segment"), R("variant")
    common = _Common(ctx, fmt, cols, extras, "sms", "message_id", "m",
                     "no campaign for this sender: pass --campaign NAME, or map senders to "
                     "campaigns in a --map file's [campaign_by_sender]")
    m_status, m_count = Memo(V.sms_status), Memo(V.count, null=True)
    m_flag, m_text, m_cost, m_money = common.m_flag, common.m_text, common.m_cost, common.m_money
    import_id = ctx.import_id

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        n, C, direction, names, cells = common.read_parties(rows)
        try:
            col = "sent_at"
            sent_at = list(map(parse_time, r_time(C, n), repeat(tz)))
            col = "status"
            status = m_status.column(r_status(C, n))
            col = "cost"
            cost = m_cost.column(r_cost(C, n))
            col = "revenue"
            revenue = m_money.column(r_revenue(C, n))
            if common.marked and common.has_currency:
                col = "cost"
                common.check_currency(r_cost(C, n), C, n)
                col = "revenue"
                common.check_currency(r_revenue(C, n), C, n)
            col = "segments"
            segments = m_count.column(r_segments(C, n))
            flags = []
            for col, read in r_flags:
                flags.append(m_flag.column(read(C, n)))
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cids, keys, attrs = common.finish(rows, C, n, names, cells)
        if "inbound" in direction:
            keyword = [(V.keyword(b) or NULL) if d == "inbound" else NULL
                       for d, b in zip(direction, r_body(C, n))]
        else:
            keyword = [NULL] * n
        clicked, converted, opted_out, replied, spam = flags
        return [keys, cids, sent_at, direction, status, m_text.column(r_err(C, n)),
                list(map(itemgetter(0), cells)), list(map(itemgetter(1), cells)), segments,
                cost, m_text.column(r_cur(C, n)), clicked, converted, revenue, opted_out,
                replied, spam, keyword, m_text.column(r_segment(C, n)),
                m_text.column(r_variant(C, n)), attrs, [import_id] * n]

    return build


def _call_builder(fmt, ctx: Context, cols: Fields, extras):
    tz, labels = ctx.tz, cols.labels
    R = cols.reader
    r_time, r_status, r_answered, r_duration = (R("started_at"), R("status"), R("answered_by"),
                                                R("duration_s"))
    r_disp, r_abandoned, r_converted, r_revenue, r_cost, r_cur, r_agent = (
        R("disposition"), R("abandoned"), R("converted"), R("revenue"), R("cost"),
        R("currency"), R("agent"))
    r_segment, r_variant = R("segment"), R("variant")
    common = _Common(ctx, fmt, cols, extras, "call", "call_id", "c",
                     "no campaign for this caller ID: pass --campaign NAME, or map numbers to "
                     "campaigns in a --map file's [campaign_by_sender]")
    m_status, m_answered, m_seconds = (Memo(V.call_status), Memo(V.answered_by, null=True),
                                       Memo(V.seconds, null=True))
    m_flag, m_text, m_cost, m_money = common.m_flag, common.m_text, common.m_cost, common.m_money
    import_id = ctx.import_id

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        n, C, direction, names, cells = common.read_parties(rows)
        try:
            col = "started_at"
            started_at = list(map(parse_time, r_time(C, n), repeat(tz)))
            col = "status"
            status = m_status.column(r_status(C, n))
            col = "answered_by"
            answered_by = m_answered.column(r_answered(C, n))
            col = "duration_s"
            duration = m_seconds.column(r_duration(C, n))
            col = "abandoned"
            abandoned = m_flag.column(r_abandoned(C, n))
            col = "converted"
            converted = m_flag.column(r_converted(C, n))
            col = "revenue"
            revenue = m_money.column(r_revenue(C, n))
            col = "cost"
            cost = m_cost.column(r_cost(C, n))
            if common.marked and common.has_currency:
                col = "revenue"
                common.check_currency(r_revenue(C, n), C, n)
                col = "cost"
                common.check_currency(r_cost(C, n), C, n)
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cids, keys, attrs = common.finish(rows, C, n, names, cells)
        return [keys, cids, started_at, direction, status, answered_by, duration,
                m_text.column(r_disp(C, n)), abandoned, converted, revenue, cost,
                m_text.column(r_cur(C, n)), m_text.column(r_agent(C, n)),
                list(map(itemgetter(0), cells)), list(map(itemgetter(1), cells)),
                m_text.column(r_segment(C, n)), m_text.column(r_variant(C, n)), attrs,
                [import_id] * n]

    return build


_DAILY_COUNTS = ("sent", "delivered", "failed", "clicks", "conversions", "opt_outs", "replies",
                 "complaints", "new_subscribers", "list_size", "calls_dialed", "calls_answered",
                 "calls_abandoned")


def _daily_builder(fmt, ctx: Context, cols: Fields, extras):
    tz, campaign_id, import_id, labels = ctx.tz, ctx.campaign_id, ctx.import_id, cols.labels
    g_date, g_campaign, g_channel = cols.get("date"), cols.get("campaign"), cols.get("channel")
    g_cost, g_revenue, g_talk = cols.get("cost"), cols.get("revenue"), cols.get("talk_seconds")
    g_counts = [(c, cols.get(c)) for c in _DAILY_COUNTS]

    def build_row(fields: Sequence[str]) -> tuple:
        col = "date"
        try:
            raw = g_date(fields).strip()
            try:
                day = dt.date.fromisoformat(raw[:10]) if len(raw) >= 10 else None
            except ValueError:
                day = None
            if day is None:
                ts = parse_time(raw, tz)
                day = dt.datetime.fromtimestamp(ts, tz).date()
            check_day(day)
            col = "campaign"
            name = campaign_name(g_campaign(fields))
            counts = {}
            for c, g in g_counts:
                col = c
                counts[c] = V.count(g(fields))
            col = "channel"
            ch = g_channel(fields).strip()
            if ch:
                chan = V.channel(ch)
            elif counts["calls_dialed"] is not None and counts["sent"] is None:
                chan = "call"
            else:
                chan = "sms"
            col = "cost"
            raw = g_cost(fields)
            cost = V.money_micros(raw) if raw else None
            col = "revenue"
            raw = g_revenue(fields)
            revenue = V.money_micros(raw) if raw else None
            col = "talk_seconds"
            talk = V.seconds(g_talk(fields), limit=V.MAX_COUNT)   # a day's total
        except (V.BadValue, ValueError) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        cid = campaign_id(name, chan)
        return tuple(NULL if v is None else v for v in (
            cid, day.isoformat(), chan, counts["sent"], counts["delivered"], counts["failed"],
            counts["clicks"], counts["conversions"], counts["opt_outs"], counts["replies"],
            counts["complaints"], cost, revenue, counts["new_subscribers"],
            counts["list_size"], counts["calls_dialed"], counts["calls_answered"],
            counts["calls_abandoned"], talk, import_id))

    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        # a few rows per campaign and day: row by row (campaign_id is idempotent, so a
        # batch retried after a bad row creates nothing twice)
        built = [build_row(r) for r in rows]
        return [list(col) for col in zip(*built)] if built else []

    return build


def _row_by_row(build_row: Callable[[Sequence[str]], tuple]
                ) -> Callable[[Sequence[Sequence[str]]], list[list]]:
    """A batch builder from a one-row builder (formats whose rows are few, or cost more to
    read than to loop over)."""
    def build(rows: Sequence[Sequence[str]]) -> list[list]:
        built = [build_row(r) for r in rows]
        return [list(col) for col in zip(*built)] if built else []
    return build


def _click_builder(fmt, ctx: Context, cols: Fields, extras):
    """Click rows (format 7): the message clicked, when, by whom, which link."""
    tz, labels, import_id = ctx.tz, cols.labels, ctx.import_id
    g_sid, g_to, g_link, g_time = (cols.get("message_sid"), cols.get("to"), cols.get("link"),
                                   cols.get("click_time"))
    phones = ctx.phones

    def build_row(fields: Sequence[str]) -> tuple:
        col = "message_sid"
        try:
            sid = V.identifier(g_sid(fields), "message SID")
            col = "click_time"
            at = parse_time(g_time(fields), tz)
            col = "to"
            (rcpt, _, valid), = phones.cells([g_to(fields)])
            col = "link"
            link = g_link(fields).strip()
            if len(link) > 4096:
                raise V.BadValue("link is longer than 4,096 characters")
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        phones.invalid += not valid
        return (V.click_key(sid, at, link), sid, at, rcpt, link or NULL, import_id)

    return _row_by_row(build_row)


def _conversion_builder(fmt, ctx: Context, cols: Fields, extras):
    """Conversion rows (format 8): an order (sign-up, appointment, lead), when, how much,
    and what may claim it: the message it names, the customer's number, a code. Empty
    values stay empty, so that a later copy of an order with fewer columns filled (the
    line-item rows of a Shopify export) updates only what it has."""
    tz, labels, import_id = ctx.tz, cols.labels, ctx.import_id
    G = cols.get
    g_id, g_at, g_rev, g_cur, g_type, g_msg, g_rcpt, g_code, g_cancel, g_refund = (
        G("order_id"), G("converted_at"), G("revenue"), G("currency"), G("type"),
        G("message_id"), G("recipient"), G("code"), G("cancelled"), G("refunded"))
    phones = ctx.phones
    m_money = Memo(lambda s: V.money(s) if s.strip() else (None, None))
    m_currency = Memo(V.iso_currency, null=True)
    m_type = Memo(V.conversion_type, null=True)

    def build_row(fields: Sequence[str]) -> tuple:
        col = "order_id"
        try:
            order = V.identifier(g_id(fields), "order id")
            col = "converted_at"
            at = parse_time(g_at(fields), tz)
            col = "type"
            kind = m_type[g_type(fields)]
            col = "currency"
            currency = m_currency[g_cur(fields)]
            amounts = []
            for col, g in (("revenue", g_rev), ("refunded", g_refund)):
                raw = g(fields)
                micros, mark = m_money[raw]
                if mark is not None and currency:   # $12 in a EUR row
                    why = V.currency_conflict(raw, mark, currency)
                    if why:
                        raise V.BadValue(why)
                amounts.append(micros)
            revenue, refunded = amounts
            if revenue is not None and refunded is not None:
                revenue -= abs(refunded)
            col = "cancelled"
            cancelled = V.cancelled(g_cancel(fields))
            col = "message_id"
            named = g_msg(fields).strip()
            if named:
                named = V.identifier(named, "message id")
            col = "recipient"
            (rcpt, _, valid), = phones.cells([g_rcpt(fields)])
            col = "code"
            code = V.text(g_code(fields))
        except (V.BadValue, ValueError, BadPhoneNumber) as exc:
            raise RowProblem(labels.get(col, col), str(exc)) from None
        phones.invalid += not valid
        return (order, at, kind, NULL if revenue is None else revenue, currency, cancelled,
                named or NULL, rcpt, code or NULL, import_id)

    return _row_by_row(build_row)


# A format's kind -> the builder of its rows: (format, context, bound fields, extra
# columns) -> build(a batch's rows) -> the batch's table columns.
BUILDERS: dict[str, Callable[..., Callable[[Sequence[Sequence[str]]], list[list]]]] = {
    "message": _message_builder, "call": _call_builder, "daily": _daily_builder,
    "click": _click_builder, "conversion": _conversion_builder}
