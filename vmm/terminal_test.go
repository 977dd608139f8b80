package vmm

import (
	"testing"
	"time"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/vcpu"
)

// serialFlood16 is a real-mode guest that sends the first 64 KiB of its
// memory to COM1 for ever, a page per exit (rep outsb):
//
//	mov dx, 0x3f8; mov si, 0
//	again: mov cx, 0x1000; rep outsb; jmp again
var serialFlood16 = []byte{0xba, 0xf8, 0x03, 0xbe, 0x00, 0x00, 0xb9, 0x00, 0x10, 0xf3, 0x6e, 0xeb, 0xf9}

// stuckTerminal is a terminal that stopped reading: a write returns only
// once released.
type stuckTerminal struct{ release chan struct{} }

func (w stuckTerminal) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// A terminal that stopped reading costs the guest its serial output, not
// its vCPU: a pause (QMP stop) and a stop still work. The vCPU used to
// block in the terminal's write holding the UART, and a pause waited for
// it for ever.
func TestStuckTerminalHoldsNoVCPU(t *testing.T) {
	needKVM(t)
	term := stuckTerminal{make(chan struct{})}
	vm, err := New(Config{
		Raw:     &RawGuest{Code: serialFlood16, LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, Console: term, ExitStats: true, SyncRegs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	t.Cleanup(func() {
		vm.Stop()
		close(term.release)
		<-done
		vm.Close()
	})
	// The UART hands the terminal its first 1 KiB (serialOutSize), and
	// the terminal never returns; the guest must go on well past that.
	waitFor(t, "20,000 bytes of serial output", func() bool {
		st, _ := vm.Stats().Total().Row("IO:serial")
		return st.Count > 20000
	})
	paused := pauseInBackground(vm)
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("Pause did not return in 10 s with the terminal stuck")
	}
	vm.Stop()
	select {
	case out := <-done:
		done <- out // for the cleanup
		if out.Reason != vcpu.Stopped || out.Err != nil {
			t.Errorf("outcome %v (%v), want stopped", out.Reason, out.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10 s after Stop with the terminal stuck")
	}
}
