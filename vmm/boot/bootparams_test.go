package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// e820At reads the zero page's e820 table back.
func e820At(zp []byte) []E820Entry {
	var m []E820Entry
	for i := range int(zp[0x1e8]) {
		b := zp[0x2d0+20*i:]
		m = append(m, E820Entry{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint32(b[16:])})
	}
	return m
}

func bzParams(h *SetupHeader, p Params) Params {
	h.Apply(&p)
	return p
}

func TestWriteBootParams(t *testing.T) {
	const memSize = 64 << 20
	k := &Kernel{Entry: 0x1000000, Start: 0x1000000, End: 0x1a1c123}
	bzHdr, err := ParseSetupHeader(makeBzImage(withTrailer(nil, 0)))
	if err != nil {
		t.Fatal(err)
	}
	initrd := bytes.Repeat([]byte("initrd"), 100000) // 600000 bytes
	u32 := func(zp []byte, off int) uint32 { return binary.LittleEndian.Uint32(zp[off:]) }
	tests := []struct {
		name       string
		p          Params
		wantInitrd uint64
		version    uint16
		cmdSize    uint32
	}{
		{"ELF, no initrd", Params{Cmdline: "console=ttyS0 quiet", MemSize: memSize}, 0, 0x20f, 2047},
		{"ELF, initrd at the top", Params{Cmdline: "x", Initrd: initrdOf(initrd), MemSize: memSize}, (memSize - 600000) &^ 0xfff, 0x20f, 2047},
		{"ELF, MemSize from len(mem)", Params{Initrd: initrdOf(initrd)}, (memSize - 600000) &^ 0xfff, 0x20f, 2047},
		{"initrd below InitrdAddrMax", Params{Initrd: initrdOf(initrd), MemSize: memSize, InitrdAddrMax: 0x2ffffff}, (0x3000000 - 600000) &^ 0xfff, 0x20f, 2047},
		{"bzImage header", bzParams(bzHdr, Params{Cmdline: "root=/dev/vda", Initrd: initrdOf(initrd), MemSize: memSize}), (memSize - 600000) &^ 0xfff, 0x20f, 2047},
		{"ELF, smaller MemSize", Params{Initrd: initrdOf(initrd), MemSize: 32 << 20}, (32<<20 - 600000) &^ 0xfff, 0x20f, 2047},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := bytes.Repeat([]byte{0xcc}, memSize)
			addr, err := WriteBootParams(mem, k, &tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if addr != tt.wantInitrd {
				t.Errorf("initrd at %#x, want %#x", addr, tt.wantInitrd)
			}
			zp := mem[ZeroPageAddr : ZeroPageAddr+4096]
			checks := []struct {
				name      string
				got, want uint64
			}{
				{"boot_flag", uint64(binary.LittleEndian.Uint16(zp[0x1fe:])), 0xaa55},
				{"header", uint64(u32(zp, 0x202)), 0x53726448},
				{"version", uint64(binary.LittleEndian.Uint16(zp[0x206:])), uint64(tt.version)},
				{"type_of_loader", uint64(zp[0x210]), 0xff},
				{"loadflags", uint64(zp[0x211]), LoadedHigh},
				{"ramdisk_image", uint64(u32(zp, 0x218)), tt.wantInitrd},
				{"ramdisk_size", uint64(u32(zp, 0x21c)), initrdSize(tt.p.Initrd)},
				{"cmd_line_ptr", uint64(u32(zp, 0x228)), CmdlineAddr},
				{"cmdline_size", uint64(u32(zp, 0x238)), uint64(tt.cmdSize)},
				{"ext_ramdisk_image", uint64(u32(zp, 0x0c0)), 0},
				{"ext_ramdisk_size", uint64(u32(zp, 0x0c4)), 0},
				{"ext_cmd_line_ptr", uint64(u32(zp, 0x0c8)), 0},
				{"sentinel", uint64(zp[0x1ef]), 0},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
				}
			}
			if tt.p.Header != nil && !bytes.Equal(zp[0x1f1+0x11:0x1f1+0x1f], tt.p.Header[0x11:0x1f]) {
				t.Errorf("header fields before type_of_loader not copied")
			}
			size := tt.p.MemSize
			if size == 0 {
				size = memSize
			}
			if got, want := e820At(zp), E820Map(size); !reflect.DeepEqual(got, want) || len(got) != 3 {
				t.Errorf("e820 %+v, want %+v", got, want)
			}
			cmd := mem[CmdlineAddr : CmdlineAddr+len(tt.p.Cmdline)+1]
			if string(cmd) != tt.p.Cmdline+"\x00" {
				t.Errorf("command line %q", cmd)
			}
			if tt.p.Initrd != nil && !bytes.Equal(mem[addr:addr+uint64(len(initrd))], initrd) {
				t.Errorf("initrd not copied")
			}
		})
	}
}

