#!/bin/bash
# The kernel-build workload on the host, from the same tree and config as
# in the guest: loop-mounts a kbuild image (guests/out/kbuild.img, built by
# build-rootfs.sh) and runs its /kbuild.sh chrooted into it, as the guest's
# /run.sh does. The build writes into the image: pass a copy to keep the
# original pristine (the benchmark does).
#
#   guests/kbuild/host-run.sh IMAGE
#
# KBUILD_FULL, KBUILD_TARGETS and KBUILD_JOBS pass through (kbuild.sh).
# Needs root (mount, chroot).
set -euo pipefail

die() {
	echo "kbuild host-run: $*" >&2
	exit 1
}
[ $# = 1 ] || die "usage: $0 IMAGE"
IMAGE=$1
[ -f "$IMAGE" ] || die "$IMAGE not found: build it with make -C guests kbuild"
[ "$(id -u)" = 0 ] || die "needs root (loop mount and chroot)"

DIR=$(mktemp -d /tmp/kbuild-host.XXXXXX)
cleanup() {
	local m
	for m in $(awk -v root="$DIR" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	rmdir "$DIR"
}
trap cleanup EXIT

mount -o loop "$IMAGE" "$DIR"
[ -x "$DIR/kbuild.sh" ] || die "$IMAGE has no /kbuild.sh: not a kbuild image"
mount -t proc proc "$DIR/proc"
mount -t sysfs sysfs "$DIR/sys"
mount --bind /dev "$DIR/dev"
env=(KBUILD_FULL="${KBUILD_FULL:-0}")
[ -n "${KBUILD_TARGETS:-}" ] && env+=(KBUILD_TARGETS="$KBUILD_TARGETS")
[ -n "${KBUILD_JOBS:-}" ] && env+=(KBUILD_JOBS="$KBUILD_JOBS")
chroot "$DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C "${env[@]}" /kbuild.sh
