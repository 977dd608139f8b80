package boot

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// lzmaTestData are inputs that take every path of the decoder: code
// (literals, matches, the BCJ filter's calls), random bytes (LZMA2's
// uncompressed chunks), long runs (matches that overlap what they write)
// and more than one LZMA2 chunk's 2 MiB.
func lzmaTestData() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 200<<10)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	var mixed []byte
	for i := 0; len(mixed) < 3<<20; i++ {
		mixed = append(mixed, codeLike(50<<10, uint64(i))...)
		mixed = append(mixed, random[:r.IntN(20<<10)]...)
		mixed = append(mixed, bytes.Repeat([]byte{byte(i)}, r.IntN(5000))...)
	}
	return map[string][]byte{
		"empty":  {},
		"byte":   {42},
		"code":   codeLike(300<<10, 7),
		"random": random,
		"runs":   bytes.Repeat([]byte("abcabcabd"), 100<<10),
		"mixed":  mixed,
	}
}

// TestLZMAEncoders decodes what the xz tools (every lc/lp/pb corner, tiny
// dictionaries, small blocks) and a Go encoder (each .lzma header and
// end-marker combination) make, against the input: .xz through
// Decompress, .lzma with unlzma (Decompress knows .lzma only by the
// properties and dictionary the kernel build uses, as the kernel does).
func TestLZMAEncoders(t *testing.T) {
	goLZMA := func(sized, marker bool) func(t *testing.T, raw []byte) ([]byte, bool) {
		return func(t *testing.T, raw []byte) ([]byte, bool) {
			if len(raw) == 0 && sized && !marker {
				// ulikunitz/xz writes an unknown size for it (and then
				// needs the marker it was told to leave out). What the
				// LZMA SDK writes: the header, size 0, and the range
				// coder's flush of nothing, five zero bytes.
				hdr := []byte{0x5d, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
				return withTrailer(append(hdr, 0, 0, 0, 0, 0), 0), true
			}
			var b bytes.Buffer
			w, err := lzma.WriterConfig{DictCap: 64 << 10, SizeInHeader: sized, Size: int64(len(raw)), EOSMarker: marker}.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(raw)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return withTrailer(b.Bytes(), len(raw)), true
		}
	}
	encoders := []compressor{
		{"go lzma, size unknown, end marker", LZMA, goLZMA(false, true)},
		{"go lzma, sized, no end marker", LZMA, goLZMA(true, false)},
		{"go lzma, sized, end marker", LZMA, goLZMA(true, true)},
		{"xz lc=4 lp=0 pb=0", XZ, cli("xz", "-c", "--lzma2=preset=6,lc=4,lp=0,pb=0")},
		{"xz lc=0 lp=4 pb=4", XZ, cli("xz", "-c", "--lzma2=preset=6,lc=0,lp=4,pb=4")},
		{"xz lc=1 lp=3 pb=2 4KiB dictionary", XZ, cli("xz", "-c", "--lzma2=dict=4KiB,lc=1,lp=3,pb=2")},
		{"xz -9e small blocks", XZ, cli("xz", "-c", "-9e", "--block-size=100000")},
		{"xz --x86 -0", XZ, cli("xz", "-c", "--x86", "--lzma2=preset=0")},
		{"lzma lc=4 lp=0 pb=4", LZMA, cli("xz", "-c", "--format=lzma", "--lzma1=preset=6,lc=4,lp=0,pb=4")},
		{"lzma lc=0 lp=4 pb=0 4KiB dictionary", LZMA, cli("xz", "-c", "--format=lzma", "--lzma1=dict=4KiB,lc=0,lp=4,pb=0")},
	}
	data := lzmaTestData()
	for _, e := range encoders {
		for name, raw := range data {
			t.Run(e.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				payload, ok := e.run(t, raw)
				if !ok {
					t.Skipf("%s not installed", strings.Fields(e.name)[0])
				}
				var out []byte
				var err error
				if e.want == LZMA {
					b := newBoundedBuffer(0, len(raw))
					err = unlzma(b, payload[:len(payload)-4])
					out = b.buf
				} else {
					out, err = Decompress(payload, 0)
				}
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if !bytes.Equal(out, raw) {
					t.Fatalf("decoded %d bytes unlike the %d-byte input", len(out), len(raw))
				}
			})
		}
	}
}

