package virtio

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// The virtio-net header (virtio 1.2, 5.1.6), as both the guest and the
// tap lay it out: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, num_buffers, little endian.
const (
	netHdrFlags      = 0
	netHdrGSOType    = 1
	netHdrHdrLen     = 2
	netHdrGSOSize    = 4
	netHdrCsumStart  = 6
	netHdrCsumOffset = 8
	netNumBuffersOff = 10

	netHdrFNeedsCsum = 1 // csum_start/csum_offset say where the checksum goes
	netHdrFDataValid = 2 // receive only: the checksum was already checked

	netGSONone  = 0
	netGSOTCPv4 = 1
	netGSOTCPv6 = 4
	netGSOECN   = 0x80 // with a TCP type: the segments carry CWR
)

// netHdr is a header read from the guest or the tap, its fields decoded.
type netHdr struct {
	flags, gsoType        uint8
	hdrLen, gsoSize       uint16
	csumStart, csumOffset uint16
}

func parseNetHdr(b []byte) netHdr {
	return netHdr{
		flags:      b[netHdrFlags],
		gsoType:    b[netHdrGSOType],
		hdrLen:     binary.LittleEndian.Uint16(b[netHdrHdrLen:]),
		gsoSize:    binary.LittleEndian.Uint16(b[netHdrGSOSize:]),
		csumStart:  binary.LittleEndian.Uint16(b[netHdrCsumStart:]),
		csumOffset: binary.LittleEndian.Uint16(b[netHdrCsumOffset:]),
	}
}

