package boot

import (
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression is a bzImage payload's compression format.
type Compression int

const (
	UnknownCompression Compression = iota
	Gzip
	XZ
	Zstd
	LZ4
	Bzip2
	LZMA
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case XZ:
		return "xz"
	case Zstd:
		return "zstd"
	case LZ4:
		return "lz4"
	case Bzip2:
		return "bzip2"
	case LZMA:
		return "lzma"
	}
	return "unknown"
}

// MaxDecompressed caps a payload's decompressed size whatever limit a caller
// passes: no kernel comes near it, and it bounds what a hostile image can make
// us allocate.
const MaxDecompressed = 1 << 30

var magics = []struct {
	magic string
	c     Compression
}{
	{"\x1f\x8b", Gzip},
	{"\xfd7zXZ\x00", XZ},
	{"\x28\xb5\x2f\xfd", Zstd},
	{"\x02\x21\x4c\x18", LZ4},
	{"BZh", Bzip2},
	{"\x5d\x00\x00", LZMA},
}

// DetectCompression names a payload's compression by its magic number, as
// the kernel's own decompressor selection does.
func DetectCompression(payload []byte) (Compression, error) {
	for _, m := range magics {
		if bytes.HasPrefix(payload, []byte(m.magic)) {
			return m.c, nil
		}
	}
	if bytes.HasPrefix(payload, []byte("\x89LZO")) {
		return UnknownCompression, errors.New("lzo payloads are not supported")
	}
	n := min(len(payload), 6)
	return UnknownCompression, fmt.Errorf("unknown payload compression (magic % x)", payload[:n])
}

// DecompressLimit is the output bound Decompress applies for a given limit:
// limit itself when 0 < limit <= MaxDecompressed, otherwise MaxDecompressed.
func DecompressLimit(limit int) int {
	if limit <= 0 || limit > MaxDecompressed {
		return MaxDecompressed
	}
	return limit
}

// Decompress inflates a Linux kernel payload to at most limit bytes (see
// DecompressLimit). The kernel build appends the uncompressed size as a
// 4-byte little-endian trailer to every format (gzip's own ISIZE field plays
// that part): it sizes the output up front and must match what comes out.
func Decompress(payload []byte, limit int) ([]byte, error) {
	return decompress(payload, limit, nil)
}

// An OutputAlloc returns n zeroed bytes for decompressed output, from
// memory the caller owns (a fresh mapping it unmaps once the kernel is
// loaded, say). n is the size the payload declares, checked against the
// limit, plus one byte to see a byte too many.
type OutputAlloc func(n int) ([]byte, error)

// decompress is Decompress with the output from alloc, or, if alloc is
// nil, from the Go heap.
func decompress(payload []byte, limit int, alloc OutputAlloc) ([]byte, error) {
	c, err := DetectCompression(payload)
	if err != nil {
		return nil, err
	}
	limit = DecompressLimit(limit)
	if len(payload) < 8 {
		return nil, fmt.Errorf("%v payload of %d bytes is truncated", c, len(payload))
	}
	size := uint64(le.Uint32(payload[len(payload)-4:]))
	if size > uint64(limit) {
		return nil, fmt.Errorf("%v payload claims %d bytes uncompressed, over the limit of %d", c, size, limit)
	}
	stream := payload[:len(payload)-4]
	if c == Gzip {
		stream = payload
	}
	// The output must match the trailer, so it bounds decoding: a bomb behind
	// a small trailer stops early. Being untrusted, the trailer is grown
	// towards rather than allocated up front beyond what the compressed data
	// could plausibly produce; memory from alloc is taken whole, since a
	// mapping's untouched pages cost nothing.
	var out *boundedBuffer
	if alloc != nil {
		buf, err := alloc(int(size) + 1)
		if err != nil {
			return nil, fmt.Errorf("%v: output of %d bytes: %w", c, size, err)
		}
		if len(buf) < int(size)+1 {
			return nil, fmt.Errorf("%v: output of %d bytes: allocated only %d", c, size, len(buf))
		}
		out = &boundedBuffer{buf: buf[: 0 : size+1], limit: int(size)}
	} else {
		out = newBoundedBuffer(int(min(size, uint64(len(stream))*8+64<<10)), int(size))
	}
	switch c {
	case Gzip:
		err = gunzip(out, stream)
	case XZ:
		err = unxz(out, stream)
	case Zstd:
		err = unzstd(out, stream, limit)
	case LZ4:
		err = unlz4(out, stream)
	case Bzip2:
		_, err = out.ReadFrom(bzip2.NewReader(bytes.NewReader(stream)))
	case LZMA:
		err = unlzma(out, stream)
	}
	if err != nil {
		return nil, fmt.Errorf("%v: %w", c, err)
	}
	if uint64(len(out.buf)) != size {
		return nil, fmt.Errorf("%v: decompressed %d bytes, the size trailer says %d", c, len(out.buf), size)
	}
	return out.buf, nil
}

