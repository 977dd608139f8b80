package boot

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/govmm/govmm/internal/testenv"
)

const fuzzLimit = 1 << 20

// fuzzPayloads are small valid payloads of every format (trailer included).
func fuzzPayloads(f *testing.F) [][]byte {
	raw := tinyKernel()
	var out [][]byte
	add := func(b []byte, err error, trailer bool) {
		if err != nil {
			f.Fatal(err)
		}
		if trailer {
			b = withTrailer(b, len(raw))
		}
		out = append(out, b)
	}
	b, err := gzipGo(raw)
	add(b, err, false) // ISIZE is gzip's own trailer
	b, err = zstdGo(raw)
	add(b, err, true)
	b, err = lz4Legacy(raw)
	add(b, err, true)
	b, err = lzmaGo(raw)
	add(b, err, true)
	b, err = xzGo(xz.CRC32)(raw)
	add(b, err, true)
	for _, args := range [][]string{{"xz", "--check=crc32", "--x86", "--lzma2=preset=0", "-c"}, {"bzip2", "-c"}} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = bytes.NewReader(raw)
		if b, err := cmd.Output(); err == nil {
			out = append(out, withTrailer(b, len(raw)))
		}
	}
	return out
}

// fuzzMem is guest memory for the targets that check that a failed call
// wrote nothing. It remembers whether it is still all zeroes, so that an
// execution that wrote nothing (most of them) costs one scan of it and
// no clear.
type fuzzMem struct {
	b     []byte
	dirty bool // may hold non-zero bytes
}

// reset makes m all zeroes for the next execution.
func (m *fuzzMem) reset() {
	if m.dirty {
		clear(m.b)
		m.dirty = false
	}
}

// zero reports whether m is all zeroes; if not, it needs a reset.
func (m *fuzzMem) zero() bool {
	m.dirty = !zeroMem(m.b)
	return !m.dirty
}

var zeroChunk = make([]byte, 64<<10)

