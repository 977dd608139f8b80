// Package boot implements the guest side of the Linux x86-64 boot protocol,
// in the spirit of rust-vmm's linux-loader: it recognises a kernel image,
// unpacks a bzImage's compressed payload, copies the ELF vmlinux into guest
// memory and writes what a kernel entered at its 64-bit entry expects to find
// (zero page, command line, e820 map, identity page tables, GDT, MP table).
//
// Guest memory is a byte slice whose index is the guest physical address.
// Every kernel, initrd and header byte comes from a user-supplied file and is
// treated as hostile: a bad image is an error, never a panic, a hang or an
// unbounded allocation. Nothing here touches /dev/kvm.
package boot
