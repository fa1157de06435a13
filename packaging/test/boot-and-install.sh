#!/bin/bash
# The .deb in a real systemd (tests/e2e/packaging.rs): boots this machine's own root, read-only
# under a throwaway overlay, as a container (systemd-nspawn, private network: its own loopback
# only) into a target that runs inside.sh once and exits. Nothing of it outlives the run: the
# overlay is a tmpfs in this process's private mount namespace.
#
# usage (root): unshare -m --propagation private boot-and-install.sh RESULTS
#   RESULTS holds loopcast.deb and inside.sh; inside.sh writes inside.log and, if every check
#   passed, result = PASS.
set -eu
results=$1
work=$(mktemp -d /tmp/lc-deb-systemd.XXXXXX)
trap 'rmdir "$work" 2>/dev/null || true' EXIT
mount -t tmpfs tmpfs "$work"
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
root=$work/root
# Nothing left by an earlier install of the package on this machine.
rm -rf "$root/etc/loopcast" "$root/srv/loopcast" "$root/lib/systemd/system/loopcastd.service" \
    "$root/lib/systemd/system/loopcastd-direct.service"
mkdir -p "$root/etc/systemd/system"
cat >"$root/etc/systemd/system/lctest.service" <<'UNIT'
[Unit]
Description=loopcast package test
After=basic.target
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/bin/sh /results/inside.sh
TimeoutStartSec=120
UNIT
cat >"$root/etc/systemd/system/lctest.target" <<'UNIT'
[Unit]
Description=loopcast package test
Requires=basic.target lctest.service
After=basic.target lctest.service
AllowIsolate=yes
UNIT
timeout 180 systemd-nspawn -q -D "$root" --register=no --keep-unit --private-network \
    --bind="$results:/results" -M "lcdeb$$" --boot systemd.unit=lctest.target
