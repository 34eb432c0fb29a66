"""A realistic, reproducible data set of SMS and call campaigns, for the demo and benchmarks.

Numbers are drawn from ranges libphonenumber accepts as valid mobile numbers in each
country; statuses, clicks, conversions, opt-outs and call outcomes follow rates typical of
real campaigns, with the variants and segments differing enough to be worth comparing.
"""
from __future__ import annotations

import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import phonenumbers

from .importers.formats import CALL_FIELDS, MESSAGE_FIELDS

_TEMPLATES = {
    "US": lambda r: "+1" + r.choice(["212", "213", "305", "312", "415", "503", "512", "617", "646",
                                      "702", "713", "718", "917"]) + str(r.randint(200, 999))
    + "%04d" % r.randint(0, 9999),
    "GB": lambda r: "+447" + str(r.randint(400, 999)) + "%06d" % r.randint(0, 999999),
    "DE": lambda r: "+49" + r.choice(["151", "152", "160", "170", "171", "175", "176"])
    + "%08d" % r.randint(0, 99999999),
    "FR": lambda r: "+33" + r.choice("67") + "%08d" % r.randint(0, 99999999),
    "BR": lambda r: "+55119" + "%08d" % r.randint(0, 99999999),
    "IN": lambda r: "+91" + r.choice("9876") + "%09d" % r.randint(0, 999999999),
    "JP": lambda r: "+81" + r.choice(["90", "80", "70"]) + "%08d" % r.randint(0, 99999999),
    "GE": lambda r: "+9955" + r.choice(["55", "57", "58", "59", "91", "93", "95", "97", "99"])
    + "%06d" % r.randint(0, 999999),
    "RU": lambda r: "+79" + "%09d" % r.randint(0, 999999999),
    "KZ": lambda r: "+770" + r.choice("01578") + "%07d" % r.randint(0, 9999999),
}
_PRICE = {"US": 0.0079, "GB": 0.0400, "DE": 0.0810, "FR": 0.0740, "BR": 0.0500, "IN": 0.0060,
          "JP": 0.0750, "GE": 0.0950, "RU": 0.0550, "KZ": 0.0600}


def phone_pool(country: str, n: int, rng: random.Random) -> list[str]:
    """``n`` distinct numbers that libphonenumber accepts as valid in ``country``."""
    make = _TEMPLATES[country]
    out: set[str] = set()
    while len(out) < n:
        s = make(rng)
        if s not in out and phonenumbers.is_valid_number(phonenumbers.parse(s, None)):
            out.add(s)
    return sorted(out)


@dataclass(frozen=True)
class DemoCampaign:
    name: str
    channel: str          # sms or call
    goal: str
    countries: tuple[str, ...]
    start_day: int        # days before the end date
    days: int
    share: float          # share of the channel's volume
    variants: tuple[str, ...] = ("A", "B")
    ctr: float = 0.06     # clicks per delivered, variant A; B gets lift
    lift: float = 1.25
    opt_out: float = 0.008


SMS_CAMPAIGNS = (
    DemoCampaign("spring-sale", "sms", "sales", ("US", "GB", "DE"), 48, 21, 0.26),
    DemoCampaign("black-friday", "sms", "sales", ("US", "GB", "FR", "BR"), 20, 20, 0.30,
                 ctr=0.08, lift=1.05, opt_out=0.012),
    DemoCampaign("welcome-series", "sms", "lead-gen", ("US", "IN", "BR"), 55, 55, 0.16,
                 ctr=0.05, lift=1.4),
    DemoCampaign("весенняя-акция", "sms", "info", ("RU", "KZ", "GE"), 35, 28, 0.14,
                 variants=("A",), ctr=0.03, opt_out=0.02),
    DemoCampaign("春の新商品", "sms", "awareness", ("JP",), 27, 21, 0.14, ctr=0.04, lift=1.1),
)
CALL_CAMPAIGNS = (
    DemoCampaign("renewals-q4", "call", "appointments", ("US", "GB"), 40, 40, 0.5),
    DemoCampaign("win-back-calls", "call", "sales", ("US", "DE", "FR"), 30, 25, 0.3),
    DemoCampaign("support-callbacks", "call", "support", ("US",), 45, 45, 0.2, variants=("",)),
)

_SEGMENTS = (("new", 0.3), ("active", 0.45), ("lapsed", 0.25))
_ERRORS = ("30003", "30005", "30006", "30007", "30008")
_BODIES = {"A": "Hi! {c}: 20% off this week only. Shop: https://ex.co/s Reply STOP to opt out",
           "B": "Last chance: {c} deals end Sunday. Tap https://ex.co/s Reply STOP to opt out"}


def _pools(campaigns, per_country: int, rng: random.Random) -> dict[str, list[str]]:
    countries = sorted({c for camp in campaigns for c in camp.countries})
    return {c: phone_pool(c, per_country, rng) for c in countries}


def _when(rng: random.Random, camp: DemoCampaign, end: dt.datetime) -> dt.datetime:
    day = camp.start_day - rng.randrange(camp.days)
    hour = min(21, max(8, int(rng.gauss(13, 3))))
    return end - dt.timedelta(days=day) + dt.timedelta(hours=hour - 12, minutes=rng.randrange(60),
                                                       seconds=rng.randrange(60))


