package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// threadSeccompModes reads the Seccomp: line of every thread of pid
// ("0" none, "2" a filter), mode by thread ID.
func threadSeccompModes(t *testing.T, pid int) map[string]string {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of %d: %v", pid, err)
	}
	modes := map[string]string{}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
				modes[filepath.Base(filepath.Dir(f))] = strings.TrimSpace(v)
			}
		}
	}
	return modes
}

// While the guest runs, every govmm thread is under the filter by
// default and none with --seccomp=false; SIGTERM ends both cleanly and
// restores the terminal.
func TestSeccompOnEveryThread(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		mode  string
	}{{"default", nil, "2"}, {"seccomp=false", []string{"--seccomp=false"}, "0"}} {
		t.Run(tc.name, func(t *testing.T) {
			// The filter goes on before the vCPUs run: once the guest
			// is ready, it is there.
			vm := startOnTTY(t, tc.flags...)
			modes := threadSeccompModes(t, vm.cmd.Process.Pid)
			for tid, m := range modes {
				if m != tc.mode {
					t.Errorf("thread %s: Seccomp %s, want %s (all: %v)", tid, m, tc.mode, modes)
				}
			}
			if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			vm.waitEnd(t, 0)
		})
	}
}
