package main

import (
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Console input piped in faster than the guest reads it all reaches the
// guest, on the serial port (a 4 KiB receive buffer) and on the virtio
// console (64 KiB waiting for receive buffers): govmm waits for the guest
// instead of dropping what does not fit.
func TestPipedInputReachesTheGuest(t *testing.T) {
	for _, tt := range []struct {
		console, dev string
		size         int
	}{
		{"serial", "ttyS0", 64 << 10},
		{"virtio", "hvc0", 512 << 10},
	} {
		t.Run(tt.console, func(t *testing.T) {
			kernel := needGuest(t)
			cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs,
				"--console", tt.console, "--exit-stats=false",
				"--append", "console="+tt.dev+" reboot=k panic=-1 quiet govmm.shell")
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cmd.Process.Kill()
				<-done
			}()
			waitConsole := func(what string) {
				t.Helper()
				deadline := time.Now().Add(60 * time.Second)
				for !strings.Contains(stdout.String(), what) {
					if time.Now().After(deadline) {
						t.Fatalf("no %q on the console\nconsole:\n%s\nstderr:\n%s", what, stdout, stderr)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			waitConsole("/ # ")
			// The command line's echo spells the marker with quotes, so
			// only the shell's own output matches it.
			fmt.Fprintf(stdin, "stty raw -echo; echo IN''PUT-READY; head -c %d | md5sum; poweroff -f\n", tt.size)
			waitConsole("INPUT-READY")
			// Letters only: the hvc driver takes Ctrl-O for SysRq.
			data := []byte(rand.Text())
			for len(data) < tt.size {
				data = append(data, rand.Text()...)
			}
			data = data[:tt.size]
			if _, err := stdin.Write(data); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%x", md5.Sum(data))
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Fatalf("govmm: %v\nstderr:\n%s", err, stderr)
				}
			case <-time.After(120 * time.Second):
				t.Fatalf("the guest read no %d bytes in 120 s\nconsole:\n%s\nstderr:\n%s", tt.size, stdout, stderr)
			}
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("the guest's md5sum of the input is not %s\nconsole:\n%s", want, stdout)
			}
		})
	}
}
