package virtio

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNetHdrCheckTx(t *testing.T) {
	const all = netOffloads
	csum := netHdr{flags: netHdrFNeedsCsum, csumStart: 34, csumOffset: 16}
	tso4 := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	with := func(h netHdr, f func(*netHdr)) netHdr { f(&h); return h }
	for _, tc := range []struct {
		name     string
		hdr      netHdr
		features uint64
		frameLen int
		want     string // in the error; "" for none
	}{
		{"plain", netHdr{}, 0, 60, ""},
		{"plain ignores gso fields", netHdr{hdrLen: 9999, gsoSize: 7}, 0, 60, ""},
		{"csum", csum, netFCsum, 60, ""},
		{"csum not negotiated", csum, all &^ netFCsum, 60, "without VIRTIO_NET_F_CSUM"},
		{"csum last two bytes", with(csum, func(h *netHdr) { h.csumStart, h.csumOffset = 50, 8 }), all, 60, ""},
		{"csum one past", with(csum, func(h *netHdr) { h.csumStart, h.csumOffset = 50, 9 }), all, 60, "beyond the 60-byte frame"},
		{"csum offsets overflow 16 bits", with(csum, func(h *netHdr) { h.csumStart, h.csumOffset = 0xffff, 0xffff }), all, 60, "beyond"},
		{"data valid", netHdr{flags: netHdrFDataValid}, all, 60, "only NEEDS_CSUM"},
		{"unknown flag", netHdr{flags: 0x80}, all, 60, "only NEEDS_CSUM"},
		{"tso4", tso4, all, 30000, ""},
		{"tso4 not negotiated", tso4, all &^ netFHostTSO4, 30000, "not negotiated"},
		{"tso4 without CSUM", tso4, netFHostTSO4, 30000, "without VIRTIO_NET_F_CSUM"},
		{"tso6", with(tso4, func(h *netHdr) { h.gsoType = netGSOTCPv6 }), netFCsum | netFHostTSO6, 30000, ""},
		{"tso ecn", with(tso4, func(h *netHdr) { h.gsoType |= netGSOECN }), all, 30000, ""},
		{"tso ecn not negotiated", with(tso4, func(h *netHdr) { h.gsoType |= netGSOECN }), all &^ netFHostECN, 30000, "not negotiated"},
		{"ufo", with(tso4, func(h *netHdr) { h.gsoType = 3 }), all, 30000, "not offered"},
		{"uso", with(tso4, func(h *netHdr) { h.gsoType = 5 }), all, 30000, "not offered"},
		{"ecn alone", with(tso4, func(h *netHdr) { h.gsoType = netGSOECN }), all, 30000, "not offered"},
		{"tso without NEEDS_CSUM", with(tso4, func(h *netHdr) { h.flags = 0 }), all, 30000, "without NEEDS_CSUM"},
		{"gso_size 0", with(tso4, func(h *netHdr) { h.gsoSize = 0 }), all, 30000, "gso_size 0"},
		{"gso_size beyond", with(tso4, func(h *netHdr) { h.gsoSize = 1448 }), all, 1000, "gso_size 1448 beyond"},
		{"hdr_len beyond", with(tso4, func(h *netHdr) { h.hdrLen = 1001 }), all, 1000, "hdr_len 1001 beyond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.hdr.checkTx(tc.features, tc.frameLen)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("checkTx: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("checkTx = %v, want an error saying %q", err, tc.want)
			case err == nil && tc.hdr.gsoType == netGSONone && (got.gsoSize != 0 || got.hdrLen != 0):
				t.Errorf("no GSO, yet gso_size %d hdr_len %d passed on", got.gsoSize, got.hdrLen)
			case err == nil && tc.hdr.gsoType != netGSONone && got != tc.hdr:
				t.Errorf("header %+v passed on as %+v", tc.hdr, got)
			}
		})
	}
}

func TestNetHdrCheckRx(t *testing.T) {
	const all = netOffloads
	tso6 := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv6, hdrLen: 86, gsoSize: 1428, csumStart: 54, csumOffset: 16}
	for _, tc := range []struct {
		name     string
		hdr      netHdr
		features uint64
		want     string
		flags    uint8 // the flags the guest gets
	}{
		{"plain", netHdr{}, 0, "", 0},
		{"data valid kept", netHdr{flags: netHdrFDataValid}, netFGuestCsum, "", netHdrFDataValid},
		{"data valid cleared", netHdr{flags: netHdrFDataValid}, 0, "", 0},
		{"needs csum not negotiated", netHdr{flags: netHdrFNeedsCsum}, all &^ netFGuestCsum, "without VIRTIO_NET_F_GUEST_CSUM", 0},
		{"rsc", netHdr{flags: 4}, all, "flags 0x4", 0},
		{"csum beyond", netHdr{flags: netHdrFNeedsCsum, csumStart: 29990, csumOffset: 9}, all, "beyond", 0},
		{"tso6", tso6, all, "", netHdrFNeedsCsum},
		{"tso6 not negotiated", tso6, all &^ netFGuestTSO6, "not negotiated", 0},
		{"tso6 ecn not negotiated", netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv6 | netGSOECN, csumStart: 54, csumOffset: 16}, all &^ netFGuestECN, "not negotiated", 0},
		{"udp", netHdr{gsoType: 3}, all, "from the tap", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.hdr.checkRx(tc.features, 30000)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("checkRx: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("checkRx = %v, want an error saying %q", err, tc.want)
			case err == nil && got.flags != tc.flags:
				t.Errorf("flags %#x, want %#x", got.flags, tc.flags)
			}
		})
	}
}

func TestTapOffloads(t *testing.T) {
	for _, tc := range []struct {
		features uint64
		want     uint
	}{
		{0, 0},
		{netFGuestTSO4 | netFGuestTSO6 | netFGuestECN, 0}, // no GUEST_CSUM: nothing
		{netFGuestCsum, unix.TUN_F_CSUM},
		{netFGuestCsum | netFGuestECN, unix.TUN_F_CSUM}, // ECN needs a TSO
		{netFGuestCsum | netFGuestTSO6 | netFGuestECN, unix.TUN_F_CSUM | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN},
		{netOffloads, unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN},
		{netFCsum | netFHostTSO4 | netFHostTSO6, 0}, // the host side decides nothing here
	} {
		if got := tapOffloads(tc.features); got != tc.want {
			t.Errorf("tapOffloads(%#x) = %#x, want %#x", tc.features, got, tc.want)
		}
	}
}
