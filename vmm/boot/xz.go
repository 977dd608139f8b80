package boot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
)

// The .xz container, as the kernel build makes it for x86 ("xz --x86
// --lzma2": a BCJ filter ahead of LZMA2). The LZMA2 chunks are decoded by
// lzma.go, the BCJ step is undone below. Format:
// tukaani.org/xz/xz-file-format.txt.

const (
	xzStreamHeaderLen = 12
	xzStreamFooterLen = 12
	xzFilterBCJX86    = 0x04
	xzFilterLZMA2     = 0x21
)

var (
	xzMagic       = []byte("\xfd7zXZ\x00")
	xzFooterMagic = []byte("YZ")
)

// xzRecord is what the index must say about each block.
type xzRecord struct{ unpadded, uncompressed uint64 }

// unxz decodes one xz stream (the kernel's decompressor takes no more than
// one) into out.
func unxz(out *boundedBuffer, in []byte) error {
	if len(in) < xzStreamHeaderLen+xzStreamFooterLen {
		return errors.New("truncated stream")
	}
	if !bytes.Equal(in[:6], xzMagic) {
		return errors.New("bad stream magic")
	}
	flags := in[6:8]
	if crc32.ChecksumIEEE(flags) != le.Uint32(in[8:]) {
		return errors.New("stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1]&0xf0 != 0 {
		return fmt.Errorf("unsupported stream flags % x", flags)
	}
	check := flags[1]
	if _, err := xzCheckSize(check); err != nil {
		return err
	}
	pos := xzStreamHeaderLen
	var records []xzRecord
	for {
		if pos >= len(in) {
			return errors.New("truncated stream: no index")
		}
		if in[pos] == 0 { // index indicator
			break
		}
		rec, n, err := xzBlock(out, in[pos:], check)
		if err != nil {
			return fmt.Errorf("block at offset %d: %w", pos, err)
		}
		records = append(records, rec)
		pos += n
	}
	indexLen, err := xzIndex(in[pos:], records)
	if err != nil {
		return fmt.Errorf("index at offset %d: %w", pos, err)
	}
	pos += indexLen
	if len(in)-pos < xzStreamFooterLen {
		return errors.New("truncated stream footer")
	}
	f := in[pos : pos+xzStreamFooterLen]
	switch {
	case crc32.ChecksumIEEE(f[4:10]) != le.Uint32(f):
		return errors.New("stream footer CRC mismatch")
	case !bytes.Equal(f[10:], xzFooterMagic) || !bytes.Equal(f[8:10], flags):
		return errors.New("bad stream footer")
	case (uint64(le.Uint32(f[4:]))+1)*4 != uint64(indexLen):
		return errors.New("stream footer's backward size does not match the index")
	}
	pos += xzStreamFooterLen
	// Stream padding may follow; another stream may not.
	if len(in[pos:])%4 != 0 || !allZero(in[pos:]) {
		return fmt.Errorf("%d bytes of trailing data after the xz stream", len(in)-pos)
	}
	return nil
}

func xzCheckSize(check byte) (int, error) {
	switch check {
	case 0x00:
		return 0, nil
	case 0x01:
		return 4, nil // CRC32
	case 0x04:
		return 8, nil // CRC64
	case 0x0a:
		return sha256.Size, nil
	}
	return 0, fmt.Errorf("unsupported integrity check type %#x", check)
}

// xzBlock decodes the block at the start of b, appends its data to out and
// returns the block's index record and its length in b.
func xzBlock(out *boundedBuffer, b []byte, check byte) (xzRecord, int, error) {
	var rec xzRecord
	hlen := (int(b[0]) + 1) * 4
	if hlen > len(b) {
		return rec, 0, errors.New("truncated block header")
	}
	hdr := b[:hlen-4]
	if crc32.ChecksumIEEE(hdr) != le.Uint32(b[hlen-4:]) {
		return rec, 0, errors.New("block header CRC mismatch")
	}
	flags := hdr[1]
	if flags&0x3c != 0 {
		return rec, 0, fmt.Errorf("unsupported block flags %#x", flags)
	}
	p := 2
	compSize, uncompSize := int64(-1), int64(-1)
	for _, f := range []struct {
		bit byte
		v   *int64
	}{{0x40, &compSize}, {0x80, &uncompSize}} {
		if flags&f.bit == 0 {
			continue
		}
		v, n, err := xzVarint(hdr[p:])
		if err != nil || v > 1<<62 {
			return rec, 0, errors.New("bad size in block header")
		}
		*f.v = int64(v)
		p += n
	}
	nfilters := int(flags&3) + 1
	var bcjStart []uint32 // start offsets of the BCJ filters, in chain order
	var dict uint64
	for i := 0; i < nfilters; i++ {
		id, n, err := xzVarint(hdr[p:])
		if err != nil {
			return rec, 0, fmt.Errorf("filter %d: bad id", i)
		}
		p += n
		psize, n, err := xzVarint(hdr[p:])
		if err != nil || psize > uint64(len(hdr)-p-n) {
			return rec, 0, fmt.Errorf("filter %d: bad properties size", i)
		}
		p += n
		props := hdr[p : p+int(psize)]
		p += int(psize)
		last := i == nfilters-1
		switch {
		case last && id == xzFilterLZMA2 && len(props) == 1:
			dict, err = lzma2DictSize(props[0])
			if err != nil {
				return rec, 0, err
			}
		case !last && id == xzFilterBCJX86 && len(props) == 0:
			bcjStart = append(bcjStart, 0)
		case !last && id == xzFilterBCJX86 && len(props) == 4:
			bcjStart = append(bcjStart, le.Uint32(props))
		default:
			return rec, 0, fmt.Errorf("unsupported filter chain: filter %#x (%d property bytes) at position %d of %d", id, len(props), i+1, nfilters)
		}
	}
	if !allZero(hdr[p:]) {
		return rec, 0, errors.New("non-zero block header padding")
	}

	data := b[hlen:]
	if compSize >= 0 {
		if compSize == 0 || compSize > int64(len(data)) {
			return rec, 0, fmt.Errorf("compressed size %d out of range", compSize)
		}
		data = data[:compSize]
	}
	start, limit := len(out.buf), out.limit
	if uncompSize >= 0 && uncompSize < int64(out.limit-start) {
		out.limit = start + int(uncompSize) // refuse more than declared
	}
	used, err := unlzma2(out, data, dict)
	out.limit = limit
	if err != nil {
		return rec, 0, fmt.Errorf("lzma2: %w", err)
	}
	block := out.buf[start:]
	if compSize >= 0 && int64(used) != compSize {
		return rec, 0, fmt.Errorf("LZMA2 data ends after %d bytes, the header says %d", used, compSize)
	}
	if uncompSize >= 0 && int64(len(block)) != uncompSize {
		return rec, 0, fmt.Errorf("decoded %d bytes, the header says %d", len(block), uncompSize)
	}
	for i := len(bcjStart) - 1; i >= 0; i-- {
		bcjX86Decode(block, bcjStart[i])
	}

	n := hlen + used
	pad := (4 - n%4) % 4
	csize, _ := xzCheckSize(check)
	if len(b)-n < pad+csize {
		return rec, 0, errors.New("truncated block padding or check")
	}
	if !allZero(b[n : n+pad]) {
		return rec, 0, errors.New("non-zero block padding")
	}
	if !xzCheckOK(check, block, b[n+pad:n+pad+csize]) {
		return rec, 0, errors.New("integrity check failed")
	}
	rec = xzRecord{unpadded: uint64(hlen + used + csize), uncompressed: uint64(len(block))}
	return rec, n + pad + csize, nil
}

func xzCheckOK(check byte, data, want []byte) bool {
	switch check {
	case 0x01:
		return crc32.ChecksumIEEE(data) == le.Uint32(want)
	case 0x04:
		// Made here, not at start-up: its 32 KiB of tables are for
		// unpacking an xz kernel, which most boots do not.
		return crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)) == le.Uint64(want)
	case 0x0a:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], want)
	}
	return true
}

