package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// The benchmark initramfs runs Debian's fio and iperf3 as the guest's
// users would: their shared libraries resolve (a missing one fails the
// exec) and fio completes a job through its libaio engine.
func TestBenchImageRunsTools(t *testing.T) {
	kernel := needGuest(t)
	bench := testenv.BenchInitramfs("../..")
	testenv.NeedLinux(t, kernel, bench)
	for _, tc := range []struct {
		name, run, want string
	}{
		{"fio", "fio,--name=smoke,--filename=/tmp/smoke,--size=1M,--rw=randread,--bs=4k,--ioengine=libaio,--iodepth=4", "READ: bw="},
		{"iperf3", "iperf3,--version", "iperf 3."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", bench,
				"--mem", "1G", "--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run="+tc.run)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("govmm: %v\nstderr:\n%s", err, stderr.String())
			}
			out := stdout.String()
			if !strings.Contains(out, "GOVMM-RESULT rc=0") || !strings.Contains(out, tc.want) {
				t.Errorf("%s in the guest: want rc=0 and %q; console:\n%s", tc.name, tc.want, out)
			}
		})
	}
}
