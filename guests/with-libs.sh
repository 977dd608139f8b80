#!/bin/sh
# with-libs.sh ROOT PROGRAM...: copies each dynamically linked PROGRAM into
# ROOT/usr/bin and every shared library it loads (ldd's closure, with the
# program interpreter) under the same path in ROOT, so Debian's own builds
# of fio and iperf3 run in the busybox initramfs unchanged.
set -eu
root=$1
shift
for prog in "$@"; do
	path=$(command -v "$prog") || {
		echo "with-libs.sh: $prog not found: apt-get install $prog" >&2
		exit 1
	}
	mkdir -p "$root/usr/bin"
	install -m 0755 "$path" "$root/usr/bin/$prog"
	# ldd prints "name => /path (addr)" for libraries and "/path (addr)"
	# for the interpreter; a "not found" library fails the build here
	# rather than at run time in the guest.
	if ldd "$path" | grep -q 'not found'; then
		echo "with-libs.sh: $path has unresolved libraries:" >&2
		ldd "$path" | grep 'not found' >&2
		exit 1
	fi
	ldd "$path" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
	while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		# The file the link names, under the link's own name.
		cp -L "$lib" "$root$lib"
	done
done
