package vmm

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govmm/govmm/vcpu"
)

// Guest disks for these tests are ext4 images made by e2fsprogs
// (guests/apt-packages.txt); the guest's /init mounts /dev/vda on /mnt
// with govmm.mount and runs /mnt/run.sh from it.

func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install e2fsprogs)", tool)
		}
	}
}

// makeDisk returns a 64 MiB ext4 image holding files (name -> content).
func makeDisk(t *testing.T, files map[string]string) string {
	t.Helper()
	needE2fsprogs(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// diskFile returns a file's content on an ext4 image. With fsck it first
// replays the journal, as the guest would on its next mount: needed
// after an unclean end, where committed metadata may still be only in
// the journal.
func diskFile(t *testing.T, img, name string, fsck bool) string {
	t.Helper()
	if fsck {
		out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput()
		var ee *exec.ExitError
		// 1: errors corrected (the journal replay counts), fine here.
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
			t.Fatalf("e2fsck: %v\n%s", err, out)
		}
	}
	out, err := exec.Command("debugfs", "-R", "cat /"+name, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat /%s: %v", name, err)
	}
	return string(out)
}

// bootDisk boots the test guest with img as its virtio-blk disk and
// govmm.mount, configured further by mod.
func bootDisk(t *testing.T, img string, mod func(*Config)) (*VM, Outcome, string) {
	t.Helper()
	vm, console := newDiskVM(t, img, mod)
	return runToEnd(t, vm, console)
}

// newDiskVM is bootDisk's VM, not started yet.
func newDiskVM(t *testing.T, img string, mod func(*Config)) (*VM, *syncBuffer) {
	t.Helper()
	console := &syncBuffer{}
	cfg := Config{
		Kernel: needGuest(t, "vmlinux"), Initrd: initramfs,
		Cmdline: DefaultCmdline + " govmm.mount",
		MemSize: 512 << 20, CPUs: 2,
		Console: console, ExitStats: true, SyncRegs: true,
		Disks: []DiskConfig{{Path: img}},
	}
	if mod != nil {
		mod(&cfg)
	}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return vm, console
}

// blkScript reads the input file, writes a transformed copy and 4 MiB of
// random data with its checksum, and syncs: reads, writes and flushes,
// in requests of every size the page cache makes.
const blkScript = `set -e
tr a-z A-Z </mnt/in.txt >/mnt/out.txt
dd if=/dev/urandom of=/mnt/big bs=64k count=64 2>/dev/null
md5sum /mnt/big | cut -d' ' -f1 >/mnt/big.md5
sync
echo "vda size $(cat /sys/block/vda/size) serial $(cat /sys/block/vda/serial)"
`

// checkBlkScript checks what blkScript left on img, unmounted cleanly.
func checkBlkScript(t *testing.T, img string) {
	t.Helper()
	if got := diskFile(t, img, "out.txt", false); got != "HELLO FROM THE HOST\n" {
		t.Errorf("out.txt = %q", got)
	}
	big := diskFile(t, img, "big", false)
	sum := md5.Sum([]byte(big))
	if len(big) != 4<<20 || hex.EncodeToString(sum[:])+"\n" != diskFile(t, img, "big.md5", false) {
		t.Errorf("big: %d bytes, md5 %x, guest says %q", len(big), sum, diskFile(t, img, "big.md5", false))
	}
}

func TestVirtioBlk(t *testing.T) {
	for _, tc := range []struct {
		name               string
		noIOEventFD, noIRQ bool
		direct             bool // cache=none
	}{
		{"ioeventfd+irqfd", false, false, false},
		{"no-ioeventfd", true, false, false},
		{"no-irqfd", false, true, false},
		{"cache=none", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := makeDisk(t, map[string]string{"run.sh": blkScript, "in.txt": "hello from the host\n"})
			vm, out, console := bootDisk(t, img, func(c *Config) {
				c.NoIOEventFD, c.NoIRQFD = tc.noIOEventFD, tc.noIRQ
				c.Disks[0].Direct = tc.direct
			})
			if out.Err != nil || out.Reason != vcpu.PowerOff {
				t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
			}
			if !strings.Contains(console, "GOVMM-DISK rc=0") {
				t.Fatalf("disk script failed; console:\n%s", console)
			}
			if !strings.Contains(console, "vda size 131072 serial disk.img") {
				t.Errorf("guest sees the disk wrong; console:\n%s", console)
			}
			// The guest unmounted cleanly: no fsck needed.
			checkBlkScript(t, img)

			var served, mmio, irqs uint64
			for _, c := range vm.VirtioCounters() {
				served += c.NotifyEventFD
				mmio += c.NotifyMMIO
				irqs += c.Interrupts
			}
			row, _ := vm.Stats().Total().Row("MMIO:virtio-blk.notify")
			t.Logf("notifications: %d by ioeventfd, %d by MMIO exit (exit table: %d); %d interrupts",
				served, mmio, row.Count, irqs)
			if irqs == 0 {
				t.Error("no interrupts counted")
			}
			if row.Count != mmio {
				t.Errorf("exit table has %d notify exits, the transport counted %d", row.Count, mmio)
			}
			if tc.noIOEventFD {
				if mmio == 0 || served != 0 {
					t.Errorf("without ioeventfd: %d MMIO notifications, %d by eventfd", mmio, served)
				}
			} else if served == 0 || mmio != 0 {
				// Linux writes the queue index as 16 bits, exactly what
				// the ioeventfd matches: not one notification may exit.
				t.Errorf("with ioeventfd: %d notify exits, %d by eventfd", mmio, served)
			}
		})
	}
}

