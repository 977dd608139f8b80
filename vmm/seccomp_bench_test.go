package vmm

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/govmm/govmm/sandbox"
)

// confinedExitsEnv makes the test binary a child that times the port-I/O
// guest under govmm's seccomp filter and Landlock (statistics and top RIPs
// on, as govmm runs by default) and prints ns per exit: a filter can never be taken off, so
// the benchmark's own process stays free of it. childExitsEnv makes the
// same child without the filter: the control that tells the filter's cost
// from that of a child process.
const (
	confinedExitsEnv = "GOVMM_BENCH_CONFINED_EXITS"
	childExitsEnv    = "GOVMM_BENCH_CHILD_EXITS"
)

func TestMain(m *testing.M) {
	if n := os.Getenv(confinedExitsEnv); n != "" {
		os.Exit(exitsChild(n, true))
	}
	if n := os.Getenv(childExitsEnv); n != "" {
		os.Exit(exitsChild(n, false))
	}
	os.Exit(m.Run())
}

// exitsChild runs one guest unconfined and untimed, then builds the timed
// VM, installs the filter when confined, and runs it: the order of govmm
// run, whose filter comes after vmm.New. The untimed guest is there
// because a process's first guest runs slower than the ones after it
// (about 3% over these 20,000 exits, paired within one process): without
// it the child rows would measure a fresh process's start-up, while the
// in-process rows, like any govmm that has run for a moment, are warm.
func exitsChild(count string, confined bool) int {
	n, err := strconv.ParseUint(count, 10, 32)
	if err == nil {
		_, err = timeRawGuest(uint32(n), true, true)
	}
	var vm *VM
	if err == nil {
		// As govmm runs by default: statistics and top RIPs on.
		vm, err = newRawGuest(uint32(n), func(c *Config) { c.ExitStats, c.ExitRIPs, c.SyncRegs = true, true, true })
	}
	if err == nil && confined {
		// Confined as govmm run confines itself: Landlock (no file is
		// opened from here on), then the filter.
		_, err = sandbox.Landlock(sandbox.Files{})
		if err == nil {
			err = sandbox.Seccomp(nil)
		}
	}
	var ns float64
	if err == nil {
		ns, err = timeRun(vm, uint32(n))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ns)
	return 0
}

// timeChildGuest is timeRawGuest (statistics on) in a child process, with
// the seccomp filter on when confined is set.
func timeChildGuest(n uint32, confined bool) (float64, error) {
	env := childExitsEnv
	if confined {
		env = confinedExitsEnv
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", env, n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("child guest (seccomp %v): %w", confined, err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}
