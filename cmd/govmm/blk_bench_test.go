package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm"
)

// The block benchmark runs fio, the tool users judge storage with, on one
// raw image file on the host's disk: on the host itself, in govmm (each
// datapath variant) and in QEMU 7.2 (each of its I/O configurations), the
// same jobs on the same file, every variant once per round, rounds in a
// rotated order.
//
// A guest boots the benchmark initramfs (fio and its libraries) with the
// image as /dev/vda and a second, read-only disk /dev/vdb that holds a
// shell script (blkGuestScript), run as govmm.run=sh,/dev/vdb: it writes
// the job file and runs every job in one fio process. Around each job fio
// runs exec_prerun and exec_postrun, and there the guest waits at a
// barrier: it prints its disk counters and reads a line from the console.
// The host, on the barrier lines of all the job's clones, drops the
// image's pages from its page cache (before a job), reads the VMM
// process's CPU time and KVM's exit counters (over QMP), and answers. So
// every job's cost is counted from its first request to its last, ramp
// included, without the boot or fio's start-up, and without timing.
//
// Environment (defaults in brackets): BLK_ROUNDS [3] rounds;
// BLK_RUNTIME [5s] each job's measured time and BLK_RAMP [1s] the ramp
// before it; BLK_DISK_MB [1024] the image; BLK_DIR [the test's temporary
// directory] where it lives, which must not be a tmpfs; BLK_JOBS and
// BLK_ONLY, regular expressions, pick jobs and variants (host, govmm...,
// qemu-...); BLK_QEMU_MACHINE [microvm,pcie=on] is QEMU's -M (q35 and pc
// boot the shared kernel too, through their firmware). Run it with
// -benchtime 1x, as make bench-blk does: the rounds run inside one
// iteration.

// blkVCPUs is the guest's vCPU count, and the clones of each QD32 job.
const blkVCPUs = 2

// blkJob is one fio job.
type blkJob struct {
	name    string // the job's name, and its rows in the report
	rw      string // fio's rw
	bs      string
	engine  string // fio's ioengine
	iodepth int
	numjobs int // clones, reported as one (group_reporting)
}

// blkJobs are the jobs: 4 KiB random at one request in flight
// (psync) and at 32 per clone with a clone per vCPU (libaio), and 1 MiB
// sequential.
var blkJobs = []blkJob{
	{"randread-4k-qd1", "randread", "4k", "psync", 1, 1},
	{"randwrite-4k-qd1", "randwrite", "4k", "psync", 1, 1},
	{"randread-4k-qd32", "randread", "4k", "libaio", 32, blkVCPUs},
	{"randwrite-4k-qd32", "randwrite", "4k", "libaio", 32, blkVCPUs},
	{"read-1m-qd8", "read", "1m", "libaio", 8, 1},
	{"write-1m-qd8", "write", "1m", "libaio", 8, 1},
}

// fioJobFile is the job file for filename. With mark, a path to the
// guest's barrier script, every job runs it before its first request and
// after its last.
func fioJobFile(filename string, jobs []blkJob, runtime, ramp time.Duration, mark string) string {
	var f strings.Builder
	fmt.Fprintf(&f, "[global]\nfilename=%s\ndirect=1\ntime_based=1\nruntime=%dms\nramp_time=%dms\ngroup_reporting=1\n",
		filename, runtime.Milliseconds(), ramp.Milliseconds())
	for _, j := range jobs {
		// stonewall: each job starts when the one before has ended.
		fmt.Fprintf(&f, "\n[%s]\nstonewall\nrw=%s\nbs=%s\nioengine=%s\niodepth=%d\nnumjobs=%d\n",
			j.name, j.rw, j.bs, j.engine, j.iodepth, j.numjobs)
		if mark != "" {
			fmt.Fprintf(&f, "exec_prerun=sh %s begin %s\nexec_postrun=sh %s end %s\n", mark, j.name, mark, j.name)
		}
	}
	return f.String()
}

// Lines the guest prints: a barrier ("GOVMM-FIO begin|end JOB" and the
// disk's stat line), and fio's report between two marker lines.
const (
	fioBarrier    = "GOVMM-FIO "
	fioJSONStart  = "GOVMM-FIO-JSON"
	fioJSONEnd    = "GOVMM-FIO-JSON-END"
	fioGuestError = "GOVMM-FIO-ERROR"
)