func TestVirtioBlkReadOnly(t *testing.T) {
	script := `echo x >/mnt/new.txt && echo WROTE; exit 0`
	img := makeDisk(t, map[string]string{"run.sh": script})
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	_, out, console := bootDisk(t, img, func(c *Config) { c.Disks[0].ReadOnly = true })
	if out.Err != nil || out.Reason != vcpu.PowerOff {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
	}
	if !strings.Contains(console, "GOVMM-DISK rc=0") || strings.Contains(console, "WROTE") {
		t.Errorf("a write to a read-only disk succeeded, or the script did not run; console:\n%s", console)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("read-only image changed")
	}
}

// TestVirtioBlkRebootAfterSync: what the guest synced survives a reboot
// that interrupts later writes and never unmounts.
func TestVirtioBlkRebootAfterSync(t *testing.T) {
	script := `echo durable >/mnt/synced.txt
sync
dd if=/dev/zero of=/mnt/junk bs=64k count=256 2>/dev/null &
reboot -f
`
	img := makeDisk(t, map[string]string{"run.sh": script})
	_, out, console := bootDisk(t, img, func(c *Config) { c.NoReboot = true })
	if out.Err != nil || out.Reason != vcpu.Reset {
		t.Fatalf("guest ended %v (%v), want a reset; console:\n%s", out.Reason, out.Err, console)
	}
	if got := diskFile(t, img, "synced.txt", true); got != "durable\n" {
		t.Errorf("synced.txt after the reboot = %q", got)
	}
}

// TestVirtioBlkKillAfterSync: what the guest synced is in the image even
// when govmm is killed and flushes nothing.
func TestVirtioBlkKillAfterSync(t *testing.T) {
	kernel := needGuest(t, "vmlinux")
	script := `echo durable >/mnt/synced.txt
sync
echo SYNCED
sleep 60
`
	img := makeDisk(t, map[string]string{"run.sh": script})
	bin := filepath.Join(t.TempDir(), "govmm")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/govmm").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2",
		"--disk", img, "--append", DefaultCmdline+" govmm.mount")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	synced := make(chan bool, 1)
	var console bytes.Buffer
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			console.WriteString(s.Text() + "\n")
			if strings.Contains(s.Text(), "SYNCED") {
				synced <- true
				break
			}
		}
		close(synced)
	}()
	select {
	case ok := <-synced:
		if !ok {
			cmd.Wait()
			t.Fatalf("guest ended before SYNCED; console:\n%s", console.String())
		}
	case <-time.After(bootTimeout):
		t.Fatal("no SYNCED from the guest")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("govmm ended with %v, want killed by SIGKILL", err)
	}
	if got := diskFile(t, img, "synced.txt", true); got != "durable\n" {
		t.Errorf("synced.txt after SIGKILL = %q", got)
	}
}

// TestPCIProbeExits: with the host bridge on ports 0xcf8-0xcff, a Linux
// boot leaves no PCI probing in the unclaimed row.
func TestPCIProbeExits(t *testing.T) {
	vm, out, console := bootLinux(t, "vmlinux", 1, "")
	if out.Err != nil || out.Reason != vcpu.PowerOff {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
	}
	pci, ok := vm.Stats().Total().Row("IO:pci")
	if !ok || pci.Count == 0 {
		t.Fatal("no configuration accesses in the exit table")
	}
	if vm.IOBus.Find(0xcf8) == nil || vm.IOBus.Find(0xcff) == nil {
		t.Error("0xcf8-0xcff not claimed")
	}
	t.Logf("%d PCI configuration exits", pci.Count)
}

// TestVirtioBlkAcrossResets: the disk works in every boot of a guest that
// reboots in place (device reset, BARs and MSI-X back to their power-on
// state, a new driver probing them), and what each boot wrote is there;
// also with cache=none, whose queues keep their AIO contexts across
// resets.
func TestVirtioBlkAcrossResets(t *testing.T) {
	script := `echo boot >>/mnt/boots
sync
if [ "$(wc -l </mnt/boots)" -ge 3 ]; then umount /mnt; poweroff -f; fi
reboot -f
`
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=none:%v", direct), func(t *testing.T) {
			img := makeDisk(t, map[string]string{"run.sh": script})
			vm, out, console := bootDisk(t, img, func(c *Config) { c.Disks[0].Direct = direct })
			if out.Err != nil || out.Reason != vcpu.PowerOff {
				t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
			}
			if n := vm.Resets(); n != 2 {
				t.Errorf("%d resets, want 2", n)
			}
			if got := diskFile(t, img, "boots", true); got != "boot\nboot\nboot\n" {
				t.Errorf("boots = %q, want three lines; console:\n%s", got, console)
			}
		})
	}
}