func TestWriteBootParamsErrors(t *testing.T) {
	const memSize = 64 << 20
	k := &Kernel{Entry: 0x1000000, Start: 0x1000000, End: 0x1a1c000}
	long := strings.Repeat("a", 2048)
	tests := []struct {
		name, want string
		k          *Kernel
		p          Params
	}{
		{"initrd too large", "initrd (50331648 bytes) does not fit in guest memory", k, Params{Initrd: initrdOf(make([]byte, 48<<20))}},
		{"initrd over InitrdAddrMax", "does not fit", k, Params{Initrd: initrdOf(make([]byte, 8<<20)), InitrdAddrMax: 0x1ffffff}},
		{"initrd larger than memory", "does not fit", k, Params{Initrd: initrdOf(make([]byte, 1)), MemSize: 0x1a1c000}},
		{"initrd shorter than its size", "read initrd: unexpected EOF", k, Params{Initrd: io.NewSectionReader(bytes.NewReader(nil), 0, 4096)}},
		{"cmdline too long", "2048 bytes is longer than the kernel's limit of 2047", k, Params{Cmdline: long}},
		{"cmdline too long for a small limit", "of 300 bytes is longer than the kernel's limit of 255", k, Params{Cmdline: long[:300], CmdlineMax: 256}},
		{"cmdline longer than low memory", "does not fit below the MP table", k, Params{Cmdline: strings.Repeat("a", 1<<20), CmdlineMax: 1 << 30}},
		{"cmdline with NUL", "NUL", k, Params{Cmdline: "a\x00b"}},
		{"MemSize beyond mem", "exceeds", k, Params{MemSize: memSize + 1}},
		{"MemSize below 1 MiB", "no room", k, Params{MemSize: 0x80000}},
		{"kernel past MemSize", "no room", k, Params{MemSize: 16 << 20}},
		{"header too long", "longer than the zero page", k, Params{Header: make([]byte, 0x100)}},
		{"nil kernel", "nil", nil, Params{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := make([]byte, memSize)
			_, err := WriteBootParams(mem, tt.k, &tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
			if !allZero(mem) {
				t.Errorf("a failed call wrote to guest memory")
			}
		})
	}
}

func TestE820Map(t *testing.T) {
	const M, G = 1 << 20, 1 << 30
	low := []E820Entry{{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}}
	tests := []struct {
		size    uint64
		e820    []E820Entry
		regions []Region
	}{
		{512 * M, append(low[:2:2], E820Entry{M, 511 * M, E820RAM}), []Region{{0, 512 * M, 0}}},
		{3 * G, append(low[:2:2], E820Entry{M, 3*G - M, E820RAM}), []Region{{0, 3 * G, 0}}},
		// Below 3.5 GiB all RAM stays below the hole, as in QEMU's pc machine.
		{3*G + 4096, append(low[:2:2], E820Entry{M, 3*G + 4096 - M, E820RAM}), []Region{{0, 3*G + 4096, 0}}},
		{3300 * M, append(low[:2:2], E820Entry{M, 3299 * M, E820RAM}), []Region{{0, 3300 * M, 0}}},
		{3584*M - 4096, append(low[:2:2], E820Entry{M, 3583*M - 4096, E820RAM}), []Region{{0, 3584*M - 4096, 0}}},
		// From 3.5 GiB on the split is at 3 GiB.
		{3584 * M, append(low[:2:2], E820Entry{M, 3*G - M, E820RAM}, E820Entry{4 * G, 512 * M, E820RAM}),
			[]Region{{0, 3 * G, 0}, {4 * G, 512 * M, 3 * G}}},
		{4 * G, append(low[:2:2], E820Entry{M, 3*G - M, E820RAM}, E820Entry{4 * G, G, E820RAM}),
			[]Region{{0, 3 * G, 0}, {4 * G, G, 3 * G}}},
		{8 * G, append(low[:2:2], E820Entry{M, 3*G - M, E820RAM}, E820Entry{4 * G, 5 * G, E820RAM}),
			[]Region{{0, 3 * G, 0}, {4 * G, 5 * G, 3 * G}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#x", tt.size), func(t *testing.T) {
			if got := E820Map(tt.size); !reflect.DeepEqual(got, tt.e820) {
				t.Errorf("E820Map = %+v, want %+v", got, tt.e820)
			}
			if got := RAMRegions(tt.size); !reflect.DeepEqual(got, tt.regions) {
				t.Errorf("RAMRegions = %+v, want %+v", got, tt.regions)
			}
		})
	}
}

// TestLowRAMTop checks the split at its boundaries against QEMU's pc
// machine (pc_init1: lowmem 0xe0000000, cut to 0xc0000000 when ram_size >=
// 0xe0000000; below_4g_mem_size is lowmem when ram_size >= lowmem, else
// ram_size).
func TestLowRAMTop(t *testing.T) {
	const K, M, G = 1 << 10, 1 << 20, 1 << 30
	tests := []struct{ size, want uint64 }{
		{512 * M, 512 * M},
		{3 * G, 3 * G},
		{3*G + 4*K, 3*G + 4*K},
		{3300 * M, 3300 * M},
		{3584*M - 4*K, 3584*M - 4*K},
		{3584 * M, 3 * G},
		{4 * G, 3 * G},
		{8 * G, 3 * G},
		{1 << 40, 3 * G},
	}
	for _, tt := range tests {
		if got := LowRAMTop(tt.size); got != tt.want {
			t.Errorf("LowRAMTop(%#x) = %#x, want %#x", tt.size, got, tt.want)
		}
	}
}

// TestE820RegionsAgree checks, over sizes around every boundary, that the
// e820 map lists as RAM exactly the bytes RAMRegions maps (but the reserved
// EBDA/BIOS area below 1 MiB), that the slots hold all of RAM in order, and
// that nothing is RAM between LowRAMTop and 4 GiB, where the PCI hole is.
func TestE820RegionsAgree(t *testing.T) {
	const K, M, G = 1 << 10, 1 << 20, 1 << 30
	var sizes []uint64
	for _, b := range []uint64{2 * M, 3 * G, 3584 * M, 4 * G, 8 * G} {
		sizes = append(sizes, b-4*K, b, b+4*K)
	}
	sizes = append(sizes, 3300*M, 3*G+512*M+4*K, 1<<40)
	for _, size := range sizes {
		regions := RAMRegions(size)
		low := LowRAMTop(size)
		var off uint64
		for i, r := range regions {
			if r.Offset != off || r.Size == 0 {
				t.Errorf("%#x: region %d %+v does not follow at offset %#x", size, i, r, off)
			}
			off += r.Size
			if r.GuestAddr < PCIHoleEnd && r.GuestAddr+r.Size > low {
				t.Errorf("%#x: region %d %+v reaches past the top of low RAM %#x", size, i, r, low)
			}
		}
		if off != size || regions[0].Size != low {
			t.Errorf("%#x: regions %+v, want %#x bytes, %#x of them low", size, regions, size, low)
		}
		inRegion := func(a, n uint64) bool {
			for _, r := range regions {
				if a >= r.GuestAddr && a+n <= r.GuestAddr+r.Size {
					return true
				}
			}
			return false
		}
		var ram uint64
		for _, e := range E820Map(size) {
			if e.Type != E820RAM {
				continue
			}
			ram += e.Size
			if !inRegion(e.Addr, e.Size) {
				t.Errorf("%#x: e820 RAM %#x+%#x not backed by a region %+v", size, e.Addr, e.Size, regions)
			}
		}
		if want := size - (HighMemStart - EBDAStart); ram != want {
			t.Errorf("%#x: e820 lists %#x bytes of RAM, want %#x", size, ram, want)
		}
	}
}

// TestWriteBootParamsAbove3G checks that with RAM past the PCI hole the
// initrd still lands below the hole, where mem index == guest address,
// whether mem is all of RAM or (as govmm passes it) only the part below the
// hole; and that a guest of less than 3.5 GiB, all of it low, gets its
// initrd at the top of RAM, above 3 GiB.
func TestWriteBootParamsAbove3G(t *testing.T) {
	const size = 4 << 30
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		t.Skipf("cannot reserve 4 GiB of address space: %v", err)
	}
	defer syscall.Munmap(mem)
	for _, m := range [][]byte{mem, mem[:LowRAMSplit]} {
		k := &Kernel{Entry: 0x1000000, Start: 0x1000000, End: 0x2000000}
		addr, err := WriteBootParams(m, k, &Params{Initrd: initrdOf(make([]byte, 3*4096+1)), MemSize: size})
		if err != nil {
			t.Fatalf("%#x bytes of mem: %v", len(m), err)
		}
		if want := uint64(LowRAMSplit - 4*4096); addr != want {
			t.Errorf("%#x bytes of mem: initrd at %#x, want %#x", len(m), addr, want)
		}
		zp := m[ZeroPageAddr:]
		if got := e820At(zp); !reflect.DeepEqual(got, E820Map(size)) || got[3].Addr != PCIHoleEnd || got[3].Size != 1<<30 {
			t.Errorf("%#x bytes of mem: e820 %+v", len(m), got)
		}
	}
	// Less than the RAM below the hole is still refused.
	if _, err := WriteBootParams(mem[:LowRAMSplit-4096], &Kernel{End: 0x2000000}, &Params{MemSize: size}); err == nil {
		t.Error("WriteBootParams accepted mem shorter than RAM below the hole")
	}

	const small = 3300 << 20 // below 3.5 GiB: one piece, no hole under it
	k := &Kernel{Entry: 0x1000000, Start: 0x1000000, End: 0x2000000}
	addr, err := WriteBootParams(mem[:small], k, &Params{Initrd: initrdOf(make([]byte, 3*4096+1)), MemSize: small})
	if err != nil {
		t.Fatalf("--mem 3300M: %v", err)
	}
	if want := uint64(small - 4*4096); addr != want {
		t.Errorf("--mem 3300M: initrd at %#x, want %#x", addr, want)
	}
	if got := e820At(mem[ZeroPageAddr:]); !reflect.DeepEqual(got, E820Map(small)) || len(got) != 3 {
		t.Errorf("--mem 3300M: e820 %+v", got)
	}
	if _, err := WriteBootParams(mem[:small-4096], k, &Params{MemSize: small}); err == nil {
		t.Error("WriteBootParams accepted mem shorter than the 3300M of low RAM")
	}
}
