package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/vmm"
)

// kernelExits is KVM's own exit count over all vCPUs.
func kernelExits(t *testing.T, c qmp.Monitor) uint64 {
	t.Helper()
	var table vmm.ExitTable
	if err := runQMP(c, "query-exit-stats", nil, &table); err != nil {
		t.Fatal(err)
	}
	if table.Kernel == nil {
		t.Skip("this kernel has no KVM stats fd: cannot watch exits")
	}
	n, ok := table.Kernel.VCPUTotal("exits")
	if !ok {
		t.Skip("KVM stats have no exits counter")
	}
	return n
}

func status(t *testing.T, c qmp.Monitor) string {
	t.Helper()
	var s struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := runQMP(c, "query-status", nil, &s); err != nil {
		t.Fatal(err)
	}
	return s.Status
}

// waitQMP connects to govmm's QMP socket once it is up.
func waitQMP(t *testing.T, sock string, stderr *syncBuffer) *qmp.SocketMonitor {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dialQMP(sock, time.Second)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QMP socket: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pausing a running Linux guest over QMP stops its vCPUs (KVM's exit count
// stops), cont resumes them, system_powerdown ends govmm with status 0;
// the live view reads the same socket.
func TestQMPPauseResumePowerdown(t *testing.T) {
	kernel := needGuest(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2",
		"--qmp", "unix:"+sock, "--disk", disk+",ro", "--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=sem_test,10000000,2000")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	c := waitQMP(t, sock, &stderr)
	defer c.Disconnect()
	// Every event, in order; the channel closes when govmm hangs up.
	evs, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	eventsDone := make(chan []string, 1)
	go func() {
		var names []string
		for e := range evs {
			names = append(names, e.Event)
		}
		eventsDone <- names
	}()
	time.Sleep(500 * time.Millisecond) // let the guest boot and start sem_test, which exits all the time
	if s := status(t, c); s != "running" {
		t.Fatalf("status %q, want running", s)
	}
	if err := runQMP(c, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c); s != "paused" {
		t.Fatalf("status after stop %q, want paused", s)
	}
	e1 := kernelExits(t, c)
	time.Sleep(300 * time.Millisecond)
	if e2 := kernelExits(t, c); e2 != e1 {
		t.Errorf("paused vCPUs made %d exits in 300 ms", e2-e1)
	}
	if err := runQMP(c, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c); s != "running" {
		t.Fatalf("status after cont %q, want running", s)
	}
	e3 := kernelExits(t, c)
	time.Sleep(300 * time.Millisecond)
	if e4 := kernelExits(t, c); e4 <= e3 {
		t.Errorf("no exits in 300 ms after cont (%d -> %d)", e3, e4)
	}
	var blocks []struct {
		Device   string `json:"device"`
		Inserted struct {
			File     string `json:"file"`
			ReadOnly bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := runQMP(c, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Inserted.File != disk || !blocks[0].Inserted.ReadOnly {
		t.Errorf("query-block: %+v, want the read-only disk %s", blocks, disk)
	}
	var buses []struct {
		Devices []struct {
			ID struct {
				Vendor int `json:"vendor"`
				Device int `json:"device"`
			} `json:"id"`
		} `json:"devices"`
	}
	if err := runQMP(c, "query-pci", nil, &buses); err != nil {
		t.Fatal(err)
	}
	foundBlk := false
	for _, b := range buses {
		for _, d := range b.Devices {
			foundBlk = foundBlk || d.ID.Vendor == 0x1af4 && d.ID.Device == 0x1042
		}
	}
	if !foundBlk {
		t.Errorf("query-pci lists no virtio-blk (1af4:1042): %+v", buses)
	}
	live, err := exec.Command(govmmBin, "stat", "--qmp", "unix:"+sock, "--once", "--interval", "200ms").CombinedOutput()
	if err != nil || !strings.Contains(string(live), "exits") {
		t.Errorf("govmm stat --once: %v\n%s", err, live)
	}
	if err := runQMP(c, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("govmm after system_powerdown: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("govmm still running 5 s after system_powerdown")
	}
	var events []string
	select {
	case events = <-eventsDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the QMP connection is still open 5 s after govmm ended")
	}
	want := []string{"STOP", "RESUME", "POWERDOWN", "SHUTDOWN"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Errorf("events %v, want %v", events, want)
	}
}
