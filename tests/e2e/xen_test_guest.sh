#!/bin/sh
# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# Build pft's PV test guest on a Xen dom0 (run as root on the dom0):
#   xen_test_guest.sh DIR
# DIR gets vmlinuz (this node's Debian kernel), initrd.img (a tiny busybox initramfs with
# xen-netfront from the same kernel) and nothing else. Guest settings come from the kernel
# command line (xl config `extra`): pft.ip=A.B.C.D/NN pft.dirty_mb=N pft.dirty_every=S.
#
# The guest: eth0 with the static address, busybox httpd on port 80 serving /www,
#   /www/hb     "<count> <uptime_s> <max_gap_s> <ip>" rewritten every 0.1 s by a heartbeat loop
#               (count never resets while the guest lives; max_gap_s is the largest gap between
#               two ticks as the guest's own uptime clock saw it)
#   /www/id     a random id chosen at boot (a restarted guest has another one)
#   /www/meminfo the guest's /proc/meminfo, refreshed every second (its working set, measured inside)
#   /www/dirty  how many times the dirtier below has rewritten its N MiB (absent without one): a test
#               can tell a dirtier that runs from one the guest's OOM killer ended
# and, with pft.dirty_mb=N, a loop that rewrites N MiB of its RAM (a tmpfs file) every
# pft.dirty_every seconds (default 0: continuously), so migration has a working set to chase.
# N MiB must fit beside the kernel: the unpacked Debian kernel takes about 58 MiB of the guest.
set -eu
dir="$1"
kver="$(uname -r)"
mkdir -p "$dir"
if ! [ -x /bin/busybox ] || ! /bin/busybox --list | grep -qx httpd; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox-static >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/proc" "$work/sys" "$work/dev" "$work/www" "$work/tmp" "$work/lib"
cp /bin/busybox "$work/bin/busybox"
mod="$(modinfo -n xen-netfront)"
case "$mod" in
    *.xz) xz -dc "$mod" > "$work/lib/xen-netfront.ko" ;;
    *.zst) zstd -dcq "$mod" > "$work/lib/xen-netfront.ko" ;;
    *) cp "$mod" "$work/lib/xen-netfront.ko" ;;
esac
cat > "$work/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null || true
mount -t tmpfs -o size=90% tmp /tmp
ip=""; dirty=0; every=0
for w in $(cat /proc/cmdline); do
    case "$w" in
        pft.ip=*) ip="${w#pft.ip=}" ;;
        pft.dirty_mb=*) dirty="${w#pft.dirty_mb=}" ;;
        pft.dirty_every=*) every="${w#pft.dirty_every=}" ;;
    esac
done
insmod /lib/xen-netfront.ko
i=0
while ! ip link show eth0 >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' > /www/id
httpd -p 80 -h /www
(
    n=0; last=""; max=0
    while :; do
        n=$((n+1))
        read up _ < /proc/uptime
        cs=$(( ${up%.*} * 100 + 1${up#*.} - 100 ))
        if [ -n "$last" ] && [ $((cs - last)) -gt "$max" ]; then max=$((cs - last)); fi
        last="$cs"
        echo "$n $up $((max / 100)).$(( max % 100 / 10 ))$(( max % 10 )) ${ip%/*}" > /www/hb.new
        mv /www/hb.new /www/hb
        [ $((n % 10)) = 1 ] && cat /proc/meminfo > /www/meminfo
        usleep 100000
    done
) &
if [ "$dirty" -gt 0 ]; then
    (
        d=0
        while :; do
            if dd if=/dev/zero of=/tmp/dirty bs=1M count="$dirty" conv=notrunc 2>/dev/null; then
                d=$((d+1))
                echo "$d" > /www/dirty.new
                mv /www/dirty.new /www/dirty
            fi
            [ "$every" = 0 ] || sleep "$every"
        done
    ) &
fi
echo "pft test guest up: ip=$ip dirty_mb=$dirty"
exec sh -c 'while :; do sleep 3600; done'
EOF
chmod 755 "$work/init"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initrd.img.new"
mv "$dir/initrd.img.new" "$dir/initrd.img"
cp "/boot/vmlinuz-$kver" "$dir/vmlinuz"
echo "built $dir/vmlinuz $dir/initrd.img for $kver"
