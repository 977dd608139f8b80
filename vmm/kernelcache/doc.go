// Package kernelcache keeps the ELF kernels that govmm unpacks from
// bzImages, so that booting the same bzImage again reads its ELF from a
// file, as a vmlinux is read, instead of decompressing it (xz in Go takes
// longer than the guest's whole boot) into tens of MiB of heap.
//
// An entry is named by the SHA-256 of the whole bzImage, so a changed
// bzImage never finds an old entry. Entries are written under a temporary
// name and renamed into place, so a reader never sees half of one, and
// carry a CRC-32C of the ELF that is checked before the ELF is used: a torn
// or corrupted entry is a miss, not a broken guest.
//
// Trust: an entry is a kernel that govmm will run, so only the user
// running govmm may have written it. The cache directory (the one a
// symbolic link at its path leads to) and every entry must belong to the
// effective user and be writable by nobody else, the
// entry is opened without following symbolic links, and anything else is a
// miss. Whoever passes those checks can already replace the user's
// --kernel or the govmm binary itself; the checksum guards against
// accidents, not against that user.
package kernelcache
