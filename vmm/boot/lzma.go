package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// An LZMA decoder for the two kernel payload formats that use it: the
// LZMA2 chunks of an xz block and the .lzma ("LZMA alone") stream. It
// decodes straight into the output buffer, which is its dictionary: a
// match copies from what the buffer already holds since the last
// dictionary reset. So a kernel costs one allocation, the output, where
// a streaming decoder keeps a dictionary of its own beside it (for the
// shared kernel 14 MiB more, and 800,000 small allocations from the
// reader it sat behind). The algorithm is the LZMA SDK's reference
// decoder (LzmaSpec.cpp); the LZMA2 chunk rules are xz-embedded's, the
// decoder the kernel itself runs.

const (
	lzmaStates       = 12
	lzmaPosBitsMax   = 4
	lzmaLenStates    = 4  // match lengths that pick a distance slot coder
	lzmaEndPosModel  = 14 // distance slots below this code their low bits with a model
	lzmaFullDistance = 128
	lzmaAlignBits    = 4
	lzmaMinMatch     = 2
	lzmaMaxMatch     = lzmaMinMatch + 16 + 255 // what lzmaLenCoder can code
	lzmaProbInit     = 1 << 10                 // probability 0.5 in 11 bits
	lzmaEndMarker    = 0xffffffff              // the distance of the end marker
	lzmaAloneHeader  = 13                      // properties, dictionary size, le64 size
	lzmaMinDict      = 4096
)

// rangeDecoder is LZMA's binary arithmetic decoder over in.
type rangeDecoder struct {
	in   []byte
	pos  int
	rng  uint32
	code uint32
}

// init starts decoding in, which begins with the encoder's 5-byte
// preamble: a zero byte and the first code.
func (rc *rangeDecoder) init(in []byte) error {
	if len(in) < 5 || in[0] != 0 {
		return errors.New("bad range coder preamble")
	}
	*rc = rangeDecoder{in: in, pos: 5, rng: 0xffffffff, code: binary.BigEndian.Uint32(in[1:])}
	return nil
}

// normalize keeps rng at 24 bits or more.
func (rc *rangeDecoder) normalize() {
	if rc.rng < 1<<24 {
		rc.shift()
	}
}

// shift shifts the next byte into the code. Past the end of in it shifts
// in zeros and counts on: overrun tells.
func (rc *rangeDecoder) shift() {
	var b byte
	if rc.pos < len(rc.in) {
		b = rc.in[rc.pos]
	}
	rc.pos++
	rc.rng <<= 8
	rc.code = rc.code<<8 | uint32(b)
}

// overrun reports whether decoding needed more than in holds.
func (rc *rangeDecoder) overrun() bool { return rc.pos > len(rc.in) }

// finished reports whether the stream ended cleanly: the encoder's flush
// leaves a zero code once the decoder is normalized.
func (rc *rangeDecoder) finished() bool {
	rc.normalize()
	return rc.code == 0 && !rc.overrun()
}

// bit decodes one bit with probability *p of a zero, and adapts *p.
func (rc *rangeDecoder) bit(p *uint16) uint32 {
	if rc.rng < 1<<24 {
		rc.shift()
	}
	prob := uint32(*p)
	bound := (rc.rng >> 11) * prob
	if rc.code < bound {
		rc.rng = bound
		*p = uint16(prob + (1<<11-prob)>>5)
		return 0
	}
	rc.rng -= bound
	rc.code -= bound
	*p = uint16(prob - prob>>5)
	return 1
}

// tree decodes a bits-bit number, most significant bit first, with the
// binary tree of probabilities probs (indexed from 1).
func (rc *rangeDecoder) tree(probs []uint16, bits uint) uint32 {
	m := uint32(1)
	for range bits {
		m = m<<1 | rc.bit(&probs[m])
	}
	return m - 1<<bits
}

// reverseTree is tree with the least significant bit first.
func (rc *rangeDecoder) reverseTree(probs []uint16, bits uint) uint32 {
	m, v := uint32(1), uint32(0)
	for i := range bits {
		b := rc.bit(&probs[m])
		m = m<<1 | b
		v |= b << i
	}
	return v
}

// direct decodes bits bits of probability one half.
func (rc *rangeDecoder) direct(bits uint) uint32 {
	var v uint32
	for range bits {
		rc.normalize()
		rc.rng >>= 1
		v <<= 1
		if rc.code >= rc.rng {
			rc.code -= rc.rng
			v |= 1
		}
	}
	return v
}

// lzmaLenCoder's probabilities code a match length minus lzmaMinMatch:
// 0-7 and 8-15 per position state, 16-271 shared.
type lzmaLenCoder struct {
	choice, choice2 uint16
	low, mid        [1 << lzmaPosBitsMax][1 << 3]uint16
	high            [1 << 8]uint16
}

