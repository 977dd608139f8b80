package vmm

import (
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/govmm/govmm/virtio"
)

// idleTap is a tap nothing is read from or written to: the collector only
// reads the device's counters.
type idleTap struct{}

func (idleTap) SyscallConn() (syscall.RawConn, error) { return nil, syscall.ENOTSUP }
func (idleTap) WriteFrame([][]byte) error             { return syscall.ENOTSUP }
func (idleTap) SetOffload(uint) error                 { return nil }
func (idleTap) EnableQueue(bool) error                { return nil }
func (idleTap) Close() error                          { return nil }

// Every network device exports the libvirt-style interface counters,
// labelled with its device and tap names.
func TestNetCollector(t *testing.T) {
	n, err := virtio.NewNet([]virtio.NetTap{idleTap{}}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	c := netCollector{nets: []pciNet{{name: "virtio-net", tap: "tap7", net: n}}}
	want := `
# HELP govmm_net_receive_bytes_total Bytes of the frames delivered to the guest (without the virtio header).
# TYPE govmm_net_receive_bytes_total counter
govmm_net_receive_bytes_total{device="virtio-net",tap="tap7"} 0
# HELP govmm_net_transmit_errors_total Frames from the guest dropped as its fault: malformed (length, virtio header, more buffers than IOV_MAX) or on a queue pair it has not enabled.
# TYPE govmm_net_transmit_errors_total counter
govmm_net_transmit_errors_total{device="virtio-net",tap="tap7"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "govmm_net_receive_bytes_total", "govmm_net_transmit_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != len(netMetrics) {
		t.Errorf("%d samples for one device, want %d", n, len(netMetrics))
	}
	for _, name := range []string{"receive_bytes", "receive_packets", "receive_drops", "transmit_bytes", "transmit_packets", "transmit_drops", "transmit_errors"} {
		if n := testutil.CollectAndCount(c, "govmm_net_"+name+"_total"); n != 1 {
			t.Errorf("govmm_net_%s_total: %d samples, want 1", name, n)
		}
	}
}