// errTooLarge is what a boundedBuffer returns past its limit.
type errTooLarge int

func (e errTooLarge) Error() string {
	return fmt.Sprintf("decompressed data exceeds its declared size of %d bytes", int(e))
}

// boundedBuffer collects decompressed output and refuses to grow past limit,
// so a decompression bomb costs at most limit bytes.
type boundedBuffer struct {
	buf   []byte
	limit int
}

func newBoundedBuffer(hint, limit int) *boundedBuffer {
	return &boundedBuffer{buf: make([]byte, 0, min(hint, limit)+1), limit: limit}
}

// grow makes room for at least n more bytes, within limit+1 so that one byte
// too many is still seen.
func (b *boundedBuffer) grow(n int) {
	if cap(b.buf)-len(b.buf) >= n {
		return
	}
	want := min(max(2*cap(b.buf), len(b.buf)+n, 64<<10), b.limit+1)
	nb := make([]byte, len(b.buf), want)
	copy(nb, b.buf)
	b.buf = nb
}

// ReadFrom reads r to EOF straight into the buffer's spare capacity.
func (b *boundedBuffer) ReadFrom(r io.Reader) (int64, error) {
	start, idle := len(b.buf), 0
	for {
		if len(b.buf) > b.limit {
			return int64(len(b.buf) - start), errTooLarge(b.limit)
		}
		b.grow(1)
		n, err := r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if err == io.EOF {
			if len(b.buf) > b.limit {
				return int64(len(b.buf) - start), errTooLarge(b.limit)
			}
			return int64(len(b.buf) - start), nil
		}
		if err != nil {
			return int64(len(b.buf) - start), err
		}
		if idle++; n > 0 {
			idle = 0
		} else if idle > 100 {
			return int64(len(b.buf) - start), io.ErrNoProgress
		}
	}
}

func gunzip(out *boundedBuffer, stream []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		return err
	}
	defer zr.Close()
	_, err = out.ReadFrom(zr)
	return err
}

// unzstd decodes in one shot into out's buffer: DecodeAll uses the output as
// its history, so a frame's window costs no allocation of its own. The
// decoder refuses a window larger than its memory limit, though, and
// "zstd --ultra -22" on a pipe, as the kernel build runs it, declares a
// 128 MiB window whatever the kernel's size. So the decoder's limit is
// raised to the first frame's window within the caller's limit, and the
// trailer is enforced on the result.
func unzstd(out *boundedBuffer, stream []byte, limit int) error {
	var h zstd.Header
	if err := h.Decode(stream); err != nil {
		return err
	}
	mem := uint64(max(out.limit, 1))
	if !h.SingleSegment && h.WindowSize > mem {
		if h.WindowSize > uint64(limit) {
			return fmt.Errorf("frame window of %d bytes exceeds the limit of %d", h.WindowSize, limit)
		}
		mem = h.WindowSize
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(mem))
	if err != nil {
		return err
	}
	defer d.Close()
	res, err := d.DecodeAll(stream, out.buf[:0])
	if err != nil {
		return err
	}
	if len(res) > out.limit {
		return errTooLarge(out.limit)
	}
	out.buf = res
	return nil
}

// lz4 legacy framing (lz4 -l, what Linux uses): a magic, then blocks each
// preceded by its compressed size, each inflating to at most 8 MiB.
const (
	lz4LegacyMagic = 0x184c2102
	lz4LegacyBlock = 8 << 20
)

func unlz4(out *boundedBuffer, stream []byte) error {
	pos := 0
	for pos < len(stream) {
		if len(stream)-pos < 4 {
			return fmt.Errorf("truncated block header at offset %d", pos)
		}
		n := uint64(le.Uint32(stream[pos:]))
		pos += 4
		if n == lz4LegacyMagic { // concatenated legacy frames
			continue
		}
		if n > uint64(lz4.CompressBlockBound(lz4LegacyBlock)) || n > uint64(len(stream)-pos) {
			return fmt.Errorf("block at offset %d: size %d out of range", pos-4, n)
		}
		room := min(lz4LegacyBlock, out.limit-len(out.buf))
		out.grow(room)
		k, err := lz4.UncompressBlock(stream[pos:pos+int(n)], out.buf[len(out.buf):len(out.buf)+room])
		if err != nil {
			if room < lz4LegacyBlock {
				return fmt.Errorf("block at offset %d: %w (or output over the %d bytes of the size trailer)", pos-4, err, out.limit)
			}
			return fmt.Errorf("block at offset %d: %w", pos-4, err)
		}
		out.buf = out.buf[:len(out.buf)+k]
		pos += int(n)
	}
	return nil
}
