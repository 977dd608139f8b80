package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/govmm/govmm/vmm"
)

// exitCode is an error that only carries a process exit status (the
// message has been printed already, or there is none).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func asExitCode(err error, ec *exitCode) bool { return errors.As(err, ec) }

func runCommand(args []string) error {
	fs := flag.NewFlagSet("govmm run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kernel := fs.String("kernel", "", "guest kernel: a bzImage or an ELF vmlinux")
	initrd := fs.String("initrd", "", "initial ramdisk (cpio archive, optionally compressed)")
	cmdline := fs.String("append", vmm.DefaultCmdline, "kernel command line")
	smp := fs.Int("smp", 1, "number of vCPUs")
	mem := fs.String("mem", "512M", "guest memory (K, M or G suffix; a bare number is MiB)")
	exitStats := fs.Bool("exit-stats", true, "time every exit and print the exit table at shutdown")
	syncRegs := fs.Bool("sync-regs", true, "read registers from the kvm_run page (KVM_CAP_SYNC_REGS) instead of by ioctl")
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
	memSize, err := vmm.ParseSize(*mem)
	if err != nil {
		return fmt.Errorf("--mem: %w", err)
	}
	if *kernel == "" {
		return fmt.Errorf("--kernel is required")
	}
	for _, f := range []struct{ flag, path string }{{"--kernel", *kernel}, {"--initrd", *initrd}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		} else if !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s: not a regular file", f.flag, f.path)
		}
	}
	cfg := vmm.Config{
		Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline,
		CPUs: *smp, MemSize: memSize,
		Console:   os.Stdout,
		ExitStats: *exitStats, SyncRegs: *syncRegs,
	}
	vm, err := vmm.New(cfg)
	if err != nil {
		return err
	}
	defer vm.Close()

	term := makeRaw(os.Stdin)
	defer term.restore()
	go forwardInput(os.Stdin, vm, term.raw)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var signalled os.Signal
	go func() {
		if s, ok := <-sigs; ok {
			signalled = s
			vm.Stop()
		}
	}()

	out := vm.Run()
	term.restore()
	report(os.Stderr, vm, out, signalled)
	if *exitStats {
		fmt.Fprintln(os.Stderr)
		vm.Stats().WriteTable(os.Stderr)
	}
	switch {
	case out.Err != nil:
		fmt.Fprintf(os.Stderr, "govmm: %v\n", out.Err)
		return exitCode(1)
	case out.GuestRequested(), signalled != nil:
		return nil
	default:
		fmt.Fprintf(os.Stderr, "govmm: guest stopped: %s\n", out.Reason)
		return exitCode(1)
	}
}

func report(w io.Writer, vm *vmm.VM, out vmm.Outcome, sig os.Signal) {
	what := out.Reason.String()
	if sig != nil {
		what = "stopped by signal " + sig.String()
	}
	fmt.Fprintf(w, "\ngovmm: guest %s after %.3f s", what, vm.Uptime().Seconds())
	if r := vm.ReadyAfter(); r > 0 {
		fmt.Fprintf(w, " (ready after %.3f s)", r.Seconds())
	}
	if touched, err := vm.Memory().Resident(); err == nil {
		fmt.Fprintf(w, "; guest RAM touched %.1f MiB", float64(touched)/(1<<20))
	}
	fmt.Fprintln(w)
}