// TestVirtioBlkMultiQueue: a disk with a request queue per vCPU (and one
// with more queues than vCPUs, whose extra queues Linux leaves disabled)
// moves data right with reads pinned to each vCPU and their queue
// polled: the guest sees the queues, each vCPU's reads arrive on a queue
// of their own, and the files written and synced are intact.
func TestVirtioBlkMultiQueue(t *testing.T) {
	script := `set -e
echo "hw queues $(ls /sys/block/vda/mq | wc -l)"
taskset 1 dd if=/dev/vda of=/dev/null bs=4k count=200 iflag=direct 2>/dev/null
taskset 2 dd if=/dev/vda of=/dev/null bs=4k count=200 iflag=direct 2>/dev/null
` + blkScript
	for _, queues := range []int{0, 4} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) {
			img := makeDisk(t, map[string]string{"run.sh": script, "in.txt": "hello from the host\n"})
			vm, out, console := bootDisk(t, img, func(c *Config) {
				c.Disks[0].Queues = queues
				c.BlockPoll = 50 * time.Microsecond
			})
			if out.Err != nil || out.Reason != vcpu.PowerOff || !strings.Contains(console, "GOVMM-DISK rc=0") {
				t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
			}
			// Linux uses one queue per vCPU at most.
			if !regexp.MustCompile(`hw queues 2\s`).MatchString(console) {
				t.Errorf("guest does not see 2 queues; console:\n%s", console)
			}
			checkBlkScript(t, img)
			want := max(queues, 2)
			var used int
			for _, c := range vm.VirtioCounters() {
				if c.Device != "virtio-blk" {
					continue
				}
				t.Logf("queue %d: %+v", c.Queue, c.QueueCounters)
				if c.Queue >= want {
					t.Errorf("queue %d of %d", c.Queue, want)
				}
				// Each pinned dd made 200 direct reads on its vCPU's
				// queue. How many notifications and polls they took
				// is not fixed: the device serves a request the guest
				// adds while it still looks at the ring without
				// either (seen 202 for 200 reads with the script's
				// own traffic), so they are logged, not bounded.
				if c.Interrupts > 0 {
					used++
					if c.NotifyEventFD+c.NotifyMMIO+c.Polled == 0 {
						t.Errorf("queue %d: interrupts but no notification or poll: %+v", c.Queue, c.QueueCounters)
					}
				}
			}
			if used != 2 {
				t.Errorf("%d queues had traffic, want 2 (one per vCPU)", used)
			}
		})
	}
}

// TestVirtioBlkFstrim: the guest writes 16 MiB, deletes it and runs
// fstrim; the discards reach the image as punched holes, so the host
// file ends up with less than half of those 16 MiB still allocated
// (without discard all of it would be).
func TestVirtioBlkFstrim(t *testing.T) {
	script := `set -e
echo "discard_max_bytes $(cat /sys/block/vda/queue/discard_max_bytes)"
dd if=/dev/urandom of=/mnt/big bs=64k count=256 2>/dev/null
sync
rm /mnt/big
sync
fstrim -v /mnt
`
	img := makeDisk(t, map[string]string{"run.sh": script})
	before := allocatedBytes(img)
	vm, out, console := bootDisk(t, img, nil)
	if out.Err != nil || out.Reason != vcpu.PowerOff || !strings.Contains(console, "GOVMM-DISK rc=0") {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
	}
	if !strings.Contains(console, "trimmed") || strings.Contains(console, "discard_max_bytes 0\n") {
		t.Fatalf("fstrim did not run, or the disk has no discard; console:\n%s", console)
	}
	after := allocatedBytes(img)
	t.Logf("image allocation %d KiB before the boot, %d KiB after", before>>10, after>>10)
	if after >= before+8<<20 {
		t.Errorf("image allocation grew from %d to %d KiB: the trimmed 16 MiB stayed allocated", before>>10, after>>10)
	}
	// Counted by the device and reported as QMP's query-blockstats has it.
	var unmaps, unmapBytes uint64
	for _, b := range (&control{vm: vm}).Blocks() {
		unmaps += b.Stats.UnmapOps
		unmapBytes += b.Stats.UnmapBytes
	}
	if unmaps == 0 || unmapBytes == 0 {
		t.Errorf("query-blockstats counts %d unmap requests of %d bytes, want the discards", unmaps, unmapBytes)
	}
}
