#!/usr/bin/env python3
"""Build the held-out `secrets` part of the evaluation set.

Writes models/eval/parts/secrets.jsonl (record format: models/eval/FORMAT.md) and
models/eval/pins-secrets.txt (tool versions and where each credential format comes from).

Everything is synthesised: no labelled real-world secrets corpus is packaged anywhere
(models/registry-survey.md, section 2f). Credential values are generated from the provider
formats published as regexes in detect-secrets 1.5.0, llm-guard 0.3.16 and garak 0.17.1
(resources/apikey/regexes.py, derived from dora, MIT), with rstr 3.2.2 and a seeded RNG.
GitHub and npm tokens carry their real CRC32/base62 checksum; PEM private keys are real
RSA-2048 / P-256 keys generated from the seeded RNG (pure Python, DER encoded by hand); JWTs
and PyPI macaroons are built field by field. The values are random and belong to nobody.

The texts were written without looking at the detector under test.

Run (deterministic; same bytes on every run):
    python3 -m venv .venv-secrets
    .venv-secrets/bin/pip install rstr==3.2.2
    .venv-secrets/bin/python models/eval/build_secrets.py

Optional provenance check: with detect-secrets==1.5.0 and llm-guard==0.3.16 installed
(`pip install --no-deps`) in the same interpreter, and GARAK_WHEEL pointing at
garak-0.17.1-py3-none-any.whl, the script checks that every source regex quoted below occurs
verbatim in the file it is attributed to. Without them that check is skipped (and says so).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import os
import re
import string
import sys
import sysconfig
import uuid
import warnings
import zipfile
import zlib
from pathlib import Path
import random

warnings.filterwarnings("ignore", category=DeprecationWarning)  # rstr uses sre_parse

try:
    import rstr  # rstr==3.2.2, BSD
except ImportError:  # pragma: no cover
    sys.exit("build_secrets.py needs rstr==3.2.2 (pip install rstr==3.2.2)")

SEED = 20240917
HERE = Path(__file__).resolve().parent
OUT_JSONL = HERE / "parts" / "secrets.jsonl"
OUT_PINS = HERE / "pins-secrets.txt"
SOURCE = "synthetic"
LICENCE = "Apache-2.0"  # written by this script, the project's licence

ALNUM = string.ascii_letters + string.digits
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62 alphabet of GitHub/npm checksums


def sub_rng(name: str) -> random.Random:
    """An RNG per section, so that editing one section leaves the others' values alone.
    random.Random(str) seeds from the SHA-512 of the string: stable across runs and versions."""
    return random.Random(f"{SEED}:{name}")


# ---------------------------------------------------------------------------------------------
# Where each format comes from. `regex` is quoted verbatim from `file` (checked when available).
# `value` is the pattern used here to generate (a subset of what the source regex accepts).
# ---------------------------------------------------------------------------------------------
DS = "detect-secrets==1.5.0"
LG = "llm-guard==0.3.16"
GK = "garak==0.17.1"

SOURCES = {
    "aws_access_key": [
        (DS, "detect_secrets/plugins/aws.py", r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"),
        (GK, "garak/resources/apikey/regexes.py", r"(A3T[A-Z0-9]|AKIA|AGPA|AROA|AIPA|ANPA|ANVA|ASIA)([A-Z0-9]{16})"),
    ],
    "aws_secret_key": [
        (GK, "garak/resources/apikey/regexes.py", r"""aws(.{0,20})?['\"]([0-9a-zA-Z/+]{40})['\"]"""),
        (DS, "detect_secrets/plugins/aws.py", r"""[\'\"]([0-9a-zA-Z/+]{{40}})[\'\"]"""),
    ],
    "github_token": [
        (DS, "detect_secrets/plugins/github_token.py", r"(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}"),
        (LG, "llm_guard/input_scanners/secrets_plugins/github_token.py", r"github_pat_[0-9a-zA-Z_]{82}"),
        (GK, "garak/resources/apikey/regexes.py", r"ghp_([0-9a-zA-Z]{36})"),
    ],
    "gitlab_token": [
        (LG, "llm_guard/input_scanners/secrets_plugins/gitlab.py", r"""glpat-[0-9a-zA-Z\-\_]{20}"""),
        (DS, "detect_secrets/plugins/gitlab_token.py", r"(glpat|gldt|glft|glsoat|glrt)-"),
    ],
    "slack_token": [
        (DS, "detect_secrets/plugins/slack.py", r"xox(?:a|b|p|o|s|r)-(?:\d+-)+[a-z0-9]+"),
        (LG, "llm_guard/input_scanners/secrets_plugins/slack.py", r"""(xoxb-[0-9]{10,13}\-[0-9]{10,13}[a-zA-Z0-9-]*)"""),
        (GK, "garak/resources/apikey/regexes.py", r"(xox[pboa]-([0-9]{12})-([0-9]{12})-([0-9]{12})-([a-z0-9]{32}))"),
    ],
    "slack_webhook": [
        (GK, "garak/resources/apikey/regexes.py", r"https://hooks\.slack\.com/services/T([a-zA-Z0-9_]{8})/B([a-zA-Z0-9_]{8})/([a-zA-Z0-9_]{24})"),
        (DS, "detect_secrets/plugins/slack.py", r"https://hooks\.slack\.com/services/T[a-zA-Z0-9_]+/B[a-zA-Z0-9_]+/[a-zA-Z0-9_]+"),
    ],
    "stripe_key": [
        (DS, "detect_secrets/plugins/stripe.py", r"(?:r|s)k_live_[0-9a-zA-Z]{24}"),
        (GK, "garak/resources/apikey/regexes.py", r"sk_live_([0-9a-zA-Z]{24})"),
    ],
    "openai_api_key": [
        (DS, "detect_secrets/plugins/openai.py", r"sk-[A-Za-z0-9-_]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
        (LG, "llm_guard/input_scanners/secrets_plugins/openai_api_key.py", r"""(sk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20})"""),
    ],
    "anthropic_api_key": [
        ("secretlint-rule-anthropic (MIT; secretlint/secretlint@30b35d5f, read through the code index, not installed)",
         "packages/@secretlint/secretlint-rule-anthropic/src/index.ts", r"sk-ant-api0\d-[A-Za-z0-9_-]{90,128}AA"),
    ],
    "google_api_key": [
        (LG, "llm_guard/input_scanners/secrets_plugins/gcp_api_key.py", r"""(AIza[0-9A-Za-z\\-_]{35})"""),
        (GK, "garak/resources/apikey/regexes.py", r"AIza([0-9A-Za-z-_]{35})"),
    ],
    "azure_storage_key": [
        (DS, "detect_secrets/plugins/azure_storage_key.py", r"AccountKey=[a-zA-Z0-9+\/=]{88}"),
    ],
    "twilio_auth_token": [
        (DS, "detect_secrets/plugins/twilio.py", r"AC[a-z0-9]{32}"),  # the account SID next to it (not marked)
    ],
    "twilio_api_key": [
        (DS, "detect_secrets/plugins/twilio.py", r"SK[a-z0-9]{32}"),
        (GK, "garak/resources/apikey/regexes.py", r"twilio(.{0,20})?SK([0-9a-f]{32})"),
    ],
    "sendgrid_api_key": [
        (DS, "detect_secrets/plugins/sendgrid.py", r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}"),
        (GK, "garak/resources/apikey/regexes.py", r"SG\.([0-9A-Za-z\-_]{22})\.([0-9A-Za-z-_]{43})"),
    ],
    "npm_token": [
        (DS, "detect_secrets/plugins/npm.py", r"\/\/.+\/:_authToken=\s*((npm_.+)|([A-Fa-f0-9-]{36})).*"),
    ],
    "pypi_token": [
        (DS, "detect_secrets/plugins/pypi_token.py", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9-_]{70,}"),
        (LG, "llm_guard/input_scanners/secrets_plugins/pypi_upload_token.py", r"""pypi-AgEIcHlwaS5vcmc[A-Za-z0-9\-_]{50,1000}"""),
        (GK, "garak/resources/apikey/regexes.py", r"pypi-AgEIcHlwaS5vcmc([A-Za-z0-9-_]){50,1000}"),
    ],
    "jwt": [
        (DS, "detect_secrets/plugins/jwt.py", r"eyJ[A-Za-z0-9-_=]+\.[A-Za-z0-9-_=]+\.?[A-Za-z0-9-_.+/=]*?"),
    ],
    "private_key": [
        (DS, "detect_secrets/plugins/private_key.py", r"BEGIN RSA PRIVATE KEY"),
        (DS, "detect_secrets/plugins/private_key.py", r"BEGIN EC PRIVATE KEY"),
        (DS, "detect_secrets/plugins/private_key.py", r"BEGIN PRIVATE KEY"),
    ],
    "huggingface_token": [
        (LG, "llm_guard/input_scanners/secrets_plugins/huggingface.py", r"""(hf_[a-zA-Z]{34})"""),
    ],
    "datadog_api_key": [
        (LG, "llm_guard/input_scanners/secrets_plugins/datadog_access_token.py", r"""(?i)(?:datadog)(?:[0-9a-z\-_\t .]{0,20})"""),
    ],
    "datadog_app_key": [
        (LG, "llm_guard/input_scanners/secrets_plugins/datadog_access_token.py", r"""([a-z0-9]{40})"""),
    ],
    "mailgun_api_key": [
        (LG, "llm_guard/input_scanners/secrets_plugins/mailgun.py", r"""(key-[a-f0-9]{32})"""),
        (LG, "llm_guard/input_scanners/secrets_plugins/mailgun.py", r"""([a-h0-9]{32}-[a-h0-9]{8}-[a-h0-9]{8})"""),
        (GK, "garak/resources/apikey/regexes.py", r"key-([0-9a-zA-Z]{32})"),
    ],
    "basic_auth": [
        ("RFC 7617 (Authorization: Basic base64(user:password))", "-", ""),
    ],
    "password": [
        (DS, "detect_secrets/plugins/basic_auth.py", r"://[^{}\s]+:([^{}\s]+)@"),  # passwords in URIs
        ("written here (human-style and random passwords in config lines and prose)", "-", ""),
    ],
}

# Value patterns each generated secret must match in full (checked before writing).
VALUE_PATTERNS = {
    "aws_access_key": r"AKIA[A-Z2-7]{16}",
    "aws_secret_key": r"[A-Za-z0-9/+]{40}",
    "github_token": r"(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})",
    "gitlab_token": r"glpat-[0-9A-Za-z_-]{20}",
    "slack_token": r"(xoxb-\d{10,13}-\d{10,13}-[A-Za-z0-9]{24}|xoxp-\d{12}-\d{12}-\d{12}-[a-f0-9]{32})",
    "slack_webhook": r"https://hooks\.slack\.com/services/T[A-Z0-9]{8}/B[A-Z0-9]{8}/[A-Za-z0-9]{24}",
    "stripe_key": r"[sr]k_(live|test)_([0-9A-Za-z]{24}|51[0-9A-Za-z]{97})",
    "openai_api_key": r"sk-(proj-|svcacct-)?[A-Za-z0-9_-]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}([A-Za-z0-9_-]*[A-Za-z0-9])?",
    "anthropic_api_key": r"sk-ant-api03-[A-Za-z0-9_-]{93}AA",
    "google_api_key": r"AIzaSy[0-9A-Za-z_-]{33}",
    "azure_storage_key": r"[A-Za-z0-9+/]{86}==",
    "twilio_auth_token": r"[0-9a-f]{32}",
    "twilio_api_key": r"SK[0-9a-f]{32}",
    "twilio_api_secret": r"[A-Za-z0-9]{32}",
    "sendgrid_api_key": r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    "npm_token": r"npm_[A-Za-z0-9]{36}",
    "pypi_token": r"pypi-AgE(IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{100,}",
    "jwt": r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{40,}",
    "private_key": r"(-----BEGIN (RSA |EC )?PRIVATE KEY-----(\n|\\n)[A-Za-z0-9+/=\n\\]+-----END (RSA |EC )?PRIVATE KEY-----|LS0tLS1CRUdJTi[A-Za-z0-9+/=]+)",
    "huggingface_token": r"hf_[A-Za-z]{34}",
    "datadog_api_key": r"[0-9a-f]{32}",
    "datadog_app_key": r"[0-9a-f]{40}",
    "mailgun_api_key": r"(key-[0-9a-f]{32}|[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})",
    "basic_auth": r"[A-Za-z0-9+/]+={0,2}",
    "password": r"\S{6,64}",
}


# ---------------------------------------------------------------------------------------------
# Text assembly: a text is a list of parts, each a str or a Sec (a secret to be marked).
# ---------------------------------------------------------------------------------------------
class Sec:
    __slots__ = ("subtype", "value")

    def __init__(self, subtype: str, value: str):
        self.subtype = subtype
        self.value = value


PH = re.compile("\u27e8(\\w+)\u27e9")  # ⟨name⟩ placeholders: never occur in the snippets themselves


def fmt(template: str, **kw) -> list:
    """Split `template` on ⟨name⟩ placeholders; values may be str or Sec."""
    parts: list = []
    pos = 0
    for m in PH.finditer(template):
        parts.append(template[pos:m.start()])
        parts.append(kw[m.group(1)])
        pos = m.end()
    parts.append(template[pos:])
    return [p for p in parts if not (isinstance(p, str) and p == "")]


def assemble(parts: list) -> tuple[str, list]:
    text = []
    spans = []
    pos = 0
    for p in parts:
        if isinstance(p, Sec):
            spans.append({"type": "credential", "start": pos, "end": pos + len(p.value),
                          "value": p.value, "subtype": p.subtype})
            text.append(p.value)
            pos += len(p.value)
        else:
            text.append(p)
            pos += len(p)
    return "".join(text), spans


