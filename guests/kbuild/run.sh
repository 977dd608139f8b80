# Run by the test initramfs's /init (busybox sh) with the kbuild disk
# mounted on /mnt (govmm.mount): the timed kernel build, chrooted into the
# disk's Debian tree. /init powers the guest off afterwards.
# Kernel command line: kbuild.full builds vmlinux; kbuild.targets=A,B
# (commas for spaces) and kbuild.jobs=N as KBUILD_TARGETS and KBUILD_JOBS.
full=0 targets= jobs=
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case $arg in
	kbuild.full) full=1 ;;
	kbuild.targets=*) targets=$(echo "${arg#kbuild.targets=}" | tr , ' ') ;;
	kbuild.jobs=*) jobs=${arg#kbuild.jobs=} ;;
	esac
done

mount -t proc proc /mnt/proc
mount -t sysfs sysfs /mnt/sys
mount -t devtmpfs devtmpfs /mnt/dev
set -- KBUILD_FULL=$full
[ -n "$targets" ] && set -- "$@" "KBUILD_TARGETS=$targets"
[ -n "$jobs" ] && set -- "$@" "KBUILD_JOBS=$jobs"
chroot /mnt /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C "$@" /kbuild.sh
rc=$?
# /init unmounts /mnt next: these must go first.
umount /mnt/dev /mnt/sys /mnt/proc
exit $rc
