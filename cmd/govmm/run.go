package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/internal/atomicfile"
	"github.com/govmm/govmm/internal/keepawake"
	"github.com/govmm/govmm/sandbox"
	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm"
	"github.com/govmm/govmm/vmm/kernelcache"
)

// exitCode is an error that only carries a process exit status (the
// message has been printed already, or there is none).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func asExitCode(err error, ec *exitCode) bool { return errors.As(err, ec) }

func runCommand(args []string) (err error) {
	fs := flag.NewFlagSet("govmm run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kernel := fs.String("kernel", "", "guest kernel `FILE`: a bzImage or an ELF vmlinux")
	initrd := fs.String("initrd", "", "initial ramdisk `FILE` (cpio archive, optionally compressed)")
	cmdline := fs.String("append", vmm.DefaultCmdline, "kernel command `LINE`")
	smp := fs.Int("smp", 1, "`N` vCPUs")
	mem := fs.String("mem", "512M", "guest memory `SIZE` (B, K, M, G or T suffix; a bare number is MiB), rounded up to a whole 4 KiB page; at most 1T (from 3.5G on, RAM past 3G lies above 4G, beyond the 32-bit PCI hole)")
	memHugePages := fs.Bool("mem-hugepages", true, "madvise guest RAM MADV_HUGEPAGE, so that it gets transparent huge pages where the host has them")
	memPath := fs.String("mem-path", "", "back guest RAM with an unlinked file in `DIR`, a hugetlbfs mount (--mem a multiple of its huge page size, that many huge pages free)")
	kernelCache := fs.String("kernel-cache", defaultKernelCache(), "keep the ELF unpacked from a bzImage in `DIR` (entries named by the bzImage's SHA-256), so the next boot of it skips decompression; off: unpack every time")
	exitStats := fs.Bool("exit-stats", true, "time every exit and print the exit table at shutdown")
	syncRegs := fs.Bool("sync-regs", true, "read registers from the kvm_run page (KVM_CAP_SYNC_REGS) instead of by ioctl")
	bootMode := fs.String("boot", "direct", "how to enter a bzImage: `direct` (govmm unpacks the payload, 64-bit entry) or protected (32-bit entry; the kernel decompresses itself)")
	console := fs.String("console", "serial", "where keyboard input goes: `serial` (ttyS0) or virtio (a virtio-console, hvc0: use console=hvc0 in --append)")
	qmpAddr := fs.String("qmp", "", "serve QMP on `unix:PATH` (socket created 0600)")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics on http://`HOST:PORT`/metrics")
	statsJSON := fs.String("exit-stats-json", "", "write the final exit table as JSON to `FILE`")
	exitRIPs := fs.Bool("exit-rips", true, "with --exit-stats: find the guest RIPs that cause most exits of each row, named from --guest-symbols or an ELF --kernel's symbols")
	guestSymbols := fs.String("guest-symbols", "", "the guest kernel's symbols, to name exit RIPs: a System.map or an ELF vmlinux `FILE` (a bzImage has none)")
	exitTrace := fs.String("exit-trace", "", "record the exit timeline and write it at exit to `FILE` (Chrome trace-event JSON, for ui.perfetto.dev)")
	traceEvents := fs.Int("exit-trace-events", exittrace.DefaultEvents, "with --exit-trace: keep the last `N` events of each vCPU and virtqueue track, rounded up to a power of two (48 bytes each)")
	haltPoll := fs.String("halt-poll-ns", "", "per-VM halt polling window in `ns` (KVM_CAP_HALT_POLL); default: the kvm module's")
	hltPass := fs.Bool("hlt-passthrough", false, "let the guest run HLT and PAUSE without exiting (KVM_CAP_X86_DISABLE_EXITS); an idle vCPU then burns 100% of a host CPU")
	pvHaltPoll := fs.Bool("pv-haltpoll", false, "advertise KVM_FEATURE_POLL_CONTROL so the guest's cpuidle-haltpoll driver polls before halting")
	affinity := fs.String("cpu-affinity", "", "pin vCPU threads: `LIST` of host CPUs, vCPU i on LIST[i % len] (e.g. 0,1)")
	// virtio-pci devices and their fast paths (disk.go).
	var disks diskFlags
	fs.Var(&disks, "disk", "a virtio-blk disk: raw image `path[,ro|rw][,queues=N][,cache=none|writeback]` (repeatable; ,, is a comma in the path); rw is the default, queues defaults to one per vCPU, cache to writeback (the host's page cache; none is O_DIRECT)")
	var nets netFlags // net.go
	fs.Var(&nets, "net", "a virtio-net interface `tap=NAME[,mac=MAC][,offload=off][,queues=N][,txwait=MODE]` on host tap NAME (repeatable); the MAC defaults to a random local one; offload=off offers no checksum/TSO offloads and no mergeable receive buffers; queues=N queue pairs on a multi_queue tap (default: one); txwait=small (default), all or off: which streams of guest frames the device waits 20 us for before serving their notification (small frames, any, none; README, Network datapath)")
	blkPoll := fs.Int("blk-poll-us", defaultBlockPollUS, "after serving a disk queue, poll it for more requests for an adaptive window of up to `US` microseconds before waiting for the guest's next notification (ioeventfd mode; 0 = never poll)")
	rng := fs.Bool("rng", false, "a virtio-rng entropy device")
	noIOEventFD := fs.Bool("no-ioeventfd", false, "virtqueue notifications exit to govmm (MMIO) instead of signalling an ioeventfd in the kernel")
	noIRQFD := fs.Bool("no-irqfd", false, "send virtio interrupts with the KVM_SIGNAL_MSI ioctl instead of an irqfd write")
	confine := fs.Bool("seccomp", true, "once the VM is set up, allow only the system calls govmm needs (a seccomp filter on every thread); any other ends govmm with a message naming it")
	landlockOn := fs.Bool("landlock", true, "once the VM is set up, confine file access (Landlock, where the kernel has it) to what govmm still opens: reading the kernel cache; creating files in the directories of --exit-stats-json and --exit-trace; removing the QMP socket; with --metrics-addr, reading /proc/self and /proc/stat")
	onPanic := fs.String("on-panic", "", "add QEMU's pvpanic device; a guest panic it reports then does `ACTION`: poweroff (end govmm with status 1) or pause (stop the VM in state guest-panicked for QMP)")
	keepAwake := fs.Bool("keep-sysmon-awake", true, "hold one Go scheduler processor in a blocking wait while the VM runs, so that Go's monitor thread never sleeps deeply and the I/O paths' system calls need not wake it (README, Storage); GOMAXPROCS is raised by one for it")
	goProcs := fs.Int("go-procs", 0, "`N` Go scheduler processors (GOMAXPROCS) for govmm's goroutines (device queues, vCPU exits to user space, QMP) once the VM runs; 0 = Go's default, one per host CPU. Fewer wake fewer threads beside the vCPUs (1 moves more guest->host network traffic on a 2-CPU host) and leave fewer to serve blocking disk I/O (page-cache disks lose at depth; README, Network datapath). The keeper's processor (--keep-sysmon-awake) comes on top, and with --seccomp there are at least 2 in all")
	noReboot := fs.Bool("no-reboot", false, "a reset (system_reset, a guest reboot, a triple fault) ends govmm instead of restarting the guest, as QEMU's -no-reboot")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Println("usage: govmm run --kernel FILE [--initrd FILE] [flags]")
			fs.PrintDefaults()
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *goProcs < 0 || *goProcs > maxGoProcs {
		return fmt.Errorf("--go-procs %d: want 0 (Go's default) to %d", *goProcs, maxGoProcs)
	}
	if *blkPoll < 0 || *blkPoll > maxBlockPollUS {
		return fmt.Errorf("--blk-poll-us %d: want 0 (off) to %d", *blkPoll, maxBlockPollUS)
	}
	memSize, err := vmm.ParseSize(*mem)
	if err != nil {
		return fmt.Errorf("--mem: %w", err)
	}
	memSize = vmm.RoundMemSize(memSize)
	if *kernel == "" {
		return fmt.Errorf("--kernel is required")
	}
	knobs, err := parseKnobs(*haltPoll, *hltPass, *pvHaltPoll, *affinity)
	if err != nil {
		return err
	}
	if *console != "serial" && *console != "virtio" {
		return fmt.Errorf("--console %q: want serial or virtio", *console)
	}
	if *exitTrace != "" && (*traceEvents < 1 || *traceEvents > exittrace.MaxEvents) {
		return fmt.Errorf("--exit-trace-events %d: want 1 to %d", *traceEvents, exittrace.MaxEvents)
	}
	if *exitTrace == "" {
		*traceEvents = 0
	}
	// Both are written when the VM has ended: a path that cannot be
	// written would lose the run's table or trace after the fact.
	for _, out := range []struct{ flag, path string }{{"--exit-stats-json", *statsJSON}, {"--exit-trace", *exitTrace}} {
		if out.path != "" {
			if err := atomicfile.CheckSave(out.path); err != nil {
				return fmt.Errorf("%s: %w", out.flag, err)
			}
			// Replacing it would leave that VM writing an unlinked
			// file, its guest's writes lost (found by an audit).
			if virtio.ImageInUse(out.path) {
				return fmt.Errorf("%s %s: a disk image a VM (QEMU or govmm) has open: not replaced", out.flag, out.path)
			}
		}
	}
	var boot vmm.Boot
	switch *bootMode {
	case "direct":
		boot = vmm.BootDirect
	case "protected":
		boot = vmm.BootProtected
	default:
		return fmt.Errorf("--boot %q: want direct or protected", *bootMode)
	}
	cfg := vmm.Config{
		Boot:          boot,
		VirtioConsole: *console == "virtio",
		Knobs:         knobs,
		Kernel:        *kernel, Initrd: *initrd, Cmdline: *cmdline,
		CPUs: *smp, MemSize: memSize,
		Memory:    vmm.MemoryConfig{NoHugePages: !*memHugePages, Path: *memPath},
		Console:   os.Stdout,
		ExitStats: *exitStats, SyncRegs: *syncRegs, ExitTraceEvents: *traceEvents,
		ExitRIPs: *exitRIPs, GuestSymbols: *guestSymbols,
		Disks: disks, BlockPoll: time.Duration(*blkPoll) * time.Microsecond, Nets: nets, RNG: *rng, NoIOEventFD: *noIOEventFD, NoIRQFD: *noIRQFD,
		NoReboot: *noReboot,
		OnPanic:  *onPanic,
	}
	if *kernelCache != "off" && *kernelCache != "" {
		cfg.KernelCache = kernelcache.New(*kernelCache)
	}
	signals := watchSignals() // before the long set-up: see signalEnder
	// Device warnings are logged on vCPU threads (an unclaimed port, a
	// bad request): through a sink, a stderr nobody reads costs the
	// lines (dropped past 1 MiB), never a vCPU, which the guest's boot
	// and every pause and stop would wait for.
	logs := devices.NewOutputSink(os.Stderr, 1<<20, 4<<10, nil)
	log.SetOutput(logs)
	defer func() {
		logs.Flush(time.Second)
		log.SetOutput(os.Stderr)
	}()
	vm, err := vmm.New(cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Closing flushes the disks: a failure there may have lost what
		// the guest was told was written, and went unsaid, status 0
		// (found by an audit; QEMU is silent too).
		if cerr := vm.Close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "govmm: %v\n", cerr)
			if err == nil {
				err = exitCode(1)
			}
		}
	}()

	qmpPath := "" // the QMP socket, removed at exit
	if *qmpAddr != "" {
		path, ok := strings.CutPrefix(*qmpAddr, "unix:")
		if !ok || path == "" {
			return fmt.Errorf("--qmp %q: want unix:PATH", *qmpAddr)
		}
		stop, err := vm.ServeQMP(path)
		if err != nil {
			return err
		}
		defer stop()
		qmpPath = path
	}
	if *metricsAddr != "" {
		addr, stop, err := vm.ServeMetrics(*metricsAddr)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(os.Stderr, "govmm: metrics on http://%s/metrics\n", addr)
	}

	term := makeRaw(os.Stdin)
	defer term.restore()
	var inputDropped atomic.Uint64
	go forwardInput(os.Stdin, vm, term.raw, &inputDropped)

	signals.attach(vm.Stop, func() bool { return vm.Status() == "shutdown" }, func() {
		term.restore()
		vm.RemoveQMPSocket()
	})

	// Everything that opens files or binds sockets is done: from here on
	// govmm needs only the kernel cache a reset reads (the kernel and
	// initrd stay open) and the files its reports write, and the calls of
	// the exit path, its servers and its exit report.
	warnFewDescriptors(os.Stderr)
	confined := false // by Landlock
	if *landlockOn {
		files := sandbox.Files{
			Outputs: []string{*statsJSON, *exitTrace},
			Removed: []string{qmpPath},
		}
		if cfg.KernelCache != nil {
			files.ReadDirs = append(files.ReadDirs, *kernelCache)
		}
		if *metricsAddr != "" {
			// The process collector: its own files, and the boot time
			// (without it process_start_time_seconds was left out of
			// every scrape, silently; found by an audit).
			files.ReadDirs = append(files.ReadDirs, "/proc/self")
			files.ReadFiles = append(files.ReadFiles, "/proc/stat")
		}
		on, err := sandbox.Landlock(files)
		if err != nil {
			return err
		}
		confined = on
		if !on {
			fmt.Fprintln(os.Stderr, "govmm: this kernel has no Landlock: file access is not confined")
		}
	}
	if *confine {
		if err := sandbox.Seccomp(term.restore); err != nil {
			return err
		}
	}

	if *goProcs > 0 {
		runtime.GOMAXPROCS(goMaxProcs(*goProcs, *confine, *keepAwake))
	}
	if *keepAwake {
		k, err := keepawake.Start()
		if err != nil {
			return err
		}
		defer func() {
			if err := k.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "govmm: %v\n", err)
			}
		}()
	}
	out := vm.Run()
	term.restore()
	logs.Flush(time.Second) // the warnings before the report
	if n := inputDropped.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "govmm: %d bytes of terminal input dropped: the guest did not read its console\n", n)
	}
	report(os.Stderr, vm, out, signals.EndedVM())
	vm.ReleaseMemory()
	// One report that cannot be written costs neither the others nor
	// the reason the VM ended.
	failed := out.Err != nil
	if *exitTrace != "" {
		if w, err := vm.SaveExitTrace(*exitTrace); err != nil {
			saveFailed("--exit-trace", err, confined)
			failed = true
		} else {
			fmt.Fprintf(os.Stderr, "govmm: exit trace: %d events written to %s, %d older ones dropped\n", w.Events, *exitTrace, w.Dropped)
		}
	}
	if *exitStats || *statsJSON != "" {
		table := vm.ExitTable()
		if *exitStats {
			fmt.Fprintln(os.Stderr)
			table.User.WriteTable(os.Stderr)
			if table.Kernel != nil {
				fmt.Fprintln(os.Stderr)
				table.Kernel.WriteTable(os.Stderr)
			}
			vm.WriteVirtioTable(os.Stderr)
			vmm.WriteRequestTable(os.Stderr, table.VirtioQueues)
		}
		if *statsJSON != "" {
			if err := writeJSON(*statsJSON, table); err != nil {
				saveFailed("--exit-stats-json", err, confined)
				failed = true
			}
		}
	}
	// The guest powering off or rebooting, a signal and a QMP quit are
	// all clean ends; a crash is not.
	if out.Err != nil {
		fmt.Fprintf(os.Stderr, "govmm: %v\n", out.Err)
	}
	if failed {
		return exitCode(1)
	}
	return nil
}

