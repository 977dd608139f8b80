// Package guestsym turns guest kernel addresses into function names: it
// loads a kernel's symbol table from a System.map (or /proc/kallsyms)
// file or from the symbol table of an ELF vmlinux, keeps the code
// symbols sorted, and looks an address up as function+0xoff.
//
// The addresses are the link-time ones. A kernel that randomizes its base
// (KASLR) runs elsewhere, but only its bzImage decompressor moves it:
// govmm's default boot enters the unpacked ELF at its 64-bit entry and
// skips that code, so the guest runs at the addresses of its symbol table.
// (The shared test kernel is built without CONFIG_RELOCATABLE and could
// not move anyway.) A /proc/kallsyms copied out of a running guest
// carries the addresses it really runs at.
package guestsym