// TestLZMABadStreams: a stream cut anywhere, or with its declared size
// one off either way, fails with an error, never a panic or a wrong
// output taken for right.
func TestLZMABadStreams(t *testing.T) {
	raw := codeLike(20<<10, 3)
	var b bytes.Buffer
	w, err := lzma.WriterConfig{DictCap: 64 << 10, SizeInHeader: true, Size: int64(len(raw)), EOSMarker: true}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	w.Close()
	stream := b.Bytes()
	for cut := 0; cut < len(stream); cut += 1 + cut/8 {
		if out, err := Decompress(withTrailer(stream[:cut], len(raw)), 0); err == nil {
			t.Fatalf("cut to %d of %d bytes: decoded %d bytes, no error", cut, len(stream), len(out))
		}
	}
	for _, size := range []int{len(raw) - 1, len(raw) + 1} {
		s := bytes.Clone(stream)
		binary.LittleEndian.PutUint64(s[5:], uint64(size))
		if _, err := Decompress(withTrailer(s, size), 0); err == nil {
			t.Errorf("header size %d for %d bytes of data: no error", size, len(raw))
		}
	}
	x, _ := xzGo(0x01)(raw)
	for cut := 0; cut < len(x); cut += 1 + cut/8 {
		if out, err := Decompress(withTrailer(x[:cut], len(raw)), 0); err == nil {
			t.Fatalf("xz cut to %d of %d bytes: decoded %d bytes, no error", cut, len(x), len(out))
		}
	}
}

// TestLZMA2Chunks covers chunk rules no encoder breaks: the first chunk
// must reset the dictionary, a state reset needs properties after a
// dictionary reset, a control byte may not be 3-0x7f, a chunk's
// compressed data must end where its header says.
func TestLZMA2Chunks(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byte
		want string // "" for success
	}{
		{"end only", []byte{0}, ""},
		{"uncompressed chunk with dictionary reset", []byte{1, 0, 2, 'a', 'b', 'c', 0}, ""},
		{"uncompressed chunk without dictionary reset first", []byte{2, 0, 2, 'a', 'b', 'c', 0}, "reset the dictionary"},
		{"bad control byte", []byte{1, 0, 0, 'a', 3}, "control byte"},
		{"LZMA chunk without properties after a reset", []byte{1, 0, 0, 'a', 0xa0, 0, 0, 0, 4, 0, 0, 0, 0, 0}, "without properties"},
		{"lc 5 lp 0: lc+lp over 4", []byte{0xe0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0}, "over 4"},
		{"no end byte", []byte{1, 0, 0, 'a'}, "no end"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := newBoundedBuffer(0, 1<<20)
			_, err := unlzma2(out, c.in, 1<<20)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v, want success", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// FuzzLZMA checks the decoder two ways. Round trip: data compressed by
// another encoder (ulikunitz/xz; properties and header from the input)
// decodes to itself. Robustness: the input itself, as a .lzma stream and
// as LZMA2 chunks, decodes or fails within the output limit, never
// panics.
func FuzzLZMA(f *testing.F) {
	// Garbage decodes to the limit before it fails: a small one keeps
	// executions (and the minimization of inputs) fast.
	const fuzzLZMALimit = 64 << 10
	for _, seed := range [][]byte{{}, {0, 'a'}, codeLike(2000, 5), bytes.Repeat([]byte{0x5d, 1, 2}, 300)} {
		f.Add(byte(0x5d), seed)
	}
	f.Add(byte(0), []byte{0xe0, 0, 0, 0, 4, 0x5d, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, opts byte, data []byte) {
		props := lzma.Properties{LC: int(opts % 5), LP: int(opts / 5 % 5), PB: int(opts / 25 % 5)}
		if props.LC+props.LP <= 4 {
			var b bytes.Buffer
			sized, marker := opts&0x40 != 0 || len(data) == 0, opts&0x80 != 0 || len(data) == 0
			w, err := lzma.WriterConfig{Properties: &props, DictCap: 4096, SizeInHeader: sized, Size: int64(len(data)), EOSMarker: marker}.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			out := newBoundedBuffer(0, len(data))
			if err := unlzma(out, b.Bytes()); err != nil || !bytes.Equal(out.buf, data) {
				t.Fatalf("round trip of %d bytes (%+v, sized %v, marker %v): %v, equal %v", len(data), props, sized, marker, err, bytes.Equal(out.buf, data))
			}
		}
		for _, decode := range []func(*boundedBuffer) error{
			func(out *boundedBuffer) error { return unlzma(out, data) },
			func(out *boundedBuffer) error { _, err := unlzma2(out, data, uint64(opts)<<12); return err },
		} {
			out := newBoundedBuffer(0, fuzzLZMALimit)
			if decode(out) == nil && len(out.buf) > fuzzLZMALimit {
				t.Fatalf("decoded %d bytes, over the limit", len(out.buf))
			}
		}
	})
}
