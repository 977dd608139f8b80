package boot

import (
	"encoding/binary"
	"fmt"
	"testing"
)

func sum(b []byte) (s byte) {
	for _, c := range b {
		s += c
	}
	return s
}

func TestWriteMPTable(t *testing.T) {
	for _, n := range []int{1, 2, 8, 64, MaxMPCPUs} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			mem := make([]byte, 1<<20)
			if err := WriteMPTable(mem, n); err != nil {
				t.Fatal(err)
			}
			fp := mem[MPTableAddr : MPTableAddr+16]
			if string(fp[:4]) != "_MP_" || sum(fp) != 0 || fp[8] != 1 || fp[9] != 4 {
				t.Fatalf("floating pointer % x", fp)
			}
			ctAddr := binary.LittleEndian.Uint32(fp[4:])
			ct := mem[ctAddr:]
			length := int(binary.LittleEndian.Uint16(ct[4:]))
			count := int(binary.LittleEndian.Uint16(ct[34:]))
			if string(ct[:4]) != "PCMP" || sum(ct[:length]) != 0 {
				t.Fatalf("config table header % x, checksum %#x", ct[:44], sum(ct[:length]))
			}
			if want := n + 1 + 1 + 16 + 2; count != want {
				t.Errorf("%d entries, want %d", count, want)
			}
			if length != MPTableSize(n)-16 {
				t.Errorf("length %d, want %d", length, MPTableSize(n)-16)
			}
			if binary.LittleEndian.Uint32(ct[36:]) != LAPICAddr {
				t.Errorf("LAPIC address")
			}
			// Walk the entries by type, as Linux's smp_read_mpc does.
			kinds := map[byte]int{}
			for p, i := 44, 0; i < count; i++ {
				e := ct[p:]
				kinds[e[0]]++
				switch e[0] {
				case mpEntryProc:
					if id := int(e[1]); id != i || e[3]&1 == 0 || (e[3]&2 != 0) != (id == 0) {
						t.Errorf("processor entry %d: % x", i, e[:20])
					}
					p += 20
				case mpEntryIOAPIC:
					if int(e[1]) != n || binary.LittleEndian.Uint32(e[4:]) != IOAPICAddr {
						t.Errorf("IOAPIC entry % x", e[:8])
					}
					p += 8
				case mpEntryIOInt:
					if e[5] != e[7] || int(e[6]) != n || e[2]|e[3] != 0 {
						t.Errorf("I/O interrupt entry % x", e[:8])
					}
					p += 8
				default:
					p += 8
				}
			}
			if kinds[0] != n || kinds[1] != 1 || kinds[2] != 1 || kinds[3] != 16 || kinds[4] != 2 {
				t.Errorf("entries by type %v", kinds)
			}
		})
	}
	for _, n := range []int{0, -1, 255, 1000} {
		if err := WriteMPTable(make([]byte, 1<<20), n); err == nil {
			t.Errorf("%d CPUs: no error", n)
		}
	}
	if err := WriteMPTable(make([]byte, MPTableAddr+100), 2); err == nil {
		t.Errorf("memory too small: no error")
	}
}