// saveFailed says why the report of flag could not be saved. Under
// Landlock, a directory removed or replaced since the start gives
// "permission denied" though the user may write the new one: the rule
// holds the directory that was there at start (found by an audit).
func saveFailed(flag string, err error, confined bool) {
	hint := ""
	if confined && errors.Is(err, fs.ErrPermission) {
		hint = " (Landlock lets govmm write only into the directory that was there when the VM started: was it removed or replaced?)"
	}
	fmt.Fprintf(os.Stderr, "govmm: %s: %v%s\n", flag, err, hint)
}

// defaultKernelCache is $XDG_CACHE_HOME/govmm (~/.cache/govmm), or off
// where there is no such place.
func defaultKernelCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "off"
	}
	return filepath.Join(dir, "govmm")
}

// report says on w how the VM ended and who asked: the guest (powered
// off, asked for a reset) or the host (QMP, a signal).
func report(w io.Writer, vm *vmm.VM, out vmm.Outcome, sig os.Signal) {
	what := out.Words()
	// A signal that came as the guest powered off did not end the VM.
	if sig != nil && out.Cause == vmm.CauseHostSignal {
		what = "host stopped the VM with signal " + sig.String()
	}
	fmt.Fprintf(w, "\ngovmm: %s after %.3f s", what, vm.Uptime().Seconds())
	if r := vm.ReadyAfter(); r > 0 {
		fmt.Fprintf(w, " (ready after %.3f s)", r.Seconds())
	}
	if at := vm.PowerdownAskedAt(); at > 0 {
		fmt.Fprintf(w, "; host asked for power-down over QMP at %.3f s", at.Seconds())
	}
	if n := vm.Resets(); n > 0 {
		plural := "s"
		if n == 1 {
			plural = ""
		}
		fmt.Fprintf(w, "; %d reset%s (the tables count every boot)", n, plural)
	}
	if touched, err := vm.Memory().Resident(); err == nil {
		fmt.Fprintf(w, "; guest RAM touched %.1f MiB", float64(touched)/(1<<20))
	}
	fmt.Fprintln(w)
}