# ---------------------------------------------------------------------------------------------
# Small crypto: real RSA-2048 and P-256 keys from a seeded RNG, DER by hand.
# ---------------------------------------------------------------------------------------------
_SMALL_PRIMES = [p for p in range(3, 3000) if all(p % q for q in range(2, int(p ** 0.5) + 1))]


def _probable_prime(n: int, rng: random.Random, rounds: int = 20) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random, e: int = 65537) -> int:
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if (c - 1) % e and _probable_prime(c, rng):
            return c


def rsa_key(rng: random.Random, bits: int = 2048) -> dict:
    e = 65537
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
        if p != q and (p * q).bit_length() == bits:
            break
    if p < q:
        p, q = q, p
    phi = (p - 1) * (q - 1)
    d = pow(e, -1, phi)
    return {"n": p * q, "e": e, "d": d, "p": p, "q": q,
            "dp": d % (p - 1), "dq": d % (q - 1), "qi": pow(q, -1, p)}


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _int(x: int) -> bytes:
    return _tlv(0x02, x.to_bytes(x.bit_length() // 8 + 1, "big"))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _oid(dotted: str) -> bytes:
    nums = [int(x) for x in dotted.split(".")]
    out = bytearray([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out.extend(reversed(chunk))
    return _tlv(0x06, bytes(out))


OID_RSA = "1.2.840.113549.1.1.1"
OID_EC = "1.2.840.10045.2.1"
OID_P256 = "1.2.840.10045.3.1.7"


def rsa_pkcs1_der(k: dict) -> bytes:
    return _seq(_int(0), _int(k["n"]), _int(k["e"]), _int(k["d"]), _int(k["p"]), _int(k["q"]),
                _int(k["dp"]), _int(k["dq"]), _int(k["qi"]))


def rsa_pkcs8_der(k: dict) -> bytes:
    return _seq(_int(0), _seq(_oid(OID_RSA), b"\x05\x00"), _tlv(0x04, rsa_pkcs1_der(k)))


def rsa_spki_der(k: dict) -> bytes:
    return _seq(_seq(_oid(OID_RSA), b"\x05\x00"), _tlv(0x03, b"\x00" + _seq(_int(k["n"]), _int(k["e"]))))


# NIST P-256
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
      0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def _ec_add(P1, P2):
    if P1 is None:
        return P2
    if P2 is None:
        return P1
    (x1, y1), (x2, y2) = P1, P2
    if x1 == x2 and (y1 + y2) % _P == 0:
        return None
    if P1 == P2:
        lam = (3 * x1 * x1 + _A) * pow(2 * y1, -1, _P) % _P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, _P) % _P
    x3 = (lam * lam - x1 - x2) % _P
    return (x3, (lam * (x1 - x3) - y1) % _P)


def _ec_mul(k: int, P=_G):
    R = None
    while k:
        if k & 1:
            R = _ec_add(R, P)
        P = _ec_add(P, P)
        k >>= 1
    return R


def ec_key(rng: random.Random) -> dict:
    d = rng.randrange(1, _N)
    x, y = _ec_mul(d)
    return {"d": d, "pub": b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")}


def ec_sec1_der(k: dict) -> bytes:
    return _seq(_int(1), _tlv(0x04, k["d"].to_bytes(32, "big")), _tlv(0xA0, _oid(OID_P256)),
                _tlv(0xA1, _tlv(0x03, b"\x00" + k["pub"])))


def ec_pkcs8_der(k: dict) -> bytes:
    inner = _seq(_int(1), _tlv(0x04, k["d"].to_bytes(32, "big")), _tlv(0xA1, _tlv(0x03, b"\x00" + k["pub"])))
    return _seq(_int(0), _seq(_oid(OID_EC), _oid(OID_P256)), _tlv(0x04, inner))


def ec_spki_der(k: dict) -> bytes:
    return _seq(_seq(_oid(OID_EC), _oid(OID_P256)), _tlv(0x03, b"\x00" + k["pub"]))


def pem(label: str, der: bytes) -> str:
    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


def ssh_rsa_pub(k: dict) -> str:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    def mpint(x: int) -> bytes:
        return s(x.to_bytes(x.bit_length() // 8 + 1, "big"))

    return "ssh-rsa " + base64.b64encode(s(b"ssh-rsa") + mpint(k["e"]) + mpint(k["n"])).decode()


def ssh_ed25519_pub(raw32: bytes) -> str:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    return "ssh-ed25519 " + base64.b64encode(s(b"ssh-ed25519") + s(raw32)).decode()


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def png_bytes(rng: random.Random, w: int, h: int) -> bytes:
    """A real RGB PNG (stored deflate blocks, so the bytes do not depend on the zlib version)."""
    base = [rng.randrange(256) for _ in range(3)]
    raw = bytearray()
    for y in range(h):
        raw.append(0)
        for x in range(w):
            raw.extend(((base[0] + 9 * x) % 256, (base[1] + 7 * y) % 256, (base[2] + 5 * (x ^ y)) % 256))

    def chunk(t: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + t + data + (zlib.crc32(t + data) & 0xFFFFFFFF).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 0)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# Secret generators
# ---------------------------------------------------------------------------------------------
class Gen:
    def __init__(self, rng: random.Random, keys_rng: random.Random):
        self.rng = rng
        self.rs = rstr.Rstr(rng)
        self.keys_rng = keys_rng
        self.seen: set = set()

    def x(self, pattern: str) -> str:
        return self.rs.xeger(pattern)

    def _uniq(self, v: str) -> str:
        if v in self.seen:
            raise RuntimeError("duplicate generated value")
        self.seen.add(v)
        return v

    def _checksummed(self, prefix: str, n_random: int) -> str:
        body = self.x(f"[A-Za-z0-9]{{{n_random}}}")
        crc = binascii.crc32(body.encode()) & 0xFFFFFFFF
        digits = ""
        while crc:
            crc, r = divmod(crc, 62)
            digits = B62[r] + digits
        return prefix + body + digits.rjust(6, "0")

    def aws_access_key(self):
        return Sec("aws_access_key", self._uniq(self.x(r"AKIA[A-Z2-7]{16}")))

    def aws_secret_key(self):
        return Sec("aws_secret_key", self._uniq(self.x(r"[A-Za-z0-9/+]{40}")))

    def github(self, kind="ghp"):
        if kind == "pat":
            v = "github_pat_11" + self.x(r"[A-Z0-9]{20}_[A-Za-z0-9]{59}")
        else:
            v = self._checksummed(kind + "_", 30)
        return Sec("github_token", self._uniq(v))

    def gitlab(self):
        return Sec("gitlab_token", self._uniq(self.x(r"glpat-[0-9A-Za-z_-]{19}[0-9A-Za-z]")))

    def slack_bot(self):
        return Sec("slack_token", self._uniq(self.x(r"xoxb-[1-9][0-9]{10,11}-[1-9][0-9]{12}-[A-Za-z0-9]{24}")))

    def slack_user(self):
        return Sec("slack_token", self._uniq(self.x(r"xoxp-[1-9][0-9]{11}-[1-9][0-9]{11}-[1-9][0-9]{11}-[a-f0-9]{32}")))

    def slack_webhook(self):
        return Sec("slack_webhook", self._uniq(self.x(r"https://hooks\.slack\.com/services/T0[A-Z0-9]{7}/B0[A-Z0-9]{7}/[A-Za-z0-9]{24}")))

    def stripe(self, prefix="sk_live_", long=False):
        tail = self.x(r"51[A-Za-z0-9]{97}") if long else self.x(r"[A-Za-z0-9]{24}")
        return Sec("stripe_key", self._uniq(prefix + tail))

    def openai(self, style="legacy"):
        if style == "legacy":
            v = self.x(r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}")
        elif style == "proj":
            v = self.x(r"sk-proj-[A-Za-z0-9_-]{54}[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}[A-Za-z0-9_-]{53}[A-Za-z0-9]")
        else:
            v = self.x(r"sk-svcacct-[A-Za-z0-9_-]{54}[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}[A-Za-z0-9_-]{53}[A-Za-z0-9]")
        return Sec("openai_api_key", self._uniq(v))

    def anthropic(self):
        return Sec("anthropic_api_key", self._uniq(self.x(r"sk-ant-api03-[A-Za-z0-9][A-Za-z0-9_-]{92}AA")))

    def google(self):
        return Sec("google_api_key", self._uniq(self.x(r"AIzaSy[0-9A-Za-z_-]{32}[0-9A-Za-z]")))

    def azure_key(self):
        raw = bytes(self.rng.randrange(256) for _ in range(64))
        return Sec("azure_storage_key", self._uniq(base64.b64encode(raw).decode()))

    def twilio_sid(self) -> str:  # an identifier, not marked
        return self.x(r"AC[0-9a-f]{32}")

    def twilio_token(self):
        return Sec("twilio_auth_token", self._uniq(self.x(r"[0-9a-f]{32}")))

    def twilio_api_key(self):
        return Sec("twilio_api_key", self._uniq(self.x(r"SK[0-9a-f]{32}")))

    def twilio_api_secret(self):
        return Sec("twilio_api_secret", self._uniq(self.x(r"[A-Za-z0-9]{32}")))

    def sendgrid(self):
        return Sec("sendgrid_api_key", self._uniq(self.x(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{42}[A-Za-z0-9]")))

    def npm(self):
        return Sec("npm_token", self._uniq(self._checksummed("npm_", 30)))

    def pypi(self, test=False):
        rng = self.rng
        ident = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
        loc = b"test.pypi.org" if test else b"pypi.org"
        caveats = [b'{"version": 1, "permissions": "user"}']
        if rng.random() < 0.5:
            proj = rng.choice(["acme-sdk", "tinyparse", "geo-utils", "fastbill", "loglens"])
            caveats = [('{"version": 1, "permissions": {"projects": ["%s"]}}' % proj).encode()]
        body = bytearray(b"\x02\x01") + bytes([len(loc)]) + loc + b"\x02" + bytes([len(ident)]) + ident + b"\x00"
        for c in caveats:
            body += b"\x02" + bytes([len(c)]) + c + b"\x00"
        body += b"\x00\x06\x20" + bytes(rng.randrange(256) for _ in range(32))
        return Sec("pypi_token", self._uniq("pypi-" + b64url(bytes(body))))

    def jwt(self, kind="hs256", claims: dict | None = None):
        rng = self.rng
        iat = 1714000000 + rng.randrange(0, 20000000)
        if kind == "k8s":
            ns, sa = claims["ns"], claims["sa"]
            header = {"alg": "RS256", "kid": b64url(bytes(rng.randrange(256) for _ in range(32)))}
            payload = {"aud": ["https://kubernetes.default.svc.cluster.local"], "exp": iat + 31536000, "iat": iat,
                       "iss": "https://kubernetes.default.svc.cluster.local",
                       "kubernetes.io": {"namespace": ns, "serviceaccount": {
                           "name": sa, "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4))}},
                       "nbf": iat, "sub": f"system:serviceaccount:{ns}:{sa}"}
            sig = bytes(rng.randrange(256) for _ in range(256))
        elif kind == "rs256":
            header = {"alg": "RS256", "typ": "JWT", "kid": self.x(r"[A-Za-z0-9_-]{22}")}
            payload = {"iss": rng.choice(["https://auth.tessera-health.io/", "https://login.brightcart.de/",
                                          "https://id.orbitfreight.com"]),
                       "sub": "auth0|" + self.x(r"[0-9a-f]{24}"), "aud": "https://api.internal",
                       "iat": iat, "exp": iat + 86400, "scope": "openid profile email offline_access"}
            sig = bytes(rng.randrange(256) for _ in range(256))
        else:
            header = {"alg": "HS256", "typ": "JWT"}
            payload = {"sub": str(rng.randrange(1000, 999999)),
                       "email": rng.choice(["m.keller", "j.dupont", "a.rossi", "l.garcia", "s.devries", "k.nguyen"])
                       + "@" + rng.choice(["brightcart.de", "orbitfreight.com", "tessera-health.io"]),
                       "role": rng.choice(["admin", "user", "support", "billing"]), "iat": iat, "exp": iat + 3600}
            sig = bytes(rng.randrange(256) for _ in range(32))
        enc = lambda o: b64url(json.dumps(o, separators=(",", ":")).encode())  # noqa: E731
        return Sec("jwt", self._uniq(f"{enc(header)}.{enc(payload)}.{b64url(sig)}"))

    def private_key(self, kind="rsa1"):
        r = self.keys_rng
        if kind == "rsa1":
            v = pem("RSA PRIVATE KEY", rsa_pkcs1_der(rsa_key(r)))
        elif kind == "rsa8":
            v = pem("PRIVATE KEY", rsa_pkcs8_der(rsa_key(r)))
        elif kind == "ec":
            v = pem("EC PRIVATE KEY", ec_sec1_der(ec_key(r)))
        else:  # ec8
            v = pem("PRIVATE KEY", ec_pkcs8_der(ec_key(r)))
        return Sec("private_key", self._uniq(v))

    def huggingface(self):
        return Sec("huggingface_token", self._uniq(self.x(r"hf_[A-Za-z]{34}")))

    def datadog_api(self):
        return Sec("datadog_api_key", self._uniq(self.x(r"[0-9a-f]{32}")))

    def datadog_app(self):
        return Sec("datadog_app_key", self._uniq(self.x(r"[0-9a-f]{40}")))

    def mailgun(self, new=False):
        v = self.x(r"[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8}") if new else self.x(r"key-[0-9a-f]{32}")
        return Sec("mailgun_api_key", self._uniq(v))

    def url_password(self):
        """A machine-ish password safe inside a URI userinfo."""
        v = self.x(r"[A-Za-z0-9]{6,10}[._~-][A-Za-z0-9]{4,10}")
        return Sec("password", self._uniq(v))

    # human-style passwords
    WORDS = {
        "en": ["Summer", "Winter", "Monkey", "Dragon", "Sunshine", "Football", "Liverpool", "Welcome", "Charlie",
               "Buster", "Pepper", "Shadow", "Blue", "Chelsea"],
        "de": ["Sommer", "Schatz", "Fussball", "Hallo", "Bayern", "Katze", "Sonne", "Mausi", "Hamburg", "Herbst",
               "Schalke", "Fruehling"],
        "fr": ["Soleil", "Printemps", "Chocolat", "Marseille", "Bonjour", "Doudou", "Loulou", "Automne", "Nounours"],
        "es": ["Verano", "Barcelona", "Madrid", "Corazon", "Primavera", "Sevilla", "Gatito", "Betis", "Tesoro"],
        "it": ["Estate", "Juventus", "Roma", "Amore", "Ciao", "Napoli", "Tesoro", "Inverno", "Milano"],
        "nl": ["Zomer", "Fiets", "Ajax", "Welkom", "Voetbal", "Lente", "Schat", "Feyenoord", "Tulp"],
    }

    def password(self, lang="en", style=None, charset_safe=False):
        rng = self.rng
        style = style or rng.choice(["word", "word", "word", "random", "random", "phrase"])
        if style == "word":
            w = rng.choice(self.WORDS[lang])
            if rng.random() < 0.3:
                w = w.lower()
            tail = rng.choice([str(rng.randrange(2015, 2026)), f"{rng.randrange(0, 100):02d}",
                               str(rng.randrange(1, 10)) * rng.randrange(1, 4), str(rng.randrange(100, 1000))])
            sym = rng.choice(["!", "#", "*", "", "!", "@"])
            v = w + tail + sym if rng.random() < 0.7 else w + sym + tail
            if len(v) < 8:
                v += str(rng.randrange(10, 100))
        elif style == "random":
            chars = r"[A-Za-z0-9#%&*!?@+=]" if not charset_safe else r"[A-Za-z0-9._~-]"
            while True:  # starts and ends with a letter or digit, symbols inside
                v = self.x(r"[A-Za-z0-9]" + chars + "{6,12}" + r"[A-Za-z0-9]")
                if (re.search(r"[a-z]", v) and re.search(r"[A-Z]", v) and re.search(r"[0-9]", v)):
                    break
        else:  # phrase
            words = self.WORDS[lang]
            sep = rng.choice(["-", ".", "_"])
            v = sep.join(rng.sample([w.lower() for w in words], 3)) + sep + str(rng.randrange(10, 100))
        if charset_safe:
            v = re.sub(r"[^A-Za-z0-9._~-]", "_", v)
        return Sec("password", self._uniq(v))


# ---------------------------------------------------------------------------------------------
# Framing: what a developer writes around a paste.
# ---------------------------------------------------------------------------------------------
FRAMES = {
    "en": (["Can you help me figure out why this isn't working?\n\n", "Here's my config:\n\n",
            "Getting a 403 with this, any idea?\n\n", "Is this set up correctly?\n\n",
            "My deploy fails, here's the relevant part:\n\n", "Can you review this snippet?\n\n",
            "", "", "Quick question. This is what I have:\n\n", "This worked yesterday and now it doesn't:\n\n",
            "How do I move this into environment variables?\n\n", "Explain what this does please\n\n"],
           ["", "", "\n\nWhat am I doing wrong?", "\n\nThanks!", "\n\nany ideas?",
            "\n\nThe API answers 401.", "\n\nCan you rewrite it in a cleaner way?"]),
    "de": (["Kannst du mir sagen, warum das nicht funktioniert?\n\n", "Hier ist meine Konfiguration:\n\n",
            "Ich bekomme einen 401-Fehler. Das ist mein Code:\n\n", "Kannst du das bitte prüfen?\n\n"],
           ["", "\n\nDanke!", "\n\nWas mache ich falsch?"]),
    "fr": (["Pourquoi est-ce que ça ne marche pas ?\n\n", "Voici ma config :\n\n",
            "J'ai une erreur 403 avec ce code :\n\n", "Tu peux relire ce bout de code ?\n\n"],
           ["", "\n\nMerci !", "\n\nQu'est-ce qui cloche ?"]),
    "es": (["¿Por qué no funciona esto?\n\n", "Esta es mi configuración:\n\n",
            "Me da un error 401 con este código:\n\n", "¿Puedes revisar este fragmento?\n\n"],
           ["", "\n\n¡Gracias!", "\n\n¿Qué estoy haciendo mal?"]),
    "it": (["Perché questo non funziona?\n\n", "Ecco la mia configurazione:\n\n",
            "Ricevo un errore 403 con questo codice:\n\n", "Puoi controllare questo snippet?\n\n"],
           ["", "\n\nGrazie!", "\n\nDove sbaglio?"]),
    "nl": (["Waarom werkt dit niet?\n\n", "Dit is mijn configuratie:\n\n",
            "Ik krijg een 401-fout met deze code:\n\n", "Kun je dit stukje code nakijken?\n\n"],
           ["", "\n\nBedankt!", "\n\nWat doe ik fout?"]),
}
LANGS = ["en", "de", "fr", "es", "it", "nl"]


def pick_lang(rng: random.Random, p_en: float = 0.72) -> str:
    if rng.random() < p_en:
        return "en"
    return rng.choice(LANGS[1:])


def frame(rng: random.Random, lang: str, parts: list, fence: str | None) -> list:
    pre_l, post_l = FRAMES[lang]
    pre, post = rng.choice(pre_l), rng.choice(post_l)
    if fence is not None and rng.random() < 0.55:
        parts = [f"```{fence}\n"] + parts + ["\n```"]
    return [pre] + parts + [post]


FILLER_ENV = ["NODE_ENV=production", "PORT=8080", "LOG_LEVEL=debug", "DATABASE_HOST=db.internal",
              "REDIS_URL=redis://cache:6379/0", "APP_NAME=billing-api", "SENTRY_ENVIRONMENT=staging",
              "TZ=Europe/Berlin", "FEATURE_FLAGS=beta_checkout,new_search", "WORKERS=4", "APP_URL=https://app.brightcart.de",
              "S3_BUCKET=orbit-invoices-prod", "AWS_REGION=eu-central-1", "MAX_UPLOAD_MB=25", "CACHE_TTL=300"]

SERVICES = [("api", "ghcr.io/orbitfreight/api:2.14.1"), ("worker", "registry.gitlab.com/tessera/worker:latest"),
            ("web", "node:20-alpine"), ("notifier", "python:3.12-slim"), ("backend", "brightcart/backend:1.9")]


def env_block(rng: random.Random, lines: list) -> list:
    """lines: list of parts-lists (one per secret line); mixed in with filler lines."""
    fillers = rng.sample(FILLER_ENV, rng.randrange(2, 5))
    rows: list = [[f] for f in fillers]
    for ln in lines:
        rows.insert(rng.randrange(0, len(rows) + 1), ln)
    out: list = []
    for i, r in enumerate(rows):
        out.extend(r)
        if i < len(rows) - 1:
            out.append("\n")
    return out


# ---------------------------------------------------------------------------------------------
# Provider profiles and contexts
# ---------------------------------------------------------------------------------------------
class P:  # profile
    def __init__(self, name, env, url, hdr, method="GET", body=None):
        self.name, self.env, self.url, self.hdr, self.method, self.body = name, env, url, hdr, method, body


PROFILES = {
    "github": P("GitHub", "GITHUB_TOKEN", "https://api.github.com/repos/orbitfreight/infra/actions/runs",
                ("Authorization", "Bearer ⟨s⟩")),
    "gitlab": P("GitLab", "GITLAB_TOKEN", "https://gitlab.com/api/v4/projects/48213377/pipelines",
                ("PRIVATE-TOKEN", "⟨s⟩")),
    "slack": P("Slack", "SLACK_BOT_TOKEN", "https://slack.com/api/chat.postMessage", ("Authorization", "Bearer ⟨s⟩"),
               "POST", '{"channel":"C04QZ7N2K1M","text":"deploy finished"}'),
    "stripe": P("Stripe", "STRIPE_SECRET_KEY", "https://api.stripe.com/v1/customers?limit=3",
                ("Authorization", "Bearer ⟨s⟩")),
    "openai": P("OpenAI", "OPENAI_API_KEY", "https://api.openai.com/v1/chat/completions",
                ("Authorization", "Bearer ⟨s⟩"), "POST",
                '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}'),
    "anthropic": P("Anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com/v1/messages", ("x-api-key", "⟨s⟩"),
                   "POST", '{"model":"claude-3-5-haiku-latest","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}'),
    "google": P("Google", "GOOGLE_API_KEY", "https://maps.googleapis.com/maps/api/geocode/json", ("X-Goog-Api-Key", "⟨s⟩")),
    "sendgrid": P("SendGrid", "SENDGRID_API_KEY", "https://api.sendgrid.com/v3/mail/send", ("Authorization", "Bearer ⟨s⟩"),
                  "POST", '{"personalizations":[{"to":[{"email":"ops@brightcart.de"}]}],"from":{"email":"noreply@brightcart.de"},"subject":"Test","content":[{"type":"text/plain","value":"hi"}]}'),
    "huggingface": P("Hugging Face", "HF_TOKEN", "https://huggingface.co/api/whoami-v2", ("Authorization", "Bearer ⟨s⟩")),
    "mailgun": P("Mailgun", "MAILGUN_API_KEY", "https://api.eu.mailgun.net/v3/mg.brightcart.de/messages", None, "POST"),
    "datadog": P("Datadog", "DD_API_KEY", "https://api.datadoghq.eu/api/v1/validate", ("DD-API-KEY", "⟨s⟩")),
    "npm": P("npm", "NPM_TOKEN", "https://registry.npmjs.org/-/whoami", ("Authorization", "Bearer ⟨s⟩")),
    "jwt": P("API", "API_TOKEN", "https://api.orbitfreight.com/v2/shipments?status=open", ("Authorization", "Bearer ⟨s⟩")),
}


def hdr_parts(p: P, s: Sec) -> list:
    name, tmpl = p.hdr
    return [f"{name}: "] + fmt(tmpl, s=s)


def c_env(g, p, s):
    return env_block(g.rng, [[f"{p.env}="] + [s]]), ""


def c_export(g, p, s):
    q = g.rng.choice(['"', "'", ""])
    return fmt(f"export {p.env}={q}⟨s⟩{q}\n./scripts/run_sync.sh --env staging", s=s), "bash"


def c_compose(g, p, s):
    svc, img = g.rng.choice(SERVICES)
    if g.rng.random() < 0.5:
        body = f"services:\n  {svc}:\n    image: {img}\n    environment:\n      - LOG_LEVEL=info\n      - {p.env}=⟨s⟩\n    ports:\n      - \"8080:8080\"\n"
    else:
        body = f"version: \"3.9\"\nservices:\n  {svc}:\n    image: {img}\n    restart: unless-stopped\n    environment:\n      {p.env}: ⟨s⟩\n      TZ: Europe/Amsterdam\n"
    return fmt(body, s=s), "yaml"


def c_curl(g, p, s):
    name, tmpl = p.hdr
    h = fmt(f"-H \"{name}: {tmpl}\"", s=s)
    if p.method == "POST":
        return (["curl -sS -X POST " + p.url + " \\\n  "] + h +
                [" \\\n  -H \"Content-Type: application/json\" \\\n  -d '" + (p.body or "{}") + "'"]), "bash"
    return ["curl -sS "] + h + [" \\\n  \"" + p.url + "\" | jq ."], "bash"


def c_python_requests(g, p, s):
    name, tmpl = p.hdr
    pre = "import requests\n\n"
    call = "requests.post" if p.method == "POST" else "requests.get"
    data = f", json={p.body}" if p.method == "POST" and p.body and g.rng.random() < 0.5 else ""
    v = tmpl.replace("⟨s⟩", "")
    if v == "":
        line = fmt(f"HEADERS = {{\"{name}\": \"⟨s⟩\"}}\n", s=s)
    else:
        line = fmt(f"HEADERS = {{\"{name}\": \"{tmpl}\"}}\n", s=s)
    return [pre] + line + [f"\nresp = {call}(\"{p.url}\", headers=HEADERS{data}, timeout=10)\nresp.raise_for_status()\nprint(resp.json())"], "python"


def c_js_fetch(g, p, s):
    name, tmpl = p.hdr
    kw = g.rng.choice(["const", "let"])
    var = re.sub(r"[^A-Z0-9_]", "_", p.env)
    method = f"method: \"{p.method}\", " if p.method == "POST" else ""
    return (fmt(f"{kw} {var} = \"⟨s⟩\";\n\n", s=s) +
            [f"async function call() {{\n  const res = await fetch(\"{p.url}\", {{\n    {method}headers: {{ \"{name}\": "
             + ("`" + tmpl.replace("⟨s⟩", "${" + var + "}") + "`") + " },\n  });\n"
             "  if (!res.ok) throw new Error(`HTTP ${res.status}`);\n  return res.json();\n}"]), "js"


def c_go(g, p, s):
    name, tmpl = p.hdr
    before, after = tmpl.split("⟨s⟩")
    return (["req, err := http.NewRequest(\"" + p.method + "\", \"" + p.url + "\", nil)\nif err != nil {\n\treturn err\n}\n"
             f"req.Header.Set(\"{name}\", \"{before}"] + [s] +
            [f"{after}\")\nresp, err := http.DefaultClient.Do(req)\nif err != nil {{\n\treturn err\n}}\ndefer resp.Body.Close()"]), "go"


def c_java(g, p, s):
    name, tmpl = p.hdr
    before, after = tmpl.split("⟨s⟩")
    const = re.sub(r"[^A-Z0-9_]", "_", p.env)
    value_expr = (f"\"{before}\" + " if before else "") + const + (f" + \"{after}\"" if after else "")
    return (["public class ApiClient {\n    private static final String " + const + " = \""] + [s] +
            ["\";\n\n    HttpRequest build() {\n        return HttpRequest.newBuilder(URI.create(\"" + p.url + "\"))\n"
             f"                .header(\"{name}\", {value_expr})\n"
             "                .build();\n    }\n}"]), "java"


def c_ci_log(g, p, s):
    r = g.rng
    ts = f"2024-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}T{r.randrange(0, 24):02d}:{r.randrange(0, 60):02d}:{r.randrange(0, 60):02d}.{r.randrange(0, 1000):03d}Z"
    job = r.choice(["build", "deploy", "release", "integration-tests"])
    variant = r.randrange(3)
    if variant == 0:
        body = (f"{ts} [{job}] Run ./scripts/deploy.sh\n{ts} [{job}] + export {p.env}=⟨s⟩\n"
                f"{ts} [{job}] + ./scripts/deploy.sh --region eu-west-1\n{ts} [{job}] Error: request failed with status 401")
    elif variant == 1:
        body = (f"#14 [{job} 3/7] RUN echo \"{p.env}=⟨s⟩\" >> .env && npm ci\n#14 0.412 npm warn deprecated inflight@1.0.6\n"
                f"#14 DONE 18.3s")
    else:
        body = (f"[{job}] $ printenv | sort\nHOME=/root\nHOSTNAME=runner-7f9c4d\n{p.env}=⟨s⟩\nPATH=/usr/local/bin:/usr/bin:/bin\n"
                "[{job}] ERROR: Job failed: exit code 1".replace("{job}", job))
    return fmt(body, s=s), ""


SLACK_MSGS = {
    "en": ["hey, here's the {name} token for staging: ⟨s⟩ (please don't paste it anywhere public). How do I add it to our GitHub Actions secrets?",
           "Message from my teammate: \"new {name} key is ⟨s⟩, the old one is revoked\". Where should I store it in a Django project?",
           "I copied this from our #devops channel: {name} key ⟨s⟩ - can you write a small script that checks it still works?"],
    "de": ["Hier ist der {name}-Token für das Staging: ⟨s⟩ – bitte nicht weitergeben. Wie binde ich ihn in die GitLab-Pipeline ein?",
           "Mein Kollege hat mir den {name}-Schlüssel geschickt: ⟨s⟩. Wo speichere ich den am besten in einer Spring-Boot-App?"],
    "fr": ["Voici le token {name} pour la préprod : ⟨s⟩. Comment je l'ajoute dans les variables du CI ?",
           "Mon collègue m'a envoyé la clé {name} : ⟨s⟩. Où est-ce que je la mets dans un projet Symfony ?"],
    "es": ["Aquí tienes el token de {name} para staging: ⟨s⟩. ¿Cómo lo configuro en el pipeline de GitHub Actions?",
           "Mi compañero me pasó la clave de {name}: ⟨s⟩. ¿Dónde la guardo en un proyecto de Node?"],
    "it": ["Ecco il token {name} per lo staging: ⟨s⟩ — come lo imposto nella pipeline?",
           "Il collega mi ha mandato la chiave {name}: ⟨s⟩. Dove la salvo in un progetto Laravel?"],
    "nl": ["Hier is de {name}-token voor staging: ⟨s⟩. Hoe zet ik die in de pipeline?",
           "Mijn collega stuurde me de {name}-sleutel: ⟨s⟩. Waar bewaar ik die in een Rails-project?"],
}


def c_slack(g, p, s, lang=None):
    lang = lang or pick_lang(g.rng, 0.6)
    t = g.rng.choice(SLACK_MSGS[lang]).replace("{name}", p.name)
    return fmt(t, s=s), None, lang


def c_gha(g, p, s):
    body = (f"name: nightly\non:\n  schedule:\n    - cron: \"0 2 * * *\"\njobs:\n  sync:\n    runs-on: ubuntu-latest\n"
            f"    env:\n      {p.env}: ⟨s⟩\n    steps:\n      - uses: actions/checkout@v4\n      - run: make sync")
    return fmt(body, s=s), "yaml"


def c_k8s_secret(g, p, s):
    name = p.name.lower().replace(" ", "-")
    body = (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-credentials\n  namespace: prod\ntype: Opaque\n"
            f"stringData:\n  {p.env.lower()}: \"⟨s⟩\"")
    return fmt(body, s=s), "yaml"


def c_json_cfg(g, p, s):
    key = g.rng.choice(["apiKey", "api_key", "token", "secretKey"])
    body = ("{\n  \"service\": \"" + p.name + "\",\n  \"endpoint\": \"" + p.url.split("?")[0] + "\",\n  \"" + key +
            "\": \"⟨s⟩\",\n  \"timeoutMs\": 5000,\n  \"retries\": 3\n}")
    return fmt(body, s=s), "json"


def c_traceback(g, p, s):
    name, tmpl = p.hdr
    val = tmpl.replace("⟨s⟩", "⟨s⟩")
    body = ("Traceback (most recent call last):\n  File \"/app/sync.py\", line 42, in <module>\n    r.raise_for_status()\n"
            "  File \"/usr/local/lib/python3.11/site-packages/requests/models.py\", line 1021, in raise_for_status\n"
            "    raise HTTPError(http_error_msg, response=self)\nrequests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: "
            + p.url + "\n\nrequest headers were: {'User-Agent': 'python-requests/2.31.0', '" + name + "': '" + val + "'}")
    return fmt(body, s=s), ""


GENERIC = [c_env, c_compose, c_curl, c_python_requests, c_js_fetch, c_go, c_java, c_ci_log, c_slack, c_gha,
           c_k8s_secret, c_json_cfg, c_traceback, c_export]


# Provider-specific contexts -------------------------------------------------------------------

def aws_contexts(g):
    r = g.rng
    region = r.choice(["eu-central-1", "us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"])
    prof = r.choice(["default", "prod", "deploy", "backup"])
    k, s = g.aws_access_key(), g.aws_secret_key()
    ctx = [
        (fmt(f"[{prof}]\naws_access_key_id = ⟨k⟩\naws_secret_access_key = ⟨s⟩\nregion = {region}", k=k, s=s), "ini"),
        (fmt("import boto3\n\ns3 = boto3.client(\n    \"s3\",\n    aws_access_key_id=\"⟨k⟩\",\n    aws_secret_access_key=\"⟨s⟩\",\n"
             f"    region_name=\"{region}\",\n)\nprint(s3.list_objects_v2(Bucket=\"orbit-invoices-prod\")[\"KeyCount\"])", k=k, s=s), "python"),
        (env_block(r, [["AWS_ACCESS_KEY_ID="] + [k], ["AWS_SECRET_ACCESS_KEY="] + [s]]), ""),
        (fmt(f"provider \"aws\" {{\n  region     = \"{region}\"\n  access_key = \"⟨k⟩\"\n  secret_key = \"⟨s⟩\"\n}}", k=k, s=s), "hcl"),
        (fmt("$ aws configure\nAWS Access Key ID [None]: ⟨k⟩\nAWS Secret Access Key [None]: ⟨s⟩\n"
             f"Default region name [None]: {region}\nDefault output format [None]: json\n$ aws s3 ls\n"
             "An error occurred (SignatureDoesNotMatch) when calling the ListBuckets operation", k=k, s=s), ""),
        (fmt("services:\n  localstack-sync:\n    image: amazon/aws-cli:2.15.30\n    environment:\n      AWS_ACCESS_KEY_ID: ⟨k⟩\n"
             f"      AWS_SECRET_ACCESS_KEY: ⟨s⟩\n      AWS_DEFAULT_REGION: {region}\n    command: s3 sync /data s3://orbit-backups", k=k, s=s), "yaml"),
        (fmt("const { S3Client } = require(\"@aws-sdk/client-s3\");\n\nconst client = new S3Client({\n"
             f"  region: \"{region}\",\n  credentials: {{\n    accessKeyId: \"⟨k⟩\",\n    secretAccessKey: \"⟨s⟩\",\n  }},\n}});", k=k, s=s), "js"),
        (fmt("- name: Deploy\n  env:\n    AWS_ACCESS_KEY_ID: ⟨k⟩\n    AWS_SECRET_ACCESS_KEY: ⟨s⟩\n  run: sam deploy --no-confirm-changeset", k=k, s=s), "yaml"),
    ]
    return ctx


def github_contexts(g):
    r = g.rng
    t = g.github(r.choice(["ghp", "ghp", "pat"]))
    repo = r.choice(["orbitfreight/infra", "tessera-health/portal", "brightcart/shop-frontend", "kvdl/dotfiles"])
    return [
        (fmt(f"$ git remote -v\norigin\thttps://⟨s⟩@github.com/{repo}.git (fetch)\norigin\thttps://⟨s⟩@github.com/{repo}.git (push)\n"
             "$ git push\nremote: Permission to " + repo + ".git denied.", s=t), ""),
        (fmt("$ echo ⟨s⟩ | gh auth login --with-token\nerror validating token: missing required scope 'read:org'", s=t), "bash"),
        (fmt(f"pip install git+https://⟨s⟩@github.com/{repo}.git@v0.4.2", s=t), "bash"),
        (fmt("@orbitfreight:registry=https://npm.pkg.github.com\n//npm.pkg.github.com/:_authToken=⟨s⟩", s=t), ""),
        (fmt("from github import Github\n\ngh = Github(\"⟨s⟩\")\nrepo = gh.get_repo(\"" + repo + "\")\n"
             "for pr in repo.get_pulls(state=\"open\"):\n    print(pr.number, pr.title)", s=t), "python"),
    ]


def gitlab_contexts(g):
    t = g.gitlab()
    return [
        (fmt("git clone https://oauth2:⟨s⟩@gitlab.com/tessera-health/backend/billing.git", s=t), "bash"),
        (fmt("curl --header \"PRIVATE-TOKEN: ⟨s⟩\" \"https://gitlab.com/api/v4/projects/48213377/jobs?scope=failed\"", s=t), "bash"),
        (fmt("variables:\n  GITLAB_API_TOKEN: \"⟨s⟩\"\n\nrelease:\n  stage: deploy\n  script:\n    - ./release.sh", s=t), "yaml"),
        (fmt("import gitlab\n\ngl = gitlab.Gitlab(\"https://gitlab.com\", private_token=\"⟨s⟩\")\nproject = gl.projects.get(48213377)", s=t), "python"),
    ]


def slack_contexts(g):
    b, u, w = g.slack_bot(), g.slack_user(), g.slack_webhook()
    return [
        (fmt("from slack_sdk import WebClient\n\nclient = WebClient(token=\"⟨s⟩\")\n"
             "client.chat_postMessage(channel=\"#alerts\", text=\"Backup finished\")", s=b), "python"),
        (fmt("curl -X POST -H 'Content-type: application/json' --data '{\"text\":\"Deploy of v2.3.1 done :rocket:\"}' ⟨w⟩", w=w), "bash"),
        (env_block(g.rng, [["SLACK_BOT_TOKEN="] + [b], ["SLACK_SIGNING_SECRET_FILE=/run/secrets/slack_signing"]]), ""),
        (fmt("alerting:\n  slack:\n    webhook_url: \"⟨w⟩\"\n    channel: \"#ops-alerts\"\n    username: \"grafana\"", w=w), "yaml"),
        (fmt("const { WebClient } = require(\"@slack/web-api\");\nconst web = new WebClient(\"⟨s⟩\");\n"
             "await web.users.list({ limit: 200 });", s=u), "js"),
        (fmt("requests.post(\"⟨w⟩\", json={\"text\": f\"Build {build_id} failed\"})", w=w), "python"),
    ]


def stripe_contexts(g):
    r = g.rng
    prefix = r.choice(["sk_live_", "sk_live_", "sk_test_", "rk_live_"])
    s = g.stripe(prefix, long=r.random() < 0.5)
    pk = "pk_" + prefix[3:] + g.x(r"51[A-Za-z0-9]{97}")  # publishable key: public by design, not marked
    return [
        (fmt("import stripe\n\nstripe.api_key = \"⟨s⟩\"\n\nsession = stripe.checkout.Session.create(\n    mode=\"payment\",\n"
             "    line_items=[{\"price\": \"price_1PfQ2aLkdIwHu7ix\", \"quantity\": 1}],\n    success_url=\"https://brightcart.de/danke\",\n)", s=s), "python"),
        (fmt("curl https://api.stripe.com/v1/charges?limit=5 \\\n  -u ⟨s⟩:", s=s), "bash"),
        (env_block(r, [["STRIPE_PUBLISHABLE_KEY=" + pk], ["STRIPE_SECRET_KEY="] + [s]]), ""),
        (fmt("const stripe = require(\"stripe\")(\"⟨s⟩\");\n\nconst customer = await stripe.customers.create({ email: req.body.email });", s=s), "js"),
    ]


def openai_contexts(g):
    r = g.rng
    k = g.openai(r.choice(["legacy", "proj", "proj", "svcacct"]))
    return [
        (fmt("from openai import OpenAI\n\nclient = OpenAI(api_key=\"⟨s⟩\")\nresp = client.chat.completions.create(\n"
             "    model=\"gpt-4o-mini\",\n    messages=[{\"role\": \"user\", \"content\": \"Summarise this ticket\"}],\n)", s=k), "python"),
        (fmt("from langchain_openai import ChatOpenAI\n\nllm = ChatOpenAI(model=\"gpt-4o\", temperature=0, openai_api_key=\"⟨s⟩\")", s=k), "python"),
        (fmt("import OpenAI from \"openai\";\nconst openai = new OpenAI({ apiKey: \"⟨s⟩\" });", s=k), "js"),
    ]


def anthropic_contexts(g):
    k = g.anthropic()
    return [
        (fmt("import anthropic\n\nclient = anthropic.Anthropic(api_key=\"⟨s⟩\")\nmsg = client.messages.create(\n"
             "    model=\"claude-3-5-sonnet-latest\",\n    max_tokens=512,\n    messages=[{\"role\": \"user\", \"content\": \"hello\"}],\n)", s=k), "python"),
        (fmt("curl https://api.anthropic.com/v1/messages \\\n  -H \"x-api-key: ⟨s⟩\" \\\n  -H \"anthropic-version: 2023-06-01\" \\\n"
             "  -H \"content-type: application/json\" \\\n  -d '{\"model\":\"claude-3-5-haiku-latest\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'", s=k), "bash"),
    ]


def google_contexts(g):
    k = g.google()
    return [
        (fmt("https://maps.googleapis.com/maps/api/geocode/json?address=Keizersgracht+123,+Amsterdam&key=⟨s⟩", s=k), ""),
        (fmt("import google.generativeai as genai\n\ngenai.configure(api_key=\"⟨s⟩\")\nmodel = genai.GenerativeModel(\"gemini-1.5-flash\")", s=k), "python"),
        (fmt("from googleapiclient.discovery import build\n\nyoutube = build(\"youtube\", \"v3\", developerKey=\"⟨s⟩\")", s=k), "python"),
    ]


def azure_contexts(g):
    r = g.rng
    acct = r.choice(["orbitfreightprod", "tesserablobs", "brightcartmedia", "kvdlbackup01", "invoicestore"])
    k = g.azure_key()
    cs = ["DefaultEndpointsProtocol=https;AccountName=" + acct + ";AccountKey="] + [k] + [";EndpointSuffix=core.windows.net"]
    return [
        (["{\n  \"ConnectionStrings\": {\n    \"BlobStorage\": \""] + cs + ["\"\n  },\n  \"Logging\": { \"LogLevel\": { \"Default\": \"Information\" } }\n}"], "json"),
        (["from azure.storage.blob import BlobServiceClient\n\nsvc = BlobServiceClient.from_connection_string(\""] + cs +
         ["\")\ncontainer = svc.get_container_client(\"exports\")"], "python"),
        (["AZURE_STORAGE_CONNECTION_STRING=\""] + cs + ["\""], "bash"),
    ]


def twilio_contexts(g):
    sid, tok = g.twilio_sid(), g.twilio_token()
    if g.rng.random() < 0.3:
        ak, asec = g.twilio_api_key(), g.twilio_api_secret()
        return [(fmt(f"from twilio.rest import Client\n\nclient = Client(\"⟨k⟩\", \"⟨x⟩\", \"{sid}\")\n"
                     "client.messages.create(to=\"+4915112345678\", from_=\"+4930123456\", body=\"Your code: 482913\")", k=ak, x=asec), "python")]
    return [
        (fmt(f"from twilio.rest import Client\n\naccount_sid = \"{sid}\"\nauth_token = \"⟨t⟩\"\nclient = Client(account_sid, auth_token)", t=tok), "python"),
        (fmt(f"curl -X POST https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json \\\n  --data-urlencode \"To=+31612345678\" \\\n"
             f"  --data-urlencode \"From=+3197010250000\" \\\n  --data-urlencode \"Body=Test\" \\\n  -u {sid}:⟨t⟩", t=tok), "bash"),
        (env_block(g.rng, [[f"TWILIO_ACCOUNT_SID={sid}"], ["TWILIO_AUTH_TOKEN="] + [tok]]), ""),
    ]


def sendgrid_contexts(g):
    k = g.sendgrid()
    return [
        (fmt("from sendgrid import SendGridAPIClient\nfrom sendgrid.helpers.mail import Mail\n\nsg = SendGridAPIClient(\"⟨s⟩\")\n"
             "sg.send(Mail(from_email=\"noreply@brightcart.de\", to_emails=\"ops@brightcart.de\", subject=\"Hi\", html_content=\"<b>x</b>\"))", s=k), "python"),
        (fmt("spring:\n  sendgrid:\n    api-key: ⟨s⟩", s=k), "yaml"),
    ]


def npm_contexts(g):
    t = g.npm()
    return [
        (fmt("registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=⟨s⟩\nalways-auth=true", s=t), ""),
        (fmt("$ npm config set //registry.npmjs.org/:_authToken ⟨s⟩\n$ npm publish --access public\n"
             "npm ERR! code E403\nnpm ERR! 403 Forbidden - PUT https://registry.npmjs.org/@orbitfreight%2fui-kit", s=t), ""),
        (fmt("- name: Publish\n  run: npm publish\n  env:\n    NODE_AUTH_TOKEN: ⟨s⟩", s=t), "yaml"),
    ]


def pypi_contexts(g):
    t = g.pypi(test=g.rng.random() < 0.2)
    return [
        (fmt("[distutils]\nindex-servers =\n    pypi\n\n[pypi]\nusername = __token__\npassword = ⟨s⟩", s=t), "ini"),
        (fmt("$ twine upload -u __token__ -p ⟨s⟩ dist/*\nUploading distributions to https://upload.pypi.org/legacy/\n"
             "ERROR    HTTPError: 403 Forbidden from https://upload.pypi.org/legacy/", s=t), ""),
        (fmt("poetry config pypi-token.pypi ⟨s⟩\npoetry publish --build", s=t), "bash"),
    ]


def jwt_contexts(g):
    r = g.rng
    kind = r.choice(["hs256", "rs256", "k8s"])
    if kind == "k8s":
        ns, sa = r.choice([("ci", "deployer"), ("monitoring", "prometheus"), ("prod", "argo-sync")])
        t = g.jwt("k8s", {"ns": ns, "sa": sa})
        cluster = r.choice(["prod-eu", "gke-staging", "aks-main"])
        server = f"https://{r.randrange(10, 200)}.{r.randrange(0, 255)}.{r.randrange(0, 255)}.{r.randrange(1, 255)}:6443"
        return [(fmt(f"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: {server}\n"
                     f"  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    namespace: {ns}\n    user: {sa}\n  name: {cluster}\n"
                     f"current-context: {cluster}\nusers:\n- name: {sa}\n  user:\n    token: ⟨s⟩", s=t), "yaml")]
    t = g.jwt(kind)
    return [
        (fmt("GET /v2/shipments?status=open HTTP/1.1\nHost: api.orbitfreight.com\nAuthorization: Bearer ⟨s⟩\nAccept: application/json\n\n"
             "HTTP/1.1 403 Forbidden", s=t), ""),
        (fmt("localStorage.getItem(\"access_token\")\n'⟨s⟩'", s=t), ""),
        (fmt("curl -H \"Authorization: Bearer ⟨s⟩\" https://api.orbitfreight.com/v2/me", s=t), "bash"),
    ]


def pem_contexts(g):
    """One context per call, in a fixed rotation (8 records: every key kind and every wrapping)."""
    r = g.rng
    g.pem_calls = getattr(g, "pem_calls", 0) + 1
    kind, where = [("rsa1", "ssh"), ("rsa8", "gcp"), ("ec", "bare"), ("rsa1", "python"), ("ec8", "gcp"),
                   ("rsa1", "kube"), ("rsa8", "python"), ("ec", "ssh")][(g.pem_calls - 1) % 8]
    k = g.private_key(kind)
    if where == "kube":  # kubeconfig client-key-data: base64 of the PEM
        k = Sec("private_key", g._uniq(base64.b64encode((k.value + "\n").encode()).decode()))
        # the client certificate next to it is public; its body is random bytes of a certificate's length
        crt = base64.b64encode((pem("CERTIFICATE", b"\x30\x82\x03\x1d\x30\x82\x02\x05\xa0\x03\x02\x01\x02\x02\x08"
                                    + bytes(r.randrange(256) for _ in range(790))) + "\n").encode()).decode()
        return [(fmt("users:\n- name: admin@prod-eu\n  user:\n    client-certificate-data: " + crt +
                     "\n    client-key-data: ⟨s⟩", s=k), "yaml")]
    if where == "gcp":  # service-account JSON: the PEM with escaped newlines
        esc = Sec("private_key", k.value.replace("\n", "\\n"))
        sa = r.choice(["ci-deployer", "bq-export", "firebase-adminsdk-x1f2q"])
        proj = r.choice(["orbit-prod-311208", "tessera-analytics", "brightcart-eu"])
        return [(fmt("{\n  \"type\": \"service_account\",\n  \"project_id\": \"" + proj + "\",\n  \"private_key_id\": \""
                     + g.x(r"[0-9a-f]{40}") + "\",\n  \"private_key\": \"⟨s⟩\\n\",\n  \"client_email\": \"" + sa + "@" + proj
                     + ".iam.gserviceaccount.com\",\n  \"token_uri\": \"https://oauth2.googleapis.com/token\"\n}", s=esc), "json")]
    if where == "ssh":
        return [(fmt("$ ssh -i deploy_key ubuntu@10.20.4.17\nLoad key \"deploy_key\": invalid format\n\n$ cat deploy_key\n⟨s⟩", s=k), "")]
    if where == "python":
        alg = "ES256" if kind.startswith("ec") else "RS256"
        return [(fmt("PRIVATE_KEY = \"\"\"⟨s⟩\n\"\"\"\n\ntoken = jwt.encode(payload, PRIVATE_KEY, algorithm=\"" + alg + "\")", s=k), "python")]
    return [(fmt("⟨s⟩", s=k), "")]


def hf_contexts(g):
    t = g.huggingface()
    return [
        (fmt("$ huggingface-cli login --token ⟨s⟩\nToken is valid (permission: write).", s=t), ""),
        (fmt("from huggingface_hub import login\n\nlogin(\"⟨s⟩\")\nmodel = AutoModel.from_pretrained(\"meta-llama/Llama-3.1-8B\")", s=t), "python"),
        (fmt("model = AutoModelForCausalLM.from_pretrained(\n    \"mistralai/Mistral-7B-Instruct-v0.3\",\n    token=\"⟨s⟩\",\n    device_map=\"auto\",\n)", s=t), "python"),
    ]


def datadog_contexts(g):
    a, b = g.datadog_api(), g.datadog_app()
    return [
        (fmt("api_key: ⟨a⟩\nsite: datadoghq.eu\nlogs_enabled: true\napm_config:\n  enabled: true", a=a), "yaml"),
        (fmt("docker run -d --name dd-agent \\\n  -e DD_API_KEY=⟨a⟩ \\\n  -e DD_SITE=\"datadoghq.eu\" \\\n"
             "  -v /var/run/docker.sock:/var/run/docker.sock:ro \\\n  gcr.io/datadoghq/agent:7", a=a), "bash"),
        (fmt("curl -X GET \"https://api.datadoghq.eu/api/v1/monitor\" \\\n  -H \"DD-API-KEY: ⟨a⟩\" \\\n  -H \"DD-APPLICATION-KEY: ⟨b⟩\"", a=a, b=b), "bash"),
        (fmt("from datadog import initialize, api\n\ninitialize(api_key=\"⟨a⟩\", app_key=\"⟨b⟩\", api_host=\"https://api.datadoghq.eu\")", a=a, b=b), "python"),
    ]


def mailgun_contexts(g):
    k = g.mailgun(new=g.rng.random() < 0.4)
    return [
        (fmt("curl -s --user 'api:⟨s⟩' \\\n  https://api.eu.mailgun.net/v3/mg.brightcart.de/messages \\\n"
             "  -F from='Shop <noreply@mg.brightcart.de>' \\\n  -F to=ops@brightcart.de \\\n  -F subject='Hello' -F text='Testing'", s=k), "bash"),
        (fmt("requests.post(\n    \"https://api.eu.mailgun.net/v3/mg.brightcart.de/messages\",\n    auth=(\"api\", \"⟨s⟩\"),\n"
             "    data={\"from\": \"noreply@mg.brightcart.de\", \"to\": [\"ops@brightcart.de\"], \"subject\": \"Hi\", \"text\": \"x\"},\n)", s=k), "python"),
        (env_block(g.rng, [["MAILGUN_DOMAIN=mg.brightcart.de"], ["MAILGUN_API_KEY="] + [k]]), ""),
    ]


def conn_contexts(g):
    r = g.rng
    pw = g.url_password() if r.random() < 0.7 else g.password(r.choice(LANGS), style="word", charset_safe=True)
    user = r.choice(["app", "orders", "postgres", "admin", "svc_report", "root", "billing"])
    host = r.choice(["db-prod-2.internal", "10.0.3.12", "orders-db.c9xk2lq1v8.eu-central-1.rds.amazonaws.com", "pg.tessera.lan"])
    return [
        (fmt(f"DATABASE_URL=postgres://{user}:⟨p⟩@{host}:5432/orders?sslmode=require", p=pw), ""),
        (fmt(f"spring.datasource.url=jdbc:postgresql://{host}:5432/orders?user={user}&password=⟨p⟩&ssl=true", p=pw), ""),
        (fmt(f"String url = \"jdbc:mysql://{host}:3306/shop?user={user}&password=⟨p⟩&useSSL=false\";\n"
             "Connection conn = DriverManager.getConnection(url);", p=pw), "java"),
        (fmt(f"MONGO_URI=mongodb+srv://{user}:⟨p⟩@cluster0.x7kqp.mongodb.net/shop?retryWrites=true&w=majority", p=pw), ""),
        (fmt(f"engine = create_engine(\"mysql+pymysql://{user}:⟨p⟩@{host}:3306/shop\", pool_pre_ping=True)", p=pw), "python"),
        (fmt(f"redis_url: \"redis://:⟨p⟩@{host}:6379/0\"", p=pw), "yaml"),
        (fmt(f"CELERY_BROKER_URL = \"amqp://{user}:⟨p⟩@rabbitmq:5672/prod\"", p=pw), "python"),
        (fmt(f"\"ConnectionStrings\": {{\n  \"Default\": \"Server=tcp:{host},1433;Initial Catalog=orders;User ID={user};Password=⟨p⟩;Encrypt=True;\"\n}}", p=pw), "json"),
    ]


def basic_auth_contexts(g):
    r = g.rng
    pw = g.password(r.choice(LANGS), style="random")
    user = r.choice(["admin", "deploy", "monitor", "jenkins"])
    b = Sec("basic_auth", g._uniq(base64.b64encode(f"{user}:{pw.value}".encode()).decode()))
    return [
        (fmt("location /internal/ {\n    proxy_pass http://10.0.2.15:9000;\n    proxy_set_header Authorization \"Basic ⟨b⟩\";\n}", b=b), "nginx"),
        (fmt("POST /api/v1/import HTTP/1.1\nHost: erp.brightcart.de\nAuthorization: Basic ⟨b⟩\nContent-Type: application/json", b=b), ""),
        (fmt("curl -H \"Authorization: Basic ⟨b⟩\" https://jenkins.orbitfreight.com/job/nightly/lastBuild/api/json", b=b), "bash"),
    ]


def mixed_env_contexts(g):
    r = g.rng
    a = g.openai(r.choice(["legacy", "proj"]))
    b = g.stripe("sk_live_", long=True)
    c = g.sendgrid()
    return [(env_block(r, [["OPENAI_API_KEY="] + [a], ["STRIPE_SECRET_KEY="] + [b], ["SENDGRID_API_KEY="] + [c]]), "")]


# (profile key or None, specific-context builder or None, n records, share of generic contexts)
PLAN = [
    ("aws", None, aws_contexts, 14, 0.0),
    ("github", "github", github_contexts, 13, 0.45),
    ("gitlab", "gitlab", gitlab_contexts, 6, 0.3),
    ("slack", "slack", slack_contexts, 12, 0.25),
    ("stripe", "stripe", stripe_contexts, 8, 0.3),
    ("openai", "openai", openai_contexts, 7, 0.5),
    ("anthropic", "anthropic", anthropic_contexts, 6, 0.5),
    ("google", "google", google_contexts, 6, 0.3),
    ("azure", None, azure_contexts, 5, 0.0),
    ("twilio", None, twilio_contexts, 5, 0.0),
    ("sendgrid", "sendgrid", sendgrid_contexts, 5, 0.5),
    ("npm", "npm", npm_contexts, 5, 0.2),
    ("pypi", None, pypi_contexts, 5, 0.0),
    ("jwt", "jwt", jwt_contexts, 7, 0.3),
    ("pem", None, pem_contexts, 8, 0.0),
    ("huggingface", "huggingface", hf_contexts, 6, 0.4),
    ("datadog", None, datadog_contexts, 5, 0.0),
    ("mailgun", None, mailgun_contexts, 5, 0.0),
    ("conn", None, conn_contexts, 14, 0.0),
    ("basic", None, basic_auth_contexts, 3, 0.0),
    ("mixed", None, mixed_env_contexts, 3, 0.0),
]

# Generic secret makers for providers with a profile
GENERIC_SECRET = {
    "github": lambda g: g.github(g.rng.choice(["ghp", "pat", "gho", "ghs"])),
    "gitlab": lambda g: g.gitlab(),
    "slack": lambda g: g.slack_bot() if g.rng.random() < 0.7 else g.slack_user(),
    "stripe": lambda g: g.stripe(g.rng.choice(["sk_live_", "sk_test_"]), long=g.rng.random() < 0.5),
    "openai": lambda g: g.openai(g.rng.choice(["legacy", "proj", "proj"])),
    "anthropic": lambda g: g.anthropic(),
    "google": lambda g: g.google(),
    "sendgrid": lambda g: g.sendgrid(),
    "npm": lambda g: g.npm(),
    "jwt": lambda g: g.jwt(g.rng.choice(["hs256", "rs256"])),
    "huggingface": lambda g: g.huggingface(),
}


def credential_records(g: Gen) -> list:
    out = []
    r = g.rng
    for name, prof_key, specific, n, generic_share in PLAN:
        gi = 0
        for i in range(n):
            lang = pick_lang(r)
            if prof_key and r.random() < generic_share:
                p = PROFILES[prof_key]
                ctx_fn = GENERIC[(i * 5 + gi) % len(GENERIC)]
                gi += 1
                s = GENERIC_SECRET[prof_key](g)
                res = ctx_fn(g, p, s, lang) if ctx_fn is c_slack else ctx_fn(g, p, s)
                if len(res) == 3:
                    parts, _, lang = res
                else:
                    parts, fence = res
                    parts = frame(r, lang, parts, fence)
            else:
                ctxs = specific(g)
                parts, fence = ctxs[i % len(ctxs)]
                parts = frame(r, lang, parts, fence)
            out.append((name, lang, parts))
    return out


# ---------------------------------------------------------------------------------------------
# Human passwords in config lines and prose (subtype password)
# ---------------------------------------------------------------------------------------------
PW_TEMPLATES = [
    ("en", "The admin password is ⟨pw⟩ and the username is admin. Can you write an Ansible task that logs in and changes it?"),
    ("en", "DB_PASSWORD=⟨pw⟩\nDB_USERNAME=shop\nDB_HOST=10.0.3.12\n\nwhy does Laravel say \"Access denied for user 'shop'@'10.0.3.7'\"?"),
    ("en", "spring:\n  datasource:\n    url: jdbc:postgresql://db:5432/orders\n    username: orders\n    password: \"⟨pw⟩\"\n\nthe app can't connect, what's wrong?"),
    ("en", "mysql -u root -p'⟨pw⟩' -h 127.0.0.1 shop < dump.sql\n\ngives me ERROR 1045 (28000). Any idea?"),
    ("en", "I set the wifi password to ⟨pw⟩ on the router but my laptop keeps saying \"incorrect password\". What could it be?"),
    ("en", "docker run -d --name mysql -e MYSQL_ROOT_PASSWORD=⟨pw⟩ -p 3306:3306 mysql:8.0\n\nhow do I make the data persistent?"),
    ("en", "spring.datasource.username=reporting\nspring.datasource.password=⟨pw⟩\nspring.jpa.hibernate.ddl-auto=validate"),
    ("en", "define( 'DB_NAME', 'wp_shop' );\ndefine( 'DB_USER', 'wp_admin' );\ndefine( 'DB_PASSWORD', '⟨pw⟩' );\ndefine( 'DB_HOST', 'localhost' );\n\nWordPress shows \"Error establishing a database connection\""),
    ("en", "sshpass -p '⟨pw⟩' ssh -o StrictHostKeyChecking=no deploy@192.168.10.21 'sudo systemctl restart app'"),
    ("en", "redis-cli -h cache.internal -a ⟨pw⟩ --no-auth-warning ping\n(error) WRONGPASS invalid username-password pair"),
    ("en", "my jenkins login is admin / ⟨pw⟩ - how do I generate an API token from the CLI?"),
    ("en", "//nas.local/backup  /mnt/backup  cifs  username=backup,password=⟨pw⟩,uid=1000  0  0\n\nmount fails with error(13): Permission denied"),
    ("en", "[database]\nhost = db.internal\nuser = report\npassword = ⟨pw⟩\nname = analytics"),
    ("en", "PGPASSWORD=⟨pw⟩ psql -h db.internal -U postgres -c 'select 1'"),
    ("en", "I created the service user with\n\nnet user svc_backup ⟨pw⟩ /add\n\nbut the scheduled task still fails."),
    ("en", "htpasswd -b -c /etc/nginx/.htpasswd admin ⟨pw⟩\n\nthen nginx still returns 401, config below"),
    ("en", "conn = psycopg2.connect(host=\"localhost\", dbname=\"app\", user=\"app\", password=\"⟨pw⟩\")"),
    ("en", "const transporter = nodemailer.createTransport({\n  host: \"smtp.office365.com\",\n  port: 587,\n  auth: { user: \"alerts@brightcart.de\", pass: \"⟨pw⟩\" },\n});"),
    ("en", "[webservers]\n10.0.5.11 ansible_user=deploy ansible_ssh_pass=⟨pw⟩ ansible_become_pass=⟨pw⟩"),
    ("en", "Router login is admin, password ⟨pw⟩ (I changed it from the default). How do I set up port forwarding for 8443?"),
    ("en", "db.internal:5432:*:app:⟨pw⟩\n\nthat's my ~/.pgpass but psql still asks for a password"),
    ("en", "MAIL_MAILER=smtp\nMAIL_HOST=smtp.mailgun.org\nMAIL_USERNAME=postmaster@mg.brightcart.de\nMAIL_PASSWORD=⟨pw⟩"),
    ("en", "network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        \"HomeNet-5G\":\n          password: \"⟨pw⟩\"\n      dhcp4: true"),
    ("en", "For the demo tomorrow: log in to the staging admin with jane.doe@tessera-health.io and the password ⟨pw⟩ , then open Reports."),
    ("en", "keycloak:\n  admin:\n    username: admin\n    password: ⟨pw⟩"),
    ("de", "Das WLAN-Passwort lautet ⟨pw⟩ – wie trage ich das in die wpa_supplicant.conf ein?"),
    ("de", "Mein Passwort für den Server ist ⟨pw⟩, aber ssh sagt trotzdem Permission denied. Woran liegt das?"),
    ("de", "Zugangsdaten für die Testumgebung: Benutzer testadmin, Passwort: ⟨pw⟩\nKannst du mir ein Selenium-Skript für den Login schreiben?"),
    ("de", "Hier ist meine docker-compose.yml:\n\nservices:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: app\n      POSTGRES_PASSWORD: ⟨pw⟩\n\nWarum startet der Container nicht?"),
    ("de", "Das Root-Passwort der Datenbank ist „⟨pw⟩“. Wie ändere ich es in MariaDB?"),
    ("de", "Kannst du mir erklären, warum der Login mit curl -u admin:⟨pw⟩ https://nas.fritz.box:5001 fehlschlägt?"),
    ("fr", "le mot de passe du compte est ⟨pw⟩, mais la connexion IMAP échoue. Une idée ?"),
    ("fr", "Voici mes identifiants FTP : utilisateur webmaster, mot de passe ⟨pw⟩. Comment les utiliser avec lftp ?"),
    ("fr", "Mot de passe Wi-Fi : ⟨pw⟩ — comment le configurer sur un Raspberry Pi sans écran ?"),
    ("fr", "Voici ma config :\n\ndatabase:\n  user: compta\n  password: \"⟨pw⟩\"\n  host: 192.168.1.40\n\nPourquoi Django n'arrive pas à se connecter ?"),
    ("fr", "Le mot de passe root MySQL est ⟨pw⟩ ; peux-tu m'écrire la commande mysqldump pour sauvegarder toutes les bases ?"),
    ("es", "la contraseña del administrador es ⟨pw⟩, ¿cómo la cambio desde la consola de Linux?"),
    ("es", "Mi usuario es soporte y la contraseña ⟨pw⟩, pero el VPN me rechaza la conexión."),
    ("es", "La clave del wifi es ⟨pw⟩ y el móvil se conecta, pero el portátil no. ¿Qué puede ser?"),
    ("es", "Esta es mi configuración:\n\nDB_USER=tienda\nDB_PASS=⟨pw⟩\nDB_HOST=localhost\n\n¿Por qué PHP dice que no puede conectar?"),
    ("es", "Contraseña de la base de datos: ⟨pw⟩. ¿Me ayudas a escribir el script de copia de seguridad?"),
    ("it", "la password dell'utente root è ⟨pw⟩, come la cambio su Ubuntu 22.04?"),
    ("it", "Le credenziali del gestionale sono admin / ⟨pw⟩. Puoi scrivermi uno script che fa il login e scarica le fatture?"),
    ("it", "La password del Wi-Fi è ⟨pw⟩ ma la stampante non si collega."),
    ("it", "Ecco la mia configurazione:\n\nmail:\n  username: fatture@studio-rossi.it\n  password: ⟨pw⟩\n\nDove sbaglio?"),
    ("nl", "het wachtwoord is ⟨pw⟩ maar ik kan niet inloggen op de NAS via SMB"),
    ("nl", "Het wifi-wachtwoord is ⟨pw⟩, hoe zet ik dat in netplan?"),
    ("nl", "Inloggegevens voor de testserver: gebruiker beheer, wachtwoord ⟨pw⟩. Kun je een deploy-script schrijven?"),
    ("nl", "Dit is mijn configuratie:\n\n[mysql]\nuser = webshop\npassword = ⟨pw⟩\n\nWaarom krijg ik access denied?"),
    ("nl", "Mijn wachtwoord voor de database is ⟨pw⟩ en de gebruiker is postgres. Hoe maak ik een backup met pg_dump?"),
]


SHELL_UNQUOTED = ["MYSQL_ROOT_PASSWORD=⟨pw⟩", "-a ⟨pw⟩", "PGPASSWORD=⟨pw⟩", "net user svc_backup ⟨pw⟩",
                  "admin ⟨pw⟩\n", "ansible_ssh_pass=⟨pw⟩", "-u admin:⟨pw⟩", "password=⟨pw⟩,"]


def password_records(g: Gen) -> list:
    out = []
    for i, (lang, t) in enumerate(PW_TEMPLATES):
        # unquoted on a shell line or inside option lists: letters, digits and ._~- only
        safe = any(m in t for m in SHELL_UNQUOTED)
        pw = g.password(lang, charset_safe=safe)
        assert "'" not in pw.value and '"' not in pw.value
        out.append(("password", lang, fmt(t, pw=pw)))
    return out


# ---------------------------------------------------------------------------------------------
# Lookalikes (label 0): no credential in them.
# ---------------------------------------------------------------------------------------------
def lookalike_records(g: Gen) -> list:
    r = g.rng
    x = g.x
    hexs = lambda n: x(f"[0-9a-f]{{{n}}}")  # noqa: E731
    uid = lambda: str(uuid.UUID(int=r.getrandbits(128), version=4))  # noqa: E731
    rb = lambda n: bytes(r.randrange(256) for _ in range(n))  # noqa: E731
    out: list = []

    def add(lang, text):
        out.append(("lookalike", lang, [text]))

    # git SHAs
    msgs = [["fix: handle empty cart", "chore: bump axios to 1.7.2", "feat: add invoice export"],
            ["Merge pull request #412 from feature/sso", "refactor token refresh", "docs: update README"],
            ["wip", "fix flaky test in test_orders.py", "Revert \"enable new checkout\""]]
    asks = ["How do I squash the last two commits? Full hash of the oldest one is {}.",
            "Which of these is safe to drop? git show {} prints nothing useful.",
            "I want to go back to {} without losing my local changes, how?"]
    for i in range(3):
        shas = [hexs(40) for _ in range(3)]
        add("en", "$ git log --oneline -3\n" + "\n".join(f"{h[:7]} {m}" for h, m in zip(shas, msgs[i]))
                  + "\n\n" + asks[i].format(shas[2]))
    add("en", f"I accidentally pushed a bad merge. Is `git revert -m 1 {hexs(40)}` the right command, or should I reset?")
    add("de", f"Wie mache ich einen Cherry-Pick von Commit {hexs(12)} auf den release/2.4-Branch, ohne die anderen Änderungen mitzunehmen?")
    add("en", "- uses: actions/checkout@" + hexs(40) + " # v4.1.7\n- uses: actions/setup-node@" + hexs(40) + " # v4.0.3\n\nIs pinning actions to a SHA like this really necessary?")
    # sha256 digests
    for _ in range(2):
        f = r.choice(["node-v20.15.1-linux-x64.tar.xz", "terraform_1.9.2_linux_amd64.zip", "ubuntu-24.04-live-server-amd64.iso"])
        add("en", f"$ sha256sum {f}\n{hexs(64)}  {f}\n\nThe published checksum is {hexs(64)} - they don't match, should I worry?")
    for _ in range(2):
        add("en", "spec:\n  containers:\n    - name: api\n      image: ghcr.io/orbitfreight/api@sha256:" + hexs(64) +
                  "\n      imagePullPolicy: IfNotPresent\n\nWhy does the pod stay in ImagePullBackOff?")
    add("fr", f"Le digest de l'image est sha256:{hexs(64)}, comment je peux vérifier qu'il correspond bien au tag 1.4.2 ?")
    # UUIDs
    for _ in range(3):
        add("en", f"2024-06-11 14:02:11,482 ERROR [req={uid()}] order_service: payment callback timed out\n"
                  f"2024-06-11 14:02:11,497 WARN  [req={uid()}] retrying webhook delivery (attempt 2)\n\nWhat does this mean?")
    add("en", f"metadata:\n  name: api-7d9f8c6b5-x2lqk\n  namespace: prod\n  uid: {uid()}\n  resourceVersion: \"{r.randrange(10**7, 10**8)}\"\n\nwhy does the pod keep restarting?")
    add("es", f"Mi número de pedido es {uid()} y todavía no me ha llegado el correo de confirmación.")
    add("en", f"resource \"aws_instance\" \"web\" {{\n  # imported id: i-{hexs(17)}\n  ami           = \"ami-{hexs(17)}\"\n  instance_type = \"t3.micro\"\n  subnet_id     = \"subnet-{hexs(17)}\"\n}}")
    # base64 image data
    for i in range(3):
        img = base64.b64encode(png_bytes(r, 6 + 3 * i, 5 + 2 * i)).decode()
        if i == 0:
            add("en", f"<img alt=\"logo\" width=\"24\" src=\"data:image/png;base64,{img}\">\n\nwhy is the image blurry on retina screens?")
        elif i == 1:
            add("en", f".icon-check {{\n  background-image: url(\"data:image/png;base64,{img}\");\n  background-size: contain;\n}}")
        else:
            add("de", f"Die API liefert das Vorschaubild so zurück:\n\n{{\"thumbnail\": \"{img}\", \"mime\": \"image/png\"}}\n\nWie zeige ich das in React an?")
    # AWS docs example keys
    add("en", "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n\n"
              "This is the example from the AWS CLI docs. Where do I put my real keys, in ~/.aws/credentials?")
    add("en", "The AWS docs use AKIAIOSFODNN7EXAMPLE as the access key ID in every example. Is there a list of other fake values like that I can use in unit tests?")
    add("en", "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nexport AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
              "export AWS_DEFAULT_REGION=us-west-2\n\n(from the README) - does moto accept these?")
    # placeholders
    add("en", "OPENAI_API_KEY=sk-...your key here\nOPENAI_MODEL=gpt-4o-mini\n\nThat's the .env.example from the repo, do I just copy it to .env?")
    add("en", "curl https://api.github.com/user -H \"Authorization: Bearer <YOUR_TOKEN>\"\n\nWhat scopes does <YOUR_TOKEN> need for this?")
    add("en", "client = anthropic.Anthropic(api_key=\"YOUR_API_KEY_HERE\")\n\nThe quickstart says to replace YOUR_API_KEY_HERE, but is it better to use an env variable?")
    add("de", "In der Doku steht `STRIPE_SECRET_KEY=sk_test_...` – muss ich für Tests einen eigenen Schlüssel im Dashboard erzeugen?")
    add("en", "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nSLACK_WEBHOOK_URL=https://hooks.slack.com/services/XXX/YYY/ZZZ\n\nthese are the placeholders in our template; how do I fail CI if someone leaves them unchanged?")
    add("fr", "Dans le README il y a `api_key = \"<votre-clé-api>\"`. Où est-ce que je trouve la clé dans la console ?")
    add("en", "headers = {\"Authorization\": f\"Bearer {token}\"}  # token comes from get_token()\n\nis building the header like this fine?")
    add("en", "HF_TOKEN=hf_********************************\n\nThe docs mask it like this; where do I generate one?")
    # env references
    add("en", "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n      POSTGRES_USER: ${DB_USER:-app}\n\nwhy is DB_PASSWORD empty inside the container?")
    add("en", "- name: Publish\n  run: npm publish\n  env:\n    NODE_AUTH_TOKEN: ${{ secrets.NPM_TOKEN }}\n\nthe job says ENEEDAUTH, is the secret name wrong?")
    add("en", "curl -H \"Authorization: token $GITHUB_TOKEN\" https://api.github.com/repos/$REPO/releases/latest")
    add("es", "En el pipeline tengo `password: $CI_REGISTRY_PASSWORD` y falla el docker login. ¿La variable está protegida?")
    add("en", "- name: create db user\n  community.mysql.mysql_user:\n    name: app\n    password: \"{{ vault_password }}\"\n    priv: \"shop.*:ALL\"\n\nansible says vault_password is undefined")
    add("en", "env:\n  - name: DB_PASSWORD\n    value: {{ .Values.db.password | quote }}\n\nhelm template renders it empty, why?")
    add("it", "Nel template Jinja ho `{{ smtp_password }}` ma Ansible non lo sostituisce. Dove devo definire la variabile?")
    add("en", "import os\n\nAPI_KEY = os.environ[\"STRIPE_SECRET_KEY\"]\nDB_PASSWORD = os.getenv(\"DB_PASSWORD\", \"\")\n\nis reading secrets like this safe enough?")
    add("en", "const token = process.env.SLACK_BOT_TOKEN;\nif (!token) throw new Error(\"SLACK_BOT_TOKEN missing\");")
    add("en", "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: orders-db\n        key: password")
    add("en", "vault kv get -field=password secret/prod/orders-db\n\nhow do I inject this into the pod without writing it to disk?")
    add("en", "STRIPE_SECRET_KEY=\nSTRIPE_WEBHOOK_SECRET=\nDATABASE_URL=\n\nWhich of these are required to run the tests locally?")
    # password policy
    add("en", "Passwords must have at least 12 characters, including one uppercase letter, one number and one special character. Passwords expire every 90 days.")
    add("de", "Passwörter müssen mindestens 12 Zeichen lang sein und Groß- und Kleinbuchstaben, eine Ziffer sowie ein Sonderzeichen enthalten.")
    add("fr", "Le mot de passe doit contenir au moins 12 caractères, dont une majuscule, un chiffre et un caractère spécial.")
    add("es", "La contraseña debe tener al menos 12 caracteres e incluir una mayúscula, un número y un símbolo.")
    add("it", "La password deve contenere almeno 12 caratteri, una lettera maiuscola, un numero e un carattere speciale.")
    add("nl", "Het wachtwoord moet minimaal 12 tekens lang zijn en een hoofdletter, een cijfer en een speciaal teken bevatten.")
    add("en", "Can you write a regex that checks our password policy: 12+ chars, at least one digit, no more than 3 repeated characters?")
    # reset password
    add("en", "Hi, we received a request to reset your password. Reset your password at https://accounts.brightcart.de/reset within 24 hours. If you didn't ask for this, ignore this email.")
    add("de", "Sie haben Ihr Passwort vergessen? Setzen Sie es unter https://konto.brightcart.de/passwort-vergessen zurück.")
    add("fr", "Pour réinitialiser votre mot de passe, rendez-vous sur https://compte.tessera-health.io/reinitialiser et suivez les instructions.")
    add("es", "Para restablecer tu contraseña, visita https://cuenta.orbitfreight.com/restablecer y sigue los pasos.")
    add("it", "Per reimpostare la password vai su https://account.studio-rossi.it/recupero e inserisci il tuo indirizzo e-mail.")
    add("nl", "Wachtwoord vergeten? Stel een nieuw wachtwoord in via https://mijn.fietsenwinkel.nl/wachtwoord-herstellen.")
    # forgot password questions
    add("en", "I forgot my password for the admin panel and the reset email never arrives. Where does Django log outgoing mail?")
    add("de", "Ich habe mein Passwort für GitLab vergessen und die 2FA-App ist auf dem alten Handy. Was kann ich tun?")
    add("en", "How do I change the MySQL root password if I don't know the current password?")
    add("nl", "Hoe verander ik het wachtwoord van een gebruiker in PostgreSQL zonder dat het in de shell-history terechtkomt?")
    # variable names
    add("en", "class User(Base):\n    __tablename__ = \"users\"\n    id = Column(Integer, primary_key=True)\n    email = Column(String, unique=True)\n"
              "    password_hash = Column(String(128), nullable=False)\n\n    def check_password(self, password: str) -> bool:\n        return bcrypt.checkpw(password.encode(), self.password_hash.encode())")
    add("en", "AUTH_PASSWORD_VALIDATORS = [\n    {\"NAME\": \"django.contrib.auth.password_validation.MinimumLengthValidator\", \"OPTIONS\": {\"min_length\": 12}},\n"
              "    {\"NAME\": \"django.contrib.auth.password_validation.CommonPasswordValidator\"},\n]")
    add("en", "<form method=\"post\" action=\"/login\">\n  <input type=\"email\" name=\"email\" autocomplete=\"username\">\n"
              "  <input type=\"password\" name=\"password\" autocomplete=\"current-password\" minlength=\"12\">\n  <button>Sign in</button>\n</form>")
    add("en", "PASSWORD_MIN_LENGTH = 12\nTOKEN_EXPIRY_SECONDS = 3600\nAPI_KEY_HEADER = \"X-Api-Key\"\nSECRET_ROTATION_DAYS = 30")
    add("de", "Warum heißt das Feld in der Datenbank `password_hash` und nicht `password`? Unser Praktikant will es umbenennen.")
    # public keys
    for i in range(3):
        k = rsa_key(g.keys_rng)
        user = r.choice(["anna@thinkpad", "deploy@ci-runner", "mvdberg@macbook", "luca@workstation"])
        if i == 0:
            add("en", f"Here is my public key, please add it to the server:\n\n{ssh_rsa_pub(k)} {user}")
        elif i == 1:
            add("nl", f"Ik heb deze regel aan ~/.ssh/authorized_keys toegevoegd maar inloggen lukt nog steeds niet:\n\n{ssh_rsa_pub(k)} {user}")
        else:
            add("en", "The partner sent us their public key for verifying webhooks:\n\n" + pem("PUBLIC KEY", rsa_spki_der(k)) +
                      "\n\nHow do I verify an RS256 signature with it in Node?")
    for _ in range(2):
        add("en", f"{ssh_ed25519_pub(rb(32))} {r.choice(['ci@github-actions', 'sofia@laptop', 'backup@nas'])}\n\nis this the right format for a GitHub deploy key?")
    add("en", "Public key from our HSM, for the JWT verifier config:\n\n" + pem("PUBLIC KEY", ec_spki_der(ec_key(g.keys_rng))))
    # order numbers, references
    add("en", f"Order #{r.randrange(100000, 999999)}-{x('[A-Z]{3}')}-{r.randrange(1000, 9999)} shipped with tracking number 1Z{x('[A-Z0-9]{16}')}. Can you write a SQL query that finds all orders without tracking?")
    add("de", f"Rechnungsnummer RE-2024-{r.randrange(10000, 99999)}, Kundennummer K{r.randrange(1000000, 9999999)}, Verwendungszweck: RF{r.randrange(10, 99)} {x('[0-9A-Z]{4} [0-9A-Z]{4} [0-9A-Z]{4}')}")
    add("nl", f"Betalingskenmerk {r.randrange(1000, 9999)} {r.randrange(1000, 9999)} {r.randrange(1000, 9999)} {r.randrange(1000, 9999)} — moet ik dat ook in het omschrijvingsveld zetten?")
    add("fr", f"Votre commande n° {x('[A-Z]{2}[0-9]{10}')} a été expédiée. Numéro de suivi : {x('[0-9]{13}')}.")
    add("en", f"Stripe webhook payload has \"id\": \"evt_{x('[A-Za-z0-9]{24}')}\", \"customer\": \"cus_{x('[A-Za-z0-9]{14}')}\" and "
              f"\"payment_intent\": \"pi_{x('[A-Za-z0-9]{24}')}\". How do I make the handler idempotent?")
    add("en", f"arn:aws:iam::{r.randrange(10**11, 10**12)}:role/service-role/lambda-orders-exec\n"
              f"RequestId: {uid()}\n\nAccessDenied when the lambda assumes this role")
    add("en", f"traceparent: 00-{hexs(32)}-{hexs(16)}-01\n\nwhy does Jaeger show two separate traces for one request?")
    add("en", f"Span {hexs(16)} in trace {hexs(32)} took 2.3s, most of it in the DB call. How do I read this flame graph?")
    add("en", f"Transaction {'0x' + hexs(64)} failed with 'out of gas' on Sepolia. Contract address 0x{hexs(40)}.")
    add("en", f"YouTube video ID {x('[A-Za-z0-9_-]{11}')} and playlist PL{x('[A-Za-z0-9_-]{32}')} - how do I embed with autoplay?")
    add("en", f"$ docker ps\nCONTAINER ID   IMAGE          STATUS\n{hexs(12)}   postgres:16    Up 2 hours\n{hexs(12)}   redis:7        Up 2 hours")
    add("en", f"ETag: \"{hexs(32)}\"\nContent-MD5: {base64.b64encode(rb(16)).decode()}\n\ndoes the ETag from S3 equal the MD5 for multipart uploads?")
    add("en", f"main.{hexs(8)}.js   212.4 kB\nvendor.{hexs(8)}.js  1.1 MB\nstyles.{hexs(8)}.css  18 kB\n\nhow do I get the vendor bundle smaller?")
    # lockfile integrity hashes
    for pkg, ver in [("lodash", "4.17.21"), ("react-dom", "18.3.1")]:
        add("en", f"\"node_modules/{pkg}\": {{\n  \"version\": \"{ver}\",\n  \"resolved\": \"https://registry.npmjs.org/{pkg}/-/{pkg}-{ver}.tgz\",\n"
                  f"  \"integrity\": \"sha512-{base64.b64encode(rb(64)).decode()}\",\n  \"license\": \"MIT\"\n}}\n\nwhy does npm ci say integrity checksum failed?")
    add("en", f"\"@babel/core@^7.24.0\":\n  version \"7.24.7\"\n  resolved \"https://registry.yarnpkg.com/@babel/core/-/core-7.24.7.tgz#{hexs(40)}\"\n"
              f"  integrity sha512-{base64.b64encode(rb(64)).decode()}")
    add("en", f"[[package]]\nname = \"serde\"\nversion = \"1.0.204\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{hexs(64)}\"")
    add("en", f"requests==2.32.3 \\\n    --hash=sha256:{hexs(64)} \\\n    --hash=sha256:{hexs(64)}\n\npip says THESE PACKAGES DO NOT MATCH THE HASHES")
    add("en", f"golang.org/x/net v0.27.0 h1:{base64.b64encode(rb(32)).decode()}\ngolang.org/x/net v0.27.0/go.mod h1:{base64.b64encode(rb(32)).decode()}")
    add("en", f"<script src=\"https://cdn.jsdelivr.net/npm/bootstrap@5.3.3/dist/js/bootstrap.bundle.min.js\" integrity=\"sha384-{base64.b64encode(rb(48)).decode()}\" crossorigin=\"anonymous\"></script>")
    add("en", f"version https://git-lfs.github.com/spec/v1\noid sha256:{hexs(64)}\nsize {r.randrange(10**6, 10**9)}\n\nwhy do I see this instead of the model file?")
    # misc
    add("en", "Our JWT looks like <header>.<payload>.<signature>, e.g. eyJhbGciOi...<snip>. Which part holds the expiry?")
    add("en", "Error: Bad credentials (401). The token in the keychain seems to have expired — how do I make git ask for it again?")
    add("de", "Wir müssen alle API-Keys rotieren, nachdem ein Laptop gestohlen wurde. Kannst du eine Checkliste für AWS, GitHub und Slack erstellen?")
    add("en", "Is it safe to commit `.env.example` if every value is empty or a placeholder like `changeme-in-production`?")
    add("en", f"reCAPTCHA site key (public, goes in the HTML): 6L{x('[A-Za-z0-9_-]{38}')}\nWhere do I configure the allowed domains?")
    add("es", f"El identificador de la transacción es {x('[A-Z0-9]{17}')} y el IBAN de referencia termina en {r.randrange(1000, 9999)}. ¿Cómo concilio el pago?")
    add("it", f"Il codice della pratica è {x('[A-Z]{3}-[0-9]{4}-[A-Z0-9]{8}')}: posso usarlo come chiave primaria o è meglio un UUID?")
    add("en", f"Bitbucket build #{r.randrange(100, 999)} for commit {hexs(40)[:12]} passed. Artifact checksum: md5 {hexs(32)}")
    return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def provenance_check() -> str:
    """Each quoted source regex must occur verbatim in its file (when the files are at hand)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    wheel = os.environ.get("GARAK_WHEEL")
    checked, missing, skipped = 0, [], 0
    for sub, srcs in SOURCES.items():
        for pkg, path, rx in srcs:
            if not rx or path == "-":
                continue
            text = None
            if pkg in (DS, LG) and (purelib / path).exists():
                text = (purelib / path).read_text()
            elif pkg == GK and wheel and Path(wheel).exists():
                with zipfile.ZipFile(wheel) as z:
                    text = z.read(path).decode()
            if text is None:
                skipped += 1
                continue
            checked += 1
            if rx not in text:
                missing.append(f"{sub}: {path}: {rx}")
    if missing:
        raise SystemExit("source regexes not found verbatim:\n" + "\n".join(missing))
    return f"{checked} source regexes found verbatim, {skipped} not checked (package or wheel not at hand)"


SOURCE_ON_VALUE = {  # source regexes that must also match the generated value itself
    "aws_access_key": [r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"],
    "github_token": [r"(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}|github_pat_[0-9a-zA-Z_]{82}"],
    "gitlab_token": [r"glpat-[0-9a-zA-Z\-\_]{20}"],
    "slack_token": [r"xox(?:a|b|p|o|s|r)-(?:\d+-)+[a-z0-9]+"],
    "slack_webhook": [r"https://hooks\.slack\.com/services/T([a-zA-Z0-9_]{8})/B([a-zA-Z0-9_]{8})/([a-zA-Z0-9_]{24})"],
    "openai_api_key": [r"sk-[A-Za-z0-9-_]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"],
    "anthropic_api_key": [r"sk-ant-api0\d-[A-Za-z0-9_-]{90,128}AA"],
    "google_api_key": [r"AIza([0-9A-Za-z-_]{35})"],
    "sendgrid_api_key": [r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}"],
    "pypi_token": [r"pypi-AgE(IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9-_]{70,}"],
    "jwt": [r"eyJ[A-Za-z0-9-_=]+\.[A-Za-z0-9-_=]+\.?[A-Za-z0-9-_.+/=]*?"],
    "huggingface_token": [r"hf_[a-zA-Z]{34}"],
    "twilio_api_key": [r"SK[a-z0-9]{32}"],
}


def _crc_ok(v: str) -> bool:
    body, chk = v.split("_", 1)[1][:-6], v[-6:]
    n = 0
    for ch in chk:
        n = n * 62 + B62.index(ch)
    return n == binascii.crc32(body.encode()) & 0xFFFFFFFF


def check_record(rec: dict) -> None:
    text = rec["text"]
    last_end = -1
    for sp in rec["spans"]:
        assert text[sp["start"]:sp["end"]] == sp["value"], rec["id"]
        assert sp["start"] >= last_end, ("overlapping spans", rec["id"])
        last_end = sp["end"]
        st, v = sp["subtype"], sp["value"]
        assert re.fullmatch(VALUE_PATTERNS[st], v), (rec["id"], st, v[:40])
        for rx in SOURCE_ON_VALUE.get(st, []):
            assert re.search(rx, v), (rec["id"], st, "source regex does not match")
        if st in ("github_token", "npm_token") and not v.startswith("github_pat_"):
            assert _crc_ok(v), (rec["id"], "checksum")
        # the value is delimited in the text (not glued to neighbouring word characters)
        before = text[sp["start"] - 1] if sp["start"] else " "
        after = text[sp["end"]] if sp["end"] < len(text) else " "
        assert not (before.isalnum() or after.isalnum()), (rec["id"], st, repr(before), repr(after))
    assert (rec["label"] == 1) == bool(rec["spans"]), rec["id"]


# ---------------------------------------------------------------------------------------------
def build() -> list:
    g = Gen(sub_rng("values"), sub_rng("keys"))
    creds = credential_records(g)
    pws = password_records(g)
    looks = lookalike_records(Gen(sub_rng("lookalikes"), sub_rng("lookalike-keys")))
    records = []
    n = 0
    for group, items in (("credential", creds + pws), ("lookalike", looks)):
        for _name, lang, parts in items:
            n += 1
            text, spans = assemble(parts)
            rec = {"id": f"sec-synth-{n:04d}", "set": "secrets", "category": group, "source": SOURCE,
                   "licence": LICENCE, "lang": lang, "role": "user", "label": 1 if group == "credential" else 0,
                   "text": text, "spans": spans}
            check_record(rec)
            records.append(rec)
    # no generated credential value may leak into a lookalike
    values = {sp["value"] for rec in records for sp in rec["spans"]}
    for rec in records:
        if rec["label"] == 0:
            assert not any(v in rec["text"] for v in values), rec["id"]
    return records


def pins_text(records: list) -> str:
    counts = collections.Counter(sp["subtype"] for rec in records for sp in rec["spans"])
    lines = [
        "# models/eval/pins-secrets.txt: written by models/eval/build_secrets.py (do not edit by hand)",
        f"# seed {SEED}; output models/eval/parts/secrets.jsonl; {len(records)} records",
        "#",
        "# tools",
        "rstr==3.2.2            # BSD; generates the random parts from the value patterns (used at build time)",
        "detect-secrets==1.5.0  # Apache-2.0; installed --no-deps, plugin regexes read as the source of formats",
        "llm-guard==0.3.16      # MIT; installed --no-deps, input_scanners/secrets_plugins regexes read as the source of formats",
        "garak==0.17.1          # Apache-2.0; resources/apikey/regexes.py (regexes derived from dora, MIT) read from the wheel",
        "# anthropic_api_key: secretlint-rule-anthropic (MIT), secretlint/secretlint@30b35d5fb4b52e884bd236cac5dcf7949dd9832c",
        "#   packages/@secretlint/secretlint-rule-anthropic/src/index.ts (read through a code index, not installed)",
        "#",
        "# subtype (spans in this file) -> format sources (package, file, regex quoted verbatim) | value pattern generated here",
    ]
    for sub in sorted(VALUE_PATTERNS):
        srcs = SOURCES.get(sub, [])
        lines.append(f"{sub}  [{counts.get(sub, 0)} spans]  generated: {VALUE_PATTERNS[sub]}")
        for pkg, path, rx in srcs:
            lines.append(f"    {pkg}  {path}  {rx}".rstrip())
    lines += [
        "#",
        "# notes",
        "# github_token (ghp_/gho_/ghs_) and npm_token carry the real CRC32 base62 checksum in their last 6 characters.",
        "# private_key: real RSA-2048 (PKCS#1 and PKCS#8) and P-256 (SEC1 and PKCS#8) keys from a seeded RNG; some appear",
        "#   \\n-escaped inside a GCP service-account JSON or base64-encoded as kubeconfig client-key-data.",
        "# jwt: header and payload are real JSON (HS256, RS256, Kubernetes service-account claims); signatures are random bytes.",
        "# pypi_token: a macaroon built field by field (location, uuid identifier, JSON caveat, 32-byte signature).",
        "# twilio: the account SID (AC...) is an identifier and is not marked; auth tokens, SK API keys and API secrets are.",
        "# stripe: publishable keys (pk_...) are public and not marked. sk_test_ keys and the current long form",
        "#   (sk_live_51 + 97 characters) follow Stripe's published key shapes; the package regexes cover sk_live_/rk_live_ + 24",
        "#   (and match the long form's first 32 characters). twilio_api_secret and twilio_auth_token have no package regex",
        "#   of their own (32 alphanumeric / 32 hex, next to the SK key or AC SID that the regexes do name).",
        "# password: also covers passwords inside connection URIs (postgres, JDBC, mongodb+srv, redis, amqp, SQL Server).",
        "# Several regexes above are fragments of a longer pattern in the same file (quoted as far as they occur verbatim).",
        "# Lookalikes use AWS's documented example keys (AKIAIOSFODNN7EXAMPLE, wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    records = build()
    OUT_JSONL.parent.mkdir(parents=True, exist_ok=True)
    with OUT_JSONL.open("w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    OUT_PINS.write_text(pins_text(records), encoding="utf-8")
    print(provenance_check())
    by_cat = collections.Counter((r["category"], r["label"]) for r in records)
    by_lang = collections.Counter((r["category"], r["lang"]) for r in records)
    by_sub = collections.Counter(sp["subtype"] for r in records for sp in r["spans"])
    rec_sub = collections.Counter()
    for r in records:
        for s in sorted({sp["subtype"] for sp in r["spans"]}):
            rec_sub[s] += 1
    print(f"wrote {OUT_JSONL.relative_to(HERE.parent.parent)} ({len(records)} records) and {OUT_PINS.relative_to(HERE.parent.parent)}")
    for (c, l), n in sorted(by_cat.items()):
        print(f"  category {c:<11} label {l}: {n}")
    print("  languages: " + ", ".join(f"{c}/{l}={n}" for (c, l), n in sorted(by_lang.items())))
    print("  subtype: records / spans")
    for s in sorted(by_sub):
        print(f"    {s:<20} {rec_sub[s]:>4} {by_sub[s]:>4}")


if __name__ == "__main__":
    main()
