package main

import (
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// TestGoProcs: --go-procs 1 leaves govmm's goroutines one Go processor
// while the VM runs, the keeper's on top (GOMAXPROCS 2, as Go's runtime
// metrics on /metrics say), and the VM runs and quits as ever.
func TestGoProcs(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--go-procs", "1"}, "2"},
		{[]string{"--go-procs", "1", "--keep-sysmon-awake=false"}, "2"}, // seccomp's floor
		{[]string{"--go-procs", "3", "--keep-sysmon-awake=false"}, "3"},
	} {
		vm := startOnTTY(t, append([]string{"--metrics-addr", "127.0.0.1:0"}, c.flags...)...)
		m := regexp.MustCompile(`metrics on (http://\S+/metrics)`).FindStringSubmatch(vm.stderr.String())
		if m == nil {
			t.Fatalf("%v: no metrics address on stderr:\n%s", c.flags, vm.stderr)
		}
		client := http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads (\d+)$`).FindSubmatch(body)
		if got == nil || string(got[1]) != c.want {
			t.Errorf("%v: go_sched_gomaxprocs_threads %q, want %s", c.flags, got, c.want)
		}
		if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
			t.Fatal(err)
		}
		vm.waitEnd(t, 0)
	}
}
