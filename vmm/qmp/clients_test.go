package qmp

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(fds)
}

// firstMessage reads the first message a new client gets.
func firstMessage(c *testClient) (map[string]any, error) {
	raw, err := c.readRaw()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(raw, &m)
}

// At most MaxClients are served at once; the rest get an error object and
// are hung up on, without costing the server a descriptor. A slot freed
// by a client leaving goes to the next, and once every client is gone the
// descriptors count is back where it started. Uncapped, 20,000 idle
// clients used up the process's descriptors.
func TestClientCap(t *testing.T) {
	s := startServer(t, newFakeMachine())
	baseline := openFDs(t)
	var served []*testClient
	for range MaxClients {
		c := dial(t, s.Path())
		c.handshake() // the server holds it now
		served = append(served, c)
	}
	const extra = 1000
	for i := range extra {
		c := dial(t, s.Path())
		m, err := firstMessage(c)
		if err != nil {
			t.Fatalf("client %d past the cap: %v", MaxClients+i+1, err)
		}
		e, _ := m["error"].(map[string]any)
		if e["class"] != "GenericError" || e["desc"] != "too many QMP clients: at most 16 are served at once" {
			t.Fatalf("client %d past the cap got %v, want a refusal", MaxClients+i+1, m)
		}
		if _, err := c.readRaw(); !errors.Is(err, io.EOF) {
			t.Fatalf("refused client %d: after the refusal %v, want EOF", MaxClients+i+1, err)
		}
		c.conn.Close()
	}
	// The clients being served saw none of it.
	for _, c := range served {
		if r, _ := c.cmd(`{"execute":"query-status"}`); r["return"] == nil {
			t.Fatalf("served client after the refusals: %v", r)
		}
	}

	// One leaves; its slot goes to the next client once the server has
	// seen it go.
	served[0].conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial(t, s.Path())
		m, err := firstMessage(c)
		if err == nil && m["QMP"] != nil {
			served[0] = c
			break
		}
		c.conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no slot 10 s after a client left: %v, %v", m, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	for _, c := range served {
		c.conn.Close()
	}
	deadline = time.Now().Add(10 * time.Second)
	for fds := openFDs(t); fds != baseline; fds = openFDs(t) {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open after every client left, %d before any came", fds, baseline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
