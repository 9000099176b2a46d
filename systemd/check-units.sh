#!/usr/bin/env bash
# Static checks for systemd/lucidd.service. Works from any cwd.
#
#  1. systemd-analyze verify on a temporary copy of the unit whose ExecStart
#     binary (/usr/bin/lucidd, normally not installed on a build host) is
#     replaced by an existing one (true(1)); everything else is unchanged.
#     verify exits 0 even for unknown keys or unparsable values, so ANY
#     output from it counts as a failure.
#  2. systemd-analyze security --offline=true on the real unit; the overall
#     exposure score must be <= MAX_EXPOSURE (default 2.5).
#
# Prints "lucidd.service exposure: <score>" on success.
set -euo pipefail

MAX_EXPOSURE="${MAX_EXPOSURE:-2.5}"
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
unit="$here/lucidd.service"

die() { echo "check-units: FAIL: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found"
[[ -f "$unit" ]] || die "$unit not found"

tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT

# --- 1. verify --------------------------------------------------------------
true_bin="$(type -P true || echo /bin/true)"
[[ "$true_bin" == /* ]] || true_bin=/bin/true
# The copy must keep the name lucidd.service.
sed -E "s#^ExecStart=/usr/bin/lucidd( |\$)#ExecStart=${true_bin}\\1#" "$unit" >"$tmp/lucidd.service"
grep -q "^ExecStart=${true_bin} --config /etc/lucid/lucid.yaml\$" "$tmp/lucidd.service" \
    || die "could not substitute ExecStart in the temporary copy"

set +e
verify_out="$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "$tmp/lucidd.service" 2>&1)"
verify_rc=$?
set -e
if [[ $verify_rc -ne 0 || -n "$verify_out" ]]; then
    echo "$verify_out" >&2
    die "systemd-analyze verify reported problems (rc=$verify_rc)"
fi
echo "check-units: systemd-analyze verify: OK (ExecStart -> $true_bin in a temporary copy)"

# --- 2. security --------------------------------------------------------------
set +e
sec_out="$(SYSTEMD_COLORS=0 systemd-analyze security --offline=true --no-pager "$unit" 2>&1)"
sec_rc=$?
set -e
[[ $sec_rc -eq 0 ]] || { echo "$sec_out" >&2; die "systemd-analyze security failed (rc=$sec_rc)"; }

score="$(printf '%s\n' "$sec_out" \
    | sed -nE 's/.*Overall exposure level for lucidd\.service: ([0-9]+(\.[0-9]+)?).*/\1/p' \
    | head -n1)"
[[ -n "$score" ]] || { echo "$sec_out" >&2; die "could not parse the overall exposure score"; }

echo "lucidd.service exposure: $score"
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
    printf '%s\n' "$sec_out" | grep -E '^✗' >&2 || true
    die "exposure score $score is above the limit $MAX_EXPOSURE"
fi
echo "check-units: OK"
