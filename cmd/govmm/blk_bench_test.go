package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
)

// The block I/O benchmark boots the guest once per job and VMM variant
// with a raw scratch image as /dev/vda and runs guests/blkbench.c through
// govmm.run: the guest times its own I/O (O_DIRECT, one request in
// flight), and each boot's exit counts, minus those of a boot whose job
// does no I/O, are the job's. One job per boot because the exit table is
// read once, at the end.
//
// Environment (defaults in brackets): BLK_SEQ_MB [64] bytes of each
// sequential job, BLK_SEQ_BS [64k] its request size, BLK_RAND_OPS [4000]
// requests of each random job, BLK_RAND_BS [4k], BLK_DISK_MB [64, or
// BLK_SEQ_MB if larger] the scratch disk, over all of which the random
// jobs spread; BLK_JOBS [seqread,seqwrite,randread,randwrite] which jobs;
// BLK_QEMU=0 leaves QEMU out; BLK_ROUNDS [3] rounds. The rounds run
// inside one benchmark iteration: with -benchtime Nx the testing package
// would first run a whole extra N=1 pass (a minute here) as its probe.
// Run it with -benchtime 1x, as make bench-blk does.

// blkJob is one blkbench invocation.
type blkJob struct {
	mode  string // seqread, seqwrite, randread, randwrite
	count int64  // bytes for the sequential modes, requests for the random ones
	bs    int64  // request size in bytes
}

func (j blkJob) run() string {
	return fmt.Sprintf("blkbench,%s,/dev/vda,%d,%d", j.mode, j.count, j.bs)
}

// blkVariant is one VMM configuration.
type blkVariant struct {
	name  string
	knobs []string // govmm run flags
	qemu  []string // for QEMU: the disk's -drive/-device arguments (machine included)
}

// blkRun is one boot: blkbench's result and the counters of the whole VM,
// keyed as in blkCounters.
type blkRun struct {
	seconds float64
	bytes   float64
	counts  map[string]float64
}

// Counter keys. "row:NAME" are govmm's user-space exit rows.
const (
	blkUser       = "user"       // govmm: exits handled in user space (TOTAL row)
	blkKVMUser    = "kvm:user"   // KVM: mmio_exits + io_exits, exits it sends to user space (either VMM)
	blkKVMExits   = "kvm:exits"  // KVM: every exit
	blkKVMHalts   = "kvm:halts"  // KVM: halt_exits
	blkNotifyEFD  = "virtio:efd" // govmm: notifications that arrived on an ioeventfd
	blkNotifyMMIO = "virtio:mmio"
	blkIRQs       = "virtio:irq"
)

// kvmStatNames are the KVM per-vCPU counters read for both VMMs.
var kvmStatNames = []string{"exits", "mmio_exits", "io_exits", "halt_exits"}

// benchEnvInt reads a benchmark's size or count from the environment
// (def when unset), with an optional k or m suffix; anything else fails
// the benchmark. The blk and kbuild benchmarks share it.
func benchEnvInt(b *testing.B, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		mult, v = 1<<10, v[:len(v)-1]
	case strings.HasSuffix(v, "m"), strings.HasSuffix(v, "M"):
		mult, v = 1<<20, v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a non-negative number (k or m suffix allowed)", name, os.Getenv(name))
	}
	return n * mult
}

// blkJobs reads the job list from the environment.
func blkJobs(b *testing.B) (jobs []blkJob, diskBytes int64) {
	seq := benchEnvInt(b, "BLK_SEQ_MB", 64) << 20
	seqBS := benchEnvInt(b, "BLK_SEQ_BS", 64<<10)
	ops := benchEnvInt(b, "BLK_RAND_OPS", 4000)
	randBS := benchEnvInt(b, "BLK_RAND_BS", 4<<10)
	diskBytes = benchEnvInt(b, "BLK_DISK_MB", max(64, seq>>20)) << 20
	if seqBS == 0 || seqBS%512 != 0 || randBS == 0 || randBS%512 != 0 {
		b.Fatal("BLK_SEQ_BS and BLK_RAND_BS must be multiples of 512")
	}
	if seq == 0 || ops == 0 {
		b.Fatal("BLK_SEQ_MB and BLK_RAND_OPS must be positive (BLK_JOBS picks jobs)")
	}
	if seq > diskBytes || randBS > diskBytes {
		b.Fatalf("BLK_DISK_MB=%d is smaller than a job", diskBytes>>20)
	}
	all := map[string]blkJob{
		"seqread":   {"seqread", seq, seqBS},
		"seqwrite":  {"seqwrite", seq, seqBS},
		"randread":  {"randread", ops, randBS},
		"randwrite": {"randwrite", ops, randBS},
	}
	names := "seqread,seqwrite,randread,randwrite"
	if v := os.Getenv("BLK_JOBS"); v != "" {
		names = v
	}
	for _, n := range strings.Split(names, ",") {
		j, ok := all[strings.TrimSpace(n)]
		if !ok {
			b.Fatalf("BLK_JOBS: unknown job %q (want seqread, seqwrite, randread, randwrite)", n)
		}
		jobs = append(jobs, j)
	}
	return jobs, diskBytes
}

