#!/bin/bash
OUT=$1
. "$(dirname "$0")/guest-lib.sh"
setup_guest
say "hello from $(uname -r) up $(cut -d' ' -f1 /proc/uptime)"
lsmod > $OUT/lsmod
mount > $OUT/mounts
ip link add t0 type wireguard && say "wg ok"
# zombie test
setsid bash -c 'sleep 0.5 & exit 0'; sleep 2
ps -eo pid,ppid,stat,comm > $OUT/ps
say "zombies: $(ps -eo stat | grep -c '^Z')"
iptables -N X && iptables -A X -m comment --comment hi -m conntrack --ctstate ESTABLISHED -j ACCEPT && say "iptables ok"
ipset create s hash:ip && say "ipset ok"
ls -la /dev/net/tun && say tun ok
pass hello
write_result