// blkGuestScript is the shell script on /dev/vdb. fio runs exec_prerun
// and exec_postrun with its output in a file and the console as stdin,
// hence the explicit /dev/console. Its size is padded to whole sectors
// with newlines, which sh reads as empty lines after the exit.
func blkGuestScript(jobFile string, diskSectors int64) []byte {
	script := fmt.Sprintf(`# govmm bench-blk: fio on /dev/vda (cmd/govmm/blk_bench_test.go)
read -r size </sys/block/vda/size
if [ "$size" != %d ]; then echo "%s /dev/vda has $size sectors, not the scratch disk's %d"; exit 1; fi
cd /tmp || exit 1
cat >mark <<'EOF'
read -r s </sys/block/vda/stat
echo "%s$1 $2 $s" >/dev/console
read -r _ </dev/console
EOF
cat >jobs.fio <<'EOF'
%sEOF
fio --eta=never --output-format=json --output=out.json jobs.fio
rc=$?
echo %s
cat out.json
echo %s
exit $rc
`, diskSectors, fioGuestError, diskSectors, fioBarrier, jobFile, fioJSONStart, fioJSONEnd)
	pad := (512 - len(script)%512) % 512
	return []byte(script + strings.Repeat("\n", pad))
}

// blkVariant is one place the jobs run.
type blkVariant struct {
	name     string
	kind     string   // "host", "govmm" or "qemu"
	cache    string   // how the image's I/O meets the host's page cache
	args     []string // govmm run flags, or QEMU's disk arguments
	diskOpts string   // govmm: options after the image in --disk, such as ",queues=1"
}

// blkVariants lists the variants for image. A new govmm knob, or another
// QEMU configuration, is one more line here.
func blkVariants(image string) []blkVariant {
	return []blkVariant{
		{name: "host", kind: "host", cache: "O_DIRECT (fio --direct=1)"},
		// govmm opens the image without O_DIRECT (virtio/image.go) and
		// serves requests with preadv/pwritev: the host page cache holds
		// what the guest reads and writes, as QEMU's default does. Its
		// defaults: a queue per vCPU, polling up to 200 us.
		{name: "govmm", kind: "govmm", cache: "page cache"},
		// cache=none: O_DIRECT, as QEMU's cache.direct=on, polled in
		// front of Linux AIO as a QEMU iothread polls in front of
		// aio=native.
		{name: "govmm-cache-none", kind: "govmm", cache: "O_DIRECT (cache=none)", diskOpts: ",cache=none"},
		{name: "govmm-1-queue", kind: "govmm", cache: "page cache", diskOpts: ",queues=1"},
		// Without polling: every request after an idle ring waits for
		// the guest's notification.
		{name: "govmm-no-poll", kind: "govmm", cache: "page cache", args: []string{"--blk-poll-us", "0"}},
		{name: "govmm-cache-none-no-poll", kind: "govmm", cache: "O_DIRECT (cache=none)", diskOpts: ",cache=none", args: []string{"--blk-poll-us", "0"}},
		// 32 us: the polling bound of a QEMU iothread (poll-max-ns).
		{name: "govmm-poll-32us", kind: "govmm", cache: "page cache", args: []string{"--blk-poll-us", "32"}},
		{name: "govmm-no-ioeventfd", kind: "govmm", cache: "page cache", args: []string{"--no-ioeventfd"}},
		{name: "govmm-no-irqfd", kind: "govmm", cache: "page cache", args: []string{"--no-irqfd"}},
		// One Go processor for govmm's goroutines (--go-procs): fewer
		// threads woken beside the vCPUs, fewer to block in I/O.
		{name: "govmm-go-procs-1", kind: "govmm", cache: "page cache", args: []string{"--go-procs", "1"}},
		// Go's monitor thread allowed to sleep deeply, so that system
		// calls wake it (internal/keepawake).
		{name: "govmm-sysmon-asleep", kind: "govmm", cache: "page cache", args: []string{"--keep-sysmon-awake=false"}},
		// QEMU's default: a thread pool (aio=threads), cache=writeback.
		{name: "qemu-threads", kind: "qemu", cache: "page cache (cache=writeback)", args: qemuDisk(image, "", false)},
		{name: "qemu-native-iothread", kind: "qemu", cache: "O_DIRECT (cache.direct=on)", args: qemuDisk(image, "aio=native,cache.direct=on", true)},
		{name: "qemu-io_uring-iothread", kind: "qemu", cache: "O_DIRECT (cache.direct=on)", args: qemuDisk(image, "aio=io_uring,cache.direct=on", true)},
	}
}

