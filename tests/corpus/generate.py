"""Seeded generator of synthetic, checksum-valid PII/secret items and of clean prose.

``generate(seed)`` returns ``[(text, entity_type, value)]``: each ``value`` is
valid by the same rules a real one obeys (Luhn and issuer prefix for cards,
mod-97 plus national rules for IBANs, stdnum's SSN rules, phonenumbers'
validity) and sits inside one of many sentence templates.  Nothing here is a
real person's data: values are random.

``python tests/corpus/generate.py`` rewrites ``tests/corpus/clean.txt``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import random
import re
import string
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import orjson
import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.us import ssn as std_ssn

Item = tuple[str, str, str]

# ---------------------------------------------------------------- values


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_B64URL = _ALNUM + "-_"

_CARD_BRANDS: tuple[tuple[Callable[[random.Random], str], tuple[int, ...]], ...] = (
    (lambda r: "4", (16,)),  # Visa
    (lambda r: "4", (13,)),
    (lambda r: str(r.randint(51, 55)), (16,)),  # Mastercard
    (lambda r: str(r.randint(2221, 2720)), (16,)),  # Mastercard 2-series
    (lambda r: r.choice(["34", "37"]), (15,)),  # Amex
    (lambda r: "6011", (16,)),  # Discover
    (lambda r: str(r.randint(644, 649)), (16,)),
    (lambda r: str(r.randint(3528, 3589)), (16,)),  # JCB
    (lambda r: "36", (14,)),  # Diners
    (lambda r: "62", (16, 19)),  # UnionPay
)


def card(rng: random.Random) -> str:
    prefix_fn, lengths = rng.choice(_CARD_BRANDS)
    length = rng.choice(lengths)
    body = prefix_fn(rng)
    body += _digits(rng, length - len(body) - 1)
    number = body + luhn.calc_check_digit(body)
    style = rng.randrange(4)
    if style == 0:
        return number
    sep = " " if style in (1, 3) else "-"
    if length == 15:  # Amex groups 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    if length == 14:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, length, 4))


# BBAN layouts: n digits, a upper-case letters, c alphanumerics
_IBAN_LAYOUTS = {
    "DE": "18n", "GB": "4a14n", "NL": "4a10n", "CH": "5n12c", "AT": "16n", "PL": "24n",
    "SE": "20n", "BE": "12n", "FR": "10n11c2n", "ES": "20n", "IT": "1a10n12c", "IE": "4a14n",
}


def _bban(rng: random.Random, layout: str) -> str:
    out, num = [], ""
    for ch in layout:
        if ch.isdigit():
            num += ch
            continue
        n, num = int(num), ""
        alphabet = {"n": string.digits, "a": string.ascii_uppercase,
                    "c": string.ascii_uppercase + string.digits}[ch]
        out.append(_chars(rng, alphabet, n))
    return "".join(out)


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_LAYOUTS))
    for _ in range(10_000):
        bban = _bban(rng, _IBAN_LAYOUTS[country])
        number = country + std_iban.calc_check_digits(country + "00" + bban) + bban
        if std_iban.is_valid(number):
            break
    else:  # pragma: no cover - layouts above are all reachable
        raise RuntimeError(f"no valid IBAN for {country}")
    return std_iban.format(number) if rng.random() < 0.6 else number


def us_ssn(rng: random.Random) -> str:
    while True:
        area, group, serial = rng.randint(1, 899), rng.randint(1, 99), rng.randint(1, 9999)
        number = f"{area:03d}{group:02d}{serial:04d}"
        if std_ssn.is_valid(number):
            sep = rng.choice(["-", "-", " "])
            return f"{number[:3]}{sep}{number[3:5]}{sep}{number[5:]}"


_PHONE_REGIONS = ("US", "US", "US", "CA", "GB", "DE", "FR", "IN", "JP", "AU", "BR", "ES")
_PHONE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)


def phone(rng: random.Random) -> str:
    region = rng.choice(_PHONE_REGIONS)
    example = phonenumbers.example_number_for_type(region, rng.choice(_PHONE_TYPES))
    national = str(example.national_number)
    while True:
        k = rng.randint(3, min(6, len(national) - 3))
        candidate = national[:-k] + _digits(rng, k)
        num = phonenumbers.parse("+" + str(example.country_code) + candidate)
        if phonenumbers.is_valid_number(num):
            break
    fmt = phonenumbers.PhoneNumberFormat
    styles = [fmt.E164, fmt.INTERNATIONAL]
    if region == "US":  # national formats only where the default region applies
        styles += [fmt.NATIONAL, fmt.NATIONAL, "dots", "dashes"]
    style = rng.choice(styles)
    if style == "dots":
        n = str(num.national_number)
        return f"{n[:3]}.{n[3:6]}.{n[6:]}"
    if style == "dashes":
        n = str(num.national_number)
        return f"{n[:3]}-{n[3:6]}-{n[6:]}"
    return phonenumbers.format_number(num, style)


_FIRST = ["john", "maria", "li", "ahmed", "olga", "kenji", "ana", "pierre", "fatima", "sam", "noah",
          "zoe", "ivan", "priya", "lucas", "emma", "chen", "sofia", "omar", "hana"]
_LAST = ["smith", "garcia", "wang", "khan", "petrova", "sato", "silva", "dubois", "ali", "lee",
         "brown", "novak", "kumar", "rossi", "muller", "jones", "kim", "costa", "haddad", "berg"]
_DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.co.uk", "test-mail.io",
            "uni.example.edu", "shop.example.de", "example.travel"]


def email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}",
                        f"{first}_{last}", f"{first}+{rng.choice(['news', 'work', 'x'])}",
                        f"{last}-{first}"])
    if rng.random() < 0.2:
        local = local.capitalize()
    return f"{local}@{rng.choice(_DOMAINS)}"


def ipv4(rng: random.Random) -> str:
    return str(ipaddress.IPv4Address(rng.getrandbits(32) | (1 << 24)))  # first octet >= 1


def ipv6(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 3:
        return f"::ffff:{ipv4(rng)}"
    groups = [rng.getrandbits(16) for _ in range(8)]
    if style == 1:  # a run of zeros so the compressed form has "::"
        start = rng.randint(1, 5)
        for i in range(start, start + rng.randint(2, 3)):
            groups[i] = 0
    addr = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
    return addr.exploded if style == 2 else addr.compressed


def openai_key(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        body = _chars(rng, _ALNUM, 20) + "T3BlbkFJ" + _chars(rng, _ALNUM, 20)
        return "sk-" + body
    prefix = "sk-proj-" if style == 1 else "sk-svcacct-"
    body = _chars(rng, _B64URL, 74) + "T3BlbkFJ" + _chars(rng, _B64URL, 74)
    return prefix + body + rng.choice(string.digits) + rng.choice(string.ascii_letters)


def anthropic_key(rng: random.Random) -> str:
    return "sk-ant-api03-" + _chars(rng, _B64URL, 93) + "AA"


def aws_access_key(rng: random.Random) -> str:
    return rng.choice(["AKIA", "ASIA"]) + _chars(rng, string.ascii_uppercase + "234567", 16)


def github_token(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return "github_pat_" + _chars(rng, _ALNUM, 22) + "_" + _chars(rng, _ALNUM, 59)
    return "gh" + rng.choice("pousr") + "_" + _chars(rng, _ALNUM, 36)


def slack_token(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return ("https://hooks.slack.com/services/T" + _chars(rng, string.ascii_uppercase + string.digits, 8)
                + "/B" + _chars(rng, string.ascii_uppercase + string.digits, 10) + "/" + _chars(rng, _ALNUM, 24))
    kind = rng.choice("bpa")
    return f"xox{kind}-{_digits(rng, 12)}-{_digits(rng, 13)}-{_chars(rng, _ALNUM, 24)}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "HS384"]), "typ": "JWT"}
    payload = {"sub": _digits(rng, 8), "name": rng.choice(_FIRST).title(), "iat": rng.randint(1_600_000_000, 1_800_000_000)}
    signing = _b64url(orjson.dumps(header)) + "." + _b64url(orjson.dumps(payload))
    sig = hmac.new(rng.randbytes(32), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64url(sig)


def private_key(rng: random.Random) -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
    body = base64.b64encode(rng.randbytes(rng.choice([96, 192, 300]))).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}PRIVATE KEY-----", *lines, f"-----END {kind}PRIVATE KEY-----"])


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "email": email, "phone": phone, "credit_card": card, "iban": iban, "us_ssn": us_ssn,
    "ipv4": ipv4, "ipv6": ipv6, "openai_key": openai_key, "anthropic_key": anthropic_key,
    "aws_access_key": aws_access_key, "github_token": github_token, "slack_token": slack_token,
    "jwt": jwt, "private_key": private_key,
}

# ---------------------------------------------------------------- templates

_TEMPLATES = (
    "Please contact me at {v} about the refund.",
    "My {label} is {v}.",
    "{label}: {v}",
    "Here you go: {v}",
    "{v} is the one I used last week, can you check it?",
    "Can you update the record (new {label}: {v}) before Friday?",
    "I wrote it down as \"{v}\" but I am not sure it is right.",
    "The form says {label}={v}; is that enough?",
    '{{"customer": "Jane", "{label}": "{v}", "priority": 2}}',
    "- {label}\n- value: `{v}`\n- status: pending",
    "Hi team,\n\nthe {label} from the ticket is {v}\n\nThanks!",
    "log line 2024-05-01T10:22:03Z user={v} action=login ok",
    "Ich habe {v} angegeben, bitte prüfen.",
    "Résumé attached; {label} {v}, merci.",
    "why does {v} keep failing?",
    "Two things: first the {label} ({v}), second the invoice total of $1,240.50.",
    "{v}",
    "Before: unknown. After: {v}. Done.",
    "Set it in the config like this:\n\n    {label} = '{v}'\n",
    "Order #A-48213 was billed; {label} on file: {v}, shipped 2023-11-04.",
)

_LABELS = {
    "email": ["email", "e-mail", "mail address", "contact"],
    "phone": ["phone", "mobile", "tel", "phone number"],
    "credit_card": ["card number", "credit card", "card", "payment card"],
    "iban": ["IBAN", "bank account", "account"],
    "us_ssn": ["SSN", "social security number", "ssn"],
    "ipv4": ["IP", "server address", "host", "client ip"],
    "ipv6": ["IPv6", "address", "host", "peer"],
    "openai_key": ["OPENAI_API_KEY", "api key", "token"],
    "anthropic_key": ["ANTHROPIC_API_KEY", "api key", "key"],
    "aws_access_key": ["AWS_ACCESS_KEY_ID", "access key", "aws key"],
    "github_token": ["GITHUB_TOKEN", "token", "PAT"],
    "slack_token": ["SLACK_TOKEN", "slack token", "webhook"],
    "jwt": ["Authorization", "bearer token", "id_token"],
    "private_key": ["private key", "ssh key", "key"],
}


def generate(seed: int = 1234, per_type: int = 160) -> list[Item]:
    """``per_type`` items for each entity type, deterministic for ``seed``."""
    rng = random.Random(seed)
    items: list[Item] = []
    for entity in sorted(GENERATORS):
        for i in range(per_type):
            value = GENERATORS[entity](rng)
            template = _TEMPLATES[(i + rng.randrange(len(_TEMPLATES))) % len(_TEMPLATES)]
            text = template.format(v=value, label=rng.choice(_LABELS[entity]))
            items.append((text, entity, value))
    return items


# ---------------------------------------------------------------- clean prose

_PRODUCTS = ["laptop stand", "desk lamp", "coffee grinder", "running shoes", "backpack", "monitor",
             "keyboard", "garden hose", "tea kettle", "bookshelf", "yoga mat", "headphones"]
_CITIES = ["Lisbon", "Denver", "Osaka", "Nairobi", "Toronto", "Krakow", "Austin", "Melbourne",
           "Bergen", "Cordoba", "Leeds", "Pune"]
_TOOLS = ["Python", "PostgreSQL", "nginx", "Kubernetes", "React", "Redis", "Django", "Terraform",
          "Node.js", "Go", "Rust", "OpenSSL"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _clean_sentence(rng: random.Random) -> str:
    r = rng
    date_iso = f"{r.randint(2015, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
    date_us = f"{r.randint(1, 12)}/{r.randint(1, 28)}/{r.randint(2015, 2026)}"
    date_long = f"{r.choice(_MONTHS)} {r.randint(1, 28)}, {r.randint(2015, 2026)}"
    version = f"{r.randint(0, 12)}.{r.randint(0, 30)}.{r.randint(0, 20)}"
    price = f"${r.randint(1, 2999)}.{r.randint(0, 99):02d}"
    eur = f"€{r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(0, 99):02d}"
    order = r.choice([f"#{r.randint(10000, 999999)}", f"A-{r.randint(1000, 99999)}",
                      f"ORD-{r.randint(2019, 2026)}-{r.randint(1000, 99999):05d}",
                      f"INV-{r.randint(100000, 999999)}", f"{r.choice('QWXYZ')}{r.randint(100, 999)}-{r.randint(10, 99)}"])
    qty = f"{r.randint(1, 999):,}"
    big = f"{r.randint(10_000, 99_000_000):,}"
    pct = f"{r.randint(0, 99)}.{r.randint(0, 9)}%"
    time_ = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}"
    product, city, tool = r.choice(_PRODUCTS), r.choice(_CITIES), r.choice(_TOOLS)
    sentences = [
        f"Order {order} for a {product} was placed on {date_long} and shipped two days later.",
        f"The {product} costs {price} including tax, and shipping to {city} adds another {price}.",
        f"We upgraded {tool} from {version} to {r.randint(1, 12)}.{r.randint(0, 30)} on {date_iso} without downtime.",
        f"Invoice {order} totals {eur}; payment is due by {date_us}.",
        f"The train to {city} leaves at {time_} from platform {r.randint(1, 24)}.",
        f"Sales grew {pct} in Q{r.randint(1, 4)} {r.randint(2015, 2026)}, reaching {big} units.",
        f"The population of {city} was about {big} in {r.randint(1950, 2024)}.",
        f"Please read chapter {r.randint(1, 40)}, pages {r.randint(1, 200)}-{r.randint(201, 400)}, before the meeting.",
        f"Room {r.randint(100, 999)}{r.choice('ABC')} is booked from {time_} until {r.randint(12, 23)}:00.",
        f"Release {version} fixes {r.randint(2, 60)} bugs and improves startup time by {pct}.",
        f"In {r.randint(1900, 2020)} the bridge was {r.randint(100, 2500)} meters long and {r.randint(5, 60)} meters high.",
        f"Our team of {r.randint(3, 40)} people answered {qty} tickets in {r.choice(_MONTHS)}.",
        f"The recipe needs {r.randint(100, 900)} g of flour, {r.randint(1, 4)} eggs and {r.randint(50, 300)} ml of milk.",
        f"Run `pip install {tool.lower()}=={version}` and restart the service.",
        f"In C++, std::vector<int> grows by a factor of about {r.randint(15, 20) / 10}.",
        f"The average temperature in {city} is {r.randint(-5, 35)} degrees in {r.choice(_MONTHS)}.",
        f"Ticket {r.randint(1000, 99999)} was closed after {r.randint(2, 72)} hours with a score of {r.randint(1, 5)}/5.",
        f"The {product} weighs {r.randint(1, 30)}.{r.randint(0, 9)} kg and measures {r.randint(10, 90)} x {r.randint(10, 90)} cm.",
        f"Flight {r.choice(['BA', 'LH', 'UA', 'NH', 'TP'])} {r.randint(100, 9999)} departs at {time_} and lands at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}.",
        f"The score was {r.randint(0, 5)}-{r.randint(0, 5)} at half time and {r.randint(0, 7)}-{r.randint(0, 7)} at the end.",
        f"Patch notes for {tool} {version}: memory use down {pct}, {r.randint(2, 30)} deprecations removed.",
        f"The warehouse in {city} shipped {qty} parcels between {date_iso} and {r.choice(_MONTHS)} {r.randint(1, 28)}.",
        f"Set the timeout to {r.randint(1, 120)} seconds and the pool size to {r.randint(2, 64)} connections.",
        f"The marathon record is {r.randint(2, 3)}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}, set in {r.randint(1990, 2024)}.",
        f"Use a {r.randint(8, 64)}-character passphrase and rotate it every {r.randint(30, 365)} days.",
        f"Item {order} ({product}) is back in stock: {qty} left at {price} each.",
        f"The build {r.getrandbits(160):040x} passed; request id {r.getrandbits(128):032x}.",
        f"Trace {_uuid(r)} was sampled at {date_iso}T{time_}:{r.randint(0, 59):02d}Z.",
        f"Tracking number {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 2)} shows it in {city}.",
        f"The ISBN is 978-{r.randint(0, 9)}-{r.randint(100, 999)}-{r.randint(10000, 99999)}-{r.randint(0, 9)} and it has {r.randint(100, 900)} pages.",
        f"Customer number {_digits(r, 8)} asked about account tier {r.randint(1, 5)}.",
        f"The meeting on {date_iso} at {time_}:{r.randint(0, 59):02d} was moved to {date_us}.",
        f"Coordinates {r.randint(-89, 89)}.{_digits(r, 5)}, {r.randint(-179, 179)}.{_digits(r, 5)} mark the trailhead.",
        f"The color #{r.getrandbits(24):06x} and version {version}.{r.randint(0, 99)} shipped together.",
        f"Use port {r.randint(1024, 65535)} and a batch of {r.randint(1, 4096)} rows; build {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(1000, 30000)}.{r.randint(1, 999)}.",
        f"The serial number is SN{_digits(r, 10)} and the model is X{r.randint(100, 999)}.",
    ]
    return r.choice(sentences)


def clean_text(seed: int = 42, min_bytes: int = 64 * 1024) -> str:
    """Ordinary English prose full of numbers, dates, versions, prices and ids, no PII."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    while size < min_bytes:
        para = " ".join(_clean_sentence(rng) for _ in range(rng.randint(3, 7)))
        paragraphs.append(para)
        size += len(para.encode()) + 2
    return "\n\n".join(paragraphs) + "\n"



