package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// compressor produces a payload the way the kernel build does (trailer
// included); ok=false means the tool is missing.
type compressor struct {
	name string
	want Compression
	run  func(t *testing.T, raw []byte) (payload []byte, ok bool)
}

// cli runs a command-line compressor reading stdin, as the kernel build does.
func cli(args ...string) func(t *testing.T, raw []byte) ([]byte, bool) {
	return func(t *testing.T, raw []byte) ([]byte, bool) {
		if _, err := exec.LookPath(args[0]); err != nil {
			return nil, false
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if args[0] == "gzip" { // gzip's ISIZE is its own trailer
			return out, true
		}
		return withTrailer(out, len(raw)), true
	}
}

func goCompress(f func(raw []byte) ([]byte, error), trailer bool) func(t *testing.T, raw []byte) ([]byte, bool) {
	return func(t *testing.T, raw []byte) ([]byte, bool) {
		out, err := f(raw)
		if err != nil {
			t.Fatal(err)
		}
		if trailer {
			out = withTrailer(out, len(raw))
		}
		return out, true
	}
}

func gzipGo(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	w.Write(raw)
	err := w.Close()
	return b.Bytes(), err
}

func zstdGo(raw []byte) ([]byte, error) {
	e, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	return e.EncodeAll(raw, nil), nil
}

// lz4Legacy frames blocks like "lz4 -l": magic, then size-prefixed blocks.
func lz4Legacy(raw []byte) ([]byte, error) {
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for len(raw) > 0 {
		n := min(len(raw), lz4LegacyBlock)
		buf := make([]byte, lz4.CompressBlockBound(n))
		k, err := lz4.CompressBlock(raw[:n], buf, nil)
		if err != nil {
			return nil, err
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(k))
		out = append(out, buf[:k]...)
		raw = raw[n:]
	}
	return out, nil
}

func lzmaGo(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := lzma.WriterConfig{DictCap: 1 << 20, EOSMarker: true, SizeInHeader: false}.NewWriter(&b)
	if err != nil {
		return nil, err
	}
	w.Write(raw)
	err = w.Close()
	return b.Bytes(), err
}

func xzGo(check byte) func(raw []byte) ([]byte, error) {
	return func(raw []byte) ([]byte, error) {
		var b bytes.Buffer
		w, err := xz.WriterConfig{CheckSum: check, BlockSize: 64 << 10}.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		w.Write(raw)
		err = w.Close()
		return b.Bytes(), err
	}
}

var compressors = []compressor{
	{"gzip go", Gzip, goCompress(gzipGo, false)},
	{"gzip -9n", Gzip, cli("gzip", "-9n", "-c")},
	{"zstd go", Zstd, goCompress(zstdGo, true)},
	{"zstd -22 --ultra (pipe, 128 MiB window)", Zstd, cli("zstd", "-q", "-22", "--ultra", "-c")},
	{"lz4 legacy go", LZ4, goCompress(lz4Legacy, true)},
	{"lz4 -l -9", LZ4, cli("lz4", "-q", "-l", "-9", "-c")},
	{"lzma go", LZMA, goCompress(lzmaGo, true)},
	{"lzma -9", LZMA, cli("lzma", "-9", "-c")},
	{"bzip2 -9", Bzip2, cli("bzip2", "-9", "-c")},
	{"xz go crc32", XZ, goCompress(xzGo(xz.CRC32), true)},
	{"xz go crc64", XZ, goCompress(xzGo(xz.CRC64), true)},
	{"xz go sha256", XZ, goCompress(xzGo(xz.SHA256), true)},
	{"xz go none", XZ, goCompress(xzGo(xz.None), true)},
	// What the kernel build runs for an x86 bzImage (scripts/xz_wrap.sh).
	{"xz --x86 --lzma2 crc32", XZ, cli("xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c")},
	{"xz --x86 multi-block", XZ, cli("xz", "--check=crc64", "--x86", "--lzma2=dict=64KiB", "--block-size=50000", "-c")},
	{"xz --x86=start=4096", XZ, cli("xz", "--check=sha256", "--x86=start=4096", "--lzma2=preset=1", "-c")},
	{"xz --x86 --x86 (two BCJ filters)", XZ, cli("xz", "--check=crc32", "--x86", "--x86", "--lzma2=preset=1", "-c")},
}

// testKernelELF is an ELF big enough for multi-block and multi-chunk cases.
func testKernelELF() []byte {
	return makeELF(kernelVirtBase+0x200000,
		testSeg{paddr: 0x200000, vaddr: kernelVirtBase + 0x200000, data: codeLike(300<<10, 7), memsz: 400 << 10})
}

func TestDecompressFormats(t *testing.T) {
	raw := testKernelELF()
	for _, c := range compressors {
		t.Run(c.name, func(t *testing.T) {
			payload, ok := c.run(t, raw)
			if !ok {
				t.Skipf("%s not installed", strings.Fields(c.name)[0])
			}
			got, err := DetectCompression(payload)
			if err != nil || got != c.want {
				t.Fatalf("DetectCompression = %v, %v; want %v", got, err, c.want)
			}
			out, err := Decompress(payload, 0)
			if err != nil {
				t.Fatalf("Decompress: %v", err)
			}
			if !bytes.Equal(out, raw) {
				t.Fatalf("Decompress: %d bytes differ from the %d-byte original", len(out), len(raw))
			}
			elf, hdr, err := UnpackBzImage(makeBzImage(payload), 256<<20, nil)
			if err != nil || !bytes.Equal(elf, raw) || hdr.Version != 0x020f {
				t.Fatalf("UnpackBzImage: %v (equal=%v)", err, bytes.Equal(elf, raw))
			}
			// Into memory the caller gives: sized by the trailer, and
			// where the output lands.
			var given []byte
			elf, _, err = UnpackBzImage(makeBzImage(payload), 256<<20, func(n int) ([]byte, error) {
				given = make([]byte, n)
				return given, nil
			})
			if err != nil || !bytes.Equal(elf, raw) || len(given) != len(raw)+1 || &elf[0] != &given[0] {
				t.Fatalf("UnpackBzImage into given memory: %v (equal=%v, %d bytes given for %d)", err, bytes.Equal(elf, raw), len(given), len(raw))
			}
			// Output bounds: a limit below the size, and a trailer that lies.
			if _, err := Decompress(payload, len(raw)-1); err == nil {
				t.Errorf("limit %d below the size: no error", len(raw)-1)
			}
			lying := bytes.Clone(payload)
			binary.LittleEndian.PutUint32(lying[len(lying)-4:], uint32(len(raw)/2))
			if _, err := Decompress(lying, 0); err == nil {
				t.Errorf("size trailer halved: no error")
			}
			// Flipping any one byte must fail cleanly (or, for bytes that
			// carry no information, succeed with the same output).
			for _, at := range []int{len(payload) / 3, len(payload) / 2, len(payload) - 12} {
				bad := bytes.Clone(payload)
				bad[at] ^= 0x55
				if out, err := Decompress(bad, 0); err == nil && !bytes.Equal(out, raw) {
					t.Logf("byte %d flipped: decoded %d different bytes without error (format has no check)", at, len(out))
				}
			}
		})
	}
}

// TestDecompressAllocFails: memory the caller cannot give, or gives too
// little of, is an error, not a crash or a write past it.
func TestDecompressAllocFails(t *testing.T) {
	raw := testKernelELF()
	payload, err := gzipGo(raw)
	if err != nil {
		t.Fatal(err)
	}
	img := makeBzImage(payload)
	for name, alloc := range map[string]OutputAlloc{
		"refused":   func(n int) ([]byte, error) { return nil, errors.New("no memory") },
		"too short": func(n int) ([]byte, error) { return make([]byte, n-1), nil },
	} {
		if _, _, err := UnpackBzImage(img, 256<<20, alloc); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestDecompressBomb(t *testing.T) {
	zeros := make([]byte, 8<<20)
	payload, _ := zstdGo(zeros)
	small := withTrailer(payload, 1000)
	if _, err := Decompress(small, 0); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("zstd bomb behind a 1000-byte trailer: %v", err)
	}
	x, _ := xzGo(xz.CRC32)(zeros)
	if _, err := Decompress(withTrailer(x, 4096), 0); err == nil {
		t.Errorf("xz bomb behind a 4096-byte trailer: no error")
	}
	if _, err := Decompress(withTrailer(x, len(zeros)), 1<<20); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("xz bomb over the limit: %v", err)
	}
}

func TestDetectCompressionErrors(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("x"), []byte("\x89LZO\x00\r\n\x1a\n"), []byte("garbage!")} {
		if c, err := DetectCompression(in); err == nil {
			t.Errorf("DetectCompression(%q) = %v, want error", in, c)
		}
	}
}

func TestBCJRoundTripSmall(t *testing.T) {
	// Buffers of 0..5 bytes are left alone: a CALL needs 5 bytes.
	for n := 0; n <= 5; n++ {
		b := bytes.Repeat([]byte{0xe8}, n)
		c := bytes.Clone(b)
		bcjX86Decode(c, 0)
		if n <= 4 && !bytes.Equal(b, c) {
			t.Errorf("%d bytes changed", n)
		}
	}
}
