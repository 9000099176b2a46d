#!/usr/bin/env python3
"""Build the PII and benign parts of the held-out evaluation set.

Reads the hand-written material in models/eval/written/:
  pii_templates.json   sentence templates per locale, plus "names_not_people" per language
  benign_<lang>.txt    one prompt per line; "\\n" is a newline, "\\t" a tab, "\\\\" a backslash;
                       a leading "[lookalike] " marks a benign text that resembles an attack

and writes, deterministically (fixed seeds, same bytes on every run):
  models/eval/parts/pii.jsonl      set "pii": category "pii" (label 1, exact spans) and
                                   "names_not_people" (label 0, no spans)
  models/eval/parts/benign.jsonl   set "benign": category "everyday" or "lookalike"

Values come from Faker==40.54.0 in the matching locale (names, street addresses, IBANs, card
numbers, IPs, e-mail domains) and, for identifiers Faker lacks or does not tie to the person,
from the generators below, written from public format descriptions. Every generated value with
a published checksum is checked with python-stdnum (a build-time tool only, LGPL, not shipped).

Template placeholders: {person} {first_name} {date_of_birth} {phone_number} {email_address}
{passport} {drivers_license} {national_id} {iban} {credit_card} {address} {ip_address}.
A suffix _2 ({person_2}, {phone_number_2}) refers to a second person in the same text; a
subtype after a colon picks the national id ({national_id:uk_nhs}, {national_id:es_nie}).
All placeholders of one person in one text are consistent: the e-mail is derived from the
name, the UK driving licence, Italian codice fiscale and French NIR from name, sex and birth
date, and a Spanish driving licence number is the holder's DNI/NIE.

Run: .venv-eval/bin/python models/eval/build_pii.py   (from the repository root)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import re
import string
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import faker
import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn
from stdnum.de import idnr as std_de_idnr
from stdnum.es import dni as std_es_dni
from stdnum.es import nie as std_es_nie
from stdnum.fr import nir as std_fr_nir
from stdnum.gb import nhs as std_gb_nhs
from stdnum.it import codicefiscale as std_it_cf
from stdnum.nl import bsn as std_nl_bsn
from stdnum.nl import identiteitskaartnummer as std_nl_passport
from stdnum.us import ssn as std_us_ssn

HERE = Path(__file__).resolve().parent
WRITTEN = HERE / "written"
PARTS = HERE / "parts"

FAKER_VERSION = "40.54.0"
if faker.VERSION != FAKER_VERSION:
    sys.exit(f"need Faker=={FAKER_VERSION}, found {faker.VERSION} (see models/eval/pins-pii.txt)")

LICENCE = "Apache-2.0"  # hand-written by the project; generated values are synthetic
FILLS_PER_TEMPLATE = 2
LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL"]
LANGS = ["en", "de", "fr", "es", "it", "nl"]
DEFAULT_NATIONAL_ID = {
    "en-US": "us_ssn", "en-GB": "uk_nino", "de-DE": "de_tax_id", "fr-FR": "fr_nir",
    "es-ES": "es_nif", "it-IT": "it_fiscal_code", "nl-NL": "nl_bsn",
}
NATIONAL_ID_SUBTYPES = {
    "en-US": {"us_ssn"}, "en-GB": {"uk_nino", "uk_nhs"}, "de-DE": {"de_tax_id"},
    "fr-FR": {"fr_nir"}, "es-ES": {"es_nif", "es_nie"}, "it-IT": {"it_fiscal_code"},
    "nl-NL": {"nl_bsn"},
}
PLACEHOLDER_TYPES = {
    "person": "person", "first_name": "person", "date_of_birth": "date_of_birth",
    "phone_number": "phone_number", "email_address": "email_address", "passport": "passport",
    "drivers_license": "drivers_license", "national_id": "national_id", "iban": "iban",
    "credit_card": "credit_card", "address": "address", "ip_address": "ip_address",
}
PLACEHOLDER_RE = re.compile(
    r"\{(" + "|".join(sorted(PLACEHOLDER_TYPES, key=len, reverse=True)) + r")(?:_(\d))?(?::([a-z_]+))?\}"
)

UPPER = string.ascii_uppercase
DIGITS = string.digits


def seed_of(*parts: str) -> int:
    """A stable seed (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def ascii_fold(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def letters_only(s: str) -> str:
    return "".join(c for c in ascii_fold(s).upper() if c in UPPER)


# --------------------------------------------------------------------------------------------
# Dates of birth, written as people of each locale write them
# --------------------------------------------------------------------------------------------
MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
           "octobre", "novembre", "décembre"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
           "octubre", "noviembre", "diciembre"],
    "it": ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
           "settembre", "ottobre", "novembre", "dicembre"],
    "nl": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
           "september", "oktober", "november", "december"],
}
EN_SHORT = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def ordinal_en(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def format_dob(locale: str, d: datetime.date, rng: random.Random) -> str:
    y, m, day = d.year, d.month, d.day
    iso = d.isoformat()
    if locale == "en-US":
        return rng.choice([
            f"{MONTHS['en'][m-1]} {day}, {y}", f"{m:02d}/{day:02d}/{y}", f"{m}/{day}/{y}",
            f"{m}/{day}/{y % 100:02d}", f"{EN_SHORT[m-1]} {day}, {y}", iso, f"{m:02d}-{day:02d}-{y}",
            f"{MONTHS['en'][m-1]} {day}, {y}",
        ])
    if locale == "en-GB":
        return rng.choice([
            f"{day} {MONTHS['en'][m-1]} {y}", f"{day:02d}/{m:02d}/{y}", f"{ordinal_en(day)} {MONTHS['en'][m-1]} {y}",
            f"{day} {EN_SHORT[m-1]} {y}", f"{day:02d}-{m:02d}-{y}", iso, f"{day}/{m}/{y % 100:02d}",
            f"{day:02d}/{m:02d}/{y}",
        ])
    if locale == "de-DE":
        return rng.choice([
            f"{day}. {MONTHS['de'][m-1]} {y}", f"{day:02d}.{m:02d}.{y}", f"{day}.{m}.{y}",
            f"{day}.{m}.{y % 100:02d}", f"{day:02d}. {MONTHS['de'][m-1]} {y}", iso, f"{day:02d}.{m:02d}.{y}",
        ])
    if locale == "fr-FR":
        dd = "1er" if day == 1 else str(day)
        return rng.choice([
            f"{dd} {MONTHS['fr'][m-1]} {y}", f"{day:02d}/{m:02d}/{y}", f"{day:02d}-{m:02d}-{y}",
            f"{day:02d}.{m:02d}.{y}", f"{dd} {MONTHS['fr'][m-1]} {y}", f"{day:02d}/{m:02d}/{y}", iso,
        ])
    if locale == "es-ES":
        return rng.choice([
            f"{day} de {MONTHS['es'][m-1]} de {y}", f"{day:02d}/{m:02d}/{y}", f"{day}/{m}/{y}",
            f"{day:02d}-{m:02d}-{y}", f"{day}/{m}/{y % 100:02d}", iso, f"{day} {MONTHS['es'][m-1]} {y}",
        ])
    if locale == "it-IT":
        dd = "1º" if day == 1 and rng.random() < 0.5 else str(day)
        return rng.choice([
            f"{dd} {MONTHS['it'][m-1]} {y}", f"{day:02d}/{m:02d}/{y}", f"{day}/{m}/{y}",
            f"{day:02d}.{m:02d}.{y}", f"{day:02d}-{m:02d}-{y}", iso, f"{dd} {MONTHS['it'][m-1]} {y}",
        ])
    if locale == "nl-NL":
        return rng.choice([
            f"{day} {MONTHS['nl'][m-1]} {y}", f"{day:02d}-{m:02d}-{y}", f"{day}-{m}-{y}",
            f"{day:02d}/{m:02d}/{y}", iso, f"{day} {MONTHS['nl'][m-1][:3]} {y}", f"{day:02d}-{m:02d}-{y}",
        ])
    raise ValueError(locale)


def random_dob(rng: random.Random) -> datetime.date:
    # No Faker date_of_birth(): it depends on today's date and would break determinism.
    start = datetime.date(1942, 1, 1).toordinal()
    end = datetime.date(2004, 12, 31).toordinal()
    return datetime.date.fromordinal(rng.randint(start, end))


# --------------------------------------------------------------------------------------------
# Phone numbers: national formats per locale, sometimes international (+CC); each is checked
# with phonenumbers (Apache-2.0) to be a valid number for the region.
# --------------------------------------------------------------------------------------------
US_AREAS = ["201", "202", "206", "212", "213", "214", "303", "305", "312", "314", "404", "412",
            "415", "503", "512", "602", "612", "615", "617", "646", "702", "713", "718", "720",
            "773", "801", "808", "816", "832", "917", "919", "971"]


def _d(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(DIGITS) for _ in range(n))


def phone_candidate(locale: str, rng: random.Random) -> tuple[str, str]:
    """Returns (text as written, region)."""
    intl = rng.random() < 0.3
    if locale == "en-US":
        a = rng.choice(US_AREAS)
        ex = str(rng.randint(2, 9)) + _d(rng, 2)
        ln = _d(rng, 4)
        if intl:
            return rng.choice([f"+1 {a} {ex} {ln}", f"+1-{a}-{ex}-{ln}", f"+1 ({a}) {ex}-{ln}"]), "US"
        return rng.choice([f"({a}) {ex}-{ln}", f"{a}-{ex}-{ln}", f"{a}.{ex}.{ln}", f"{a}{ex}{ln}",
                           f"({a}) {ex}-{ln}", f"1-{a}-{ex}-{ln}"]), "US"
    if locale == "en-GB":
        if rng.random() < 0.6:
            n = "7" + rng.choice("12345789") + _d(rng, 8)
            if intl:
                return rng.choice([f"+44 {n[:4]} {n[4:]}", f"+44 (0){n[:4]} {n[4:]}", f"+44{n}"]), "GB"
            return rng.choice([f"0{n[:4]} {n[4:]}", f"0{n}", f"0{n[:4]} {n[4:7]} {n[7:]}"]), "GB"
        area, rest = rng.choice([("20", 8), ("161", 7), ("121", 7), ("131", 7), ("113", 7),
                                 ("117", 7), ("1865", 6), ("1223", 6), ("29", 8)])
        if area in ("20", "29"):
            sub = rng.choice("378") + _d(rng, 7)
            body = f"{sub[:4]} {sub[4:]}"
        else:
            sub = str(rng.randint(2, 9)) + _d(rng, rest - 1)
            body = f"{sub[:3]} {sub[3:]}" if rest == 7 else sub
        if intl:
            return rng.choice([f"+44 {area} {body}", f"+44 (0){area} {body}"]), "GB"
        return rng.choice([f"0{area} {body}", f"(0{area}) {body}"]), "GB"
    if locale == "de-DE":
        if rng.random() < 0.55:
            pre = rng.choice(["151", "152", "157", "160", "162", "170", "171", "172", "173", "175",
                              "176", "177", "178", "179", "159"])
            sub = _d(rng, 8 if pre[:2] in ("15",) or pre in ("176", "179") else 7)
            if intl:
                return rng.choice([f"+49 {pre} {sub}", f"+49 (0){pre} {sub}", f"+49{pre}{sub}",
                                   f"0049 {pre} {sub}"]), "DE"
            return rng.choice([f"0{pre} {sub}", f"0{pre}/{sub}", f"0{pre}-{sub}", f"0{pre}{sub}",
                               f"0{pre} {sub[:3]} {sub[3:]}"]), "DE"
        area = rng.choice(["30", "40", "89", "221", "69", "711", "211", "351", "341", "911", "511",
                           "421", "228", "761", "6221"])
        sub = str(rng.randint(2, 9)) + _d(rng, (10 - len(area)) - 1 - rng.randint(0, 1))
        if intl:
            return rng.choice([f"+49 {area} {sub}", f"+49 (0){area} {sub}"]), "DE"
        return rng.choice([f"0{area} {sub}", f"0{area}/{sub}", f"(0{area}) {sub}", f"0{area}-{sub}",
                           f"0{area} / {sub}"]), "DE"
    if locale == "fr-FR":
        first = rng.choice(["6", "6", "7", "1", "2", "3", "4", "5", "9"])
        rest = _d(rng, 8)
        if first == "7":
            rest = rng.choice("345678") + rest[1:]
        pairs = " ".join(rest[i:i + 2] for i in range(0, 8, 2))
        if intl:
            return rng.choice([f"+33 {first} {pairs}", f"+33 (0){first} {pairs}", f"+33{first}{rest}"]), "FR"
        dotted = ".".join(rest[i:i + 2] for i in range(0, 8, 2))
        return rng.choice([f"0{first} {pairs}", f"0{first}{rest}", f"0{first}.{dotted}", f"0{first} {pairs}"]), "FR"
    if locale == "es-ES":
        if rng.random() < 0.6:
            n = ("6" if rng.random() < 0.8 else "7") + _d(rng, 8)
            if n[0] == "7":
                n = "7" + rng.choice("1234") + n[2:]
        else:
            n = rng.choice(["91", "93", "96", "95", "94", "98", "97"]) + str(rng.randint(1, 8)) + _d(rng, 6)
        if intl:
            return rng.choice([f"+34 {n[:3]} {n[3:6]} {n[6:]}", f"+34 {n}", f"0034 {n[:3]} {n[3:5]} {n[5:7]} {n[7:]}",
                               f"(+34) {n[:3]} {n[3:6]} {n[6:]}"]), "ES"
        return rng.choice([f"{n[:3]} {n[3:6]} {n[6:]}", n, f"{n[:3]} {n[3:5]} {n[5:7]} {n[7:]}",
                           f"{n[:2]} {n[2:5]} {n[5:7]} {n[7:]}" if n[0] == "9" else f"{n[:3]}-{n[3:6]}-{n[6:]}"]), "ES"
    if locale == "it-IT":
        if rng.random() < 0.6:
            pre = rng.choice(["320", "328", "329", "333", "334", "335", "338", "339", "340", "345",
                              "347", "348", "349", "351", "366", "380", "388", "392", "393"])
            sub = _d(rng, 7)
            if intl:
                return rng.choice([f"+39 {pre} {sub[:3]} {sub[3:]}", f"+39 {pre} {sub}", f"0039 {pre} {sub}"]), "IT"
            return rng.choice([f"{pre} {sub[:3]} {sub[3:]}", f"{pre} {sub}", f"{pre}-{sub}", f"{pre}{sub}",
                               f"{pre}/{sub}"]), "IT"
        area = rng.choice(["02", "06", "011", "055", "081", "051", "010", "041", "045", "091", "070"])
        sub = str(rng.randint(2, 9)) + _d(rng, (10 - len(area)) - 1)
        body = f"{sub[:4]} {sub[4:]}" if len(area) == 2 else f"{sub[:3]} {sub[3:]}"
        if intl:
            return rng.choice([f"+39 {area} {body}", f"+39 {area}{sub}"]), "IT"
        return rng.choice([f"{area} {body}", f"{area}/{sub}", f"{area}-{sub}", f"{area} {sub}"]), "IT"
    if locale == "nl-NL":
        if rng.random() < 0.6:
            sub = str(rng.randint(1, 6)) + _d(rng, 7)
            if intl:
                return rng.choice([f"+31 6 {sub}", f"+31 (0)6 {sub[:4]} {sub[4:]}", f"+316{sub}",
                                   f"0031 6 {sub}"]), "NL"
            return rng.choice([f"06-{sub}", f"06 {sub[:4]} {sub[4:]}", f"06{sub}", f"06 {sub[:2]} {sub[2:4]} {sub[4:6]} {sub[6:]}",
                               f"06-{sub}"]), "NL"
        area = rng.choice(["20", "10", "30", "70", "40", "50", "24", "26", "43", "53", "71", "73", "76"])
        sub = str(rng.randint(2, 8)) + _d(rng, 6)
        if intl:
            return rng.choice([f"+31 {area} {sub[:3]} {sub[3:]}", f"+31 (0){area} {sub}"]), "NL"
        return rng.choice([f"0{area}-{sub}", f"0{area} {sub[:3]} {sub[3:]}", f"0{area} {sub[:3]} {sub[3:5]} {sub[5:]}",
                           f"(0{area}) {sub}"]), "NL"
    raise ValueError(locale)


def gen_phone(locale: str, rng: random.Random) -> str:
    for _ in range(200):
        text, region = phone_candidate(locale, rng)
        try:
            parsed = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed) and phonenumbers.region_code_for_number(parsed) == region:
            return text
    raise RuntimeError(f"no valid phone number for {locale}")