func (l *lzmaLenCoder) decode(rc *rangeDecoder, posState uint32) uint32 {
	if rc.bit(&l.choice) == 0 {
		return rc.tree(l.low[posState][:], 3)
	}
	if rc.bit(&l.choice2) == 0 {
		return 8 + rc.tree(l.mid[posState][:], 3)
	}
	return 16 + rc.tree(l.high[:], 8)
}

// lzmaProbs are every adaptive probability but the literals'.
type lzmaProbs struct {
	isMatch    [lzmaStates << lzmaPosBitsMax]uint16
	isRep      [lzmaStates]uint16
	isRepG0    [lzmaStates]uint16
	isRepG1    [lzmaStates]uint16
	isRepG2    [lzmaStates]uint16
	isRep0Long [lzmaStates << lzmaPosBitsMax]uint16
	distSlot   [lzmaLenStates][1 << 6]uint16
	distLow    [1 + lzmaFullDistance - lzmaEndPosModel]uint16
	align      [1 << lzmaAlignBits]uint16
	matchLen   lzmaLenCoder
	repLen     lzmaLenCoder
}

// reset sets every probability to one half.
func (p *lzmaProbs) reset() {
	for _, s := range [][]uint16{p.isMatch[:], p.isRep[:], p.isRepG0[:], p.isRepG1[:], p.isRepG2[:],
		p.isRep0Long[:], p.distLow[:], p.align[:]} {
		resetProbs(s)
	}
	for i := range p.distSlot {
		resetProbs(p.distSlot[i][:])
	}
	for _, l := range []*lzmaLenCoder{&p.matchLen, &p.repLen} {
		l.choice, l.choice2 = lzmaProbInit, lzmaProbInit
		for i := range l.low {
			resetProbs(l.low[i][:])
			resetProbs(l.mid[i][:])
		}
		resetProbs(l.high[:])
	}
}

func resetProbs(s []uint16) {
	for i := range s {
		s[i] = lzmaProbInit
	}
}

// The state after a literal, a match, a match at a recent distance ("rep")
// and a one-byte one ("short rep"), from the state before: the last few
// kinds of item, which the probabilities are chosen by.
var (
	lzmaAfterLiteral  = [lzmaStates]uint32{0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 4, 5}
	lzmaAfterMatch    = [lzmaStates]uint32{7, 7, 7, 7, 7, 7, 7, 10, 10, 10, 10, 10}
	lzmaAfterRep      = [lzmaStates]uint32{8, 8, 8, 8, 8, 8, 8, 11, 11, 11, 11, 11}
	lzmaAfterShortRep = [lzmaStates]uint32{9, 9, 9, 9, 9, 9, 9, 11, 11, 11, 11, 11}
)

// lzmaDecoder is the state of one LZMA stream, kept across LZMA2 chunks.
type lzmaDecoder struct {
	rc         rangeDecoder
	probs      lzmaProbs
	literal    []uint16 // 0x300 per literal context
	lc, lp, pb uint
	state      uint32
	rep        [4]uint32 // the last four distances, minus one
	dict       uint64    // how far back a match may reach (the stream's dictionary size)
	dictStart  int       // output offset of the last dictionary reset
}

// setProps takes the properties byte (pb * 5 + lp) * 9 + lc. lc + lp
// may be at most 4: LZMA2's rule, which liblzma (the kernel build's
// encoder) applies to .lzma as well; it bounds the literal
// probabilities to 24 KiB.
func (d *lzmaDecoder) setProps(b byte) error {
	if b >= 9*5*5 {
		return fmt.Errorf("bad LZMA properties byte %#x", b)
	}
	lc, lp, pb := uint(b%9), uint(b/9%5), uint(b/45)
	if lc+lp > 4 {
		return fmt.Errorf("LZMA lc %d + lp %d over 4", lc, lp)
	}
	d.lc, d.lp, d.pb = lc, lp, pb
	if n := 0x300 << (lc + lp); cap(d.literal) < n {
		d.literal = make([]uint16, n)
	} else {
		d.literal = d.literal[:n]
	}
	return nil
}

// resetState starts the coder's model afresh (the properties stay).
func (d *lzmaDecoder) resetState() {
	d.probs.reset()
	resetProbs(d.literal)
	d.state, d.rep = 0, [4]uint32{}
}

// distance decodes a match's distance minus one; l is its length minus
// lzmaMinMatch.
func (d *lzmaDecoder) distance(l uint32) uint32 {
	rc := &d.rc
	slot := rc.tree(d.probs.distSlot[min(l, lzmaLenStates-1)][:], 6)
	if slot < 4 {
		return slot
	}
	n := uint(slot>>1 - 1)
	dist := (2 | slot&1) << n
	if slot < lzmaEndPosModel {
		return dist + rc.reverseTree(d.probs.distLow[dist-slot:], n)
	}
	dist += rc.direct(n-lzmaAlignBits) << lzmaAlignBits
	return dist + rc.reverseTree(d.probs.align[:], lzmaAlignBits)
}

