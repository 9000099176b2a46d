"""The peers of lucidd's audit benchmark, on the same input files, in the same run.

Presidio: the analyzer's predefined pattern recognizers (email, phone, credit card,
IBAN, US SSN, IP address), called directly, without an NLP engine (no spaCy model can be
downloaded here; regex recognizers do not need one). detect-secrets, the engine behind
LLM Guard's Secrets scanner, twice: its own default plugin set through `scan_line`, and
LLM Guard's `Secrets` scanner itself (the llm-guard wheel's own module and its ~95 extra
detect-secrets plugins, installed without its model dependencies, which this scanner
does not use), as an application would call it.

Usage: audit_peers.py FILE... ; prints one JSON object: MB/s per peer over all files
(`--only PEER FILE...` runs one peer; main runs each that way).
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


def llm_guard_secrets_scanner():
    """LLM Guard's real `Secrets` scanner. Its package `__init__` imports every scanner
    (torch, transformers); this scanner needs none of them, so the two parent packages are
    registered empty and only the scanner's own module is executed from the wheel."""
    import importlib.util
    import types
    spec = importlib.util.find_spec("llm_guard")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm-guard is not installed")
    root = list(spec.submodule_search_locations)[0]
    for name, path in [("llm_guard", root), ("llm_guard.input_scanners", root + "/input_scanners")]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg
    from llm_guard.input_scanners.secrets import Secrets
    scanner = Secrets()

    def scan(text):
        _, valid, _ = scanner.scan(text)
        return 0 if valid else 1
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


PEERS = {
    "presidio_pii_mb_s": presidio_scanner,
    "detect_secrets_mb_s": detect_secrets_scanner,
    "llm_guard_secrets_mb_s": llm_guard_secrets_scanner,
}


def main():
    """Each peer runs in its own interpreter: detect-secrets keeps its settings and plugin
    registry in process-wide caches, which two configurations in one process would share."""
    import subprocess
    if sys.argv[1] == "--only":
        name, files = sys.argv[2], sys.argv[3:]
        texts = [open(p, encoding="utf-8").read() for p in files]
        print(json.dumps({name: round(rate(PEERS[name](), texts), 3)}))
        return
    out = {}
    for name in PEERS:
        run = subprocess.run([sys.executable, __file__, "--only", name, *sys.argv[1:]], capture_output=True, text=True)
        try:
            out.update(json.loads(run.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):  # a missing or failing peer is reported, not hidden
            out[name] = None
            out[name + "_error"] = (run.stderr.strip().splitlines() or ["no output"])[-1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