# ---------------------------------------------------------------- evasions
#
# The ways a value is hidden in text that a model still reads as the value:
# compatibility forms, invisible characters, broken lines, odd separators and
# the escapes of URLs, JSON and HTML.  ``evade`` applies one to a value;
# ``reveal`` is an independent oracle (stdlib only, not the gateway's code)
# that undoes them all, for checking that nothing of a value got through.

EVASIONS = ("plain", "fullwidth", "zero_width", "line_breaks", "separators", "percent",
            "json_escape", "html_escape")
# the categories of the issue (#12): every one gets every evasion
EVASION_ENTITIES = ("email", "phone", "credit_card", "iban", "us_ssn", "openai_key",
                    "anthropic_key", "aws_access_key", "jwt", "github_token", "private_key")
_NUMBERS = ("phone", "credit_card", "iban", "us_ssn")
_FORMAT_CHARS = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u202c")


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def _every(text: str, rng: random.Random, fn: Callable[[str], str], share: float) -> str:
    """Apply ``fn`` to the non-alphanumeric characters, or (``share`` of the time) to all."""
    full = rng.random() < share
    return "".join(fn(c) if full or not c.isalnum() else c for c in text)


def _regroup(value: str, sep: str) -> str:
    """A number written with ``sep`` between its groups (re-grouped by 4 if it had none)."""
    if value.startswith(("+", "(")):  # phones: as the numbering plan groups them
        num = phonenumbers.parse(value, "US")
        value = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    groups = [g for g in re.split(r"[^0-9A-Za-z+]+", value) if g]
    if len(groups) == 1:
        g = groups[0]
        head = "+" if g.startswith("+") else ""
        g = g.lstrip("+")
        groups = [head + g[:3]] + [g[i:i + 4] for i in range(3, len(g), 4)]
    return sep.join(groups)


