package vmm

import (
	"net"
	"strings"
	"testing"
)

func TestNetConfigValidate(t *testing.T) {
	linux := Config{Kernel: "vmlinux", CPUs: 1, MemSize: 64 << 20}
	for _, tc := range []struct {
		name string
		net  NetConfig
		want string // in the error; "" for none
	}{
		{"random MAC", NetConfig{Tap: "tap0"}, ""},
		{"given MAC", NetConfig{Tap: "tap0", MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}}, ""},
		{"no tap", NetConfig{}, "no tap name"},
		{"long name", NetConfig{Tap: "tap-with-a-long-name"}, "longer than 15 bytes"},
		{"pattern", NetConfig{Tap: "govmm%d"}, ""},
		{"colon", NetConfig{Tap: "a:b"}, `"a:b" is not a valid interface name`},
		{"slash", NetConfig{Tap: "a/b"}, "not a valid interface name"},
		{"space", NetConfig{Tap: "a b"}, "not a valid interface name"},
		{"dot dot", NetConfig{Tap: ".."}, "not a valid interface name"},
		{"short MAC", NetConfig{Tap: "tap0", MAC: net.HardwareAddr{0x52, 0x54}}, "not a 6-byte"},
		{"multicast MAC", NetConfig{Tap: "tap0", MAC: net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}}, "not a unicast"},
		{"zero MAC", NetConfig{Tap: "tap0", MAC: make(net.HardwareAddr, 6)}, "not a unicast"},
		{"default queues", NetConfig{Tap: "tap0", Queues: 0}, ""},
		{"most queues", NetConfig{Tap: "tap0", Queues: 16}, ""},
		// The message names every count the rule takes, 0 included.
		{"negative queues", NetConfig{Tap: "tap0", Queues: -1}, "want 1 to 16, or 0 for the default (one)"},
		{"unknown txwait", NetConfig{Tap: "tap0", TxWait: 7}, "unknown txwait mode NetTxWait(7)"},
		{"too many queues", NetConfig{Tap: "tap0", Queues: 17}, "want 1 to 16, or 0 for the default (one)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := linux
			c.Nets = []NetConfig{tc.net}
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	raw := Config{Raw: &RawGuest{}, CPUs: 1, MemSize: 1 << 20, Nets: []NetConfig{{Tap: "tap0"}}}
	if err := raw.Validate(); err == nil || !strings.Contains(err.Error(), "Linux guest") {
		t.Errorf("raw guest with a NIC: Validate() = %v", err)
	}
}
