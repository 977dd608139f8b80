package boot

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestLoadELF(t *testing.T) {
	text := codeLike(0x3000, 3)
	data := []byte("data segment")
	tests := []struct {
		name  string
		elf   []byte
		entry uint64
		start uint64
		end   uint64
	}{
		{"virtual entry (vmlinux style)", tinyKernel(), 0x200010, 0x200000, 0x202000},
		{"physical entry", makeELF(0x200000, testSeg{paddr: 0x200000, vaddr: 0x200000, data: text}), 0x200000, 0x200000, 0x203000},
		{"two segments, bss", makeELF(kernelVirtBase+0x1000000,
			testSeg{paddr: 0x1000000, vaddr: kernelVirtBase + 0x1000000, data: text},
			testSeg{paddr: 0x1400000, vaddr: 0, data: data, memsz: 0x10000}), 0x1000000, 0x1000000, 0x1410000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := bytes.Repeat([]byte{0xcc}, 32<<20) // garbage where bss goes
			k, err := LoadELF(mem, tt.elf)
			if err != nil {
				t.Fatal(err)
			}
			if k.Entry != tt.entry || k.Start != tt.start || k.End != tt.end {
				t.Errorf("got %+v, want entry %#x, %#x..%#x", *k, tt.entry, tt.start, tt.end)
			}
			// Every PT_LOAD: file bytes at p_paddr, then zeros to p_memsz.
			phnum := int(binary.LittleEndian.Uint16(tt.elf[56:]))
			for i := range phnum {
				ph := tt.elf[elfHeaderSize+i*elfPhdrSize:]
				off, paddr := binary.LittleEndian.Uint64(ph[8:]), binary.LittleEndian.Uint64(ph[24:])
				filesz, memsz := binary.LittleEndian.Uint64(ph[32:]), binary.LittleEndian.Uint64(ph[40:])
				if !bytes.Equal(mem[paddr:paddr+filesz], tt.elf[off:off+filesz]) {
					t.Errorf("segment %d: contents differ", i)
				}
				if !allZero(mem[paddr+filesz : paddr+memsz]) {
					t.Errorf("segment %d: bss not zeroed", i)
				}
			}
			if mem[tt.end] != 0xcc || mem[tt.start-1] != 0xcc {
				t.Errorf("wrote outside the segments")
			}
		})
	}
}

func TestLoadELFCorrupt(t *testing.T) {
	good := tinyKernel()
	set := func(off int, v uint64, size int) []byte {
		b := bytes.Clone(good)
		switch size {
		case 1:
			b[off] = byte(v)
		case 2:
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		case 8:
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	const ph = elfHeaderSize // the first program header
	noLoad := set(ph, 4, 1)  // PT_NOTE
	tests := []struct {
		name, want string
		elf        []byte
		memSize    int
	}{
		{"empty", "too short", nil, 0},
		{"header only", "beyond the end", good[:elfHeaderSize], 0},
		{"cut in the segment", "beyond the end", good[:len(good)-1], 0},
		{"32-bit", "ELFCLASS64", set(4, 1, 1), 0},
		{"big endian", "little-endian", set(5, 2, 1), 0},
		{"aarch64", "not x86-64", set(18, 183, 2), 0},
		{"relocatable object", "not an executable", set(16, 1, 2), 0},
		{"phoff past the end", "beyond the end", set(32, 1<<40, 8), 0},
		{"phoff wraps", "beyond the end", set(32, ^uint64(0)-10, 8), 0},
		{"phnum huge", "beyond the end", set(56, 0xffff, 2), 0},
		{"phentsize small", "entry size", set(54, 8, 2), 0},
		{"no PT_LOAD", "no loadable segment", noLoad, 0},
		{"p_offset past the end", "beyond the end", set(ph+8, 1<<40, 8), 0},
		{"p_offset wraps", "beyond the end", set(ph+8, ^uint64(0), 8), 0},
		{"filesz > memsz", "exceeds memory size", set(ph+40, 16, 8), 0},
		{"segment beyond memory", "beyond guest memory", set(ph+24, 0x3ff000, 8), 4 << 20},
		{"paddr wraps", "beyond guest memory", set(ph+24, ^uint64(0)-0x100, 8), 0},
		{"memsz huge", "beyond guest memory", set(ph+40, 1<<62, 8), 0},
		{"paddr in low memory", "below", set(ph+24, 0x7000, 8), 0},
		{"entry outside", "entry point", set(24, kernelVirtBase+0x10000000, 8), 0},
		{"physical entry outside", "entry point", set(24, 0x100, 8), 0},
		{"mem too small", "beyond guest memory", good, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.memSize
			if size == 0 {
				size = 8 << 20
			}
			mem := make([]byte, size)
			k, err := LoadELF(mem, tt.elf)
			if err == nil {
				t.Fatalf("no error: %+v", *k)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !allZero(mem) {
				t.Errorf("a failed load wrote to guest memory")
			}
		})
	}
}