def evade(entity: str, value: str, evasion: str, rng: random.Random) -> str:
    if evasion == "plain":
        return value
    if evasion == "fullwidth":
        return _fullwidth(value)
    if evasion == "zero_width":
        out = []
        for i, c in enumerate(value):
            out.append(c)
            if i % 3 == 1 and c != "\n":
                out.append(rng.choice(_FORMAT_CHARS))
        return "".join(out)
    if evasion == "line_breaks":
        if entity in _NUMBERS:
            return _regroup(value, rng.choice(["\n", "\r\n"]))
        if entity == "email":
            local, _, domain = value.partition("@")
            return local + rng.choice(["@\n", "\n@"]) + domain
        if entity == "private_key":
            return value.replace("\n", "\r\n")
        cut = len(value) // 2
        return value[:cut] + "\n" + value[cut:]
    if evasion == "separators":
        if entity in _NUMBERS:
            return _regroup(value, rng.choice([".", "/", " - ", "\t", " / ", "-"]))
        if entity == "email":
            local, _, domain = value.partition("@")
            return local + rng.choice([" @ ", "@ ", " @"]) + domain
        if entity == "private_key":
            return value.replace("\n", " ")
        if entity == "aws_access_key" or (entity == "github_token" and not value.startswith("github_pat_")):
            head = 4
            sep = rng.choice(["-", " ", ".", "/"])
            return value[:head] + sep + sep.join(value[i:i + 4] for i in range(head, len(value), 4))
        # long keys and tokens: broken into lines of 16
        return "\n".join(value[i:i + 16] for i in range(0, len(value), 16))
    if evasion == "percent":
        return _every(value, rng, lambda c: "".join(f"%{b:02X}" for b in c.encode()), 0.4)
    if evasion == "json_escape":
        return _every(value, rng, lambda c: f"\\u{ord(c):04x}", 0.4)
    if evasion == "html_escape":
        named = {"@": "&commat;", ".": "&period;", "-": "&hyphen;", "_": "&lowbar;", "/": "&sol;"}
        return _every(value, rng, lambda c: named.get(c) or rng.choice([f"&#{ord(c)};", f"&#x{ord(c):x};"]),
                      0.4)
    raise ValueError(evasion)


