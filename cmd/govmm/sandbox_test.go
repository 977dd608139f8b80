package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// unprivileged is the user the least-privilege test runs govmm as.
const unprivileged = "65534" // nobody

// govmm needs no root: as an unprivileged user that can open /dev/kvm
// it boots the guest (seccomp on) and powers off cleanly, and without
// that access it says so. The access is a device node of the user's own
// bind-mounted over /dev/kvm in a mount namespace of the test's, so
// nothing changes for anyone else and nothing is left behind.
func TestRunsUnprivileged(t *testing.T) {
	kernel := needGuest(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to make the unprivileged user's /dev/kvm")
	}
	for _, tool := range []string{"unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (util-linux) not found", tool)
		}
	}
	node := filepath.Join(t.TempDir(), "kvm")
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 232))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(node, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asUser := []string{"setpriv", "--reuid=" + unprivileged, "--regid=" + unprivileged, "--clear-groups", "--inh-caps=-all",
		govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2"}

	// Without the node: /dev/kvm is root's alone.
	out, err := exec.Command(asUser[0], asUser[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/dev/kvm") || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("govmm as uid %s without access to /dev/kvm: %v, want a permission error naming it:\n%s", unprivileged, err, out)
	}

	// With it: unshare execs sh, which execs setpriv, which execs govmm.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /dev/kvm && exec "$@"`, node)
	cmd.Args = append(cmd.Args, asUser...)
	var console, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &console, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(console.String(), "GOVMM-READY") {
		if time.Now().After(deadline) {
			t.Fatalf("guest not ready in time; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The guest is up, so govmm has exec'd and runs: check who it is. The
	// guest may power off meanwhile, taking /proc/PID with it.
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" && f[2] != unprivileged {
				t.Errorf("govmm runs as effective uid %s, want %s", f[2], unprivileged)
			}
		}
	}
	waitExit(t, cmd, &stderr)
	if !strings.Contains(stderr.String(), "guest powered off") {
		t.Errorf("no power-off report:\n%s", stderr.String())
	}
}
