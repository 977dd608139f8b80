package boot

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"
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

func gzipNoErr(b []byte) []byte { out, _ := gzipGo(b); return out }

// FuzzUnpack feeds bzImages and bare payloads to the unpacker: any input
// must give an ELF or an error, within the output limit, and never panic.
func FuzzUnpack(f *testing.F) {
	for _, p := range fuzzPayloads(f) {
		f.Add(p)
		f.Add(makeBzImage(p))
		f.Add(p[:len(p)/2])
	}
	f.Add(makeBzImage(gzipNoErr([]byte("not an ELF"))))
	f.Add([]byte("\x7fELF"))
	f.Add([]byte{})
	mem := make([]byte, 4<<20)
	f.Fuzz(func(t *testing.T, img []byte) {
		DetectKernel(img)
		if elf, h, err := UnpackBzImage(img, fuzzLimit); err == nil {
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
	f.Add(tinyKernel())
	f.Add(makeELF(0x200000, testSeg{paddr: 0x200000, vaddr: 0x200000, data: []byte{0xf4}}))
	f.Add(makeELF(kernelVirtBase+0x300000,
		testSeg{paddr: 0x300000, vaddr: kernelVirtBase + 0x300000, data: codeLike(64, 1)},
		testSeg{paddr: 0x380000, vaddr: 0, data: []byte("percpu"), memsz: 0x1000}))
	f.Add(tinyKernel()[:100])
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	const memSize = 4 << 20
	mem, zero := make([]byte, memSize), make([]byte, memSize)
	f.Fuzz(func(t *testing.T, elf []byte) {
		clear(mem)
		k, err := LoadELF(mem, elf)
		if err != nil {
			// bytes.Equal rather than a loop: fuzzing instruments loops.
			if !bytes.Equal(mem, zero) {
				t.Fatalf("failed load (%v) wrote to memory", err)
			}
			return
		}
		if k.Start < HighMemStart || k.Start >= k.End || k.End > memSize || k.Entry < k.Start || k.Entry >= k.End {
			t.Fatalf("implausible kernel %+v", *k)
		}
	})
}
