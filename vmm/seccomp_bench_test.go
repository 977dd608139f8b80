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
// guest under govmm's seccomp filter (statistics on, as govmm runs by
// default) and prints ns per exit: a filter can never be taken off, so
// the benchmark's own process stays free of it.
const confinedExitsEnv = "GOVMM_BENCH_CONFINED_EXITS"

func TestMain(m *testing.M) {
	if n := os.Getenv(confinedExitsEnv); n != "" {
		os.Exit(confinedExitsChild(n))
	}
	os.Exit(m.Run())
}

func confinedExitsChild(count string) int {
	n, err := strconv.ParseUint(count, 10, 32)
	if err == nil {
		err = sandbox.Seccomp(nil)
	}
	var ns float64
	if err == nil {
		ns, err = timeRawGuest(uint32(n), true, true)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ns)
	return 0
}

// timeConfinedGuest is timeRawGuest with the seccomp filter on, in a child.
func timeConfinedGuest(n uint32) (float64, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", confinedExitsEnv, n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("confined guest: %w", err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}