// qemuDisk is QEMU's arguments for image as a virtio-blk-pci disk with
// the -drive options opts, served by an iothread of its own or not.
func qemuDisk(image, opts string, iothread bool) []string {
	drive := "id=d0,file=" + image + ",format=raw,if=none"
	if opts != "" {
		drive += "," + opts
	}
	if !iothread {
		return []string{"-drive", drive, "-device", "virtio-blk-pci,drive=d0"}
	}
	return []string{"-object", "iothread,id=io0", "-drive", drive, "-device", "virtio-blk-pci,drive=d0,iothread=io0"}
}

// blkRun is one variant's run of every job.
type blkRun struct {
	results map[string]fioResult
	windows map[string]fioWindow
}

// makeScratchDisk writes a raw image of pseudo-random bytes: every block
// allocated and written once, so reads hit real blocks (a sparse or
// fallocated file would read zeroes from nowhere).
func makeScratchDisk(b *testing.B, path string, size int64) {
	chunk := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'g', 'o', 'v', 'm', 'm'})
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for off := int64(0); off < size; off += int64(len(chunk)) {
		r.Read(chunk)
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := dropImageCache(path); err != nil {
		b.Fatal(err)
	}
}

// dropImageCache writes back the image's dirty pages and drops its pages
// from the host's page cache, so that every job starts with none cached
// and none of the previous job's writes left to flush.
func dropImageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	return nil
}

// runHostFio runs one job of the job file with fio on the host. CPU and
// bytes come from fio's rusage (its clones included): utime+stime, and the
// blocks it read and wrote, which O_DIRECT I/O counts. That is fio's whole
// life, its start-up too (milliseconds on the host).
func runHostFio(jobFile, image string, job blkJob) (fioResult, fioWindow, error) {
	if err := dropImageCache(image); err != nil {
		return fioResult{}, fioWindow{}, err
	}
	out := jobFile + ".json"
	cmd := exec.Command("fio", "--output-format=json", "--output="+out, "--section="+job.name, jobFile)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fioResult{}, fioWindow{}, fmt.Errorf("host fio: %v\n%s", err, lastLines(string(msg), 5))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return fioResult{}, fioWindow{}, err
	}
	res, err := parseFio(data)
	if err != nil {
		return fioResult{}, fioWindow{}, err
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return fioResult{}, fioWindow{}, fmt.Errorf("host fio: no rusage")
	}
	w := fioWindow{
		cpuSeconds: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds(),
		disk:       diskStat{bytes: float64(ru.Inblock+ru.Oublock) * 512},
	}
	return res[job.name], w, nil
}

// blkKVMCounters are KVM's per-vCPU counters in the cost table.
var blkKVMCounters = []string{"exits", "mmio_exits", "io_exits", "halt_exits"}

// movedKVMStats formats the KVM vCPU statistics among names (those with
// kvmStatPrefix) whose value per unit of work, from perUnit, is at least
// least: " name=value" each, in verb, largest first.
func movedKVMStats(names map[string]bool, least float64, verb string, perUnit func(name string) (float64, bool)) string {
	type stat struct {
		name string
		n    float64
	}
	var all []stat
	for name := range names {
		if !strings.HasPrefix(name, kvmStatPrefix) {
			continue
		}
		if n, ok := perUnit(name); ok && n >= least {
			all = append(all, stat{strings.TrimPrefix(name, kvmStatPrefix), n})
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a].n > all[b].n || all[a].n == all[b].n && all[a].name < all[b].name })
	var out strings.Builder
	for _, st := range all {
		fmt.Fprintf(&out, " %s="+verb, st.name, st.n)
	}
	return out.String()
}