// put writes h into b, num_buffers included.
func (h netHdr) put(b []byte, numBuffers uint16) {
	b[netHdrFlags], b[netHdrGSOType] = h.flags, h.gsoType
	binary.LittleEndian.PutUint16(b[netHdrHdrLen:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[netHdrGSOSize:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[netHdrCsumStart:], h.csumStart)
	binary.LittleEndian.PutUint16(b[netHdrCsumOffset:], h.csumOffset)
	binary.LittleEndian.PutUint16(b[netNumBuffersOff:], numBuffers)
}

// checkCsum checks that the two checksum bytes csum_start+csum_offset
// lie inside a frame of frameLen bytes (the header not counted).
func (h netHdr) checkCsum(frameLen int) error {
	if h.flags&netHdrFNeedsCsum == 0 {
		return nil
	}
	if end := int(h.csumStart) + int(h.csumOffset) + 2; end > frameLen {
		return fmt.Errorf("checksum at %d+%d beyond the %d-byte frame", h.csumStart, h.csumOffset, frameLen)
	}
	return nil
}

// gsoFeatures returns the features h's gso_type needs, given the
// TSO4, TSO6 and ECN features of the direction it travels; ok is false
// for a type govmm never offers (UDP, USO, ECN alone, ...).
func (h netHdr) gsoFeatures(tso4, tso6, ecn uint64) (need uint64, ok bool) {
	switch h.gsoType &^ netGSOECN {
	case netGSOTCPv4:
		need = tso4
	case netGSOTCPv6:
		need = tso6
	default:
		return 0, false
	}
	if h.gsoType&netGSOECN != 0 {
		need |= ecn
	}
	return need, true
}

// checkTx checks a header the guest put before a frame of frameLen
// bytes against the features it negotiated, and returns the header to
// hand the tap: nothing the guest did not negotiate reaches the kernel's
// GSO code, and every offset lies inside the frame. A header it refuses
// is the guest's error; the frame is dropped.
func (h netHdr) checkTx(features uint64, frameLen int) (netHdr, error) {
	switch {
	case h.flags&^netHdrFNeedsCsum != 0:
		return h, fmt.Errorf("flags %#x: only NEEDS_CSUM is valid on transmit", h.flags)
	case h.flags != 0 && features&netFCsum == 0:
		return h, fmt.Errorf("NEEDS_CSUM without VIRTIO_NET_F_CSUM")
	}
	if err := h.checkCsum(frameLen); err != nil {
		return h, err
	}
	if h.gsoType == netGSONone {
		// gso_size and hdr_len mean nothing here: pass zeros rather
		// than the guest's values, which the tap would size buffers by.
		return netHdr{flags: h.flags, csumStart: h.csumStart, csumOffset: h.csumOffset}, nil
	}
	need, ok := h.gsoFeatures(netFHostTSO4, netFHostTSO6, netFHostECN)
	switch {
	case !ok:
		return h, fmt.Errorf("gso_type %#x not offered", h.gsoType)
	case features&need != need || features&netFCsum == 0:
		return h, fmt.Errorf("gso_type %#x not negotiated", h.gsoType)
	case h.flags&netHdrFNeedsCsum == 0:
		// Segmenting recomputes every segment's checksum from
		// csum_start; without it the kernel would have to guess.
		return h, fmt.Errorf("gso_type %#x without NEEDS_CSUM", h.gsoType)
	case h.gsoSize == 0:
		return h, fmt.Errorf("gso_type %#x with gso_size 0", h.gsoType)
	case int(h.hdrLen) > frameLen:
		return h, fmt.Errorf("hdr_len %d beyond the %d-byte frame", h.hdrLen, frameLen)
	case int(h.gsoSize) > frameLen:
		return h, fmt.Errorf("gso_size %d beyond the %d-byte frame", h.gsoSize, frameLen)
	}
	return h, nil
}

// checkRx checks a header the tap put before a frame of frameLen bytes
// against what the guest negotiated. The tap only hands over what
// TUNSETOFFLOAD allowed, but frames queued before a reset were shaped
// for the previous driver's features: those are refused (and dropped),
// since the guest must never see flags it did not accept (5.1.6.4.1).
// DATA_VALID is cleared for a guest without GUEST_CSUM instead: it is a
// hint, and the checksum is correct either way.
func (h netHdr) checkRx(features uint64, frameLen int) (netHdr, error) {
	if features&netFGuestCsum == 0 {
		h.flags &^= netHdrFDataValid
	}
	switch {
	case h.flags&^(netHdrFNeedsCsum|netHdrFDataValid) != 0:
		return h, fmt.Errorf("flags %#x from the tap", h.flags)
	case h.flags&netHdrFNeedsCsum != 0 && features&netFGuestCsum == 0:
		return h, fmt.Errorf("NEEDS_CSUM without VIRTIO_NET_F_GUEST_CSUM")
	}
	if err := h.checkCsum(frameLen); err != nil {
		return h, err
	}
	if h.gsoType == netGSONone {
		return h, nil
	}
	need, ok := h.gsoFeatures(netFGuestTSO4, netFGuestTSO6, netFGuestECN)
	if !ok {
		return h, fmt.Errorf("gso_type %#x from the tap", h.gsoType)
	}
	if features&need != need {
		return h, fmt.Errorf("gso_type %#x not negotiated", h.gsoType)
	}
	return h, nil
}

// tapOffloads are the TUNSETOFFLOAD flags for what the guest accepted:
// the tap may then hand us frames with partial checksums and TCP
// segments up to 64 KiB. A feature whose prerequisite the guest did not
// accept (TSO without GUEST_CSUM) counts as not accepted.
func tapOffloads(features uint64) uint {
	if features&netFGuestCsum == 0 {
		return 0
	}
	flags := uint(unix.TUN_F_CSUM)
	if features&netFGuestTSO4 != 0 {
		flags |= unix.TUN_F_TSO4
	}
	if features&netFGuestTSO6 != 0 {
		flags |= unix.TUN_F_TSO6
	}
	if features&netFGuestECN != 0 && flags&(unix.TUN_F_TSO4|unix.TUN_F_TSO6) != 0 {
		flags |= unix.TUN_F_TSO_ECN
	}
	return flags
}
