package qmp

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	raw, err := c.readRaw()
	if err != nil {
		t.Fatal(err)
	}
	var g any
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	want := `{"QMP":{"version":{"qemu":{"micro":0,"minor":2,"major":7},"package":"govmm"},"capabilities":["oob"]}}`
	if !jsonEqual(g, want) {
		t.Fatalf("greeting %s, want %s", raw, want)
	}
	if r, _ := c.cmd(`{"execute":"qmp_capabilities","id":"neg"}`); !jsonEqual(r, `{"return":{},"id":"neg"}`) {
		t.Fatalf("qmp_capabilities: %v", r)
	}
	r, _ := c.cmd(`{"execute":"qmp_capabilities"}`)
	if !jsonEqual(r, `{"error":{"class":"CommandNotFound","desc":"Capabilities negotiation is already complete, command ignored"}}`) {
		t.Fatalf("second qmp_capabilities: %v", r)
	}
}

func TestBeforeNegotiation(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.read()
	for _, tc := range []struct{ req, want string }{
		{`{"execute":"query-status"}`, `{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{`{"execute":"query-status","id":5}`, `{"id":5,"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{`{"execute":"no-such-thing"}`, `{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{`{"execute":"stop"}`, `{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{`{}`, `{"error":{"class":"GenericError","desc":"QMP input lacks member 'execute'"}}`},
		{`{"exec-oob":"query-kvm"}`, `{"error":{"class":"GenericError","desc":"QMP input member 'exec-oob' is unexpected"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"x":1}}`, `{"error":{"class":"GenericError","desc":"Parameter 'x' is unexpected"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}`, `{"error":{"class":"GenericError","desc":"Parameter 'enable[0]' does not accept value 'foo'"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}`, `{"error":{"class":"GenericError","desc":"Invalid parameter type for 'enable', expected: array"}}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			t.Errorf("%s: got %v, want %s", tc.req, r, tc.want)
		}
	}
	if got := newFakeMachineCalls(s); len(got) != 0 {
		t.Errorf("machine was called before negotiation: %v", got)
	}
}

func newFakeMachineCalls(s *Server) []string { return s.m.(*fakeMachine).callLog() }

func TestCommandReplies(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	names := make([]string, len(commands))
	for i, cmd := range commands {
		names[i] = `{"name":"` + cmd.name + `"}`
	}
	for _, tc := range []struct{ req, want string }{
		{`{"execute":"query-status"}`, `{"return":{"status":"prelaunch","singlestep":false,"running":false}}`},
		{`{"execute":"query-status","arguments":{}}`, `{"return":{"status":"prelaunch","singlestep":false,"running":false}}`},
		{`{"execute":"query-version"}`, `{"return":{"qemu":{"micro":0,"minor":2,"major":7},"package":"govmm"}}`},
		{`{"execute":"query-commands"}`, `{"return":[` + strings.Join(names, ",") + `]}`},
		{`{"execute":"query-kvm"}`, `{"return":{"enabled":true,"present":true}}`},
		{`{"execute":"query-cpus-fast"}`, `{"return":[
			{"cpu-index":0,"qom-path":"/machine/unattached/device[0]","thread-id":4242,"props":{"core-id":0,"thread-id":0,"socket-id":0},"target":"x86_64"},
			{"cpu-index":1,"qom-path":"/machine/unattached/device[1]","thread-id":4243,"props":{"core-id":1,"thread-id":0,"socket-id":0},"target":"x86_64"}]}`},
		{`{"execute":"query-cpus"}`, `{"return":[
			{"arch":"x86","CPU":0,"current":true,"halted":false,"qom_path":"/machine/unattached/device[0]","thread_id":4242,"props":{"core-id":0,"thread-id":0,"socket-id":0},"pc":-2130706432},
			{"arch":"x86","CPU":1,"current":false,"halted":true,"qom_path":"/machine/unattached/device[1]","thread_id":4243,"props":{"core-id":1,"thread-id":0,"socket-id":0},"pc":65520}]}`},
		{`{"execute":"query-block"}`, `{"return":[]}`},
		{`{"execute":"query-pci"}`, `{"return":[]}`},
		{`{"execute":"query-exit-stats"}`, `{"return":{"vcpus":[{"index":0,"exits":{"io":3}}]}}`},
		{`{"execute":"stop"}`, `{"return":{}}`},
		{`{"execute":"cont"}`, `{"return":{}}`},
		{`{"execute":"query-status"}`, `{"return":{"status":"running","singlestep":false,"running":true}}`},
		{`{"execute":"system_powerdown"}`, `{"return":{}}`},
		{`{"execute":"system_reset"}`, `{"return":{}}`},
		{`{"execute":"no-such-command"}`, `{"error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}`},
		{`{"execute":"no-such-command","arguments":{"a":1}}`, `{"error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}`},
		{`{"execute":"query-cpus","arguments":{"a":1}}`, `{"error":{"class":"GenericError","desc":"Parameter 'a' is unexpected"}}`},
		{`{"execute":"stop","arguments":{"x":1}}`, `{"error":{"class":"GenericError","desc":"Parameter 'x' is unexpected"}}`},
		{`{"execute":"query-kvm","arguments":[]}`, `{"error":{"class":"GenericError","desc":"QMP input member 'arguments' must be an object"}}`},
		{`{"execute":"query-kvm","arguments":null}`, `{"error":{"class":"GenericError","desc":"QMP input member 'arguments' must be an object"}}`},
		{`{"execute":5}`, `{"error":{"class":"GenericError","desc":"QMP input member 'execute' must be a string"}}`},
		{`{"execute":"query-kvm","extra":1}`, `{"error":{"class":"GenericError","desc":"QMP input member 'extra' is unexpected"}}`},
		{`{"id":1}`, `{"id":1,"error":{"class":"GenericError","desc":"QMP input lacks member 'execute'"}}`},
		{`{"exec-oob":"query-kvm"}`, `{"error":{"class":"GenericError","desc":"QMP input member 'exec-oob' is unexpected"}}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			got, _ := json.Marshal(r)
			t.Errorf("%s:\n got %s\nwant %s", tc.req, got, tc.want)
		}
	}
	// The machine saw each state change once, in order.
	want := []string{"stop", "cont", "powerdown", "reset"}
	if got := m.callLog(); !slices.Equal(got, want) {
		t.Errorf("machine calls %v, want %v", got, want)
	}
}

func TestMachineErrors(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	m.failNext = errors.New("Resetting the Virtual Machine is required")
	r, ev := c.cmd(`{"execute":"cont","id":1}`)
	if !jsonEqual(r, `{"id":1,"error":{"class":"GenericError","desc":"Resetting the Virtual Machine is required"}}`) || len(ev) != 0 {
		t.Errorf("failed cont: %v, events %v", r, ev)
	}
	m.mu.Lock()
	m.stats = map[string]any{"bad": make(chan int)}
	m.mu.Unlock()
	r, _ = c.cmd(`{"execute":"query-exit-stats"}`)
	if e, _ := r["error"].(map[string]any); e["class"] != "GenericError" {
		t.Errorf("unmarshalable exit stats: %v", r)
	}
}

func TestOOBCapability(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.read()
	if r, _ := c.cmd(`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`); !jsonEqual(r, `{"return":{}}`) {
		t.Fatalf("enable oob: %v", r)
	}
	for _, tc := range []struct{ req, want string }{
		{`{"exec-oob":"query-kvm","id":"o"}`, `{"id":"o","error":{"class":"GenericError","desc":"The command query-kvm does not support OOB"}}`},
		{`{"exec-oob":"nope"}`, `{"error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}`},
		{`{"execute":"query-kvm","exec-oob":"query-kvm"}`, `{"error":{"class":"GenericError","desc":"QMP input member 'exec-oob' clashes with 'execute'"}}`},
		{`{"execute":"query-kvm"}`, `{"return":{"enabled":true,"present":true}}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			t.Errorf("%s: got %v, want %s", tc.req, r, tc.want)
		}
	}
}

func TestIDEcho(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	for _, id := range []string{`"x"`, `5`, `-1.5`, `null`, `{"a":[1,"b"]}`, `"<&>"`, `"\u00e9\n"`} {
		c.send(`{"execute":"query-kvm","id":` + id + "}\n")
		raw, err := c.readRaw()
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]json.RawMessage
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(mustDecode(t, r["id"]), id) {
			t.Errorf("id %s echoed as %s", id, r["id"])
		}
	}
	// An id split over lines must not split the reply: it is one line.
	r, _ := c.cmd("{\"execute\":\"query-kvm\",\n\"id\":{\n\"k\":\n[1,\n2]}}")
	if !jsonEqual(r["id"], `{"k":[1,2]}`) {
		t.Errorf("multi-line id echoed as %v", r["id"])
	}
	// Like QEMU, no HTML escaping: "<&>" comes back byte for byte.
	c.send(`{"execute":"query-kvm","id":"<&>"}`)
	raw, _ := c.readRaw()
	if !strings.Contains(string(raw), `"<&>"`) {
		t.Errorf("id escaped: %s", raw)
	}
}

func mustDecode(t *testing.T, b []byte) any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMalformedInput(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	for _, tc := range []struct{ in, class, desc string }{
		{"garbage\n", "GenericError", "JSON parse error, "},
		{"}\n", "GenericError", "JSON parse error, "},
		{`{"execute":"query-kvm"]` + "\n", "GenericError", "JSON parse error, "},
		{`{"execute": query}` + "\n", "GenericError", "JSON parse error, "},
		{"\xff", "GenericError", "JSON parse error, stray"},
		{`{"execute":"query-kvm"` + "\xff", "GenericError", "JSON parse error, stray"},
		{"[1]\n", "GenericError", "QMP input must be a JSON object"},
		{"5\n", "GenericError", "QMP input must be a JSON object"},
		{`"str"` + "\n", "GenericError", "QMP input must be a JSON object"},
		{"null\n", "GenericError", "QMP input must be a JSON object"},
		{"{\"execute\":\"query-kvm\",\"id\":\"\xfe\"}", "", ""}, // invalid UTF-8 is not fatal
	} {
		c.send(tc.in)
		r := c.read()
		e, _ := r["error"].(map[string]any)
		if tc.class == "" {
			continue
		}
		if e["class"] != tc.class || !strings.HasPrefix(e["desc"].(string), tc.desc) {
			t.Errorf("%q: got %v, want %s %q...", tc.in, r, tc.class, tc.desc)
		}
		if _, hasID := r["id"]; hasID {
			t.Errorf("%q: parse error echoes an id: %v", tc.in, r)
		}
	}
	// The connection survived all of it.
	if r, _ := c.cmd(`{"execute":"query-kvm"}`); !jsonEqual(r, `{"return":{"enabled":true,"present":true}}`) {
		t.Errorf("after malformed input: %v", r)
	}
}

// go-qemu writes commands without a newline, QEMU accepts several requests
// in one write and one request over several writes: framing is by JSON
// structure, not by lines.
func TestStreamFraming(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	c.send(`{"execute":"query-kvm","id":1}{"execute":"query-kvm","id":2}  {"execute":"query-kvm","id":"}{"}`)
	for _, id := range []string{`1`, `2`, `"}{"`} {
		if r := c.read(); !jsonEqual(r["id"], id) {
			t.Errorf("got %v, want id %s", r, id)
		}
	}
	for _, part := range []string{`{"exec`, `ute":"query-`, `kvm","id":"sp\"l`, `it"`, "}"} {
		c.send(part)
		time.Sleep(10 * time.Millisecond)
	}
	if r := c.read(); !jsonEqual(r["id"], `"sp\"lit"`) {
		t.Errorf("split request: %v", r)
	}
}

func TestOversizeRequest(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	// A request of exactly the limit is fine.
	pad := MaxMessageSize - len(`{"execute":"query-kvm","id":""}`)
	r, _ := c.cmd(`{"execute":"query-kvm","id":"` + strings.Repeat("a", pad) + `"}`)
	if _, ok := r["return"]; !ok {
		t.Fatalf("request at the limit: %.100v", r)
	}
	// One byte more is not; the server says so and hangs up. Write from a
	// goroutine: the server stops reading, so a big write may not finish.
	go c.conn.Write([]byte(`{"execute":"query-kvm","id":"` + strings.Repeat("a", pad+1) + `"}`))
	r = c.read()
	if e, _ := r["error"].(map[string]any); e["class"] != "GenericError" || !strings.Contains(e["desc"].(string), "exceeds") {
		t.Fatalf("oversize: %v", r)
	}
	if _, err := c.readRaw(); err != io.EOF {
		t.Fatalf("connection not dropped: %v", err)
	}
	// The server carries on for others.
	c2 := dial(t, s.Path())
	c2.handshake()
}

func TestEventsOnlyAfterNegotiation(t *testing.T) {
	s := startServer(t, newFakeMachine())
	a := dial(t, s.Path())
	a.handshake()
	b := dial(t, s.Path())
	b.read() // greeting only
	s.Emit("GUEST_PANICKED", map[string]any{"action": "pause"})
	e := a.read()
	if e["event"] != "GUEST_PANICKED" || !jsonEqual(e["data"], `{"action":"pause"}`) {
		t.Fatalf("event: %v", e)
	}
	ts, _ := e["timestamp"].(map[string]any)
	if sec, _ := ts["seconds"].(float64); sec < 1e9 || ts["microseconds"] == nil {
		t.Errorf("timestamp: %v", e["timestamp"])
	}
	b.expectNothing(100 * time.Millisecond)
	// Once b negotiates, it gets events too, and the first thing after
	// its capabilities reply is the reply to its next command.
	if r, _ := b.cmd(`{"execute":"qmp_capabilities"}`); !jsonEqual(r, `{"return":{}}`) {
		t.Fatal(r)
	}
	if r, ev := b.cmd(`{"execute":"query-kvm"}`); len(ev) != 0 || r["return"] == nil {
		t.Fatalf("b after negotiation: %v %v", r, ev)
	}
	s.Emit("STOP", nil)
	for _, c := range []*testClient{a, b} {
		e := c.read()
		if _, hasData := e["data"]; e["event"] != "STOP" || hasData {
			t.Errorf("STOP event: %v", e)
		}
	}
}

// Each command emits what QEMU 7.2 emits, before its reply, to every
// negotiated client.
func TestCommandEvents(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	watcher := dial(t, s.Path())
	watcher.handshake()
	for _, tc := range []struct {
		req    string
		events []string
		data   string // of the last event, if any
	}{
		{`{"execute":"stop"}`, nil, ""}, // prelaunch: not running, no STOP
		{`{"execute":"cont"}`, []string{"RESUME"}, ""},
		{`{"execute":"cont"}`, nil, ""}, // already running
		{`{"execute":"stop"}`, []string{"STOP"}, ""},
		{`{"execute":"stop"}`, nil, ""},
		{`{"execute":"system_powerdown"}`, []string{"POWERDOWN"}, ""},
		{`{"execute":"system_reset"}`, []string{"RESET"}, `{"guest":false,"reason":"host-qmp-system-reset"}`},
		{`{"execute":"query-status"}`, nil, ""},
	} {
		r, ev := c.cmd(tc.req)
		if _, ok := r["return"]; !ok {
			t.Errorf("%s: %v", tc.req, r)
		}
		if got := eventNames(ev); !slices.Equal(got, tc.events) {
			t.Errorf("%s: events %v, want %v", tc.req, got, tc.events)
		}
		if tc.data != "" && !jsonEqual(ev[len(ev)-1]["data"], tc.data) {
			t.Errorf("%s: data %v, want %s", tc.req, ev[len(ev)-1]["data"], tc.data)
		}
		for range tc.events {
			if e := watcher.read(); e["event"] == nil {
				t.Errorf("watcher got %v", e)
			}
		}
	}
	// quit: SHUTDOWN, then the reply, then the machine ends.
	r, ev := c.cmd(`{"execute":"quit","id":"q"}`)
	if !jsonEqual(r, `{"return":{},"id":"q"}`) || !slices.Equal(eventNames(ev), []string{"SHUTDOWN"}) ||
		!jsonEqual(ev[0]["data"], `{"guest":false,"reason":"host-qmp-quit"}`) {
		t.Fatalf("quit: %v %v", r, ev)
	}
	select {
	case <-m.quitDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Quit not called")
	}
	// Nothing runs after quit, from any client: the watcher's own quit
	// and a stop are neither run nor answered. Close, as the VMM closes
	// the server once the machine has ended, waits for the connections'
	// readers and lets what is queued drain.
	watcher.send(`{"execute":"quit"}{"execute":"stop"}` + "\n")
	s.Close()
	if got := eventNames(readToEOF(t, watcher)); !slices.Equal(got, []string{"SHUTDOWN"}) {
		t.Errorf("watcher after quit: %v, want one SHUTDOWN and no reply", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quitCount != 1 || !slices.Equal(m.quitWhy, []string{ReasonQuit}) || m.calls[len(m.calls)-1] != "quit" {
		t.Errorf("Quit %d times %v, calls %v", m.quitCount, m.quitWhy, m.calls)
	}
}

// waitQuit waits for the machine's Quit.
func waitQuit(t *testing.T, m *fakeMachine) {
	t.Helper()
	select {
	case <-m.quitDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Quit not called")
	}
}

// readToEOF reads what is left on c until the server hangs up, and
// returns it; a reply shows as an entry without "event". A hang-up with
// requests left unread (those after a quit) reaches the client as
// ECONNRESET once it has read everything sent before it, as from QEMU.
func readToEOF(t *testing.T, c *testClient) []map[string]any {
	t.Helper()
	var out []map[string]any
	for {
		line, err := c.readRaw()
		if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
}

// Commands sent behind quit on its own connection are not run either:
// QEMU's main loop exits after quit and never reads them.
func TestNothingRunsAfterQuit(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	c.send(`{"execute":"quit","id":1}{"execute":"system_reset","id":2}{"execute":"cont","id":3}` + "\n")
	waitQuit(t, m)
	s.Close()
	got := readToEOF(t, c)
	if len(got) != 2 || got[0]["event"] != "SHUTDOWN" || !jsonEqual(got[1], `{"return":{},"id":1}`) {
		t.Errorf("after quit and two commands: %v, want SHUTDOWN and quit's reply only", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Equal(m.calls, []string{"quit"}) {
		t.Errorf("machine calls %v, want only quit", m.calls)
	}
}

// Two clients' quit at once: the machine ends once and each client sees
// one SHUTDOWN, as with two QEMU monitors.
func TestTwoQuitsOneShutdown(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	a, b := dial(t, s.Path()), dial(t, s.Path())
	a.handshake()
	b.handshake()
	a.send(`{"execute":"quit"}` + "\n")
	b.send(`{"execute":"quit"}` + "\n")
	waitQuit(t, m)
	s.Close()
	for name, c := range map[string]*testClient{"a": a, "b": b} {
		got := readToEOF(t, c)
		shutdowns := 0
		for _, e := range got {
			if e["event"] == "SHUTDOWN" {
				shutdowns++
			}
		}
		if shutdowns != 1 {
			t.Errorf("client %s: %d SHUTDOWN events in %v", name, shutdowns, got)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quitCount != 1 {
		t.Errorf("Quit called %d times", m.quitCount)
	}
}

// system_reset on a machine that ends instead (-no-reboot): SHUTDOWN
// host-qmp-system-reset before the reply, as QEMU orders them, and the
// machine ended by the server.
func TestResetThatEndsTheMachine(t *testing.T) {
	m := newFakeMachine()
	m.noReboot = true
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	r, ev := c.cmd(`{"execute":"system_reset","id":"r"}`)
	if !jsonEqual(r, `{"return":{},"id":"r"}`) || !slices.Equal(eventNames(ev), []string{"SHUTDOWN"}) ||
		!jsonEqual(ev[0]["data"], `{"guest":false,"reason":"host-qmp-system-reset"}`) {
		t.Fatalf("system_reset: %v %v", r, ev)
	}
	waitQuit(t, m)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Equal(m.quitWhy, []string{ReasonReset}) {
		t.Errorf("Quit reasons %v, want %s", m.quitWhy, ReasonReset)
	}
}

// Quit may tear the server down from inside, as a VMM does.
func TestQuitClosesServer(t *testing.T) {
	m := newFakeMachine()
	s, err := Listen(filepath.Join(shortTempDir(t), "q.sock"), m)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	m.quitHook = func() {
		s.Close()
		<-served
	}
	c := dial(t, s.Path())
	c.handshake()
	c.cmd(`{"execute":"quit"}`)
	select {
	case <-m.quitDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Quit deadlocked against Serve")
	}
	if _, err := c.readRaw(); err != io.EOF {
		t.Errorf("client not disconnected: %v", err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// A client that never reads must not block Emit (the VMM) or other clients:
// a burst within the budget reaches everybody, and the stuck client is
// dropped once it falls too far behind.
func TestStuckClientDoesNotBlockEmit(t *testing.T) {
	s := startServer(t, newFakeMachine())
	stuck := dial(t, s.Path())
	stuck.handshake()
	ok := dial(t, s.Path())
	ok.handshake()
	clients := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.clients)
	}

	const burst = 2000
	pad := map[string]string{"pad": strings.Repeat("x", 1024)}
	start := time.Now()
	for i := 0; i < burst; i++ {
		s.Emit("SMALL", pad)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Emit took %v for a burst: it waits on clients", d)
	}
	for i := 0; i < burst; i++ {
		if e := ok.read(); e["event"] != "SMALL" {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	if n := clients(); n != 2 {
		t.Fatalf("%d clients after a burst within budget, want 2", n)
	}

	// Now keep going at the pace of the reading client until the stuck
	// one overflows its budget.
	big := map[string]string{"pad": strings.Repeat("y", 64<<10)}
	for i := 0; clients() == 2; i++ {
		if i > 2*maxQueuedBytes/(64<<10) {
			t.Fatal("stuck client never dropped")
		}
		s.Emit("BIG", big)
		if e := ok.read(); e["event"] != "BIG" {
			t.Fatalf("event: %.80v", e)
		}
	}
	if r, _ := ok.cmd(`{"execute":"query-kvm"}`); r["return"] == nil {
		t.Errorf("reading client after the drop: %v", r)
	}
}

// A client that hangs up mid-command blocks neither the server nor the VMM.
func TestDisconnectMidCommand(t *testing.T) {
	m := newFakeMachine()
	m.running, m.status = true, "running"
	gate := make(chan struct{})
	m.stopGate = gate
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	c.send(`{"execute":"stop"}`)
	time.Sleep(50 * time.Millisecond) // let stop reach the machine
	c.conn.Close()
	close(gate)
	c2 := dial(t, s.Path())
	c2.handshake()
	if r, _ := c2.cmd(`{"execute":"query-status"}`); !jsonEqual(r["return"], `{"status":"paused","singlestep":false,"running":false}`) {
		t.Errorf("after disconnect: %v", r)
	}
	s.Emit("X", nil)
	if e := c2.read(); e["event"] != "X" {
		t.Errorf("event: %v", e)
	}
}

func TestSocketMode(t *testing.T) {
	old := syscall.Umask(0) // the worst case: a world-writable socket
	defer syscall.Umask(old)
	s := startServer(t, newFakeMachine())
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600 socket", fi.Mode())
	}
	// No temporary directory is left beside it.
	entries, _ := os.ReadDir(filepath.Dir(s.Path()))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want just the socket", len(entries))
	}
}

func TestStaleSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a crashed VMM's leftover: a socket file nobody listens on
	s, err := Listen(path, newFakeMachine())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	go s.Serve()
	defer s.Close()
	c := dial(t, path)
	c.handshake()
}

func TestSocketInUse(t *testing.T) {
	s := startServer(t, newFakeMachine())
	if s2, err := Listen(s.Path(), newFakeMachine()); err == nil {
		s2.Close()
		t.Fatal("Listen took over a live socket")
	}
	// The first server is untouched.
	c := dial(t, s.Path())
	c.handshake()
}

func TestNotASocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, newFakeMachine()); err == nil {
		s.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Error("regular file clobbered")
	}
}

// Close ends Serve (startServer's cleanup checks it returned nil),
// removes the socket and disconnects the clients; a second Close is a no-op.
func TestCloseRemovesSocket(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
	if _, err := c.readRaw(); err != io.EOF {
		t.Errorf("client not disconnected: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s.Emit("LATE", nil) // harmless after Close
}

// Close leaves alone a socket file that is no longer ours.
func TestCloseKeepsForeignSocket(t *testing.T) {
	s, err := Listen(filepath.Join(shortTempDir(t), "f.sock"), newFakeMachine())
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(s.Path())
	s2, err := Listen(s.Path(), newFakeMachine())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s.Close()
	if _, err := os.Lstat(s.Path()); err != nil {
		t.Errorf("Close removed another server's socket: %v", err)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(filepath.Join(shortTempDir(t), "x.sock"), nil); err == nil {
		t.Error("nil Machine accepted")
	}
	if _, err := Listen("/"+strings.Repeat("a", 120), newFakeMachine()); err == nil {
		t.Error("over-long path accepted")
	}
	if _, err := Listen("/nonexistent-dir/qmp.sock", newFakeMachine()); err == nil {
		t.Error("missing directory accepted")
	}
}

// What the VMM emits just before Close (SHUTDOWN on a guest power-off)
// still reaches the clients, as it does when QEMU exits.
func TestCloseDrainsQueuedEvents(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	s.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
	s.Close()
	if e := c.read(); e["event"] != "SHUTDOWN" {
		t.Fatalf("got %v", e)
	}
	if _, err := c.readRaw(); err != io.EOF {
		t.Errorf("want EOF after the event, got %v", err)
	}
}

// A client that sends its commands and shuts its write side (socat, nc -N)
// still gets the replies.
func TestHalfCloseGetsReplies(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.send(`{"execute":"qmp_capabilities"}{"execute":"query-kvm","id":"last"}`)
	c.conn.(*net.UnixConn).CloseWrite()
	c.read() // greeting
	c.read() // capabilities
	if r := c.read(); r["id"] != "last" {
		t.Fatalf("got %v", r)
	}
	if _, err := c.readRaw(); err != io.EOF {
		t.Errorf("want EOF, got %v", err)
	}
}

// EmitAll's events reach a client back to back while another goroutine
// emits all along: nothing comes between GUEST_PANICKED and its STOP.
func TestEmitAllKeepsEventsTogether(t *testing.T) {
	s := startServer(t, newFakeMachine())
	c := dial(t, s.Path())
	c.handshake()
	const pairs = 100
	others := make(chan struct{})
	go func() {
		defer close(others)
		for i := 0; i < pairs; i++ {
			s.Emit("RESUME", nil)
		}
	}()
	for i := 0; i < pairs; i++ {
		s.EmitAll(Event{Name: "GUEST_PANICKED", Data: map[string]any{"action": "pause"}}, Event{Name: "STOP"})
	}
	<-others
	var last string
	for i := 0; i < 3*pairs; i++ {
		m := c.read()
		name, _ := m["event"].(string)
		if name == "" {
			t.Fatalf("message %d: %v", i, m)
		}
		if last == "GUEST_PANICKED" && name != "STOP" {
			t.Fatalf("event %d: %s right after GUEST_PANICKED, want STOP", i, name)
		}
		last = name
	}
}

// removeSocket removes the socket it is given and nothing that took its
// place: govmm's forced exit (a second signal) removed whatever file was
// at the socket's path, another govmm's live socket included (an audit).
func TestRemoveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeSocket(path, sock); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Fatalf("the file that took the socket's place: %q, %v", b, err)
	}
	os.Remove(path)
	ln2, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	ours, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := removeSocket(path, ours); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("our socket is still there: %v", err)
	}
}

// A machine that ends on its own (the guest powers off) is told with one
// SHUTDOWN; a quit or system_powerdown sent after it is not run (a quit
// gave a second SHUTDOWN, a power-down a POWERDOWN after it: an audit),
// while queries are still answered until the server closes.
func TestNothingActsAfterTheMachineEnded(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	s.Ended(true, "guest-shutdown")
	s.Ended(false, "host-signal") // once only
	r, ev := c.cmd(`{"execute":"query-status","id":"q"}`)
	if r["id"] != "q" || !slices.Equal(eventNames(ev), []string{"SHUTDOWN"}) ||
		!jsonEqual(ev[0]["data"], `{"guest":true,"reason":"guest-shutdown"}`) {
		t.Fatalf("after the end: %v %v", r, ev)
	}
	c.send(`{"execute":"system_powerdown","id":"p"}` + "\n")
	c.send(`{"execute":"quit","id":"x"}` + "\n")
	r, ev = c.cmd(`{"execute":"query-status","id":"q2"}`)
	if r["id"] != "q2" || len(ev) != 0 {
		t.Fatalf("a power-down and a quit after the end gave %v, events %v", r, ev)
	}
	s.Close()
	if got := readToEOF(t, c); len(got) != 0 {
		t.Errorf("after the end: %v", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.quitCount != 0 || slices.Contains(m.calls, "powerdown") {
		t.Errorf("quit %d times, calls %v, after the machine ended", m.quitCount, m.calls)
	}
}
