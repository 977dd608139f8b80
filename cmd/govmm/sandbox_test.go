package main

import (
	"context"
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

// unprivileged is the user the least-privilege tests run govmm as.
const unprivileged = "65534" // nobody

// needRootAndUtilLinux skips unless the test can make devices for the
// unprivileged user and run govmm as it.
func needRootAndUtilLinux(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make the unprivileged user's devices")
	}
	for _, tool := range []string{"unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (util-linux) not found", tool)
		}
	}
}

// userDevice makes a character device node major:minor that only the
// unprivileged user may open; bind-mounted over the real one in a mount
// namespace of the test's, it gives that user access without changing
// anything for anyone else or leaving anything behind.
func userDevice(t *testing.T, name string, major, minor uint32) string {
	t.Helper()
	node := filepath.Join(t.TempDir(), name)
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(node, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return node
}

// asUnprivileged is a command line running govmm with args as the
// unprivileged user, no groups and no capabilities.
func asUnprivileged(args ...string) []string {
	return append([]string{"setpriv", "--reuid=" + unprivileged, "--regid=" + unprivileged,
		"--clear-groups", "--inh-caps=-all", govmmBin}, args...)
}

// withDevices prefixes cmdline with a new mount namespace in which each
// node is bind-mounted over its target (pairs: node, target).
func withDevices(cmdline []string, binds ...string) []string {
	script := ""
	for i := 0; i < len(binds); i += 2 {
		script += fmt.Sprintf(`mount --bind "$%d" "$%d" && `, i+1, i+2)
	}
	script += fmt.Sprintf(`shift %d && exec "$@"`, len(binds))
	out := append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, binds...)
	return append(out, cmdline...)
}

// govmm needs no root: as an unprivileged user that can open /dev/kvm
// it boots the guest (seccomp on) and powers off cleanly, and without
// that access it says so.
func TestRunsUnprivileged(t *testing.T) {
	kernel := needGuest(t)
	needRootAndUtilLinux(t)
	govmm := asUnprivileged("run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2")

	// Without a node of its own: /dev/kvm is root's alone.
	out, err := exec.Command(govmm[0], govmm[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/dev/kvm") || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("govmm as uid %s without access to /dev/kvm: %v, want a permission error naming it:\n%s", unprivileged, err, out)
	}

	// With it. unshare execs sh, which execs setpriv, which execs govmm.
	cmdline := withDevices(govmm, userDevice(t, "kvm", 10, 232), "/dev/kvm")
	cmd := exec.Command(cmdline[0], cmdline[1:]...)
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
	// The guest is up, so govmm has been exec'd: check who it is. The
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

// An unprivileged user with /dev/kvm and /dev/net/tun attaches to a tap
// made for it (ip tuntap add ... user) and the guest reaches the host.
func TestRunsUnprivilegedOnTap(t *testing.T) {
	kernel := needGuest(t)
	needRootAndUtilLinux(t)
	ns := netNamespace(t)
	ip(t, "-n", ns, "tuntap", "add", "dev", "tapu", "mode", "tap", "user", unprivileged)
	ip(t, "-n", ns, "addr", "add", "10.0.3.1/24", "dev", "tapu")
	ip(t, "-n", ns, "link", "set", "tapu", "up")
	govmm := asUnprivileged("run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--net", "tap=tapu",
		"--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.ip=10.0.3.15/24 govmm.run=ping,-c,2,-W,10,10.0.3.1")
	cmdline := append([]string{"ip", "netns", "exec", ns}, withDevices(govmm,
		userDevice(t, "kvm", 10, 232), "/dev/kvm", userDevice(t, "tun", 10, 200), "/dev/net/tun")...)
	ctx, cancel := context.WithTimeout(context.Background(), netTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cmdline[0], cmdline[1:]...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GOVMM-RESULT rc=0") || !strings.Contains(string(out), "2 packets received") {
		t.Fatalf("unprivileged govmm on tapu: %v\n%s", err, out)
	}
}
