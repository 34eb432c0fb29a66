"""Our E.164 fast path must answer exactly what libphonenumber answers."""
import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from metrics.phones import BadPhoneNumber, PhoneHasher, region_and_validity

TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.VOIP, PhoneNumberType.PREMIUM_RATE)


def _numbers(seed: int = 3, per_example: int = 6):
    """Example numbers of every region and type, plus random digit changes of them
    (most of which are invalid in interesting ways: wrong length, wrong range)."""
    rng = random.Random(seed)
    out = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for t in TYPES:
            ex = phonenumbers.example_number_for_type(region, t)
            if ex is None:
                continue
            e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            out.add(e164)
            cc = str(ex.country_code)
            national = e164[1 + len(cc):]
            for _ in range(per_example):
                digits = list(national)
                op = rng.random()
                if op < 0.5:
                    i = rng.randrange(len(digits))
                    digits[i] = str(rng.randrange(10))
                elif op < 0.75:
                    digits.insert(rng.randrange(len(digits) + 1), str(rng.randrange(10)))
                elif len(digits) > 4:
                    del digits[rng.randrange(len(digits))]
                out.add("+" + cc + "".join(digits))
    return sorted(out)


def test_fast_path_matches_libphonenumber_everywhere():
    """Country, validity and the E.164 form that is hashed, for thousands of numbers of
    every region and type: our hasher against libphonenumber's own parse."""
    numbers = _numbers()
    assert len(numbers) > 5000
    ours = PhoneHasher(b"k")
    disagreements = []
    for s in numbers:
        n = phonenumbers.parse(s, None)
        valid = phonenumbers.is_valid_number(n)
        region = phonenumbers.region_code_for_number(n) if valid else None
        region = region or phonenumbers.region_code_for_country_code(n.country_code)
        want = (ours.hash_e164(phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)),
                None if region in ("ZZ", "001") else region, valid)
        got = tuple(ours(s))
        if got != want:
            disagreements.append((s, got[1:], want[1:]))
    assert disagreements == []


def test_region_rules_match_for_numbers_taking_the_fast_path():
    checked = 0
    for s in _numbers(seed=5):
        n = phonenumbers.parse(s, None)
        national = s[1 + len(str(n.country_code)):]
        if str(n.national_number) != national:
            continue   # libphonenumber read it differently; the hasher takes the full parse
        valid = phonenumbers.is_valid_number(n)
        region = (phonenumbers.region_code_for_number(n) if valid else None) or \
            phonenumbers.region_code_for_country_code(n.country_code)
        assert region_and_validity(n.country_code, national) == (
            None if region in ("ZZ", "001") else region, valid), s
        checked += 1
    assert checked > 5000


@pytest.fixture
def hasher():
    return PhoneHasher(b"test key", "US")


def test_same_number_in_any_spelling_has_one_hash(hasher):
    spellings = ["+14155550132", "+1 (415) 555-0132", "0014155550132", "(415) 555-0132",
                 "whatsapp:+14155550132", "tel:+1-415-555-0132", " +1.415.555.0132 "]
    phones = {hasher(s) for s in spellings}
    assert len(phones) == 1
    (p,) = phones
    assert p.country == "US" and len(p.hash) == 16


def test_countries_from_the_number(hasher):
    assert hasher("+447700900123").country == "GB"
    assert hasher("+4915123456789").country == "DE"
    assert hasher("+995555123456").country == "GE"
    assert hasher("+81901234567").country == "JP"
    assert hasher("+77011234567").country == "KZ"
    assert hasher("+79161234567").country == "RU"
    assert hasher("+390612345678").country == "IT"   # a leading zero, Italy
    assert hasher("+16135550123").country == "CA"    # +1 shared by NANP regions


def test_invalid_numbers_are_kept_and_counted(hasher):
    p = hasher("+4412")
    assert p.country == "GB" and not p.valid and hasher.invalid == 1
    hasher("+4412")
    assert hasher.invalid == 2     # counted per row, cache or not


def test_hash_depends_on_the_key():
    a, b = PhoneHasher(b"one"), PhoneHasher(b"two")
    assert a("+14155550132").hash != b("+14155550132").hash


@pytest.mark.parametrize("raw", ["hello", "+", "12ab", "+999123456789"])
def test_not_phone_numbers(hasher, raw):
    with pytest.raises(BadPhoneNumber):
        hasher(raw)


def test_blank_is_no_number(hasher):
    assert hasher("") is None and hasher("   ") is None


def test_the_hash_is_keyed_blake2b_of_the_e164_form():
    import hashlib
    key = hashlib.blake2b(b"test key", digest_size=32).digest()
    want = hashlib.blake2b(b"+14155550132", key=key, digest_size=16).digest()
    assert PhoneHasher(b"test key")("(415) 555-0132").hash == want


def test_the_cell_cache_stays_bounded_and_right(monkeypatch):
    """Past its limit the cache starts again; answers never change."""
    from metrics import phones
    monkeypatch.setattr(phones, "_CACHE_LIMIT", 4)
    numbers = [f"+1415555{i:04d}" for i in range(10)] * 3
    fresh = PhoneHasher(b"k")
    want = [(bytearray(p.hash), p.country or "", p.valid) for p in map(fresh, numbers)]
    h = PhoneHasher(b"k")
    got = []
    for n in numbers:
        got += h.cells([n])
        assert len(h._cells) <= 4
    assert got == want