def evasion_items(seed: int = 7, per: int = 3) -> list[tuple[str, str, str, str]]:
    """[(text, entity, evasion, value)]: ``per`` values per entity and evasion, in sentences."""
    rng = random.Random(seed)
    out = []
    for entity in EVASION_ENTITIES:
        for evasion in EVASIONS:
            for _i in range(per):
                value = GENERATORS[entity](rng)
                template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
                if template.startswith('{{"') and evasion in ("line_breaks", "separators") \
                        and "\n" in evade(entity, value, evasion, random.Random(0)):
                    template = _TEMPLATES[0]
                text = template.format(v=evade(entity, value, evasion, rng),
                                       label=rng.choice(_LABELS[entity]))
                out.append((text, entity, evasion, value))
    return out


_REVEAL_ESC = re.compile(r"\\u([0-9a-fA-F]{4})")


def reveal(text: str) -> str:
    """Undo every evasion (independently of the gateway): escapes, NFKC, format characters."""
    for _ in range(2):
        text = html.unescape(text)
        text = urllib.parse.unquote(text)
        text = _REVEAL_ESC.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf").replace("\u2010", "-")


def compact(text: str) -> str:
    """Letters and digits only: separators and line breaks removed."""
    return re.sub(r"[^0-9A-Za-z]", "", text)


def value_leaked(entity: str, value: str, received: str) -> bool:
    """Is ``value`` (in any evasion) readable in ``received``, the text a provider got?"""
    seen = compact(reveal(received))
    if entity == "private_key":
        body = [ln for ln in value.splitlines() if "PRIVATE KEY" not in ln]
        return any(len(ln) >= 16 and compact(ln) in seen for ln in body)
    want = compact(value)
    if entity in ("phone", "credit_card", "us_ssn"):
        want = want.lstrip("+")
    return want in seen


CLEAN_PATH = Path(__file__).with_name("clean.txt")

if __name__ == "__main__":
    CLEAN_PATH.write_text(clean_text())
    items = generate()
    print(f"wrote {CLEAN_PATH} ({CLEAN_PATH.stat().st_size} bytes); {len(items)} corpus items", file=sys.stderr)