// How a decode call ends.
type lzmaEnd int

const (
	lzmaChunk   lzmaEnd = iota // at end exactly, with no end marker (an LZMA2 chunk)
	lzmaSized                  // at end exactly, or at its end marker right after
	lzmaUnsized                // at its end marker, which must come before end
)

var errPastEnd = errors.New("LZMA data goes on past its declared size")

// decode decodes from d.rc into out until out holds end bytes, or its end
// marker, as mode says. out must have room up to end or grow on demand
// (lzmaUnsized); out.limit bounds it either way.
func (d *lzmaDecoder) decode(out *boundedBuffer, end int, mode lzmaEnd) error {
	buf, pos := out.buf[:cap(out.buf)], len(out.buf)
	defer func() { out.buf = buf[:pos] }()
	rc, p := &d.rc, &d.probs
	pbMask, lpMask := uint32(1)<<d.pb-1, uint32(1)<<d.lp-1
	for {
		if rc.overrun() {
			return errors.New("LZMA data truncated")
		}
		if pos == end {
			if mode == lzmaUnsized {
				return errTooLarge(out.limit)
			}
			if mode == lzmaChunk || rc.finished() {
				return nil
			}
			// lzmaSized: only the end marker may follow.
		}
		if need := min(lzmaMaxMatch, end-pos); len(buf)-pos < need {
			out.buf = buf[:pos]
			out.grow(need)
			buf = out.buf[:cap(out.buf)]
		}
		filled := uint32(pos - d.dictStart)
		posState := filled & pbMask
		st := d.state
		if rc.bit(&p.isMatch[st<<lzmaPosBitsMax|posState]) == 0 {
			if pos >= end {
				return errPastEnd
			}
			prev := uint32(0)
			if filled > 0 {
				prev = uint32(buf[pos-1])
			}
			ctx := (filled&lpMask)<<d.lc | prev>>(8-d.lc)
			lit := d.literal[0x300*ctx : 0x300*(ctx+1)]
			sym := uint32(1)
			if st >= 7 {
				// After a match the literal is coded against the byte
				// at the last distance, until the first bit that differs.
				m := uint32(buf[pos-int(d.rep[0])-1])
				for sym < 0x100 {
					mb := m >> 7 & 1
					m <<= 1
					b := rc.bit(&lit[(1+mb)<<8|sym])
					sym = sym<<1 | b
					if mb != b {
						break
					}
				}
			}
			for sym < 0x100 {
				sym = sym<<1 | rc.bit(&lit[sym])
			}
			buf[pos] = byte(sym)
			pos++
			d.state = lzmaAfterLiteral[st]
			continue
		}
		var n uint32
		if rc.bit(&p.isRep[st]) == 0 {
			n = p.matchLen.decode(rc, posState)
			d.state = lzmaAfterMatch[st]
			d.rep = [4]uint32{d.distance(n), d.rep[0], d.rep[1], d.rep[2]}
			if d.rep[0] == lzmaEndMarker {
				// It ends an unsized stream, or a sized one at its size.
				if mode == lzmaChunk || mode == lzmaSized && pos != end || !rc.finished() {
					return errors.New("misplaced LZMA end marker")
				}
				return nil
			}
		} else {
			if rc.bit(&p.isRepG0[st]) == 0 {
				if rc.bit(&p.isRep0Long[st<<lzmaPosBitsMax|posState]) == 0 {
					// A "short rep": one byte from the last distance.
					if pos >= end {
						return errPastEnd
					}
					if err := d.checkDistance(filled); err != nil {
						return err
					}
					buf[pos] = buf[pos-int(d.rep[0])-1]
					pos++
					d.state = lzmaAfterShortRep[st]
					continue
				}
			} else {
				// A match at the second, third or fourth last distance,
				// which moves to the front.
				i := 1
				if rc.bit(&p.isRepG1[st]) != 0 {
					i = 2 + int(rc.bit(&p.isRepG2[st]))
				}
				dist := d.rep[i]
				copy(d.rep[1:i+1], d.rep[:i])
				d.rep[0] = dist
			}
			n = p.repLen.decode(rc, posState)
			d.state = lzmaAfterRep[st]
		}
		if err := d.checkDistance(filled); err != nil {
			return err
		}
		l := int(n) + lzmaMinMatch
		if l > end-pos {
			if mode == lzmaUnsized {
				return errTooLarge(out.limit)
			}
			return errPastEnd
		}
		from := pos - int(d.rep[0]) - 1
		if pos-from >= l {
			copy(buf[pos:pos+l], buf[from:])
		} else {
			// The match overlaps what it writes: byte by byte, each
			// one there before it is read.
			for i := range l {
				buf[pos+i] = buf[from+i]
			}
		}
		pos += l
	}
}

