package main

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one connection on a unix socket with serve.
func fakeQMP(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "q.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return path
}

const fakeGreeting = `{"QMP":{"version":{},"capabilities":[]}}` + "\r\n"

// govmm stat's client reads replies beyond go-qemu's 64 KiB line limit
// (query-exit-stats of a 12-vCPU VM is 74 KB), skips events, and turns a
// silent or hostile server into an error within its timeout, never a
// hang.
func TestStatMonitor(t *testing.T) {
	big := `{"return":{"pad":"` + strings.Repeat("x", 200<<10) + `"}}` + "\r\n"
	path := fakeQMP(t, func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte(fakeGreeting))
		r.ReadString('\n') // qmp_capabilities
		c.Write([]byte(`{"return":{}}` + "\r\n"))
		r.ReadString('\n')
		c.Write([]byte(`{"event":"STOP","timestamp":{"seconds":1,"microseconds":2}}` + "\r\n" + big))
		r.ReadString('\n')
		c.Write([]byte(`{"error":{"class":"GenericError","desc":"no"}}` + "\r\n"))
		r.ReadString('\n') // then silence
		time.Sleep(time.Second)
	})
	m, err := dialStat(path, 300*time.Millisecond)
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
	if err := runQMP(m, "query-exit-stats", nil, nil); err == nil {
		t.Errorf("a server that never answers: no error")
	}

	for name, serve := range map[string]func(c net.Conn, r *bufio.Reader){
		"no greeting":     func(c net.Conn, r *bufio.Reader) { time.Sleep(time.Second) },
		"no capabilities": func(c net.Conn, r *bufio.Reader) { c.Write([]byte(fakeGreeting)); time.Sleep(time.Second) },
		"not QMP":         func(c net.Conn, r *bufio.Reader) { c.Write([]byte("HTTP/1.0 200 OK\r\n")) },
		"events, no reply": func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte(fakeGreeting))
			for i := 0; i < 1000; i++ {
				if _, err := c.Write([]byte(`{"event":"X"}` + "\n")); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			if m, err := dialStat(fakeQMP(t, serve), 200*time.Millisecond); err == nil {
				m.Disconnect()
				t.Fatal("connected")
			} else {
				t.Log(err)
			}
		})
	}
}