def write_message_events(path: str | Path, n: int, *, seed: int = 7,
                         end: dt.datetime | None = None, recipients_per_country: int = 3000,
                         campaigns=SMS_CAMPAIGNS) -> Path:
    """Write ``n`` canonical SMS events (the `events` format) to ``path``."""
    rng = random.Random(seed)
    end = (end or dt.datetime.now(dt.timezone.utc)).replace(minute=0, second=0, microsecond=0)
    end = end.replace(hour=12)
    pools = _pools(campaigns, recipients_per_country, rng)
    weights = [c.share for c in campaigns]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MESSAGE_FIELDS)
        rand, choice = rng.random, rng.choice
        for i in range(n):
            camp = rng.choices(campaigns, weights)[0]
            country = choice(camp.countries)
            number = choice(pools[country])
            variant = choice(camp.variants)
            seg = rng.choices([s for s, _ in _SEGMENTS], [w_ for _, w_ in _SEGMENTS])[0]
            r = rand()
            status = ("delivered" if r < 0.935 else "undelivered" if r < 0.962 else
                      "failed" if r < 0.975 else "sent" if r < 0.985 else
                      "unknown" if r < 0.99 else "queued" if r < 0.995 else "canceled")
            delivered = status == "delivered"
            ctr = camp.ctr * (camp.lift if variant == "B" else 1.0) * (1.3 if seg == "active" else
                                                                       0.7 if seg == "lapsed" else 1)
            clicked = delivered and rand() < ctr
            converted = clicked and rand() < 0.22
            revenue = round(rng.lognormvariate(3.6, 0.6), 2) if converted else ""
            opted = delivered and rand() < camp.opt_out * (1.6 if seg == "lapsed" else 1)
            replied = delivered and not opted and rand() < 0.02
            segments = 1 if rand() < 0.85 else 2
            cost = "" if status in ("queued", "canceled") else f"{_PRICE[country] * segments:.4f}"
            w.writerow((
                camp.name, "SM%032x" % rng.getrandbits(128),
                _when(rng, camp, end).strftime("%Y-%m-%dT%H:%M:%SZ"), number, status,
                choice(_ERRORS) if status in ("undelivered", "failed") else "", "outbound",
                _BODIES.get(variant, _BODIES["A"]).format(c=camp.name), cost,
                "USD" if cost else "", segments, int(clicked), int(converted), revenue, int(opted),
                int(replied), int(delivered and rand() < 0.0005), seg, variant))
    return path


_DISPOSITIONS = (("interested", 0.22), ("not interested", 0.38), ("callback", 0.15),
                 ("sale", 0.12), ("wrong number", 0.05), ("do not call", 0.08))
_AGENTS = ("ana", "ben", "chloé", "dmitri", "eun-ji", "farid")


def write_call_events(path: str | Path, n: int, *, seed: int = 11, end: dt.datetime | None = None,
                      recipients_per_country: int = 2000, campaigns=CALL_CAMPAIGNS) -> Path:
    """Write ``n`` canonical call events (the `calls` format) to ``path``."""
    rng = random.Random(seed)
    end = (end or dt.datetime.now(dt.timezone.utc)).replace(hour=12, minute=0, second=0,
                                                             microsecond=0)
    pools = _pools(campaigns, recipients_per_country, rng)
    weights = [c.share for c in campaigns]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CALL_FIELDS)
        for _ in range(n):
            camp = rng.choices(campaigns, weights)[0]
            country = rng.choice(camp.countries)
            variant = rng.choice(camp.variants)
            seg = rng.choices([s for s, _ in _SEGMENTS], [w_ for _, w_ in _SEGMENTS])[0]
            inbound = camp.goal == "support"
            r = rng.random()
            status, answered_by = (("completed", "human") if r < 0.46 else
                                   ("completed", "machine_end_beep") if r < 0.66 else
                                   ("no-answer", "") if r < 0.86 else ("busy", "") if r < 0.94 else
                                   ("failed", "") if r < 0.98 else ("canceled", ""))
            if inbound:
                status, answered_by = ("completed", "") if r < 0.9 else ("no-answer", "")
            human = status == "completed" and answered_by in ("human", "")
            abandoned = human and rng.random() < 0.025
            disposition, duration, converted, revenue = "", 0, 0, ""
            if human and not abandoned:
                disposition = rng.choices([d for d, _ in _DISPOSITIONS],
                                          [p * (1.3 if d == "sale" and variant == "B" else 1)
                                           for d, p in _DISPOSITIONS])[0]
                duration = max(15, int(rng.lognormvariate(5.0, 0.7)))
                converted = int(disposition in ("sale", "interested") and
                                (disposition == "sale" or rng.random() < 0.3))
                revenue = round(rng.lognormvariate(5.0, 0.5), 2) if disposition == "sale" else ""
            elif status == "completed":
                duration = rng.randint(5, 40)
            cost = f"{0.014 * max(1, -(-duration // 60)):.4f}" if status != "canceled" else ""
            w.writerow((
                camp.name, "CA%032x" % rng.getrandbits(128),
                _when(rng, camp, end).strftime("%Y-%m-%dT%H:%M:%SZ"),
                rng.choice(pools[country]), "inbound" if inbound else "outbound", status,
                answered_by, duration, disposition, int(abandoned), converted, revenue, cost,
                "USD" if cost else "", rng.choice(_AGENTS) if human else "", seg, variant))
    return path