// lzma2DictSize decodes the LZMA2 filter's one property byte.
func lzma2DictSize(p byte) (uint64, error) {
	if p > 40 {
		return 0, fmt.Errorf("bad LZMA2 dictionary size byte %#x", p)
	}
	if p == 40 {
		return 1<<32 - 1, nil
	}
	return uint64(2|p&1) << (p/2 + 11), nil
}

// xzIndex checks the index at the start of b against the decoded blocks and
// returns its length.
func xzIndex(b []byte, recs []xzRecord) (int, error) {
	p := 1 // index indicator
	n, k, err := xzVarint(b[p:])
	if err != nil {
		return 0, err
	}
	p += k
	if n != uint64(len(recs)) {
		return 0, fmt.Errorf("lists %d blocks, the stream has %d", n, len(recs))
	}
	for i, r := range recs {
		unpadded, k, err := xzVarint(b[p:])
		if err != nil {
			return 0, err
		}
		p += k
		uncompressed, k, err := xzVarint(b[p:])
		if err != nil {
			return 0, err
		}
		p += k
		if unpadded != r.unpadded || uncompressed != r.uncompressed {
			return 0, fmt.Errorf("record %d does not match its block", i)
		}
	}
	pad := (4 - p%4) % 4
	if len(b)-p < pad+4 {
		return 0, errors.New("truncated")
	}
	if !allZero(b[p : p+pad]) {
		return 0, errors.New("non-zero padding")
	}
	p += pad
	if crc32.ChecksumIEEE(b[:p]) != le.Uint32(b[p:]) {
		return 0, errors.New("CRC mismatch")
	}
	return p + 4, nil
}

// xzVarint decodes the xz multibyte integer at the start of b.
func xzVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < 9 && i < len(b); i++ {
		c := b[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, errors.New("non-minimal variable-length integer")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad variable-length integer")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// bcjX86Decode undoes the x86 branch/call/jump filter in place: the encoder
// turned the relative targets of E8/E9 (CALL/JMP rel32) into absolute ones so
// that LZMA finds more repeats; decoding subtracts the position again. This
// is xz-embedded's bcj_x86() run over a whole block at once, which gives the
// same result as streaming it, pos being the filter's start offset.
func bcjX86Decode(buf []byte, pos uint32) {
	maskAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	prevMask := uint32(0)
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		if d := i - prevPos; d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskBitNum[prevMask])]
				if !maskAllowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := le.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (pos + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := maskBitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		le.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
