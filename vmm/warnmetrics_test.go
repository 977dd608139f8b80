package vmm

import (
	"testing"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/vcpu"
)

// A guest writing to a port nothing claims gets a few log lines, and
// every write counts in govmm_device_warnings_total.
func TestDeviceWarningsMetric(t *testing.T) {
	needKVM(t)
	const writes = 50
	vm := newVM(t, Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, writes), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1,
	})
	t.Cleanup(func() { vm.Close() })
	if out := vm.Run(); out.Err != nil || out.Reason != vcpu.Halted {
		t.Fatalf("guest ended %v, %v; want halted", out.Reason, out.Err)
	}
	families := parseExposition(t, scrape(t, serveMetrics(t, vm)))
	labels := map[string]string{"device": "io", "kind": "unclaimed_write"}
	if got, ok := sampleValue(t, families, "govmm_device_warnings_total", labels); !ok || got != writes {
		t.Errorf("govmm_device_warnings_total%v = %v (present %v), want %d", labels, got, ok, writes)
	}
}
