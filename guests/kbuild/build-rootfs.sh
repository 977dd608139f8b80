#!/bin/bash
# Builds the kernel-build guest's disk: an ext4 image holding a Debian
# root file system (debootstrap, minbase, plus the kernel's build tools and
# Debian's linux-source package), the kernel source unpacked at
# /usr/src/linux with a fixed config (x86_64 defconfig) and `make prepare`
# done,
# and the two scripts beside this one: /kbuild.sh (the timed build, run the
# same way on the host and in the guest) and /run.sh (what the test
# initramfs's /init runs from the disk with govmm.mount).
#
#   guests/kbuild/build-rootfs.sh [IMAGE]      default IMAGE: guests/out/kbuild.img
#
# Needs root (debootstrap, chroot, bind mounts) and the packages debootstrap,
# e2fsprogs and xz-utils. Packages come from this machine's apt sources:
# the first URI that serves $SUITE (override with MIRROR=URL). Downloaded
# .debs are kept in guests/out/kbuild/debs, so a rebuild fetches nothing.
# Environment: SUITE (bookworm), LINUX_SOURCE (linux-source-6.1),
# KCONFIG (defconfig; tinyconfig builds whole in ~80 s on a 2-core host),
# IMAGE_SIZE (8G, sparse), MIRROR.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${1:-$HERE/../out/kbuild.img}
IMAGE=$(realpath -m "$IMAGE")
WORK=$(dirname "$IMAGE")/kbuild
ROOT=$WORK/rootfs
CACHE=$WORK/debs
SUITE=${SUITE:-bookworm}
LINUX_SOURCE=${LINUX_SOURCE:-linux-source-6.1}
KCONFIG=${KCONFIG:-defconfig}
IMAGE_SIZE=${IMAGE_SIZE:-8G}
# libc6-dev and perl: gcc only recommends the one, and the kernel's build
# scripts need the other beyond minbase's perl-base.
PACKAGES=gcc,libc6-dev,make,bc,flex,bison,perl,libelf-dev,libssl-dev,xz-utils,$LINUX_SOURCE

die() {
	echo "build-rootfs: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and bind mounts): run it as root"
for tool in debootstrap mkfs.ext4 xz chroot mount; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install debootstrap e2fsprogs xz-utils"
done

# The first URI of this machine's apt sources that serves $SUITE, from
# one-line (sources.list) and deb822 (*.sources) files alike.
apt_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) { print $i; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" '
			function stanza() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
					split(uris, u, " "); print u[1]; exit
				}
				types = suites = uris = ""
			}
			/^[ \t]*$/ { stanza(); next }
			/^[ \t]*#/ { next }
			tolower($1) == "types:" { $1 = ""; types = $0 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "uris:" { $1 = ""; uris = $0 }
			END { stanza() }' "$f"
	done
}

MIRROR=${MIRROR:-$(apt_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "no deb source for suite $SUITE in /etc/apt/sources.list*: set MIRROR=URL"

# Every mount made below ROOT is undone on any exit: a mount left there
# would end up copied into the image by mkfs.ext4 -d, or block rm -rf.
unmount_all() {
	local m
	# Deepest first.
	for m in $(awk -v root="$ROOT" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
}
trap unmount_all EXIT

in_root() {
	chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C "$@"
}

start=$(date +%s)
echo ">> debootstrap $SUITE from $MIRROR into $ROOT"
unmount_all
rm -rf "$ROOT"
mkdir -p "$ROOT" "$CACHE"
if ! debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE" \
	"$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.out" 2>&1; then
	tail -n 20 "$WORK/debootstrap.out" >&2
	log=
	if [ -f "$ROOT/debootstrap/debootstrap.log" ]; then
		cp "$ROOT/debootstrap/debootstrap.log" "$WORK/"
		log="; log: $WORK/debootstrap.log"
	fi
	die "debootstrap $SUITE from $MIRROR failed (output: $WORK/debootstrap.out$log). Is the mirror reachable from here? MIRROR=URL picks another."
fi
# No package cache in the image: the .debs stay in $CACHE on the host.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

# Unpacked here, not in the guest, where every page fault traps.
tarball=$(ls "$ROOT"/usr/src/linux-source-*.tar.xz 2>/dev/null | head -n 1)
[ -n "$tarball" ] || die "$LINUX_SOURCE left no /usr/src/linux-source-*.tar.xz in the tree"
echo ">> unpacking $(basename "$tarball")"
tar -C "$ROOT/usr/src" -xf "$tarball"
src=${tarball%.tar.xz}
[ -d "$src" ] || die "$(basename "$tarball") did not unpack to $(basename "$src")"
mv "$src" "$ROOT/usr/src/linux"
rm -f "$tarball"

# The kernel's build wants /dev/null and /proc; both go before mkfs.
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
# ARCH=x86_64 for the config only: on x86 a plain tinyconfig (ARCH=x86,
# from uname) turns 64BIT off and makes an i386 kernel; once .config has
# 64BIT=y, every later make (ARCH=x86) keeps it, so the timed build runs
# plain make.
echo ">> make ARCH=x86_64 $KCONFIG, make prepare ($(in_root make -s -C /usr/src/linux kernelversion))"
in_root /bin/sh -c "cd /usr/src/linux && make -s ARCH=x86_64 $KCONFIG >/dev/null && make -s -j\$(nproc) prepare"
grep -qx 'CONFIG_64BIT=y' "$ROOT/usr/src/linux/.config" || die "$KCONFIG did not make a 64-bit config"
unmount_all

install -m 0755 "$HERE/kbuild.sh" "$ROOT/kbuild.sh"
install -m 0755 "$HERE/run.sh" "$ROOT/run.sh"
version=$(cat "$ROOT/usr/src/linux/include/config/kernel.release")
printf 'linux=%s config=%s suite=%s mirror=%s\n' "$version" "$KCONFIG" "$SUITE" "$MIRROR" >"$ROOT/kbuild.info"
cat "$ROOT/kbuild.info"

echo ">> mkfs.ext4 -d ($(du -sh "$ROOT" | cut -f1) of files) -> $IMAGE ($IMAGE_SIZE, sparse)"
rm -f "$IMAGE.tmp"
truncate -s "$IMAGE_SIZE" "$IMAGE.tmp"
mkfs.ext4 -q -F -L kbuild -d "$ROOT" "$IMAGE.tmp"
mv "$IMAGE.tmp" "$IMAGE"
rm -rf "$ROOT"
echo ">> $IMAGE: $(du -h --apparent-size "$IMAGE" | cut -f1) apparent, $(du -h "$IMAGE" | cut -f1) on disk, built in $(($(date +%s) - start)) s"
