"""The peers of lucidd's audit benchmark, on the same input files, in the same run.

Presidio: the analyzer's predefined pattern recognizers (email, phone, credit card,
IBAN, US SSN, IP address), called directly, without an NLP engine (no spaCy model can be
downloaded here; regex recognizers do not need one). detect-secrets: its default plugin
set through `scan_line`, the engine behind LLM Guard's Secrets scanner.

Usage: audit_peers.py FILE... ; prints one JSON object: MB/s per peer over all files.
"""
import json
import sys
import time


def presidio_scanner():
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer, UsSsnRecognizer)
    recognizers = [EmailRecognizer(), CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(), UsSsnRecognizer(), PhoneRecognizer()]

    def scan(text):
        found = 0
        for r in recognizers:
            found += len(r.analyze(text, r.supported_entities, None) or [])
        return found
    return scan


def detect_secrets_scanner():
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings
    ctx = default_settings()
    ctx.__enter__()

    def scan(text):
        return sum(1 for line in text.splitlines() for _ in scan_line(line))
    return scan


def rate(scan, texts, min_seconds=2.0):
    total, runs, start = 0, 0, time.perf_counter()
    while True:
        for t in texts:
            scan(t)
            total += len(t.encode())
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 1:
            return total / elapsed / 1e6


def main():
    texts = [open(p, encoding="utf-8").read() for p in sys.argv[1:]]
    out = {}
    for name, factory in [("presidio_pii_mb_s", presidio_scanner), ("detect_secrets_mb_s", detect_secrets_scanner)]:
        try:
            out[name] = round(rate(factory(), texts), 3)
        except Exception as e:  # a missing peer is reported, not hidden
            out[name] = None
            out[name + "_error"] = repr(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
