#!/bin/sh
# Inside the container booted by boot-and-install.sh, as its one job: install the .deb as an
# operator would, edit its configs, start its units, and use them (loopcastctl, a download
# through the director). Every command must succeed; the last line says PASS.
exec >/results/inside.log 2>&1
set -eux
trap 'systemctl status loopcastd.service loopcastd-direct.service --no-pager -l || true; journalctl -u loopcastd.service -u loopcastd-direct.service --no-pager | tail -40' EXIT
dpkg -i /results/loopcast.deb
loopcastd fleet-key /etc/loopcast/fleet.key
chgrp loopcast /etc/loopcast/fleet.key
chmod 0640 /etc/loopcast/fleet.key
# The operator's edits: both daemons on one host (the director on 7800), unicast only.
sed -i 's|^listen = .*|listen = "127.0.0.1:7800"|' /etc/loopcast/direct.toml
sed -i -e 's|^listen = .*|listen = "127.0.0.1:7700"|' -e 's|^# no_multicast = true|no_multicast = true|' \
    -e 's|^# director = .*|director = ["127.0.0.1:7800"]|' -e 's|^# fleet_key = |fleet_key = |' \
    /etc/loopcast/serve.toml
grep -v '^#' /etc/loopcast/serve.toml | grep .
head -c 3000000 /dev/urandom >/tmp/film.bin
loopcast pack /tmp/film.bin --media /srv/loopcast/media --no-encrypt
chgrp -R loopcast /srv/loopcast/media
chmod -R g+rX /srv/loopcast/media
systemctl enable --now loopcastd-direct.service loopcastd.service
for i in $(seq 1 100); do
    [ -S /run/loopcast/loopcastd.sock ] && [ -S /run/loopcast-direct/loopcastd-direct.sock ] && break
    sleep 0.1
done
systemctl is-active loopcastd-direct.service loopcastd.service
for i in $(seq 1 50); do
    loopcastctl servers --json | grep -q film.bin && break
    sleep 0.1
done
loopcastctl servers
loopcastctl status --json >/tmp/status.json
head -c 400 /tmp/status.json; echo
loopcast get 127.0.0.1:7800 film.bin --output /tmp/out.lca --json
cmp /tmp/out.lca /srv/loopcast/media/film.bin.lca
for unit in loopcastd.service loopcastd-direct.service; do
    pid=$(systemctl show -p MainPID --value "$unit")
    user=$(ps -o user= -p "$pid")
    echo "$unit: pid $pid user $user"
    [ "$user" != root ]
done
journalctl -u loopcastd-direct.service --no-pager | grep -q "server up"
# `systemctl reload` (SIGHUP): the config read again, the media rescanned, both still running.
systemctl reload loopcastd.service loopcastd-direct.service
for i in $(seq 1 50); do
    journalctl -u loopcastd.service --no-pager | grep -q "SIGHUP: media database rescanned" && break
    sleep 0.1
done
journalctl -u loopcastd.service --no-pager | grep -q "SIGHUP: media database rescanned"
systemctl is-active loopcastd-direct.service loopcastd.service
# A clean stop (SIGTERM: clients told, a last heartbeat), not a failure.
systemctl stop loopcastd.service loopcastd-direct.service
for unit in loopcastd.service loopcastd-direct.service; do
    if systemctl is-failed --quiet "$unit"; then exit 1; fi
done
dpkg -r loopcast
[ ! -e /usr/bin/loopcastd ]
echo PASS >/results/result