// checkDistance refuses a match reaching before the dictionary's start
// (filled bytes back) or beyond its size.
func (d *lzmaDecoder) checkDistance(filled uint32) error {
	if r := d.rep[0]; r >= filled || uint64(r) >= d.dict {
		return fmt.Errorf("LZMA match distance %d beyond the dictionary (%d bytes of %d)", uint64(r)+1, filled, d.dict)
	}
	return nil
}

// unlzma2 decodes the LZMA2 chunks at the start of in, up to and
// including their end byte, into out, with a dictionary of dict bytes.
// It returns the length of in they took.
func unlzma2(out *boundedBuffer, in []byte, dict uint64) (int, error) {
	d := lzmaDecoder{dict: dict}
	needDict, needProps := true, true
	pos := 0
	for {
		if pos >= len(in) {
			return pos, errors.New("LZMA2 data truncated: no end")
		}
		ctl := in[pos]
		pos++
		if ctl == 0 {
			return pos, nil
		}
		if ctl >= 0xe0 || ctl == 1 {
			needProps, needDict = true, false
			d.dictStart = len(out.buf)
		} else if needDict {
			return pos, errors.New("LZMA2: the first chunk does not reset the dictionary")
		}
		if ctl < 0x80 {
			if ctl > 2 {
				return pos, fmt.Errorf("LZMA2: bad control byte %#x", ctl)
			}
			if len(in)-pos < 2 {
				return pos, errors.New("LZMA2 chunk header truncated")
			}
			n := int(binary.BigEndian.Uint16(in[pos:])) + 1
			pos += 2
			if len(in)-pos < n {
				return pos, errors.New("LZMA2 uncompressed chunk truncated")
			}
			if n > out.limit-len(out.buf) {
				return pos, errTooLarge(out.limit)
			}
			out.buf = append(out.buf, in[pos:pos+n]...)
			pos += n
			continue
		}
		if len(in)-pos < 4 {
			return pos, errors.New("LZMA2 chunk header truncated")
		}
		size := int(ctl&0x1f)<<16 | int(binary.BigEndian.Uint16(in[pos:])) + 1
		csize := int(binary.BigEndian.Uint16(in[pos+2:])) + 1
		pos += 4
		switch {
		case ctl >= 0xc0: // state reset with new properties
			if pos >= len(in) {
				return pos, errors.New("LZMA2 chunk header truncated")
			}
			if err := d.setProps(in[pos]); err != nil {
				return pos, err
			}
			pos++
			needProps = false
			d.resetState()
		case needProps:
			return pos, errors.New("LZMA2: a chunk without properties after a dictionary reset")
		case ctl >= 0xa0: // state reset
			d.resetState()
		}
		if len(in)-pos < csize {
			return pos, errors.New("LZMA2 chunk truncated")
		}
		if size > out.limit-len(out.buf) {
			return pos, errTooLarge(out.limit)
		}
		out.grow(size)
		if err := d.rc.init(in[pos : pos+csize]); err != nil {
			return pos, err
		}
		if err := d.decode(out, len(out.buf)+size, lzmaChunk); err != nil {
			return pos, err
		}
		if !d.rc.finished() || d.rc.pos != csize {
			return pos, errors.New("LZMA2 chunk's data does not end where its header says")
		}
		pos += csize
	}
}

// unlzma decodes the .lzma ("LZMA alone") format: properties, dictionary
// size and the uncompressed size (all ones: unknown, the end marker ends
// the data), then one LZMA stream. Bytes after its end are ignored, as
// the kernel's decompressor ignores them.
func unlzma(out *boundedBuffer, stream []byte) error {
	if len(stream) < lzmaAloneHeader {
		return errors.New("truncated header")
	}
	d := lzmaDecoder{dict: max(uint64(binary.LittleEndian.Uint32(stream[1:])), lzmaMinDict), dictStart: len(out.buf)}
	if err := d.setProps(stream[0]); err != nil {
		return err
	}
	d.resetState()
	end, mode := out.limit+1, lzmaUnsized
	if size := binary.LittleEndian.Uint64(stream[5:]); size != 1<<64-1 {
		if size > uint64(out.limit-len(out.buf)) {
			return errTooLarge(out.limit)
		}
		end, mode = len(out.buf)+int(size), lzmaSized
	}
	if err := d.rc.init(stream[lzmaAloneHeader:]); err != nil {
		return err
	}
	return d.decode(out, end, mode)
}
