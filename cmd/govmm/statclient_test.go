package main

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// quietServe is a fake QMP server's side of one connection. A server that
// goes silent waits on quiet, closed when the test ends, so that what ends
// the client's wait is its deadline, not the connection's end.
type quietServe func(c net.Conn, r *bufio.Reader, quiet <-chan struct{})

// fakeQMP serves one connection on a unix socket with serve.
func fakeQMP(t *testing.T, serve quietServe) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "q.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done, quiet := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, bufio.NewReader(c), quiet)
	}()
	t.Cleanup(func() {
		close(quiet)
		ln.Close()
		<-done
	})
	return path
}

const fakeGreeting = `{"QMP":{"version":{},"capabilities":[]}}` + "\r\n"

// govmm stat's client reads replies beyond go-qemu's 64 KiB line limit
// (query-exit-stats of a 12-vCPU VM is 74 KB), skips events, and turns a
// silent or hostile server into an error within its timeout, never a
// hang: each failure below is the deadline's (os.ErrDeadlineExceeded),
// except garbage, which is refused as it comes.
func TestStatMonitor(t *testing.T) {
	big := `{"return":{"pad":"` + strings.Repeat("x", 200<<10) + `"}}` + "\r\n"
	path := fakeQMP(t, func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) {
		c.Write([]byte(fakeGreeting))
		r.ReadString('\n') // qmp_capabilities
		c.Write([]byte(`{"return":{}}` + "\r\n"))
		r.ReadString('\n')
		c.Write([]byte(`{"event":"STOP","timestamp":{"seconds":1,"microseconds":2}}` + "\r\n" + big))
		r.ReadString('\n')
		c.Write([]byte(`{"error":{"class":"GenericError","desc":"no"}}` + "\r\n"))
		r.ReadString('\n') // then silence
		<-quiet
	})
	m, err := dialStat(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Disconnect()
	var out struct{ Pad string }
	if err := runQMP(m, "query-exit-stats", nil, &out); err != nil || len(out.Pad) != 200<<10 {
		t.Fatalf("big reply: %d bytes, %v", len(out.Pad), err)
	}
	if err := runQMP(m, "query-exit-stats", nil, nil); err == nil || !strings.Contains(err.Error(), "GenericError: no") {
		t.Errorf("error reply: %v", err)
	}
	if err := runQMP(m, "query-exit-stats", nil, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a server that never answers: %v, want the deadline", err)
	}

	for name, serve := range map[string]quietServe{
		"no greeting": func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) { <-quiet },
		"no capabilities": func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) {
			c.Write([]byte(fakeGreeting))
			<-quiet
		},
		// Events for ever, never the reply.
		"events, no reply": func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) {
			c.Write([]byte(fakeGreeting))
			for {
				select {
				case <-quiet:
					return
				default:
				}
				if _, err := c.Write([]byte(`{"event":"X"}` + "\n")); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := dialStat(fakeQMP(t, serve), 200*time.Millisecond)
			if err == nil {
				m.Disconnect()
				t.Fatal("connected")
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%v, want the deadline", err)
			}
		})
	}
	t.Run("not QMP", func(t *testing.T) {
		notQMP := func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) {
			c.Write([]byte("HTTP/1.0 200 OK\r\n"))
			<-quiet
		}
		if m, err := dialStat(fakeQMP(t, notQMP), time.Second); err == nil || !strings.Contains(err.Error(), "not a QMP message") {
			if m != nil {
				m.Disconnect()
			}
			t.Errorf("%v, want not a QMP message", err)
		}
	})
}

// The live view decodes only the exit tables of a query-exit-stats reply:
// a server's 1 MiB of empty virtio request objects, 6 KiB of histograms
// each once decoded, cost gigabytes (an audit).
func TestLiveSampleSkipsQueueTelemetry(t *testing.T) {
	reply := `{"return":{"user":{"vcpus":[{"rows":[{"name":"HLT","count":1}]}]},"virtio_queues":[{"requests":[` +
		strings.TrimSuffix(strings.Repeat("{},", 1<<18), ",") + `]}]}}` + "\r\n"
	path := fakeQMP(t, func(c net.Conn, r *bufio.Reader, quiet <-chan struct{}) {
		c.Write([]byte(fakeGreeting))
		r.ReadString('\n') // qmp_capabilities
		c.Write([]byte(`{"return":{}}` + "\r\n"))
		r.ReadString('\n')
		c.Write([]byte(reply))
		<-quiet
	})
	m, err := dialStat(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Disconnect()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := readSample(m)
	runtime.ReadMemStats(&after)
	if err != nil || len(s.table.User.VCPUs) != 1 {
		t.Fatalf("readSample: %+v, %v", s.table.User, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Errorf("a reply of %d KiB allocated %d MiB", len(reply)>>10, n>>20)
	}
}