// kvmStatPrefix marks the copy of every cumulative KVM vCPU statistic,
// for the table of all of them per request.
const kvmStatPrefix = "kvm:"

// snapshotCounters reads KVM's exit counters, summed over vCPUs, over QMP:
// govmm's query-exit-stats, QEMU's query-stats (7.1 and later).
func snapshotCounters(mon *qmp.SocketMonitor, kind string) (map[string]float64, error) {
	counters := map[string]float64{}
	if kind == "govmm" {
		var t vmm.ExitTable
		if err := runQMP(mon, "query-exit-stats", nil, &t); err != nil {
			return nil, err
		}
		if t.Kernel != nil {
			for _, name := range blkKVMCounters {
				if n, ok := t.Kernel.VCPUTotal(name); ok {
					counters[name] = float64(n)
				}
			}
			for _, v := range t.Kernel.VCPUs {
				for _, st := range v.Stats {
					if st.Type == kvm.StatCumulative && !st.IsHistogram() {
						counters[kvmStatPrefix+st.Name] += float64(st.Value())
					}
				}
			}
		}
		addVirtioPhases(counters, t.VirtioQueues)
		return counters, nil
	}
	var stats []struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	// Every vCPU statistic: QEMU does not say which are cumulative, but
	// the instant ones barely move between two barriers.
	q := map[string]any{"target": "vcpu", "providers": []any{map[string]any{"provider": "kvm"}}}
	if err := runQMP(mon, "query-stats", q, &stats); err != nil {
		return nil, err
	}
	for _, v := range stats {
		for _, s := range v.Stats {
			var n float64
			if json.Unmarshal(s.Value, &n) == nil {
				counters[kvmStatPrefix+s.Name] += n
				if slices.Contains(blkKVMCounters, s.Name) {
					counters[s.Name] += n
				}
			}
		}
	}
	return counters, nil
}

// blkVirtioPhases are the counters addVirtioPhases adds: govmm's request
// telemetry of the benchmark disk, summed over its queues and kinds of
// request (the script disk is virtio-blk1).
var blkVirtioPhases = []string{"virtio_queue_ns", "virtio_io_ns", "virtio_completion_ns", "virtio_total_ns"}

func addVirtioPhases(counters map[string]float64, queues []vmm.VirtioQueueStats) {
	for _, q := range queues {
		if q.Device != "virtio-blk" {
			continue
		}
		for i := range q.Requests {
			r := &q.Requests[i]
			counters["virtio_requests"] += float64(r.Count())
			phases := r.Phases()
			for j, h := range append(phases[:], &r.Total) {
				counters[blkVirtioPhases[j]] += float64(h.Sum)
			}
		}
	}
}