// parseKnobs turns the tuning flags into vmm.Knobs.
func parseKnobs(haltPoll string, hltPass, pvHaltPoll bool, affinity string) (vmm.Knobs, error) {
	k := vmm.Knobs{HLTPassthrough: hltPass, PVHaltPoll: pvHaltPoll}
	if haltPoll != "" {
		ns, err := strconv.ParseUint(haltPoll, 10, 32)
		if err != nil {
			return k, fmt.Errorf("--halt-poll-ns %q: want a number of nanoseconds below 2^32", haltPoll)
		}
		k.HaltPollNs = &ns
	}
	if affinity != "" {
		for _, f := range strings.Split(affinity, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c < 0 {
				return k, fmt.Errorf("--cpu-affinity %q: want a comma-separated list of host CPU numbers", affinity)
			}
			k.CPUAffinity = append(k.CPUAffinity, c)
		}
	}
	return k, nil
}

// writeJSON saves v as indented JSON (atomicfile.Save: a regular file
// is replaced whole, a FIFO or device written as a stream).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Save(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// maxGoProcs bounds --go-procs: far above any host govmm runs on.
const maxGoProcs = 1024

// goMaxProcs is the GOMAXPROCS that gives govmm's goroutines procs
// processors before the keeper (keepawake.Start adds its own). With
// seccomp and no keeper it is at least 2: the violation reporter needs a
// processor besides one that a forbidden raw system call may hold
// (sandbox.Seccomp); the keeper's, which every preemption signal frees
// for a moment, is that processor otherwise.
func goMaxProcs(procs int, seccomp, keeper bool) int {
	if seccomp && !keeper {
		return max(procs, 2)
	}
	return procs
}

// spareDescriptors is how many free file descriptors govmm wants once the
// VM is set up: for QMP and metrics clients (one each, plus what a scrape
// reads in /proc), for the kernel and initrd a reset reads again, and for
// the reports written at exit.
const spareDescriptors = 16

// warnFewDescriptors warns when the open-files limit leaves fewer than
// spareDescriptors free. Short of them, what needs one fails when it
// comes, long after start: a QMP client, the one way to stop govmm
// gently, is not even accepted (the server retries every second).
func warnFewDescriptors(w io.Writer) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	used := uint64(len(open) - 1) // less the directory's own
	if used+spareDescriptors > lim.Cur {
		fmt.Fprintf(w, "govmm: warning: the open-files limit (%d) leaves %d file descriptors free once the VM is set up; QMP and metrics clients, a reset and the reports at exit need more (raise it: ulimit -n %d)\n",
			lim.Cur, lim.Cur-min(used, lim.Cur), used+spareDescriptors)
	}
}