// makeScratchDisk writes a raw image of pseudo-random bytes: not sparse,
// so reads come from real file pages in the host's page cache.
func makeScratchDisk(b *testing.B, path string, size int64) {
	chunk := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'g', 'o', 'v', 'm', 'm'})
	r.Read(chunk)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

var blkbenchRE = regexp.MustCompile(`blkbench mode=\w+ ops=\d+ bytes=(\d+) seconds=([0-9.]+)`)

func parseBlkbench(console string) (bytes, seconds float64, ok bool) {
	m := blkbenchRE.FindStringSubmatch(console)
	if m == nil {
		return 0, 0, false
	}
	bytes, _ = strconv.ParseFloat(m[1], 64)
	seconds, _ = strconv.ParseFloat(m[2], 64)
	return bytes, seconds, true
}

// virtioRowRE matches a row of the table WriteVirtioTable prints:
// device, queue, notifications by ioeventfd and by MMIO exit, interrupts.
var virtioRowRE = regexp.MustCompile(`(?m)^\s*(virtio-blk\S*)\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s*$`)

// runGovmmBlk boots govmm once and collects blkbench's result, the exit
// table saved as JSON, KVM's counters and the virtio table on stderr.
func runGovmmBlk(args []string, jsonPath string) (blkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return blkRun{}, fmt.Errorf("govmm: %v\n%s", err, lastLines(stdout.String()+stderr.String(), 10))
	}
	r := blkRun{counts: map[string]float64{}}
	var ok bool
	if r.bytes, r.seconds, ok = parseBlkbench(stdout.String()); !ok {
		return r, fmt.Errorf("govmm: no blkbench result:\n%s", lastLines(stdout.String(), 10))
	}
	user, err := readTable(jsonPath)
	if err != nil {
		return r, err
	}
	total := user.Total()
	r.counts[blkUser] = float64(total.Exits().Count)
	for _, row := range total.Rows {
		r.counts["row:"+row.Name] = float64(row.Count)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return r, err
	}
	var saved struct {
		Kernel *exitstats.KernelSnapshot `json:"kernel"`
	}
	if err := json.Unmarshal(raw, &saved); err != nil {
		return r, fmt.Errorf("%s: %w", jsonPath, err)
	}
	if saved.Kernel != nil {
		kvm := map[string]float64{}
		for _, name := range kvmStatNames {
			if n, ok := saved.Kernel.VCPUTotal(name); ok {
				kvm[name] = float64(n)
			}
		}
		addKVMCounts(r.counts, kvm)
	}
	for _, m := range virtioRowRE.FindAllStringSubmatch(stderr.String(), -1) {
		for i, key := range []string{blkNotifyEFD, blkNotifyMMIO, blkIRQs} {
			n, _ := strconv.ParseFloat(m[2+i], 64)
			r.counts[key] += n
		}
	}
	return r, nil
}

func addKVMCounts(counts map[string]float64, kvm map[string]float64) {
	if n, ok := kvm["exits"]; ok {
		counts[blkKVMExits] = n
	}
	if n, ok := kvm["halt_exits"]; ok {
		counts[blkKVMHalts] = n
	}
	_, mmio := kvm["mmio_exits"]
	_, io := kvm["io_exits"]
	if mmio || io {
		counts[blkKVMUser] = kvm["mmio_exits"] + kvm["io_exits"]
	}
}