// runVMFio boots one VM (args, whose console is its stdout and stdin) and
// serves the guest's barriers until it ends. clones gives the number of
// barrier lines of each job; kind the QMP dialect at sock.
func runVMFio(args []string, kind, sock, image string, clones map[string]int, timeout time.Duration) (blkRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	os.Remove(sock)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return blkRun{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return blkRun{}, err
	}
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return blkRun{}, err
	}
	var console strings.Builder
	fail := func(err error) (blkRun, error) {
		cmd.Process.Kill()
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		return blkRun{}, fmt.Errorf("%s: %v\n%s", kind, err, lastLines(console.String()+stderr.String(), 10))
	}
	var mon *qmp.SocketMonitor
	defer func() {
		if mon != nil {
			mon.Disconnect()
		}
	}()
	snapshot := func(stat string) (fioSnapshot, error) {
		var s fioSnapshot
		var err error
		if s.disk, err = parseDiskStat(stat); err != nil {
			return s, err
		}
		if mon == nil {
			if mon, err = dialQMP(sock, 5*time.Second); err != nil {
				return s, err
			}
		}
		if s.counters, err = snapshotCounters(mon, kind); err != nil {
			return s, err
		}
		s.cpuSeconds, err = procCPU(cmd.Process.Pid)
		return s, err
	}

	run := blkRun{windows: map[string]fioWindow{}}
	begins := map[string]fioSnapshot{}
	// Lines of the barrier that is filling: its job, side, the clones
	// that reached it and the stat line with the most sectors (the last
	// clone to end has seen every request).
	type barrier struct {
		job, side string
		n         int
		stat      string
		sectors   float64
	}
	var at barrier
	var report strings.Builder
	inReport := false
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	for lines.Scan() {
		line := strings.TrimRight(lines.Text(), "\r")
		console.WriteString(line + "\n")
		switch {
		case inReport && line == fioJSONEnd:
			inReport = false
		case inReport:
			report.WriteString(line + "\n")
		case line == fioJSONStart:
			inReport = true
		case strings.HasPrefix(line, fioGuestError):
			return fail(fmt.Errorf("guest: %s", line))
		case strings.Contains(line, fioBarrier):
			// After whatever else the console line holds.
			_, rest, _ := strings.Cut(line, fioBarrier)
			f := strings.SplitN(rest, " ", 3)
			if len(f) != 3 || (f[0] != "begin" && f[0] != "end") || clones[f[1]] == 0 {
				return fail(fmt.Errorf("bad barrier line %q", line))
			}
			if at.n == 0 {
				at = barrier{job: f[1], side: f[0]}
			} else if at.job != f[1] || at.side != f[0] {
				return fail(fmt.Errorf("barrier %s %s while %d clones wait at %s %s", f[0], f[1], at.n, at.side, at.job))
			}
			at.n++
			if d, err := parseDiskStat(f[2]); err == nil && (at.stat == "" || d.bytes > at.sectors) {
				at.stat, at.sectors = f[2], d.bytes
			}
			if at.n < clones[at.job] {
				continue
			}
			if at.side == "begin" {
				if err := dropImageCache(image); err != nil {
					return fail(err)
				}
			}
			s, err := snapshot(at.stat)
			if err != nil {
				return fail(fmt.Errorf("%s %s: %w", at.side, at.job, err))
			}
			if at.side == "begin" {
				begins[at.job] = s
			} else if b, ok := begins[at.job]; ok {
				run.windows[at.job] = windowBetween(b, s)
			}
			if _, err := io.WriteString(stdin, strings.Repeat("\n", at.n)); err != nil {
				return fail(err)
			}
			at = barrier{}
		}
	}
	if err := lines.Err(); err != nil {
		return fail(err)
	}
	if err := cmd.Wait(); err != nil {
		return blkRun{}, fmt.Errorf("%s: %v\n%s", kind, err, lastLines(console.String()+stderr.String(), 10))
	}
	if report.Len() == 0 {
		return blkRun{}, fmt.Errorf("%s: no fio report\n%s", kind, lastLines(console.String(), 10))
	}
	if run.results, err = parseFio([]byte(report.String())); err != nil {
		return blkRun{}, fmt.Errorf("%s: %w\n%s", kind, err, lastLines(console.String(), 10))
	}
	return run, nil
}

// onTmpfs reports whether dir is on a tmpfs (RAM, not the host's disk).
func onTmpfs(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, err
	}
	return st.Type == unix.TMPFS_MAGIC, nil
}

