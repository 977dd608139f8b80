#!/bin/sh
# Collects kernel modules, with everything they depend on, for an initramfs
# whose /init loads them with busybox insmod: insmod resolves nothing
# itself, and the build host has no kmod/depmod, so dependencies come from
# each module's own .modinfo section ("depends=" line).
#
#   modules.sh MODDIR OUTDIR MODULE...
#
# MODDIR is an unpacked lib/modules/<version>. Each MODULE (a module name;
# dashes and underscores are the same) and, recursively, each module on its
# depends= line is written to OUTDIR/<name>.ko, decompressed: busybox insmod
# may not read .ko.xz or .ko.zst. The file names are printed in load order,
# every module after its dependencies. A MODULE listed in modules.builtin is
# skipped (it is part of the kernel). Soft dependencies (softdep=) are not
# followed: they name aliases, which only depmod resolves, so list their
# providers among the MODULEs (ext4 wants crc32c_generic).
set -eu

if [ $# -lt 3 ]; then
	echo "usage: $0 MODDIR OUTDIR MODULE..." >&2
	exit 2
fi
moddir=$1 out=$2
shift 2
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "name<tab>path" for every module file. Module names hold no dashes: the
# kernel build turns a file name's dashes into underscores (virtio-rng.ko is
# module virtio_rng), and depends= uses module names.
find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' |
	awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko(\.xz|\.zst)?$/, "", n);
	       gsub(/-/, "_", n); print n "\t" $0 }' >"$tmp/index"
[ -s "$tmp/index" ] || { echo "$0: no modules under $moddir/kernel" >&2; exit 1; }

builtin() {
	[ -f "$moddir/modules.builtin" ] &&
		sed 's|.*/||; s|\.ko$||; s|-|_|g' "$moddir/modules.builtin" | grep -qx "$1"
}

depends() {
	objcopy -O binary --only-section=.modinfo "$1" "$tmp/modinfo"
	tr '\0' '\n' <"$tmp/modinfo" | sed -n 's/^depends=//p' | tr , ' '
}

# Depth-first, printing a module once all its dependencies are printed.
# "active" holds the modules on the current path, to report a cycle rather
# than recurse for ever. (local: dash, bash and busybox sh all have it.)
done=' ' active=' '
visit() {
	local name path deps dep
	name=$1
	case $done in *" $name "*) return 0 ;; esac
	case $active in *" $name "*)
		echo "$0: dependency cycle through $name" >&2; exit 1 ;;
	esac
	path=$(awk -F '\t' -v n="$name" '$1 == n { print $2; exit }' "$tmp/index")
	if [ -z "$path" ]; then
		echo "$0: module $name not found under $moddir/kernel" >&2
		exit 1
	fi
	active="$active$name "
	case $path in
	*.xz) xz -dc "$path" >"$out/$name.ko" ;;
	*.zst) zstd -qdc "$path" >"$out/$name.ko" ;;
	*) cp "$path" "$out/$name.ko" ;;
	esac
	deps=$(depends "$out/$name.ko")
	for dep in $deps; do
		visit "$dep"
	done
	done="$done$name "
	echo "$name.ko"
}

for module; do
	module=$(printf '%s\n' "$module" | tr - _)
	if builtin "$module"; then
		echo "$0: $module is built into the kernel: skipped" >&2
		continue
	fi
	visit "$module"
done
