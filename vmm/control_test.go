package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qemu"
	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/vcpu"
)

// TestQMPBlockAndPCI: a guest reads and writes its disk; go-qemu's
// BlockDevices, BlockStats and PCIDevices then see the image, the real
// counters and the BARs, and the Prometheus block counters agree.
func TestQMPBlockAndPCI(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	console := &syncBuffer{}
	// 8 pages written through the page cache, then fsync: writes and a
	// flush; the kernel's partition scan has read the disk before.
	vm, err := New(Config{
		Kernel: needGuest(t, "vmlinux"), Initrd: initramfs,
		Cmdline: DefaultCmdline + " govmm.run=dd,if=/dev/zero,of=/dev/vda,bs=4096,count=8,conv=fsync",
		MemSize: 512 << 20, CPUs: 1,
		Console: console, SyncRegs: true,
		Disks: []DiskConfig{{Path: img}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	stopQMP, err := vm.ServeQMP(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stopQMP()
	metricsURL := serveMetrics(t, vm)
	_, out, cons := runToEnd(t, vm, console)
	if out.Err != nil || out.Reason != vcpu.PowerOff || !strings.Contains(cons, "GOVMM-RESULT rc=0") {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, cons)
	}

	mon, err := goqmp.NewSocketMonitor("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	d, err := goqemu.NewDomain(mon, "govmm")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	blocks, err := d.BlockDevices()
	if err != nil || len(blocks) != 1 {
		t.Fatalf("BlockDevices: %+v, %v", blocks, err)
	}
	im := blocks[0].Inserted.Image
	if blocks[0].Device != "virtio-blk" || im.Filename != img || im.Format != "raw" || im.VirtualSize != 1<<20 {
		t.Errorf("query-block: device %q image %+v", blocks[0].Device, im)
	}
	stats, err := d.BlockStats()
	if err != nil || len(stats) != 1 {
		t.Fatalf("BlockStats: %+v, %v", stats, err)
	}
	s := stats[0]
	if s.Device != "virtio-blk" || s.WriteBytes != 8*4096 || s.WriteOperations == 0 || s.WriteTotalTimeNanoseconds == 0 ||
		s.ReadBytes == 0 || s.ReadOperations == 0 || s.ReadTotalTimeNanoseconds == 0 ||
		s.FlushOperations == 0 || s.FlushTotalTimeNanoseconds == 0 || s.WriteHighestOffset != 8*4096 ||
		s.FailedReadOperations+s.FailedWriteOperations+s.FailedFlushOperations != 0 {
		t.Errorf("query-blockstats: %+v", s)
	}

	pci, err := d.PCIDevices()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range pci {
		if f.Slot == 0 && f.ClassInfo.Desc != "Host bridge" {
			t.Errorf("slot 0: %+v, want the host bridge", f)
		}
		if f.QdevID != "virtio-blk" {
			continue
		}
		found = true
		if len(f.Regions) != 1 || f.Regions[0].Bar != 0 || f.Regions[0].Type != "memory" || !f.Regions[0].MemType64 ||
			f.Regions[0].Size == 0 || f.Regions[0].Address <= 0 {
			t.Errorf("virtio-blk regions: %+v", f.Regions)
		}
	}
	if !found {
		t.Errorf("query-pci lists no virtio-blk: %+v", pci)
	}

	families := parseExposition(t, scrape(t, metricsURL))
	labels := map[string]string{"device": "virtio-blk", "file": img}
	for name, want := range map[string]float64{
		"govmm_block_write_bytes_total":        float64(s.WriteBytes),
		"govmm_block_read_bytes_total":         float64(s.ReadBytes),
		"govmm_block_write_requests_total":     float64(s.WriteOperations),
		"govmm_block_read_requests_total":      float64(s.ReadOperations),
		"govmm_block_flush_requests_total":     float64(s.FlushOperations),
		"govmm_block_write_errors_total":       0,
		"govmm_block_flush_time_seconds_total": float64(s.FlushTotalTimeNanoseconds) / 1e9,
	} {
		if got, ok := sampleValue(t, families, name, labels); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}
