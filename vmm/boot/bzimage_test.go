package boot

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

func TestDetectKernel(t *testing.T) {
	bz := makeBzImage(withTrailer([]byte("garbage"), 7))
	tests := []struct {
		name string
		img  []byte
		want KernelFormat
	}{
		{"ELF", tinyKernel(), ELF},
		{"bzImage", bz, BzImage},
		{"empty", nil, UnknownKernel},
		{"ELF magic only", []byte("\x7fELF"), ELF}, // LoadELF rejects it later
		{"no boot flag", append(bytes.Clone(bz[:0x1fe]), 0, 0, 0xeb, 0x6a, 'H', 'd', 'r', 'S'), UnknownKernel},
		{"text", bytes.Repeat([]byte("#!/bin/sh\n"), 100), UnknownKernel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DetectKernel(tt.img)
			if got != tt.want || (err != nil) != (tt.want == UnknownKernel) {
				t.Fatalf("DetectKernel = %v, %v; want %v", got, err, tt.want)
			}
			if err != nil && err.Error() != "not a Linux kernel (no ELF or bzImage header)" {
				t.Errorf("error %q", err)
			}
		})
	}
}

// TestRealBzImage unpacks the guest's bzImage and checks that it loads the
// same bytes at the same addresses, with the same entry, as its vmlinux.
func TestRealBzImage(t *testing.T) {
	bz := readReal(t, realBzImage)
	vmlinux := readReal(t, realVmlinux)
	for path, want := range map[string]KernelFormat{realBzImage: BzImage, realVmlinux: ELF} {
		img := bz
		if want == ELF {
			img = vmlinux
		}
		if got, err := DetectKernel(img); got != want || err != nil {
			t.Errorf("DetectKernel(%s) = %v, %v; want %v", path, got, err, want)
		}
	}

	h, err := ParseSetupHeader(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("setup header: version %#x, setup %d bytes, loadflags %#x, xloadflags %#x, cmdline_size %d, initrd_addr_max %#x, payload %d bytes at %#x, init_size %#x, pref_address %#x, kernel_alignment %#x",
		h.Version, h.SetupSize, h.LoadFlags, h.XLoadFlags, h.CmdlineSize, h.InitrdAddrMax, h.PayloadLength, h.PayloadOffset, h.InitSize, h.PrefAddress, h.KernelAlignment)
	switch {
	case h.Version < 0x020c:
		t.Errorf("version %#x < 0x20c", h.Version)
	case h.XLoadFlags&XLFKernel64 == 0:
		t.Errorf("XLF_KERNEL_64 clear")
	case h.LoadFlags&LoadedHigh == 0:
		t.Errorf("LOADED_HIGH clear")
	case h.CmdlineSize < 255 || h.InitrdAddrMax < 0x37ffffff || h.InitSize == 0 || h.KernelAlignment == 0:
		t.Errorf("implausible header %+v", h)
	case len(h.Raw) != 0x26c-0x1f1 || !bytes.Equal(h.Raw, bz[0x1f1:0x26c]):
		t.Errorf("Raw: %d bytes", len(h.Raw))
	}

	compressed, _, err := Payload(bz, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DetectCompression(compressed)
	t.Logf("payload compression: %v (%v), %d bytes", c, err, len(compressed))

	start := time.Now()
	elf, h2, err := UnpackBzImage(bz, 512<<20, nil)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UnpackBzImage: %d -> %d bytes in %v", len(bz), len(elf), elapsed)
	if h2.Version != h.Version {
		t.Errorf("header differs")
	}

	const memSize = 64 << 20 // the kernel loads at 16 MiB and ends below 32
	memA, memB := make([]byte, memSize), make([]byte, memSize)
	ka, err := LoadELF(memA, elf)
	if err != nil {
		t.Fatalf("LoadELF(unpacked): %v", err)
	}
	kb, err := LoadELF(memB, vmlinux)
	if err != nil {
		t.Fatalf("LoadELF(vmlinux): %v", err)
	}
	if *ka != *kb {
		t.Errorf("unpacked kernel %+v, vmlinux %+v", *ka, *kb)
	}
	if ka.Entry != binary.LittleEndian.Uint64(vmlinux[24:]) {
		t.Errorf("entry %#x, vmlinux e_entry %#x", ka.Entry, binary.LittleEndian.Uint64(vmlinux[24:]))
	}
	if !bytes.Equal(memA, memB) {
		t.Errorf("loaded bytes differ between the unpacked payload and vmlinux")
	}
	t.Logf("kernel: entry %#x, loaded %#x..%#x", ka.Entry, ka.Start, ka.End)

	// The kernel's own header fields reach the zero page; loader fields win.
	p := Params{Cmdline: "console=ttyS0 quiet", Initrd: initrdOf(make([]byte, 1<<20))}
	h.Apply(&p)
	addr, err := WriteBootParams(memA, ka, &p)
	if err != nil {
		t.Fatal(err)
	}
	zp := memA[ZeroPageAddr:]
	if binary.LittleEndian.Uint32(zp[0x260:]) != h.InitSize || binary.LittleEndian.Uint32(zp[0x238:]) != h.CmdlineSize ||
		zp[0x210] != 0xff || binary.LittleEndian.Uint32(zp[0x218:]) != uint32(addr) || addr < ka.End {
		t.Errorf("zero page header % x (initrd at %#x)", zp[0x1f1:0x26c], addr)
	}
}

func BenchmarkUnpackRealBzImage(b *testing.B) {
	bz := readReal(b, realBzImage)
	b.SetBytes(int64(len(bz)))
	for b.Loop() {
		if _, _, err := UnpackBzImage(bz, 512<<20, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func setU32(b []byte, off int, v uint32) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[off:], v)
	return b
}

func TestUnpackCorrupt(t *testing.T) {
	raw := tinyKernel()
	gz, _ := gzipGo(raw)
	good := makeBzImage(gz)
	if _, _, err := UnpackBzImage(good, 0, nil); err != nil {
		t.Fatalf("the unmodified image fails: %v", err)
	}
	notELF, _ := gzipGo([]byte("not an ELF at all"))
	old := bytes.Clone(good)
	binary.LittleEndian.PutUint16(old[offVersion:], 0x0205)
	noPayloadFields := bytes.Clone(good)
	binary.LittleEndian.PutUint16(noPayloadFields[offVersion:], 0x0207)
	no64 := bytes.Clone(good)
	binary.LittleEndian.PutUint16(no64[offXLoadFlags:], 0)
	hugeSetup := bytes.Clone(good)
	hugeSetup[offSetupSects] = 0xff
	badJump := bytes.Clone(good)
	badJump[offJump] = 0x90

	tests := []struct {
		name, want string
		img        []byte
	}{
		{"empty", "too short", nil},
		{"cut at 100", "too short", good[:100]},
		{"cut at 0x300", "truncated", good[:0x300]},
		{"cut in half", "beyond the end", good[:len(good)/2]},
		{"cut by one", "beyond the end", good[:len(good)-1]},
		{"payload_offset past the end", "beyond the end", setU32(good, offPayloadOffset, 1<<31)},
		{"payload_offset wraps", "beyond the end", setU32(setU32(good, offPayloadOffset, 0xffffffff), offPayloadLength, 0xffffffff)},
		{"payload_length 0", "payload_length is 0", setU32(good, offPayloadLength, 0)},
		{"payload_length short", "", setU32(good, offPayloadLength, 3)},
		{"garbage payload", "unknown payload compression", makeBzImage(bytes.Repeat([]byte{0xa5}, 4096))},
		{"gzip magic, garbage", "gzip", makeBzImage(append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"xz magic, garbage", "xz", makeBzImage(append([]byte("\xfd7zXZ\x00"), bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"zstd magic, garbage", "zstd", makeBzImage(append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"lz4 magic, garbage", "lz4", makeBzImage(append([]byte{0x02, 0x21, 0x4c, 0x18}, bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"bzip2 magic, garbage", "bzip2", makeBzImage(append([]byte("BZh9"), bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"lzma magic, garbage", "lzma", makeBzImage(append([]byte{0x5d, 0, 0, 0x80, 0}, bytes.Repeat([]byte{0xa5}, 4096)...))},
		{"payload not an ELF", "not an ELF", makeBzImage(notELF)},
		{"protocol 2.05", "older than", old},
		{"protocol 2.07", "no payload fields", noPayloadFields},
		{"32-bit kernel", "XLF_KERNEL_64", no64},
		{"setup_sects 255", "truncated", hugeSetup},
		{"bad jump", "jump", badJump},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			elf, h, err := UnpackBzImage(tt.img, 1<<20, nil)
			if err == nil {
				t.Fatalf("no error (elf %d bytes, header %+v)", len(elf), h)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestUnpackCorruptRealXZ(t *testing.T) {
	bz := readReal(t, realBzImage)
	h, err := ParseSetupHeader(bz)
	if err != nil {
		t.Fatal(err)
	}
	start := h.SetupSize + int(h.PayloadOffset)
	for _, at := range []int{0, 7, 12, 20, 1000, int(h.PayloadLength) / 2, int(h.PayloadLength) - 30, int(h.PayloadLength) - 6} {
		bad := bytes.Clone(bz)
		bad[start+at] ^= 0x01
		if _, _, err := UnpackBzImage(bad, 512<<20, nil); err == nil {
			t.Errorf("payload byte %d flipped: no error", at)
		}
	}
	// The payload cut short, with the header telling the truth about it.
	for _, n := range []uint32{100, h.PayloadLength / 2, h.PayloadLength - 5} {
		cut := bytes.Clone(bz[:start+int(n)])
		binary.LittleEndian.PutUint32(cut[offPayloadLength:], n)
		if _, _, err := UnpackBzImage(cut, 512<<20, nil); err == nil {
			t.Errorf("payload cut to %d bytes: no error", n)
		}
	}
}