// runQEMUBlk boots QEMU once. -no-shutdown keeps it alive after the
// guest's power-off so KVM's per-vCPU counters can be read over QMP
// (query-stats, QEMU 7.1 and later) before it quits.
func runQEMUBlk(args []string, sock string) (blkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	os.Remove(sock) // a previous run's
	args = append(args, "-no-shutdown", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return blkRun{}, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	fail := func(err error) (blkRun, error) {
		cmd.Process.Kill()
		<-done
		return blkRun{}, fmt.Errorf("qemu: %v\n%s", err, lastLines(out.String(), 10))
	}
	var c *qmp.SocketMonitor
	for c == nil {
		var err error
		if c, err = dialQMP(sock, time.Second); err != nil {
			select {
			case err := <-done:
				return blkRun{}, fmt.Errorf("qemu exited: %v\n%s", err, lastLines(out.String(), 10))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	defer c.Disconnect()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := runQMP(c, "query-status", nil, &st); err != nil {
			return fail(err)
		}
		if st.Status == "shutdown" {
			break
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	var stats []struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	q := map[string]any{"target": "vcpu", "providers": []any{map[string]any{"provider": "kvm", "names": kvmStatNames}}}
	statsErr := runQMP(c, "query-stats", q, &stats)
	runQMP(c, "quit", nil, nil)
	if err := <-done; err != nil {
		return blkRun{}, fmt.Errorf("qemu: %v\n%s", err, lastLines(out.String(), 10))
	}
	r := blkRun{counts: map[string]float64{}}
	var ok bool
	if r.bytes, r.seconds, ok = parseBlkbench(out.String()); !ok {
		return r, fmt.Errorf("qemu: no blkbench result:\n%s", lastLines(out.String(), 10))
	}
	if statsErr == nil {
		kvm := map[string]float64{}
		for _, v := range stats {
			for _, s := range v.Stats {
				var n float64
				if json.Unmarshal(s.Value, &n) == nil {
					kvm[s.Name] += n
				}
			}
		}
		addKVMCounts(r.counts, kvm)
	}
	return r, nil
}

// BenchmarkBlockIO runs sequential and random O_DIRECT I/O on a virtio-blk
// disk in the guest under govmm with its fast paths on and off, and under
// QEMU on the same kernel, initramfs and image, in one run whose rounds
// each go through the boots in a rotated order. It reports median MiB/s
// with min-max, n and failed runs, the ratio to QEMU's virtio-pci disk, and per
// MiB moved: user-space exits (govmm's table), exits KVM sent to user
// space and all KVM exits (both VMMs, from KVM's stats), and govmm's
// notifications and interrupts.
func BenchmarkBlockIO(b *testing.B) {
	kernel := guestDir + "/vmlinux"
	if _, err := os.Stat(kernel); err != nil {
		b.Skipf("no guest kernel: %v", err)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		b.Skipf("no /dev/kvm: %v", err)
	}
	if out, err := exec.Command("sh", "-c", "gzip -dc "+initramfs+" | cpio --quiet -t bin/blkbench").Output(); err != nil || !strings.Contains(string(out), "blkbench") {
		b.Fatalf("%s has no bin/blkbench: run `make guests` first", initramfs)
	}
	jobs, diskBytes := blkJobs(b)
	rounds := testenv.Rounds(b, "BLK_ROUNDS", 3) * b.N
	dir := b.TempDir()
	disk := filepath.Join(dir, "scratch.img")
	makeScratchDisk(b, disk, diskBytes)
	cmdline := func(j blkJob, reboot string) string {
		return "console=ttyS0 reboot=" + reboot + " panic=-1 quiet govmm.run=" + j.run()
	}

	variants := []blkVariant{
		{name: "govmm"},
		{name: "govmm-no-ioeventfd", knobs: []string{"--no-ioeventfd"}},
		{name: "govmm-no-irqfd", knobs: []string{"--no-irqfd"}},
		{name: "govmm-no-both", knobs: []string{"--no-ioeventfd", "--no-irqfd"}},
	}
	qemu, qemuErr := exec.LookPath("qemu-system-x86_64")
	switch {
	case os.Getenv("BLK_QEMU") == "0":
		qemuErr = fmt.Errorf("BLK_QEMU=0")
	case qemuErr == nil:
		// Both on microvm, the machine the other benchmarks use. pcie=on
		// gives it a PCIe host bridge (ECAM, found through ACPI's MCFG)
		// and so the transport govmm has: modern virtio-pci with MSI-X,
		// ioeventfd and irqfd (QEMU's defaults); one queue, as govmm's.
		// The second is microvm's own virtio-mmio transport: one shared
		// IOAPIC line, no MSI.
		drive := "id=d0,file=" + disk + ",format=raw,if=none"
		variants = append(variants,
			blkVariant{name: "qemu-microvm-pci", qemu: []string{"-M", "microvm,pcie=on", "-drive", drive, "-device", "virtio-blk-pci,drive=d0,num-queues=1"}},
			blkVariant{name: "qemu-microvm-mmio", qemu: []string{"-M", "microvm", "-drive", drive, "-device", "virtio-blk-device,drive=d0"}},
		)
	}
	runOne := func(v blkVariant, j blkJob, tag string) (blkRun, error) {
		if v.qemu != nil {
			args := append([]string{qemu}, v.qemu...)
			args = append(args, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "2", "-m", "512",
				"-kernel", kernel, "-initrd", initramfs, "-append", cmdline(j, "t"),
				"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio")
			return runQEMUBlk(args, filepath.Join(dir, "qmp.sock"))
		}
		jsonPath := filepath.Join(dir, v.name+"-"+tag+".json")
		args := []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "512M",
			"--disk", disk, "--exit-stats-json", jsonPath, "--append", cmdline(j, "k")}
		return runGovmmBlk(append(args, v.knobs...), jsonPath)
	}

	// Each round also boots every variant with a job that opens the disk
	// and moves nothing: the median of those boots' counts (boot, PCI
	// probing, the result line) comes out of every run. A boot's exit
	// count varies by thousands, so one baseline would not do.
	baseJob := blkJob{"seqread", 0, jobs[0].bs}
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	type key struct{ job, variant string }
	// Every (job, variant) boot of a round, the baselines included, in an
	// order rotated per round (testenv.Order).
	type boot struct {
		job blkJob
		tag string
		v   blkVariant
	}
	var boots []boot
	for _, j := range append([]blkJob{baseJob}, jobs...) {
		tag := j.mode
		if j.count == 0 {
			tag = "baseline"
		}
		for _, v := range variants {
			boots = append(boots, boot{j, tag, v})
		}
	}
	runs := map[key][]blkRun{}
	failures := map[key]int{}
	start := time.Now()
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(boots), func(i int) string { return boots[i].v.name + " " + boots[i].tag }, func(_, i int) error {
		bt := boots[i]
		r, err := runOne(bt.v, bt.job, bt.tag)
		if err == nil {
			runs[key{bt.tag, bt.v.name}] = append(runs[key{bt.tag, bt.v.name}], r)
		}
		return err
	})
	b.StopTimer()
	for i, n := range failed {
		failures[key{boots[i].tag, boots[i].v.name}] = n
	}

	// perMiB is the median over rounds of (count - baseline) per MiB
	// moved; ok is false when the VMM did not report that counter.
	baseline := func(variant, counter string) (float64, bool) {
		var xs []float64
		for _, r := range runs[key{"baseline", variant}] {
			n, ok := r.counts[counter]
			if !ok && !strings.HasPrefix(counter, "row:") {
				return 0, false
			}
			xs = append(xs, n)
		}
		return testenv.Median(xs), len(xs) > 0
	}
	perMiB := func(k key, counter string) (float64, bool) {
		var xs []float64
		base, okBase := baseline(k.variant, counter)
		if !okBase {
			return 0, false
		}
		for _, r := range runs[k] {
			n, ok := r.counts[counter]
			if !ok && !strings.HasPrefix(counter, "row:") {
				return 0, false
			}
			xs = append(xs, (n-base)/(r.bytes/(1<<20)))
		}
		return testenv.Median(xs), len(xs) > 0
	}
	mibps := func(k key) testenv.Summary {
		var xs []float64
		for _, r := range runs[k] {
			xs = append(xs, r.bytes/(1<<20)/r.seconds)
		}
		return testenv.Summarize(xs, failures[k])
	}

	var rep strings.Builder
	seqJob, randJob := blkJob{}, blkJob{}
	for _, j := range jobs {
		if strings.HasPrefix(j.mode, "seq") {
			seqJob = j
		} else {
			randJob = j
		}
	}
	fmt.Fprintf(&rep, "\nvirtio-blk in the guest: blkbench, O_DIRECT on /dev/vda, one request in flight; --smp 2, %d rounds, %.0f s (%s)\n",
		rounds*b.N, time.Since(start).Seconds(), time.Now().Format("2006-01-02"))
	if seqJob.mode != "" {
		fmt.Fprintf(&rep, "sequential: %d MiB in %d KiB requests; ", seqJob.count>>20, seqJob.bs>>10)
	}
	if randJob.mode != "" {
		fmt.Fprintf(&rep, "random: %d requests of %d KiB over the %d MiB disk", randJob.count, randJob.bs>>10, diskBytes>>20)
	}
	fmt.Fprintf(&rep, "\nwrites are not synced: both VMMs put them in the host page cache (govmm pwritev, QEMU cache=writeback aio=threads)")
	if f := strings.Fields(string(loadBefore)); len(f) > 0 {
		fmt.Fprintf(&rep, "; host load average %s at the start", f[0])
	}
	fmt.Fprintf(&rep, "\nMiB/s: median (min-max, n, failed runs) of rounds, variants rotated per round; /qemu: ratio of medians to qemu-microvm-pci in the same job.\n")
	fmt.Fprintf(&rep, "Per MiB moved, median of rounds, minus the median boot that moves nothing (its spread, below, is the uncertainty of these counts):\n")
	fmt.Fprintf(&rep, "user = exits govmm handled (its table); kvm-user = KVM's mmio_exits+io_exits (exits to the VMM, any VMM); kvm = all KVM exits; halt = KVM halt_exits;\n")
	fmt.Fprintf(&rep, "efd/mmio = queue notifications by ioeventfd / by MMIO exit; irq = interrupts sent (govmm's virtio counters)\n\n")
	fmt.Fprintf(&rep, "%-9s %-19s %-28s %6s %8s %8s %8s %8s %7s %7s %7s\n",
		"job", "variant", "MiB/s", "/qemu", "user", "kvm-user", "kvm", "halt", "efd", "mmio", "irq")
	for _, j := range jobs {
		qemuMed := mibps(key{j.mode, "qemu-microvm-pci"}).Median
		for _, v := range variants {
			k := key{j.mode, v.name}
			m := mibps(k)
			fmt.Fprintf(&rep, "%-9s %-19s %-28s %6s", j.mode, v.name, m.Format("%.1f"), ratioOf(m.Median, qemuMed))
			for i, c := range []string{blkUser, blkKVMUser, blkKVMExits, blkKVMHalts, blkNotifyEFD, blkNotifyMMIO, blkIRQs} {
				width := 8
				if i >= 4 {
					width = 7
				}
				if x, ok := perMiB(k, c); ok {
					fmt.Fprintf(&rep, " %*.1f", width, x)
				} else {
					fmt.Fprintf(&rep, " %*s", width, "-")
				}
			}
			fmt.Fprintln(&rep)
			if m.N > 0 {
				b.ReportMetric(m.Median, j.mode+"-"+v.name+"-MiB/s")
			}
		}
		if g := mibps(key{j.mode, "govmm"}).Median; qemuMed > 0 && g > 0 {
			b.ReportMetric(g/qemuMed, j.mode+"-govmm/qemu")
		}
	}
	fmt.Fprintf(&rep, "\nboots that move nothing (subtracted above): min-max of their counts, n, failed runs\n")
	for _, v := range variants {
		k := key{"baseline", v.name}
		fmt.Fprintf(&rep, "%-9s %-19s n=%d", "baseline", v.name, len(runs[k]))
		if failures[k] > 0 {
			fmt.Fprintf(&rep, ", %d failed", failures[k])
		}
		for _, c := range []string{blkUser, blkKVMExits, blkKVMHalts} {
			var xs []float64
			for _, r := range runs[k] {
				if n, ok := r.counts[c]; ok {
					xs = append(xs, n)
				}
			}
			if len(xs) > 0 {
				fmt.Fprintf(&rep, "  %s %.0f-%.0f", c, slices.Min(xs), slices.Max(xs))
			}
		}
		fmt.Fprintln(&rep)
	}
	if qemuErr != nil {
		fmt.Fprintf(&rep, "(no QEMU rows: %v)\n", qemuErr)
	}

	fmt.Fprintf(&rep, "\ngovmm's user-space exits per MiB by row (median of rounds, baseline subtracted; rows within +-0.5 left out):\n")
	for _, j := range jobs {
		for _, v := range variants {
			if v.qemu != nil {
				continue
			}
			k := key{j.mode, v.name}
			names := map[string]bool{}
			for _, r := range runs[k] {
				for c := range r.counts {
					if strings.HasPrefix(c, "row:") {
						names[c] = true
					}
				}
			}
			type rate struct {
				name string
				x    float64
			}
			var rates []rate
			for c := range names {
				if x, _ := perMiB(k, c); x >= 0.5 || x <= -0.5 {
					rates = append(rates, rate{strings.TrimPrefix(c, "row:"), x})
				}
			}
			sort.Slice(rates, func(a, b int) bool { return rates[a].x > rates[b].x })
			fmt.Fprintf(&rep, "%-9s %-19s", j.mode, v.name)
			if len(rates) == 0 {
				fmt.Fprint(&rep, " (none)")
			}
			for _, r := range rates {
				fmt.Fprintf(&rep, " %s %.1f", r.name, r.x)
			}
			fmt.Fprintln(&rep)
		}
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}
