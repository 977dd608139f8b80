package vmm

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/vmm/boot"
)

// highmemLines is how many numbered lines the disk's input file holds:
// 4 MiB of them.
const highmemLines = 4 << 20 / 32

// highmemLine is line i of the input file, 32 bytes: unique, so a copy
// found in guest RAM says which page of the file it came from.
func highmemLine(i int) string { return fmt.Sprintf("govmm-highmem-line %012d\n", i) }

// A guest with --mem 4G sees RAM above 3 GiB and uses the part mapped at
// 4 GiB, and virtio-blk moves data to and from buffers there. Linux
// prefers its highest zone (ZONE_NORMAL, all of it above 4 GiB here) for
// the page cache, so the pages a file is read into, and written from,
// are where the device must reach through the second memory slot. The
// host then finds the file's lines in RAM above 4 GiB: the lower-case
// ones only the device wrote there (the read), the upper-case ones the
// guest wrote and the device read (the copy written back to the disk,
// checked on the image). Host memory: the guest touches tens of MiB of
// its 4 GiB.
func TestHighMemory(t *testing.T) {
	var in strings.Builder
	for i := range highmemLines {
		in.WriteString(highmemLine(i))
	}
	script := `set -e
grep MemTotal /proc/meminfo
tr a-z A-Z </mnt/in.dat >/mnt/out.dat
sync
echo HIGHMEM-DONE
`
	img := makeDisk(t, map[string]string{"run.sh": script, "in.dat": in.String()})
	vm, out, console := bootDisk(t, img, func(c *Config) { c.MemSize = 4 << 30 })
	if out.Err != nil || out.Reason != vcpu.PowerOff || !strings.Contains(console, "HIGHMEM-DONE") || !strings.Contains(console, "GOVMM-DISK rc=0") {
		t.Fatalf("guest ended %v (%v), want the script done and power-off; console:\n%s", out.Reason, out.Err, console)
	}
	m := regexp.MustCompile(`MemTotal: +(\d+) kB`).FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("no MemTotal on the console:\n%s", console)
	}
	// More than fits below the hole: the guest took the e820 entry at 4 GiB.
	if kb, _ := strconv.ParseUint(m[1], 10, 64); kb<<10 <= boot.LowRAMSplit {
		t.Errorf("guest's MemTotal is %d kB, want more than 3 GiB", kb)
	}
	if got, want := diskFile(t, img, "out.dat", false), strings.ToUpper(in.String()); got != want {
		t.Fatalf("out.dat: %d bytes, not the upper-cased in.dat (%d bytes)", len(got), len(want))
	}
	high, err := vm.mem.Slice(boot.PCIHoleEnd, vm.mem.Size()-boot.LowRAMSplit)
	if err != nil {
		t.Fatal(err)
	}
	read, written := linesIn(high, "govmm-highmem-line "), linesIn(high, "GOVMM-HIGHMEM-LINE ")
	// Linux prefers the zone above 4 GiB, so nearly all of them are
	// there (131072 of 131072 in most runs); how many is the guest
	// allocator's choice, so any line proves the device reached the
	// second memory slot each way.
	t.Logf("lines of the 4 MiB file found above 4 GiB: %d of %d read by the device, %d of %d written by it", read, highmemLines, written, highmemLines)
	if read == 0 || written == 0 {
		t.Errorf("found %d read and %d written lines of %d above 4 GiB, want some of each", read, written, highmemLines)
	}
}

// linesIn counts the distinct line numbers after prefix in b.
func linesIn(b []byte, prefix string) int {
	seen := map[int]bool{}
	p := []byte(prefix)
	for {
		i := bytes.Index(b, p)
		if i < 0 || len(b)-i < 32 {
			return len(seen)
		}
		if n, err := strconv.Atoi(string(b[i+len(p) : i+31])); err == nil && n < highmemLines {
			seen[n] = true
		}
		b = b[i+len(p):]
	}
}
