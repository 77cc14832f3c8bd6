#!/bin/bash
# tools/setup-packages.sh SPEC...: make sure each Debian package is installed,
# where SPEC is NAME or NAME>=VERSION (a pin: the installed version must be at
# least VERSION). Works from whatever apt lists the machine has:
#  - a package missing, or a pin whose candidate is older than the pin (old
#    lists: bookworm main's rustc-web 1.85 instead of bookworm-security's
#    1.96), refreshes the lists once (apt-get update) and looks again;
#  - a pin that still cannot be had stops with one line naming the package,
#    the wanted and the available version; exit 1;
#  - a failed update or install prints apt's own last lines and exits 1.
# Nothing is installed when everything is present. Runs in the rig-free test
# chroot too (tools/test-setup-chroot.sh), so it needs nothing but bash, dpkg
# and apt.
set -euo pipefail
die() { echo "setup: $*" >&2; exit 1; }
[ $# -gt 0 ] || die "usage: setup-packages.sh NAME[>=VERSION]..."

declare -A want=()
names=()
for spec in "$@"; do
    name=${spec%%>=*}
    [ "$name" = "$spec" ] && min="" || min=${spec#*>=}
    want[$name]=$min; names+=("$name")
done

installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'; }
candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ "$c" = "(none)" ] && c=""
    echo "$c"
}
# new enough VERSION MIN: VERSION exists and is at least MIN (no MIN: exists)
enough() { [ -n "$1" ] && { [ -z "$2" ] || dpkg --compare-versions "$1" ge "$2"; }; }
wanted() { if [ -n "$1" ]; then echo ">= $1"; else echo "any version"; fi; }

need=()
for n in "${names[@]}"; do
    enough "$(installed "$n")" "${want[$n]}" || need+=("$n")
done
[ ${#need[@]} -eq 0 ] && exit 0

log=$(mktemp); trap 'rm -f "$log"' EXIT
refreshed=0
refresh() {
    echo "setup: refreshing apt lists ($1)" >&2
    apt-get update -q >"$log" 2>&1 || { tail -n 5 "$log" >&2; die "apt-get update failed"; }
    refreshed=1
}
# Can the lists we have give every needed package at its pin?
for n in "${need[@]}"; do
    c=$(candidate "$n")
    enough "$c" "${want[$n]}" && continue
    refresh "$n: candidate ${c:-none}, wanted $(wanted "${want[$n]}")"
    break
done
for n in "${need[@]}"; do
    c=$(candidate "$n")
    enough "$c" "${want[$n]}" && continue
    die "$n: wanted $(wanted "${want[$n]}"), available ${c:-none} (Debian 12 with bookworm-security in the apt sources has it)"
done

install() {
    local specs=() n
    for n in "${need[@]}"; do specs+=("$n=$(candidate "$n")"); done
    echo "setup: installing ${specs[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${specs[@]}" >"$log" 2>&1
}
if ! install; then
    # Lists that name files the mirror no longer has (a point release since):
    # refresh once and try again.
    [ $refreshed = 0 ] || { tail -n 10 "$log" >&2; die "apt-get install ${need[*]} failed"; }
    refresh "apt-get install failed: $(grep -m1 -E '^(E|Err):' "$log" || tail -n1 "$log")"
    install || { tail -n 10 "$log" >&2; die "apt-get install ${need[*]} failed"; }
fi
for n in "${need[@]}"; do
    v=$(installed "$n")
    enough "$v" "${want[$n]}" || die "$n: wanted $(wanted "${want[$n]}"), have ${v:-none} after apt-get install"
done
exit 0