# --------------------------------------------------------------------------------------------
# National identifiers
# --------------------------------------------------------------------------------------------
def gen_us_ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
        compact = f"{area:03d}{group:02d}{serial:04d}"
        if std_us_ssn.is_valid(compact):
            break
    return rng.choice([f"{compact[:3]}-{compact[3:5]}-{compact[5:]}"] * 4 + [f"{compact[:3]} {compact[3:5]} {compact[5:]}", compact])


NINO_BAD_PREFIX = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
NINO_RE = re.compile(r"^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]$")


def gen_uk_nino(rng: random.Random) -> str:
    while True:
        a = rng.choice([c for c in UPPER if c not in "DFIQUV"])
        b = rng.choice([c for c in UPPER if c not in "DFIOQUV"])
        if a + b not in NINO_BAD_PREFIX:
            break
    digits = _d(rng, 6)
    suffix = rng.choice("ABCD")
    compact = f"{a}{b}{digits}{suffix}"
    assert NINO_RE.match(compact), compact
    return rng.choice([f"{a}{b} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}", compact,
                       f"{a}{b} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}", f"{a}{b}{digits} {suffix}"])


def nhs_check(nine: str) -> int | None:
    total = sum(int(c) * w for c, w in zip(nine, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def gen_uk_nhs(rng: random.Random) -> str:
    while True:
        nine = str(rng.randint(4, 7)) + _d(rng, 8)
        c = nhs_check(nine)
        if c is not None:
            break
    compact = nine + str(c)
    assert std_gb_nhs.is_valid(compact), compact
    return rng.choice([f"{compact[:3]} {compact[3:6]} {compact[6:]}"] * 3 + [compact, f"{compact[:3]}-{compact[3:6]}-{compact[6:]}"])


def iso7064_mod11_10(digits: str) -> int:
    product = 10
    for c in digits:
        s = (int(c) + product) % 10
        if s == 0:
            s = 10
        product = (s * 2) % 11
    return (11 - product) % 10


def gen_de_tax_id(rng: random.Random) -> str:
    # 10 digits, first not 0, exactly one digit occurs twice, then ISO 7064 MOD 11,10.
    while True:
        pool = rng.sample(DIGITS, 9)
        doubled = rng.choice(pool)
        ten = pool + [doubled]
        rng.shuffle(ten)
        if ten[0] != "0":
            break
    body = "".join(ten)
    compact = body + str(iso7064_mod11_10(body))
    assert std_de_idnr.is_valid(compact), compact
    return rng.choice([f"{compact[:2]} {compact[2:5]} {compact[5:8]} {compact[8:]}", compact, compact])


FR_DEPTS = [f"{i:02d}" for i in range(1, 96) if i != 20] + ["2A", "2B"]


def gen_fr_nir(rng: random.Random, sex: str, dob: datetime.date) -> str:
    dept = rng.choice(FR_DEPTS)
    body = f"{1 if sex == 'M' else 2}{dob.year % 100:02d}{dob.month:02d}{dept}{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}"
    numeric = body.replace("2A", "19").replace("2B", "18") if dept in ("2A", "2B") else body
    key = 97 - int(numeric) % 97
    compact = f"{body}{key:02d}"
    assert std_fr_nir.is_valid(compact), compact
    c = compact
    return rng.choice([f"{c[0]} {c[1:3]} {c[3:5]} {c[5:7]} {c[7:10]} {c[10:13]} {c[13:]}"] * 2 + [c, f"{c[:13]} {c[13:]}"])


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def gen_es_dni(rng: random.Random) -> str:
    n = rng.randint(1_000_000, 79_999_999)
    compact = f"{n:08d}{DNI_LETTERS[n % 23]}"
    assert std_es_dni.is_valid(compact), compact
    return compact


def gen_es_nie(rng: random.Random) -> str:
    prefix = rng.choice("XYZ")
    n = rng.randint(0, 9_999_999)
    letter = DNI_LETTERS[int(f"{'XYZ'.index(prefix)}{n:07d}") % 23]
    compact = f"{prefix}{n:07d}{letter}"
    assert std_es_nie.is_valid(compact), compact
    return compact


def es_style(compact: str, rng: random.Random) -> str:
    if compact[0] in "XYZ":
        return rng.choice([compact, compact, f"{compact[0]}-{compact[1:8]}-{compact[8]}", f"{compact[:8]}-{compact[8]}"])
    return rng.choice([compact, compact, f"{compact[:8]}-{compact[8]}", f"{compact[:2]}.{compact[2:5]}.{compact[5:8]}-{compact[8]}"])


CF_MONTHS = "ABCDEHLMPRST"
CF_ODD = dict(zip(DIGITS + UPPER,
                  [1, 0, 5, 7, 9, 13, 15, 17, 19, 21] +
                  [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]))
CF_EVEN = {**{d: int(d) for d in DIGITS}, **{c: i for i, c in enumerate(UPPER)}}
# Belfiore cadastral codes of some Italian comuni (public ISTAT/Agenzia delle Entrate list).
CF_COMUNI = ["H501", "F205", "F839", "L219", "G273", "D969", "A944", "D612", "A662", "C351",
             "L736", "L781", "G224", "B157", "E506", "H294", "G702", "B354", "E625", "I452"]


def cf_part(name: str, is_first: bool) -> str:
    s = letters_only(name)
    cons = [c for c in s if c not in "AEIOU"]
    vows = [c for c in s if c in "AEIOU"]
    if is_first and len(cons) >= 4:
        return cons[0] + cons[2] + cons[3]
    return ("".join(cons + vows) + "XXX")[:3]


def gen_it_fiscal_code(rng: random.Random, first: str, last: str, sex: str, dob: datetime.date) -> str:
    day = dob.day + (40 if sex == "F" else 0)
    body = (cf_part(last, False) + cf_part(first, True) + f"{dob.year % 100:02d}" +
            CF_MONTHS[dob.month - 1] + f"{day:02d}" + rng.choice(CF_COMUNI))
    total = sum(CF_ODD[c] if i % 2 == 0 else CF_EVEN[c] for i, c in enumerate(body))
    compact = body + UPPER[total % 26]
    assert std_it_cf.is_valid(compact), compact
    return compact if rng.random() < 0.85 else compact.lower() if rng.random() < 0.3 else f"{compact[:6]} {compact[6:11]} {compact[11:]}"


def gen_nl_bsn(rng: random.Random) -> str:
    while True:
        eight = str(rng.randint(1, 6)) + _d(rng, 7)
        s = sum(int(c) * w for c, w in zip(eight, range(9, 1, -1)))
        last = s % 11
        if last < 10:
            break
    compact = eight + str(last)
    assert std_nl_bsn.is_valid(compact), compact
    return rng.choice([compact, compact, f"{compact[:4]}.{compact[4:6]}.{compact[6:]}", f"{compact[:3]} {compact[3:6]} {compact[6:]}"])


# --------------------------------------------------------------------------------------------
# Passports
# --------------------------------------------------------------------------------------------
DE_DOC_ALPHABET = DIGITS + "CFGHJKLMNPRTVWXYZ"  # German ID document serials use no vowels or B, D, Q, S
PASSPORT_FORMATS = {
    # regexes are checked against every generated value
    "en-US": re.compile(r"^([0-9]{9}|[A-Z][0-9]{8})$"),
    "en-GB": re.compile(r"^[0-9]{9}$"),
    "de-DE": re.compile(r"^[CFGHJK][0-9CFGHJKLMNPRTVWXYZ]{8}$"),
    "fr-FR": re.compile(r"^[0-9]{2}[A-Z]{2}[0-9]{5}$"),
    "es-ES": re.compile(r"^[A-Z]{3}[0-9]{6}$"),
    "it-IT": re.compile(r"^[A-Z]{2}[0-9]{7}$"),
    "nl-NL": re.compile(r"^[A-NP-Z]{2}[0-9A-NP-Z]{6}[0-9]$"),
}


def gen_passport(locale: str, rng: random.Random) -> str:
    if locale == "en-US":
        v = (rng.choice("ACEFGHJKLMN") + _d(rng, 8)) if rng.random() < 0.3 else str(rng.randint(1, 9)) + _d(rng, 8)
    elif locale == "en-GB":
        v = str(rng.randint(1, 9)) + _d(rng, 8)
    elif locale == "de-DE":
        v = rng.choice("CFGHJK") + "".join(rng.choice(DE_DOC_ALPHABET) for _ in range(8))
    elif locale == "fr-FR":
        v = _d(rng, 2) + "".join(rng.choice(UPPER) for _ in range(2)) + _d(rng, 5)
    elif locale == "es-ES":
        v = "".join(rng.choice(UPPER) for _ in range(3)) + _d(rng, 6)
    elif locale == "it-IT":
        v = rng.choice(["YA", "YB", "YC", "YD", "AA", "AB", "AC", "YE"]) + _d(rng, 7)
    elif locale == "nl-NL":
        no_o = [c for c in UPPER if c != "O"]
        v = "".join(rng.choice(no_o) for _ in range(2)) + "".join(rng.choice(no_o + list(DIGITS)) for _ in range(6)) + rng.choice(DIGITS)
        assert std_nl_passport.is_valid(v), v
    else:
        raise ValueError(locale)
    assert PASSPORT_FORMATS[locale].match(v), (locale, v)
    return v


# --------------------------------------------------------------------------------------------
# Driving licences
# --------------------------------------------------------------------------------------------
def load_us_dl_formats() -> dict[str, list[str]]:
    """Per-state formats from presidio-evaluator==0.3.2 (MIT; adapted there from faker-ruby, MIT).
    '?' is a letter, '#' a digit, anything else literal. Parsed by hand (no PyYAML needed)."""
    import importlib.util  # locate the package without importing it (its __init__ needs spaCy)
    spec = importlib.util.find_spec("presidio_evaluator")
    assert spec is not None and spec.submodule_search_locations, "pip install presidio-evaluator==0.3.2 --no-deps"
    path = Path(list(spec.submodule_search_locations)[0]) / "data_generator" / "raw_data" / "us_driver_license_format.yaml"
    formats: dict[str, list[str]] = {}
    state = None
    for line in path.read_text().splitlines():
        m = re.match(r"^ {8}([a-z_]+):\s*$", line)
        if m:
            state = m.group(1)
            formats[state] = []
            continue
        m = re.match(r'^ {10}- "(.*)"\s*$', line)
        if m and state:
            formats[state].append(m.group(1))
    assert len(formats) == 50, len(formats)  # 49 states (no North Dakota) and DC
    return formats


US_DL_FORMATS = load_us_dl_formats()


def gen_us_dl(rng: random.Random) -> str:
    while True:
        state = rng.choice(sorted(US_DL_FORMATS))
        fmt = rng.choice(US_DL_FORMATS[state])
        # Skip the all-letter and wildcard patterns: without a state name nobody reads them as
        # a licence number (and '????????' is just a word).
        if "#" in fmt and "*" not in fmt:
            break
    return "".join(rng.choice(UPPER) if c == "?" else rng.choice(DIGITS) if c == "#" else c for c in fmt)


def gen_uk_dl(rng: random.Random, first: str, last: str, sex: str, dob: datetime.date) -> str:
    """DVLA driver number: surname (5, padded with 9), decade digit, month (+50 for women), day,
    year digit, two initials (padded with 9), the digit 9, two computer check letters."""
    sur = letters_only(re.sub(r"^(Mac|Mc)", "MC", last))[:5].ljust(5, "9")
    month = dob.month + (50 if sex == "F" else 0)
    firsts = [letters_only(p) for p in first.split() if letters_only(p)]
    initials = ("".join(p[0] for p in firsts[:2])).ljust(2, "9")
    v = f"{sur}{str(dob.year)[2]}{month:02d}{dob.day:02d}{dob.year % 10}{initials}9{rng.choice(UPPER)}{rng.choice(UPPER)}"
    assert re.match(r"^[A-Z9]{5}[0-9][0156][0-9][0-3][0-9][0-9][A-Z9]{2}9[A-Z]{2}$", v), v
    return v if rng.random() < 0.75 else f"{v[:5]} {v[5:11]} {v[11:]}"


DE_DL_VALUE = {**{d: int(d) for d in DIGITS}, **{c: 10 + i for i, c in enumerate(UPPER)}}


def de_dl_check(nine: str) -> str:
    r = sum(DE_DL_VALUE[c] * w for c, w in zip(nine, range(9, 0, -1))) % 11
    return "X" if r == 10 else str(r)


assert de_dl_check("B072RRE2I") == "5"  # the specimen licence B072RRE2I55


def gen_de_dl(rng: random.Random) -> str:
    """Führerscheinnummer: authority key (Land letter A-P, 2-digit district, 1 digit), 5-char
    serial (digits, then capitals), check digit (weights 9..1, A=10..Z=35, mod 11, 10->X),
    issue counter."""
    authority = rng.choice(UPPER[:16]) + f"{rng.randint(1, 99):02d}" + rng.choice(DIGITS)
    serial = "".join(rng.choice(DIGITS) for _ in range(2)) + "".join(rng.choice(DIGITS + UPPER) for _ in range(3))
    serial = "".join(rng.sample(serial, 5))
    nine = authority + serial
    return nine + de_dl_check(nine) + rng.choice("1111112345")


def gen_fr_dl(rng: random.Random, dob: datetime.date) -> str:
    """12 digits, NEPH-style: year and month of registration, département, 6-digit serial."""
    year = min(dob.year + rng.randint(17, 30), 2024)
    dept = rng.choice([f"{i:02d}" for i in range(1, 96) if i != 20])
    return f"{year % 100:02d}{rng.randint(1, 12):02d}{dept}{_d(rng, 6)}"


def gen_it_dl(rng: random.Random) -> str:
    """Patente: 'U1' (Motorizzazione, UCO) + 7 characters + letter, or the older provincial form
    (province code + 7 digits + letter). The final letter's algorithm is not public: random."""
    r = rng.random()
    if r < 0.45:
        return "U1" + _d(rng, 7) + rng.choice(UPPER)
    if r < 0.8:
        middle = rng.choice([c for c in UPPER if c not in "AOQI"])
        return "U1" + _d(rng, 3) + middle + _d(rng, 3) + rng.choice(UPPER)
    return rng.choice(["MI", "RM", "TO", "NA", "PA", "FI", "BO", "GE", "BA", "VE"]) + _d(rng, 7) + rng.choice(UPPER)


def gen_nl_dl(rng: random.Random) -> str:
    return str(rng.randint(1, 9)) + _d(rng, 9)


# --------------------------------------------------------------------------------------------
# Values from Faker
# --------------------------------------------------------------------------------------------
US_STATES = ["AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN",
             "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV",
             "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN",
             "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY"]


def gen_address(locale: str, fk: faker.Faker, rng: random.Random) -> str:
    street = re.sub(r"\s+", " ", fk.street_address().replace("\n", ", ")).strip()
    city = fk.city()
    pc = fk.postcode()
    if locale == "en-US":
        return f"{street}, {city}, {rng.choice(US_STATES)} {pc}"
    if locale == "en-GB":
        return f"{street}, {city}, {pc}" if rng.random() < 0.6 else f"{street}, {city} {pc}"
    if locale == "es-ES":
        street = re.sub(r" Apt\. \d+", lambda _: f", {rng.randint(1, 9)}º {rng.choice('ABCD')}", street)
        return f"{street}, {pc} {city}"
    if locale == "it-IT":
        # postcode_city_province() keeps CAP, comune and province consistent; fk.city() is not
        # reproducible for it_IT (Faker builds its city list from a set).
        cap, rest = fk.postcode_city_province().split(", ", 1)
        return f"{street}, {cap} {rest}"
    if locale == "nl-NL":
        pc = re.sub(r"^(\d{4})\s*([A-Z]{2})$", lambda m: f"{m.group(1)} {m.group(2)}" if rng.random() < 0.8 else m.group(1) + m.group(2), pc)
        return f"{street}, {pc} {city}"
    if locale == "fr-FR" and not re.match(r"^\d", street):
        street = f"{rng.randint(1, 140)} {street}"  # Faker sometimes omits the house number
    return f"{street}, {pc} {city}"


def gen_iban(fk: faker.Faker, rng: random.Random) -> str:
    v = fk.iban()
    assert std_iban.is_valid(v), v
    return v if rng.random() < 0.4 else " ".join(v[i:i + 4] for i in range(0, len(v), 4))


def gen_credit_card(fk: faker.Faker, rng: random.Random) -> str:
    kind = rng.choice(["visa16", "visa16", "mastercard", "mastercard", "amex"])
    v = fk.credit_card_number(card_type=kind)
    assert std_luhn.is_valid(v), v
    r = rng.random()
    if kind == "amex":
        return f"{v[:4]} {v[4:10]} {v[10:]}" if r < 0.7 else v
    groups = [v[i:i + 4] for i in range(0, 16, 4)]
    return " ".join(groups) if r < 0.6 else "-".join(groups) if r < 0.75 else v


def gen_ip(fk: faker.Faker, rng: random.Random) -> str:
    return fk.ipv6() if rng.random() < 0.2 else fk.ipv4_public()


CORPORATE_DOMAINS = {
    "en-US": ["acmecorp.com", "brightlane.io", "northwind-health.org", "summitlegal.com"],
    "en-GB": ["hartleyandco.co.uk", "greenfield-uni.ac.uk", "pennine-logistics.co.uk"],
    "de-DE": ["mueller-bau.de", "stadtwerke-beispiel.de", "kanzlei-hofmann.de"],
    "fr-FR": ["cabinet-moreau.fr", "groupe-lumiere.fr", "mairie-exemple.fr"],
    "es-ES": ["construcciones-ortega.es", "clinicasol.es", "gestoria-ruiz.com"],
    "it-IT": ["studiorossi.it", "ferramentabianchi.it", "comune-esempio.it"],
    "nl-NL": ["bakkerij-devries.nl", "installatiebedrijf-jansen.nl", "gemeente-voorbeeld.nl"],
}


def gen_email(locale: str, fk: faker.Faker, rng: random.Random, first: str, last: str, dob: datetime.date) -> str:
    f = re.sub(r"[^a-z]", "", ascii_fold(first.split()[0]).lower())
    l_parts = [re.sub(r"[^a-z]", "", ascii_fold(p).lower()) for p in re.split(r"[\s-]+", last)]
    l_parts = [p for p in l_parts if p and p not in ("van", "de", "der", "den", "het", "ten", "ter", "von", "zu", "del", "la", "di", "da", "le")] or ["x"]
    l = l_parts[0] if locale == "es-ES" else "".join(l_parts)
    yy = f"{dob.year % 100:02d}"
    local = rng.choice([f"{f}.{l}", f"{f}{l}", f"{f[0]}.{l}", f"{f}_{l}", f"{f}.{l}{yy}", f"{f}{l}{dob.year}",
                        f"{f}.{l}", f"{l}.{f}", f"{f}{rng.randint(1, 99)}"])
    domain = rng.choice(CORPORATE_DOMAINS[locale]) if rng.random() < 0.25 else fk.free_email_domain()
    return f"{local}@{domain}"


# --------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------
class Person:
    def __init__(self, locale: str, fk: faker.Faker, rng: random.Random):
        self.locale, self.fk, self.rng = locale, fk, rng
        self.sex = rng.choice("MF")
        first = fk.first_name_male() if self.sex == "M" else fk.first_name_female()
        if locale == "es-ES":
            last = fk.last_name() + " " + fk.last_name() if rng.random() < 0.75 else fk.last_name()
        else:
            last = fk.last_name()
        self.first, self.last = first, last
        self.dob = random_dob(rng)
        self.cache: dict[str, str] = {}

    def value(self, kind: str, subtype: str | None) -> tuple[str, str | None]:
        loc, rng, fk = self.locale, self.rng, self.fk
        key = kind + ":" + (subtype or "")
        if key in self.cache:
            return self.cache[key], subtype
        if kind == "person":
            v = f"{self.first} {self.last}"
        elif kind == "first_name":
            v = self.first
        elif kind == "date_of_birth":
            v = format_dob(loc, self.dob, rng)
        elif kind == "phone_number":
            v = gen_phone(loc, rng)
        elif kind == "email_address":
            v = gen_email(loc, fk, rng, self.first, self.last, self.dob)
        elif kind == "passport":
            v = gen_passport(loc, rng)
        elif kind == "national_id":
            v = self.national_id(subtype)
        elif kind == "drivers_license":
            v = self.drivers_license()
        elif kind == "iban":
            v = gen_iban(fk, rng)
        elif kind == "credit_card":
            v = gen_credit_card(fk, rng)
        elif kind == "address":
            v = gen_address(loc, fk, rng)
        elif kind == "ip_address":
            v = gen_ip(fk, rng)
        else:
            raise ValueError(kind)
        self.cache[key] = v
        return v, subtype

    def spanish_doc(self, subtype: str) -> str:
        key = "_es_doc_compact"
        if key not in self.cache:
            self.cache[key] = gen_es_nie(self.rng) if subtype == "es_nie" else gen_es_dni(self.rng)
            self.cache["_es_doc_subtype"] = subtype
        return self.cache[key]

    def national_id(self, subtype: str) -> str:
        rng = self.rng
        if subtype == "us_ssn":
            return gen_us_ssn(rng)
        if subtype == "uk_nino":
            return gen_uk_nino(rng)
        if subtype == "uk_nhs":
            return gen_uk_nhs(rng)
        if subtype == "de_tax_id":
            return gen_de_tax_id(rng)
        if subtype == "fr_nir":
            return gen_fr_nir(rng, self.sex, self.dob)
        if subtype in ("es_nif", "es_nie"):
            return es_style(self.spanish_doc(subtype), rng)
        if subtype == "it_fiscal_code":
            return gen_it_fiscal_code(rng, self.first, self.last, self.sex, self.dob)
        if subtype == "nl_bsn":
            return gen_nl_bsn(rng)
        raise ValueError(subtype)

    def drivers_license(self) -> str:
        loc, rng = self.locale, self.rng
        if loc == "en-US":
            return gen_us_dl(rng)
        if loc == "en-GB":
            return gen_uk_dl(rng, self.first, self.last, self.sex, self.dob)
        if loc == "de-DE":
            return gen_de_dl(rng)
        if loc == "fr-FR":
            return gen_fr_dl(rng, self.dob)
        if loc == "es-ES":
            # The Spanish permiso de conducción number is the holder's DNI (or NIE).
            return es_style(self.spanish_doc(self.cache.get("_es_doc_subtype", "es_nif")), rng)
        if loc == "it-IT":
            return gen_it_dl(rng)
        if loc == "nl-NL":
            return gen_nl_dl(rng)
        raise ValueError(loc)


# --------------------------------------------------------------------------------------------
# Filling templates
# --------------------------------------------------------------------------------------------
def fill(template: str, locale: str, fk: faker.Faker, rng: random.Random) -> tuple[str, list[dict]]:
    people: dict[str, Person] = {}
    out: list[str] = []
    spans: list[dict] = []
    pos = 0  # code points written so far
    last = 0
    # A Spanish template that names an NIE makes that person a foreign resident, so their
    # driving licence (if any) carries the same NIE: resolve national ids first.
    order = sorted(PLACEHOLDER_RE.finditer(template), key=lambda m: (m.group(1) != "national_id", m.start()))
    resolved: dict[int, tuple[str, str, str | None]] = {}
    for m in order:
        kind, idx, subtype = m.group(1), m.group(2) or "1", m.group(3)
        if kind == "national_id":
            subtype = subtype or DEFAULT_NATIONAL_ID[locale]
            if subtype not in NATIONAL_ID_SUBTYPES[locale]:
                raise ValueError(f"{locale}: subtype {subtype} in {template!r}")
        elif subtype:
            raise ValueError(f"subtype on {kind} in {template!r}")
        if idx not in people:
            people[idx] = Person(locale, fk, rng)
        value, st = people[idx].value(kind, subtype)
        resolved[m.start()] = (PLACEHOLDER_TYPES[kind], value, st)
    for m in PLACEHOLDER_RE.finditer(template):
        lit = template[last:m.start()]
        out.append(lit)
        pos += len(lit)
        typ, value, st = resolved[m.start()]
        span = {"type": typ, "start": pos, "end": pos + len(value), "value": value}
        if st:
            span["subtype"] = st
        spans.append(span)
        out.append(value)
        pos += len(value)
        last = m.end()
    out.append(template[last:])
    text = "".join(out)
    for s in spans:
        assert text[s["start"]:s["end"]] == s["value"], (text, s)
    return text, spans


def lang_of(locale: str) -> str:
    return locale.split("-")[0]


def record(rid: str, set_: str, category: str, source: str, lang: str, locale: str | None,
           role: str, label: int, text: str, spans: list[dict]) -> dict:
    r = {"id": rid, "set": set_, "category": category, "source": source, "licence": LICENCE, "lang": lang}
    if locale is not None:
        r["locale"] = locale
    r.update({"role": role, "label": label, "text": text, "spans": spans})
    return r


def build_pii(templates: dict) -> list[dict]:
    records: list[dict] = []
    n = 0
    for locale in LOCALES:
        tpls = templates[locale]
        fk = faker.Faker(locale.replace("-", "_"))
        fk.seed_instance(seed_of("faker", locale) % (2**32))
        rng = random.Random(seed_of("rng", locale))
        for round_ in range(FILLS_PER_TEMPLATE):
            for t in tpls:
                text, spans = fill(t, locale, fk, rng)
                n += 1
                records.append(record(f"pii-faker-{n:04d}", "pii", "pii", f"written+Faker=={FAKER_VERSION}",
                                      lang_of(locale), locale, "user", 1, text, spans))
    m = 0
    for lang in LANGS:
        for t in templates["names_not_people"][lang]:
            if PLACEHOLDER_RE.search(t):
                raise ValueError(f"placeholder in names_not_people: {t!r}")
            m += 1
            records.append(record(f"pii-written-{m:04d}", "pii", "names_not_people", "written",
                                  lang, lang, "user", 0, t, []))
    return records


def unescape_line(line: str) -> str:
    return re.sub(r"\\(n|t|\\)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], line)


def build_benign() -> list[dict]:
    records: list[dict] = []
    n = 0
    for lang in LANGS:
        path = WRITTEN / f"benign_{lang}.txt"
        for raw in path.read_text(encoding="utf-8").splitlines():
            if not raw.strip() or raw.startswith("#"):
                continue
            category = "everyday"
            if raw.startswith("[lookalike] "):
                category, raw = "lookalike", raw[len("[lookalike] "):]
            text = unescape_line(raw.strip())
            n += 1
            records.append(record(f"ben-written-{n:04d}", "benign", category, "written", lang, None,
                                  "user", 0, text, []))
    return records


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    templates = json.loads((WRITTEN / "pii_templates.json").read_text(encoding="utf-8"))
    pii = build_pii(templates)
    benign = build_benign()
    ids = [r["id"] for r in pii + benign]
    assert len(ids) == len(set(ids))
    texts = Counter(r["text"] for r in pii + benign)
    dups = [t for t, c in texts.items() if c > 1]
    if dups:
        print(f"warning: {len(dups)} duplicate texts, e.g. {dups[0][:80]!r}", file=sys.stderr)
    write_jsonl(PARTS / "pii.jsonl", pii)
    write_jsonl(PARTS / "benign.jsonl", benign)

    print(f"pii.jsonl: {len(pii)} records")
    by_loc = Counter((r["locale"], r["category"]) for r in pii)
    for (loc, cat), c in sorted(by_loc.items()):
        print(f"  {loc:6s} {cat:17s} {c}")
    types = Counter(s["type"] + (f"/{s['subtype']}" if "subtype" in s else "") for r in pii for s in r["spans"])
    print("spans per entity type:")
    for t, c in sorted(types.items()):
        print(f"  {t:28s} {c}")
    print(f"benign.jsonl: {len(benign)} records")
    for (lang, cat), c in sorted(Counter((r["lang"], r["category"]) for r in benign).items()):
        print(f"  {lang} {cat:9s} {c}")


if __name__ == "__main__":
    main()
