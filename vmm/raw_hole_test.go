package vmm

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/vmm/boot"
)

// mmioLoop64At is a 64-bit guest that writes AL to the 64-bit address
// addr n times, then HLTs. tiny.MMIOLoop64 takes a sign-extended disp32,
// which cannot name an address from 2 GiB to 4 GiB.
func mmioLoop64At(addr uint64, n uint32) []byte {
	code := []byte{0x48, 0xbb} // movabs rbx, addr
	code = binary.LittleEndian.AppendUint64(code, addr)
	code = append(code, 0xb9) // mov ecx, n
	code = binary.LittleEndian.AppendUint32(code, n)
	return append(code,
		0x88, 0x03, // 1: mov [rbx], al
		0xff, 0xc9, //    dec ecx
		0x75, 0xfa, //    jnz 1b
		0xf4, //    hlt
	)
}

// A long-mode raw guest reaches MMIO in the 32-bit PCI hole, whatever
// its RAM size: with more than 3 GiB the hole is the only MMIO below
// 4 GiB there is, and the identity map stopped at 3 GiB (its RAM below
// the hole), so the first access page-faulted into a triple fault and
// the guest reset in place for ever (found by an audit).
func TestRawGuestReachesMMIOInPCIHole(t *testing.T) {
	needKVM(t)
	const (
		addr   = boot.LowRAMSplit + 0x10000000 // 3.25 GiB
		writes = 30
	)
	for _, size := range []uint64{2 << 20, 3 << 30, 4 << 30} {
		t.Run(fmt.Sprintf("%dM", size>>20), func(t *testing.T) {
			vm, err := New(Config{
				Raw:     &RawGuest{Code: mmioLoop64At(addr, writes), LoadAddr: tiny.LoadAddr, LongMode: true},
				MemSize: size, CPUs: 1, ExitStats: true, SyncRegs: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			mmio := &counter{}
			if _, err := vm.MMIOBus.Register("test", addr, 8, mmio); err != nil {
				t.Fatal(err)
			}
			watchdog := time.AfterFunc(5*time.Second, vm.Stop)
			out := vm.Run()
			watchdog.Stop()
			n := len(mmio.written())
			if out.Reason != vcpu.Halted || out.Err != nil || n != writes || vm.Resets() != 0 {
				t.Errorf("ended %v (%v) after %d resets and %d MMIO writes at %#x, want HLT after %d writes", out.Reason, out.Err, vm.Resets(), n, uint64(addr), writes)
			}
		})
	}
}
