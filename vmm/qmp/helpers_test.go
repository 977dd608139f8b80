package qmp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// kernelRIP is a typical x86-64 kernel text address: above 2^63, so it must
// travel as a negative number in query-cpus.
const kernelRIP uint64 = 0xffffffff81000000

// ripVar lets tests convert kernelRIP to int64 at run time, as a client does.
var ripVar = kernelRIP

// fakeMachine is a Machine whose state is a few fields, shaped like a
// "qemu -S -smp 2" machine so that it can stand in for QEMU in the
// conformance test.
type fakeMachine struct {
	mu        sync.Mutex
	status    string
	running   bool
	calls     []string
	stopGate  chan struct{} // if set, Stop waits for it to close
	quitHook  func()        // if set, run by Quit
	quitDone  chan struct{} // closed by the first Quit
	quitOnce  sync.Once
	stats     any
	failNext  error // returned once by the next state change
	kvm       bool
	cpus      []CPU
	quitCount int
	quitWhy   []string // Quit's reasons
	noReboot  bool     // Reset ends the machine (ErrResetEndsMachine)
}

func newFakeMachine() *fakeMachine {
	return &fakeMachine{
		status:   "prelaunch",
		quitDone: make(chan struct{}),
		kvm:      true,
		stats:    map[string]any{"vcpus": []map[string]any{{"index": 0, "exits": map[string]int{"io": 3}}}},
		cpus: []CPU{
			{Index: 0, ThreadID: 4242, PC: kernelRIP, Halted: false},
			{Index: 1, ThreadID: 4243, PC: 0xfff0, Halted: true},
		},
	}
}

func (f *fakeMachine) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	err := f.failNext
	f.failNext = nil
	return err
}

func (f *fakeMachine) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{Running: f.running, Status: f.status}
}

func (f *fakeMachine) Stop(stopped func()) error {
	if err := f.record("stop"); err != nil {
		return err
	}
	f.mu.Lock()
	gate := f.stopGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		f.running, f.status = false, "paused"
		stopped()
	}
	return nil
}

func (f *fakeMachine) Cont(resumed func()) error {
	if err := f.record("cont"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		resumed()
	}
	f.running, f.status = true, "running"
	return nil
}

func (f *fakeMachine) Powerdown() error { return f.record("powerdown") }

// Reset mirrors QEMU: a machine that is not running comes back in prelaunch.
func (f *fakeMachine) Reset() error {
	if err := f.record("reset"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noReboot {
		return ErrResetEndsMachine
	}
	if !f.running {
		f.status = "prelaunch"
	}
	return nil
}

func (f *fakeMachine) Quit(reason string) {
	f.record("quit")
	f.mu.Lock()
	f.quitCount++
	f.quitWhy = append(f.quitWhy, reason)
	hook := f.quitHook
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.quitOnce.Do(func() { close(f.quitDone) })
}

func (f *fakeMachine) CPUs() []CPU {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]CPU(nil), f.cpus...)
}

func (f *fakeMachine) ExitStats() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *fakeMachine) KVMEnabled() bool { return f.kvm }

func (f *fakeMachine) MemorySize() uint64 { return 512 << 20 }

func (f *fakeMachine) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

var shortTempDir = testenv.ShortTempDir

// startServer listens on a fresh socket and serves until the test ends,
// checking that Serve returns after Close.
func startServer(t *testing.T, m Machine) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(shortTempDir(t), "qmp.sock"), m)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return s
}

// testClient is a raw QMP client that sees every message as sent.
type testClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, path string) *testClient {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// readRaw reads one message, checking QEMU's CRLF framing.
func (c *testClient) readRaw() ([]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return nil, errors.New("message not terminated by CRLF: " + string(line))
	}
	return line, nil
}

func (c *testClient) read() map[string]any {
	c.t.Helper()
	line, err := c.readRaw()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		c.t.Fatalf("bad message %q: %v", line, err)
	}
	return m
}

func (c *testClient) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a request and returns its reply and the events that came first.
func (c *testClient) cmd(req string) (reply map[string]any, events []map[string]any) {
	c.t.Helper()
	c.send(req + "\n")
	for {
		m := c.read()
		if _, ok := m["event"]; ok {
			events = append(events, m)
			continue
		}
		return m, events
	}
}

// handshake reads the greeting and negotiates capabilities.
func (c *testClient) handshake() {
	c.t.Helper()
	if g := c.read(); g["QMP"] == nil {
		c.t.Fatalf("greeting: %v", g)
	}
	if r, _ := c.cmd(`{"execute":"qmp_capabilities"}`); !jsonEqual(r, `{"return":{}}`) {
		c.t.Fatalf("qmp_capabilities: %v", r)
	}
}

// expectNothing checks that no message arrives within d.
func (c *testClient) expectNothing(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	line, err := c.r.ReadBytes('\n')
	if err == nil {
		c.t.Fatalf("unexpected message %s", line)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("expected silence, got %v", err)
	}
}

// jsonEqual compares a decoded message with the JSON text want.
func jsonEqual(got any, want string) bool {
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		panic(err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(w)
	return bytes.Equal(gb, wb)
}

func eventNames(events []map[string]any) []string {
	var names []string
	for _, e := range events {
		names = append(names, e["event"].(string))
	}
	return names
}
