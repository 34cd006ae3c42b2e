#!/usr/bin/env bash
# Checks the operator files in systemd/ the way systemd will read them:
#  - both units pass `systemd-analyze verify` without a single warning (verify exits 0 on unknown keys
#    and unparsable values, so any output counts as a failure here), in a scratch root laid out as
#    docs/operations.md installs them (binaries in /usr/bin, units in /etc/systemd/system);
#  - sysusers.d/switchyard.conf creates the user and group the units run as;
#  - @system-service still contains io_uring_setup/enter/register (the engine's filter also names them);
#  - `systemd-analyze security` rates both units at most 2.5 ("OK");
#  - every key of sysctl.d/60-switchyard.conf exists in this kernel;
#  - the units read the config file where the example is installed.
# Needs systemd's tools (Debian: apt-get install systemd), not a running systemd.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v systemd-analyze >/dev/null || { echo "verify-units: systemd-analyze not found (apt-get install systemd)"; exit 1; }
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -d "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/sysusers.d" "$root/etc/switchyard" "$root/usr/lib/systemd"
# The stock units (sysinit.target, network-online.target, ...) that verify resolves dependencies against.
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
# verify only checks that ExecStart= names an executable: stand-ins keep this independent of a build.
for bin in switchyard-engine switchyard-control; do
    printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/$bin"
    chmod 0755 "$root/usr/bin/$bin"
done
cp systemd/switchyard-engine.service systemd/switchyard-control.service "$root/etc/systemd/system/"
cp systemd/sysusers.d/switchyard.conf "$root/usr/lib/sysusers.d/"
cp systemd/switchyard.toml "$root/etc/switchyard/"

# The system user, as systemd-sysusers creates it at install.
if systemd-sysusers --root="$root" >/dev/null 2>&1 && grep -q '^switchyard:' "$root/etc/passwd" \
    && grep -q '^switchyard:' "$root/etc/group"; then
    ok "sysusers.d/switchyard.conf creates the switchyard user and group"
else
    fail "sysusers.d/switchyard.conf does not create the switchyard user and group"
fi
for unit in switchyard-engine switchyard-control; do
    user=$(sed -n 's/^User=//p' "systemd/$unit.service")
    group=$(sed -n 's/^Group=//p' "systemd/$unit.service")
    if grep -q "^$user:" "$root/etc/passwd" && grep -q "^$group:" "$root/etc/group"; then
        ok "$unit.service runs as $user:$group, which sysusers creates"
    else
        fail "$unit.service runs as '$user:$group', which sysusers.d does not create"
    fi
done

for unit in switchyard-engine switchyard-control; do
    if out=$(systemd-analyze verify --root="$root" --man=no "/etc/systemd/system/$unit.service" 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify $unit.service"
    else
        fail "systemd-analyze verify $unit.service:"
        printf '%s\n' "$out" | sed 's/^/     /'
    fi
done

# Expands a syscall group recursively into system call names.
expand() {
    systemd-analyze syscall-filter "$1" 2>/dev/null | sed -n 's/^ \{4\}\([@a-z0-9_-]\{1,\}\)$/\1/p' | while read -r name; do
        case "$name" in
            @*) expand "$name" ;;
            *) echo "$name" ;;
        esac
    done
}
allowed=$(expand @system-service | sort -u)
for call in io_uring_setup io_uring_enter io_uring_register; do
    if grep -qx "$call" <<<"$allowed"; then
        ok "@system-service allows $call"
    else
        # Not fatal by itself: the engine's unit names the calls explicitly.
        echo "note @system-service lacks $call on this systemd; the engine's SystemCallFilter= names it"
    fi
    if grep -q "^SystemCallFilter=@system-service.* $call" systemd/switchyard-engine.service; then
        ok "switchyard-engine.service allows $call"
    else
        fail "switchyard-engine.service does not allow $call"
    fi
done
for call in sched_setaffinity setsockopt recvmmsg sendmmsg; do
    if grep -qx "$call" <<<"$allowed"; then
        ok "@system-service allows $call (the engine needs it)"
    else
        fail "@system-service lacks $call, which the engine needs"
    fi
done

for unit in switchyard-engine switchyard-control; do
    if out=$(systemd-analyze security --offline=yes --root="$root" --threshold=25 \
        "/etc/systemd/system/$unit.service" 2>&1); then
        ok "systemd-analyze security $unit.service: $(grep -o 'exposure level.*' <<<"$out")"
    else
        fail "systemd-analyze security $unit.service exposure above 2.5:"
        grep '✗' <<<"$out" | sed 's/^/     /'
    fi
done

while IFS= read -r line; do
    key=$(sed -n 's/^\([a-z0-9_.]\{1,\}\) *= *[^ ].*$/\1/p' <<<"$line")
    if [ -z "$key" ]; then
        fail "sysctl.d/60-switchyard.conf: not 'key = value': $line"
    elif [ -e "/proc/sys/${key//.//}" ]; then
        ok "sysctl $key exists"
    else
        fail "sysctl $key does not exist in this kernel"
    fi
done < <(grep -v -e '^#' -e '^[[:space:]]*$' systemd/sysctl.d/60-switchyard.conf)

for unit in switchyard-engine switchyard-control; do
    if grep -q '^ExecStart=/usr/bin/'"$unit"' --config /etc/switchyard/switchyard.toml$' "systemd/$unit.service"; then
        ok "$unit.service reads /etc/switchyard/switchyard.toml"
    else
        fail "$unit.service does not start /usr/bin/$unit --config /etc/switchyard/switchyard.toml"
    fi
done

echo "verify-units: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