// BenchmarkBlockIO runs the fio jobs on the host, in govmm and in QEMU
// (see the top of this file) and reports, per job and variant, median
// IOPS and MiB/s with min-max, n and failed runs, the ratios of the
// medians to the host and to the best QEMU configuration, fio's median
// completion latency p50 and p99, host CPU seconds per GiB moved, and KVM
// exits per disk request.
func BenchmarkBlockIO(b *testing.B) {
	bench := testenv.BenchInitramfs("../..")
	kernel := benchKernel(b, bench)
	if _, err := exec.LookPath("fio"); err != nil {
		b.Fatalf("the host row needs fio: %v (apt-get install fio)", err)
	}
	rounds := testenv.Rounds(b, "BLK_ROUNDS", 3) * b.N
	runtime := envDuration(b, "BLK_RUNTIME", 5*time.Second)
	ramp := envDuration(b, "BLK_RAMP", time.Second)
	diskBytes := benchEnvInt(b, "BLK_DISK_MB", 1024) << 20
	if diskBytes < 64<<20 {
		b.Fatal("BLK_DISK_MB: want at least 64")
	}
	dir := os.Getenv("BLK_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	if tmpfs, err := onTmpfs(dir); err != nil || tmpfs {
		b.Fatalf("%s is a tmpfs (or unreadable: %v): the image must be on the host's disk; set BLK_DIR", dir, err)
	}
	work := b.TempDir() // job files, the script disk, QMP sockets
	image := filepath.Join(dir, "govmm-bench-blk.img")
	makeScratchDisk(b, image, diskBytes)
	defer os.Remove(image)

	jobs := envPick(b, "BLK_JOBS", blkJobs, func(j blkJob) string { return j.name })
	clones := map[string]int{}
	for _, j := range jobs {
		clones[j.name] = j.numjobs
	}
	hostJobFile := filepath.Join(work, "host.fio")
	if err := os.WriteFile(hostJobFile, []byte(fioJobFile(image, jobs, runtime, ramp, "")), 0o644); err != nil {
		b.Fatal(err)
	}
	guestJobFile := fioJobFile("/dev/vda", jobs, runtime, ramp, "/tmp/mark")
	script := filepath.Join(work, "script.img")
	if err := os.WriteFile(script, blkGuestScript(guestJobFile, diskBytes/512), 0o644); err != nil {
		b.Fatal(err)
	}

	qemu, qemuErr := exec.LookPath("qemu-system-x86_64")
	variants := envPick(b, "BLK_ONLY", withoutQEMU(blkVariants(image), func(v blkVariant) string { return v.kind }, qemuErr),
		func(v blkVariant) string { return v.name })
	// microvm with pcie=on boots the kernel directly and has the
	// transport govmm has: virtio-pci with MSI-X, ioeventfd and irqfd.
	machine := "microvm,pcie=on"
	if m := os.Getenv("BLK_QEMU_MACHINE"); m != "" {
		machine = m
	}
	const cmdline = "console=ttyS0 panic=-1 quiet govmm.run=sh,/dev/vdb"
	sock := filepath.Join(work, "qmp.sock")
	vmArgs := func(v blkVariant) []string {
		if v.kind == "govmm" {
			args := []string{govmmBin, "run", "--kernel", kernel, "--initrd", bench, "--smp", strconv.Itoa(blkVCPUs), "--mem", "1G",
				"--disk", image + v.diskOpts, "--disk", script + ",ro", "--qmp", "unix:" + sock, "--append", cmdline + " reboot=k"}
			return append(args, v.args...)
		}
		args := []string{qemu, "-M", machine, "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", strconv.Itoa(blkVCPUs), "-m", "1024", "-kernel", kernel, "-initrd", bench,
			"-append", cmdline + " reboot=t", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-qmp", "unix:" + sock + ",server=on,wait=off"}
		args = append(args, v.args...)
		return append(args, "-drive", "id=d1,file="+script+",format=raw,if=none,readonly=on", "-device", "virtio-blk-pci,drive=d1")
	}
	vmTimeout := 3*time.Minute + time.Duration(len(jobs))*(runtime+ramp)*3

	type key struct{ job, variant string }
	results := map[key][]fioResult{}
	windows := map[key][]fioWindow{}
	failures := map[key]int{}
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	b.ResetTimer()
	testenv.RunRounds(b, rounds, len(variants), func(i int) string { return variants[i].name }, func(_, i int) error {
		v := variants[i]
		run := blkRun{results: map[string]fioResult{}, windows: map[string]fioWindow{}}
		var err error
		if v.kind == "host" {
			for _, j := range jobs {
				r, w, jerr := runHostFio(hostJobFile, image, j)
				if jerr != nil {
					err = fmt.Errorf("%s: %w", j.name, jerr)
					continue
				}
				run.results[j.name], run.windows[j.name] = r, w
			}
		} else {
			run, err = runVMFio(vmArgs(v), v.kind, sock, image, clones, vmTimeout)
		}
		for _, j := range jobs {
			k := key{j.name, v.name}
			r, ok := run.results[j.name]
			if !ok {
				failures[k]++
				continue
			}
			results[k] = append(results[k], r)
			if w, ok := run.windows[j.name]; ok {
				windows[k] = append(windows[k], w)
			}
		}
		return err
	})
	b.StopTimer()

	summarize := func(k key, of func(fioResult) float64) testenv.Summary {
		var xs []float64
		for _, r := range results[k] {
			xs = append(xs, of(r))
		}
		return testenv.Summarize(xs, failures[k])
	}
	windowMedian := func(k key, of func(fioWindow) (float64, bool)) (testenv.Summary, bool) {
		var xs []float64
		for _, w := range windows[k] {
			if x, ok := of(w); ok {
				xs = append(xs, x)
			}
		}
		return testenv.Summarize(xs, 0), len(xs) > 0
	}
	iops := func(r fioResult) float64 { return r.IOPS }

	var rep strings.Builder
	fmt.Fprintf(&rep, "\nfio on a %d MiB raw image (%s), direct=1, %v ramp + %v measured per job; guests: %d vCPUs, 1 GiB; %d rounds, variants rotated per round, %.0f s (%s)",
		diskBytes>>20, dir, ramp, runtime, blkVCPUs, rounds, time.Since(start).Seconds(), time.Now().Format("2006-01-02"))
	if f := strings.Fields(string(loadBefore)); len(f) > 0 {
		fmt.Fprintf(&rep, "; host load average %s at the start", f[0])
	}
	fmt.Fprintf(&rep, "\nIOPS: median (min-max, n, failed runs) over rounds; /host and /qemu-best: ratios of median IOPS to the host's and to the best QEMU row's of the job.\n")
	fmt.Fprintf(&rep, "Every job starts with none of the image in the host's page cache (fdatasync + FADV_DONTNEED before it).\n\n")
	fmt.Fprintf(&rep, "%-18s %-23s %-29s %-34s %9s %6s %10s\n", "job", "variant", "host cache", "IOPS", "MiB/s", "/host", "/qemu-best")
	bestQEMU := map[string]string{}
	for _, j := range jobs {
		var best float64
		for _, v := range variants {
			if m := summarize(key{j.name, v.name}, iops).Median; v.kind == "qemu" && m > best {
				best, bestQEMU[j.name] = m, v.name
			}
		}
		host := summarize(key{j.name, "host"}, iops).Median
		for _, v := range variants {
			k := key{j.name, v.name}
			s := summarize(k, iops)
			mib := summarize(k, func(r fioResult) float64 { return r.MiBps })
			fmt.Fprintf(&rep, "%-18s %-23s %-29s %-34s %9.1f %6s %10s\n", j.name, v.name, v.cache, s.Format("%.0f"), mib.Median,
				ratioOf(s.Median, host), ratioOf(s.Median, best))
			if s.N > 0 {
				b.ReportMetric(s.Median, j.name+"-"+v.name+"-IOPS")
			}
		}
		if g := summarize(key{j.name, "govmm"}, iops).Median; g > 0 {
			if best > 0 {
				b.ReportMetric(g/best, j.name+"-govmm/qemu-best")
			}
			if host > 0 {
				b.ReportMetric(g/host, j.name+"-govmm/host")
			}
		}
	}

	fmt.Fprintf(&rep, "\nLatency: fio's completion latency (clat) percentiles, median over rounds, us. Cost per job, ramp included (VMs: from the guest's\n")
	fmt.Fprintf(&rep, "barrier before the first request to the one after the last; host: fio's life): host CPU s/GiB = the VMM process's (host: fio's)\n")
	fmt.Fprintf(&rep, "utime+stime per GiB the disk moved, median (min-max); /host and /qemu-best its ratios; per request of the guest's disk: KVM exits, exits to\n")
	fmt.Fprintf(&rep, "the VMM (KVM's mmio_exits + io_exits; PVM hosts leave io_exits at 0, so port I/O is missing there, little during a job) and\n")
	fmt.Fprintf(&rep, "halt_exits, summed over vCPUs.\n\n")
	fmt.Fprintf(&rep, "%-18s %-23s %8s %8s %-25s %6s %10s %9s %9s %9s\n", "job", "variant", "p50 us", "p99 us", "CPU s/GiB", "/host", "/qemu-best", "exits/req", "VMM/req", "halts/req")
	for _, j := range jobs {
		bestCPU, _ := windowMedian(key{j.name, bestQEMU[j.name]}, fioWindow.cpuPerGiB)
		hostCPU, _ := windowMedian(key{j.name, "host"}, fioWindow.cpuPerGiB)
		for _, v := range variants {
			k := key{j.name, v.name}
			cpu, ok := windowMedian(k, fioWindow.cpuPerGiB)
			cpuText := "-"
			if ok {
				cpuText = cpu.Format("%.2f")
			}
			fmt.Fprintf(&rep, "%-18s %-23s %8.0f %8.0f %-25s %6s %10s", j.name, v.name,
				summarize(k, func(r fioResult) float64 { return r.P50us }).Median,
				summarize(k, func(r fioResult) float64 { return r.P99us }).Median,
				cpuText, ratioOf(cpu.Median, hostCPU.Median), ratioOf(cpu.Median, bestCPU.Median))
			perReq := func(counter string) string {
				s, ok := windowMedian(k, func(w fioWindow) (float64, bool) { return w.perRequest(counter) })
				if !ok {
					return "-"
				}
				return fmt.Sprintf("%.2f", s.Median)
			}
			vmmExits, _ := windowMedian(k, func(w fioWindow) (float64, bool) {
				mmio, ok1 := w.perRequest("mmio_exits")
				pio, ok2 := w.perRequest("io_exits")
				return mmio + pio, ok1 && ok2
			})
			vmmText := "-"
			if vmmExits.N > 0 {
				vmmText = fmt.Sprintf("%.2f", vmmExits.Median)
			}
			fmt.Fprintf(&rep, " %9s %9s %9s\n", perReq("exits"), vmmText, perReq("halt_exits"))
		}
	}
	if qemuErr != nil {
		fmt.Fprintf(&rep, "(no QEMU rows: %v)\n", qemuErr)
	}

	fmt.Fprintf(&rep, "\nEvery KVM vCPU statistic that moved, per request of the guest's disk (median over rounds, summed over vCPUs;\n")
	fmt.Fprintf(&rep, "at least 0.05 per request, largest first; _ns and _time statistics are ns per request):\n\n")
	for _, j := range jobs {
		for _, v := range variants {
			if v.kind == "host" {
				continue
			}
			k := key{j.name, v.name}
			names := map[string]bool{}
			for _, w := range windows[k] {
				for name := range w.counters {
					names[name] = true
				}
			}
			fmt.Fprintf(&rep, "%-18s %-23s%s\n", j.name, v.name, movedKVMStats(names, 0.05, "%.2f", func(name string) (float64, bool) {
				s, ok := windowMedian(k, func(w fioWindow) (float64, bool) { return w.perRequest(name) })
				return s.Median, ok
			}))
		}
	}

	fmt.Fprintf(&rep, "\ngovmm's share of a request (its request telemetry of /dev/vda, README \"Virtio request telemetry\"): mean us per request\n")
	fmt.Fprintf(&rep, "of the job, median over rounds, from the notification govmm served to the interrupt: queue + io + completion = total.\n\n")
	fmt.Fprintf(&rep, "%-18s %-23s %9s %9s %11s %9s\n", "job", "variant", "queue", "io", "completion", "total")
	for _, j := range jobs {
		for _, v := range variants {
			if v.kind != "govmm" {
				continue
			}
			k := key{j.name, v.name}
			fmt.Fprintf(&rep, "%-18s %-23s", j.name, v.name)
			for i, phase := range blkVirtioPhases {
				s, ok := windowMedian(k, func(w fioWindow) (float64, bool) { return w.perVirtioRequest(phase) })
				text := "-"
				if ok {
					text = fmt.Sprintf("%.1f", s.Median/1e3)
				}
				fmt.Fprintf(&rep, " %*s", []int{9, 9, 11, 9}[i], text)
			}
			fmt.Fprintln(&rep)
		}
	}
	fmt.Fprintf(&rep, "\nThe guest's job file (the host's: filename=%s, no exec_ lines, one fio --section=JOB per job):\n%s", image, guestJobFile)
	fmt.Fprintf(&rep, "\nThe VMs' command lines:\n")
	for _, v := range variants {
		if v.kind != "host" {
			fmt.Fprintf(&rep, "%s: %s\n", v.name, strings.Join(vmArgs(v), " "))
		}
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}
