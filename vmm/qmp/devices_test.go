package qmp

import (
	"testing"
)

// deviceMachine is a fake machine with a disk and a PCI bus.
type deviceMachine struct {
	*fakeMachine
	blocks []Block
	pci    []PCIFunction
}

func (m deviceMachine) Blocks() []Block             { return m.blocks }
func (m deviceMachine) PCIFunctions() []PCIFunction { return m.pci }

// TestDeviceQueries pins the values of query-block, query-blockstats and
// query-pci (the shapes are compared with QEMU's in cmd/govmm).
func TestDeviceQueries(t *testing.T) {
	m := deviceMachine{
		fakeMachine: newFakeMachine(),
		blocks: []Block{{
			Device: "virtio-blk", Qdev: "/machine/peripheral/virtio-blk/virtio-backend",
			File: "/d.img", ReadOnly: true, Direct: true, Size: 1 << 20, ActualSize: 4096,
			Stats: BlockStats{ReadBytes: 1024, ReadOps: 2, ReadTimeNs: 5000, WriteBytes: 512, WriteOps: 1, WriteTimeNs: 7,
				FlushOps: 3, FlushTimeNs: 9, FailedWriteOps: 4, InvalidReadOps: 5, WriteHighestOffset: 4096,
				UnmapBytes: 1 << 20, UnmapOps: 6, UnmapTimeNs: 11, FailedUnmapOps: 7, InvalidUnmapOps: 8},
		}},
		pci: []PCIFunction{
			{Slot: 0, Vendor: 0x8086, Device: 0x0d57, Class: 0x0600},
			{Slot: 1, Vendor: 0x1af4, Device: 0x1042, Class: 0x0180, IRQPin: 1, IRQLine: 11, Name: "virtio-blk",
				Regions: []PCIRegion{{BAR: 0, Mem64: true, Size: 0x8000, Address: 0xc0000000}, {BAR: 2, IO: true, Size: 32, Address: -1}}},
			{Slot: 2, Class: 0xff00},
		},
	}
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	for _, tc := range []struct{ req, want string }{
		{`{"execute":"query-block"}`, `{"return":[{"device":"virtio-blk","qdev":"/machine/peripheral/virtio-blk/virtio-backend",
			"locked":false,"removable":false,"type":"unknown","io-status":"ok",
			"inserted":{"file":"/d.img","ro":true,"drv":"raw","backing_file_depth":0,"encrypted":false,"detect_zeroes":"off",
				"cache":{"writeback":true,"direct":true,"no-flush":false},
				"bps":0,"bps_rd":0,"bps_wr":0,"iops":0,"iops_rd":0,"iops_wr":0,"write_threshold":0,"node-name":"virtio-blk",
				"image":{"filename":"/d.img","format":"raw","virtual-size":1048576,"actual-size":4096,"dirty-flag":false}}}]}`},
		{`{"execute":"query-blockstats"}`, `{"return":[{"device":"virtio-blk","qdev":"/machine/peripheral/virtio-blk/virtio-backend","node-name":"virtio-blk",
			"stats":{"rd_bytes":1024,"wr_bytes":512,"unmap_bytes":1048576,"rd_operations":2,"wr_operations":1,"flush_operations":3,"unmap_operations":6,
				"rd_total_time_ns":5000,"wr_total_time_ns":7,"flush_total_time_ns":9,"unmap_total_time_ns":11,"wr_highest_offset":4096,
				"rd_merged":0,"wr_merged":0,"unmap_merged":0,
				"failed_rd_operations":0,"failed_wr_operations":4,"failed_flush_operations":0,"failed_unmap_operations":7,
				"invalid_rd_operations":5,"invalid_wr_operations":0,"invalid_flush_operations":0,"invalid_unmap_operations":8,
				"account_invalid":false,"account_failed":false,"timed_stats":[]}}]}`},
		{`{"execute":"query-pci"}`, `{"return":[{"bus":0,"devices":[
			{"bus":0,"slot":0,"function":0,"class_info":{"class":1536,"desc":"Host bridge"},
				"id":{"vendor":32902,"device":3415,"subsystem-vendor":0,"subsystem":0},"irq_pin":0,"regions":[],"qdev_id":""},
			{"bus":0,"slot":1,"function":0,"class_info":{"class":384,"desc":"Storage controller"},
				"id":{"vendor":6900,"device":4162,"subsystem-vendor":0,"subsystem":0},"irq_pin":1,"irq":11,
				"regions":[{"bar":0,"type":"memory","address":3221225472,"size":32768,"prefetch":false,"mem_type_64":true},
					{"bar":2,"type":"io","address":-1,"size":32}],"qdev_id":"virtio-blk"},
			{"bus":0,"slot":2,"function":0,"class_info":{"class":65280},
				"id":{"vendor":0,"device":0,"subsystem-vendor":0,"subsystem":0},"irq_pin":0,"regions":[],"qdev_id":""}]}]}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.req, r, tc.want)
		}
	}
	// query-nodes lists nodes: no device, no qdev.
	r, _ := c.cmd(`{"execute":"query-blockstats","arguments":{"query-nodes":true}}`)
	ret, _ := r["return"].([]any)
	if len(ret) != 1 || ret[0].(map[string]any)["device"] != nil || ret[0].(map[string]any)["node-name"] != "virtio-blk" {
		t.Errorf("query-blockstats query-nodes: %v", r)
	}
	for _, v := range []string{"1", "null", `"true"`} {
		if r, _ := c.cmd(`{"execute":"query-blockstats","arguments":{"query-nodes":` + v + `}}`); !jsonEqual(r,
			`{"error":{"class":"GenericError","desc":"Invalid parameter type for 'query-nodes', expected: boolean"}}`) {
			t.Errorf("query-nodes %s: %v", v, r)
		}
	}
}