// zeroMem reports whether b is all zeroes, like allZero for megabytes:
// it compares a chunk at a time with a buffer that stays in cache,
// rather than byte by byte (fuzzing instruments every loop iteration)
// or with a second copy of memory.
func zeroMem(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroChunk))
		if !bytes.Equal(b[:n], zeroChunk[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func gzipNoErr(b []byte) []byte { out, _ := gzipGo(b); return out }

// FuzzUnpack feeds bzImages and bare payloads to the unpacker: any input
// must give an ELF or an error, within the output limit, and never panic.
func FuzzUnpack(f *testing.F) {
	for i, p := range fuzzPayloads(f) {
		testenv.AddSeed(f, fmt.Sprint("payload-", i), p)
		testenv.AddSeed(f, fmt.Sprint("bzimage-", i), makeBzImage(p))
		testenv.AddSeed(f, fmt.Sprint("truncated-", i), p[:len(p)/2])
	}
	testenv.AddSeed(f, "not-elf", makeBzImage(gzipNoErr([]byte("not an ELF"))))
	testenv.AddSeed(f, "elf-magic", []byte("\x7fELF"))
	testenv.AddSeed(f, "empty", []byte{})
	mem := make([]byte, 4<<20)
	f.Fuzz(func(t *testing.T, img []byte) {
		DetectKernel(img)
		if elf, h, err := UnpackBzImage(img, fuzzLimit, nil); err == nil {
			if h == nil || len(elf) > fuzzLimit || !bytes.HasPrefix(elf, elfMagic) {
				t.Fatalf("accepted: header %v, %d bytes", h, len(elf))
			}
			LoadELF(mem, elf)
		}
		if out, err := Decompress(img, fuzzLimit); err == nil && len(out) > fuzzLimit {
			t.Fatalf("Decompress returned %d bytes, over the limit", len(out))
		}
	})
}

// FuzzLoadELF checks that LoadELF either loads within guest memory, with a
// kernel range and entry that make sense, or fails without writing.
func FuzzLoadELF(f *testing.F) {
	testenv.AddSeed(f, "tiny-kernel", tinyKernel())
	testenv.AddSeed(f, "one-segment", makeELF(0x200000, testSeg{paddr: 0x200000, vaddr: 0x200000, data: []byte{0xf4}}))
	testenv.AddSeed(f, "percpu", makeELF(kernelVirtBase+0x300000,
		testSeg{paddr: 0x300000, vaddr: kernelVirtBase + 0x300000, data: codeLike(64, 1)},
		testSeg{paddr: 0x380000, vaddr: 0, data: []byte("percpu"), memsz: 0x1000}))
	testenv.AddSeed(f, "truncated", tinyKernel()[:100])
	testenv.AddSeed(f, "ident-only", []byte("\x7fELF\x02\x01\x01"))
	const memSize = 4 << 20
	mem := &fuzzMem{b: make([]byte, memSize)}
	f.Fuzz(func(t *testing.T, elf []byte) {
		mem.reset()
		k, err := LoadELF(mem.b, elf)
		if err != nil {
			if !mem.zero() {
				t.Fatalf("failed load (%v) wrote to memory", err)
			}
			return
		}
		mem.dirty = true
		if k.Start < HighMemStart || k.Start >= k.End || k.End > memSize || k.Entry < k.Start || k.Entry >= k.End {
			t.Fatalf("implausible kernel %+v", *k)
		}
	})
}

// bootParamsInput encodes a FuzzBootParams input.
func bootParamsInput(memSize, kernelEnd, initrdSize, initrdMax uint32, cmdlineMax uint16, header []byte, cmdline string) []byte {
	b := le.AppendUint32(nil, memSize)
	b = le.AppendUint32(b, kernelEnd)
	b = le.AppendUint32(b, initrdSize)
	b = le.AppendUint32(b, initrdMax)
	b = le.AppendUint16(b, cmdlineMax)
	b = append(b, byte(len(header)))
	b = append(b, header...)
	return append(b, cmdline...)
}

// FuzzBootParams places an initrd and writes the command line and zero
// page for arbitrary kernel ends, sizes, limits and header bytes: either
// nothing is written and an error comes back, or the initrd lies page
// aligned in RAM above the kernel and below every limit, the kernel's
// bytes are untouched, and the zero page and command line say what was
// asked.
func FuzzBootParams(f *testing.F) {
	const memSize = 4 << 20
	hdr := makeBzImage([]byte("payload"))
	raw, err := ParseSetupHeader(hdr)
	if err != nil {
		f.Fatal(err)
	}
	for name, s := range map[string][]byte{
		"elf":          bootParamsInput(0, 2<<20, 64<<10, 0, 0, nil, "console=ttyS0 quiet"),
		"bzimage":      bootParamsInput(memSize, 0x180000, 100<<10, raw.InitrdAddrMax, uint16(raw.CmdlineSize+1), raw.Raw, "root=/dev/vda"),
		"full":         bootParamsInput(memSize, 0x200000, memSize-0x200000, 0, 0, nil, ""),
		"low-max":      bootParamsInput(memSize, 0x200000, 8192, 0x200fff, 0, nil, "x"),
		"long-cmdline": bootParamsInput(0, HighMemStart, 0, 0, 16, nil, "0123456789abcdef"),
	} {
		testenv.AddSeed(f, name, s)
	}
	initrd := make([]byte, memSize)
	for i := range initrd {
		initrd[i] = byte(i*13 + 1)
	}
	m := &fuzzMem{b: make([]byte, memSize)}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 19 || len(in) < 19+int(in[18]) {
			return
		}
		k := &Kernel{Start: HighMemStart, Entry: HighMemStart, End: uint64(le.Uint32(in[4:]))}
		p := &Params{
			MemSize:       uint64(le.Uint32(in[0:])),
			Initrd:        io.NewSectionReader(bytes.NewReader(initrd), 0, int64(le.Uint32(in[8:])%memSize)),
			InitrdAddrMax: uint64(le.Uint32(in[12:])),
			CmdlineMax:    int(le.Uint16(in[16:])),
			Header:        in[19 : 19+int(in[18])],
			Cmdline:       string(in[19+int(in[18]):]),
		}
		m.reset()
		mem := m.b
		addr, err := WriteBootParams(mem, k, p)
		if err != nil {
			if !m.zero() {
				t.Fatalf("failed (%v) after writing to memory", err)
			}
			return
		}
		m.dirty = true
		ram := p.MemSize
		if ram == 0 {
			ram = memSize
		}
		size := uint64(p.Initrd.Size())
		if size > 0 {
			limit := p.InitrdAddrMax
			if limit == 0 {
				limit = 1<<32 - 1
			}
			if addr%pageSize != 0 || addr < max(k.End, HighMemStart) || addr+size > ram || addr+size-1 > limit {
				t.Fatalf("initrd of %#x bytes at %#x: kernel ends at %#x, RAM %#x, limit %#x", size, addr, k.End, ram, limit)
			}
			if !bytes.Equal(mem[addr:addr+size], initrd[:size]) {
				t.Fatal("initrd contents differ")
			}
		} else if addr != 0 {
			t.Fatalf("no initrd, yet address %#x", addr)
		}
		if k.End > k.Start && k.Start < ram && !zeroMem(mem[k.Start:min(k.End, ram)]) {
			t.Fatal("boot parameters written over the kernel")
		}
		zp := mem[ZeroPageAddr:]
		if le.Uint32(zp[offRamdiskImage:]) != uint32(addr) || le.Uint32(zp[offRamdiskSize:]) != uint32(size) ||
			le.Uint16(zp[offBootFlag:]) != bootFlagMagic || le.Uint32(zp[offCmdLinePtr:]) != CmdlineAddr {
			t.Fatal("zero page does not describe the boot")
		}
		cmd := mem[CmdlineAddr:]
		if n := bytes.IndexByte(cmd, 0); n != len(p.Cmdline) || string(cmd[:n]) != p.Cmdline {
			t.Fatalf("command line %q, want %q", cmd[:max(n, 0)], p.Cmdline)
		}
		var last uint64
		for i := range int(zp[offE820Entries]) {
			e := zp[offE820Table+i*e820EntrySize:]
			a, n := le.Uint64(e), le.Uint64(e[8:])
			if a < last || n == 0 || (le.Uint32(e[16:]) == E820RAM && a+n > ram) {
				t.Fatalf("e820 entry %d: %#x+%#x (RAM %#x)", i, a, n, ram)
			}
			last = a + n
		}
	})
}
