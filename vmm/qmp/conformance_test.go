package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// conformanceStep is one exchange of the scripted session.
type conformanceStep struct {
	name string
	req  string // "" for the greeting, which is only read
	// descPrefix, if set, is what an error's desc must start with on both
	// sides; the rest is the JSON parser's own wording, which differs.
	descPrefix string
}

// conformanceScript runs against QEMU started with -S: its status starts
// "prelaunch", stop then changes nothing, cont starts the (firmware-only)
// guest. Every request carries an id so that echoing is compared too.
var conformanceScript = []conformanceStep{
	{name: "greeting"},
	{name: "qmp_capabilities", req: `{"execute":"qmp_capabilities","id":"cap"}`},
	{name: "query-status", req: `{"execute":"query-status","id":1}`},
	{name: "query-version", req: `{"execute":"query-version","id":2}`},
	{name: "query-commands", req: `{"execute":"query-commands","id":3}`},
	{name: "query-cpus-fast", req: `{"execute":"query-cpus-fast","id":4}`},
	{name: "query-kvm", req: `{"execute":"query-kvm","id":5}`},
	{name: "query-memory-size-summary", req: `{"execute":"query-memory-size-summary","id":"mem"}`},
	{name: "stop (prelaunch)", req: `{"execute":"stop","id":6}`},
	{name: "query-status (stopped)", req: `{"execute":"query-status","id":7}`},
	{name: "cont", req: `{"execute":"cont","id":8}`},
	{name: "query-status (running)", req: `{"execute":"query-status","arguments":{},"id":9}`},
	{name: "stop (running)", req: `{"execute":"stop","id":10}`},
	{name: "cont (again)", req: `{"execute":"cont","id":11}`},
	{name: "unknown command", req: `{"execute":"no-such-command","id":"unk"}`},
	{name: "unexpected argument", req: `{"execute":"query-status","arguments":{"bogus":1},"id":12}`},
	{name: "malformed JSON", req: `{"execute":"query-kvm"]`, descPrefix: "JSON parse error, "},
	{name: "not an object", req: `[1]`},
	{name: "missing execute", req: `{"id":{"nested":[true]}}`},
	{name: "duplicate execute", req: `{"execute":"query-status","execute":"stop","id":15}`},
	{name: "duplicate nested key", req: `{"execute":"query-status","id":[{"a\u0062":1,"ab":2}]}`},
	{name: "invalid UTF-8", req: "{\"execute\":\"query-status\",\"id\":\"\xc3\x28\"}"},
	{name: "UTF-8 noncharacter", req: "{\"execute\":\"query-status\",\"id\":\"\xef\xbf\xbe\"}"},
	{name: "UTF-8 error before a duplicate", req: "{\"execute\":\"query-status\",\"execute\":\"\xc3\"}"},
	{name: "lone surrogate escape", req: `{"execute":"query-status","id":"\ud800\u0041"}`},
	{name: "noncharacter escape", req: `{"execute":"query-status","id":"\udbff\udfff"}`},
	{name: "surrogate pair", req: `{"execute":"query-status","id":"\ud83d\ude00 \u00e9 \u0000"}`},
	{name: "query-status (still stopped)", req: `{"execute":"query-status","id":16}`},
	{name: "system_powerdown", req: `{"execute":"system_powerdown","id":13}`},
	{name: "system_reset", req: `{"execute":"system_reset","id":14}`},
	{name: "quit", req: `{"execute":"quit","id":"bye"}`},
}

// stepTrace is what one side did in one step.
type stepTrace struct {
	order  []string         // "reply" and event names, in arrival order
	reply  map[string]any   // nil for the greeting step's non-reply
	events []map[string]any // in arrival order
}

// runConformanceScript plays the script over conn. Events that the guest
// caused ("guest": true, e.g. SeaBIOS resetting itself under QEMU) are not
// the server's doing and are left out.
func runConformanceScript(t *testing.T, conn net.Conn) []stepTrace {
	t.Helper()
	r := bufio.NewReader(conn)
	read := func(d time.Duration) (map[string]any, error) {
		conn.SetReadDeadline(time.Now().Add(d))
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("bad message %q: %v", line, err)
		}
		return m, nil
	}
	record := func(tr *stepTrace, m map[string]any) (isReply bool) {
		name, isEvent := m["event"].(string)
		if !isEvent {
			tr.order = append(tr.order, "reply")
			tr.reply = m
			return true
		}
		if data, _ := m["data"].(map[string]any); data["guest"] == true {
			return false
		}
		tr.order = append(tr.order, name)
		tr.events = append(tr.events, m)
		return false
	}
	var traces []stepTrace
	for _, step := range conformanceScript {
		var tr stepTrace
		if step.req == "" {
			m, err := read(10 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			tr.reply = m
			traces = append(traces, tr)
			continue
		}
		if _, err := conn.Write([]byte(step.req + "\n")); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for {
			m, err := read(10 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			if record(&tr, m) {
				break
			}
		}
		if step.name == "quit" {
			// Whatever comes after the reply, until the server hangs up.
			for {
				m, err := read(5 * time.Second)
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isConnReset(err) {
					break
				}
				if err != nil {
					t.Fatalf("%s: after the reply: %v", step.name, err)
				}
				record(&tr, m)
			}
		}
		traces = append(traces, tr)
	}
	return traces
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func shapeString(v any) string {
	b, _ := json.Marshal(testenv.JSONShape(v)) // maps marshal with sorted keys
	return string(b)
}

// startQEMU runs QEMU with a QMP socket and returns a connection to it.
func startQEMU(t *testing.T, bin string) net.Conn {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "qemu.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-S", "-M", "pc", "-display", "none",
		"-nodefaults", "-no-user-config", "-smp", "2",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel() // kills QEMU if quit did not end it
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return conn
		}
		select {
		case <-exited:
			t.Fatalf("QEMU exited before its QMP socket came up: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU's QMP socket did not come up: %v; stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConformanceWithQEMU plays one scripted session against a real QEMU
// and against our server with a fake Machine, and requires, step by step,
// replies of the same JSON shape, the same error classes and messages, and
// the same events in the same order relative to the reply. Values differ
// legitimately (QEMU's version, command list, -S state, TCG vs KVM), so
// they are not compared.
func TestConformanceWithQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not in PATH: skipping the differential test against QEMU")
	}
	qemuTrace := runConformanceScript(t, startQEMU(t, bin))

	// The script pins QEMU 7.2's dialect (e.g. singlestep in query-status,
	// which 8.1 dropped); another release is not a reference.
	ver, _ := qemuTrace[0].reply["QMP"].(map[string]any)["version"].(map[string]any)["qemu"].(map[string]any)
	if ver["major"] != float64(qemuMajor) || ver["minor"] != float64(qemuMinor) {
		t.Skipf("installed QEMU is %v.%v; this test compares against QEMU %d.%d", ver["major"], ver["minor"], qemuMajor, qemuMinor)
	}

	m := newFakeMachine()
	s := startServer(t, m)
	m.quitHook = func() { s.Close() } // as the VMM does when the VM ends
	ourTrace := runConformanceScript(t, dial(t, s.Path()).conn)

	for i, step := range conformanceScript {
		q, o := qemuTrace[i], ourTrace[i]
		if !slices.Equal(q.order, o.order) {
			t.Errorf("%s: QEMU sent %v, we sent %v", step.name, q.order, o.order)
			continue
		}
		if qs, os := shapeString(q.reply), shapeString(o.reply); qs != os {
			t.Errorf("%s: reply shapes differ:\nQEMU %s\nours %s", step.name, qs, os)
		}
		for j := range q.events {
			if qs, os := shapeString(q.events[j]), shapeString(o.events[j]); qs != os {
				t.Errorf("%s: %s event shapes differ:\nQEMU %s\nours %s", step.name, q.order[j], qs, os)
			}
		}
		qe, _ := q.reply["error"].(map[string]any)
		oe, _ := o.reply["error"].(map[string]any)
		if qe == nil {
			continue
		}
		if qe["class"] != oe["class"] {
			t.Errorf("%s: error class QEMU %v, ours %v", step.name, qe["class"], oe["class"])
		}
		qd, _ := qe["desc"].(string)
		od, _ := oe["desc"].(string)
		if step.descPrefix != "" {
			if !strings.HasPrefix(qd, step.descPrefix) || !strings.HasPrefix(od, step.descPrefix) {
				t.Errorf("%s: error descs QEMU %q, ours %q, want both to start %q", step.name, qd, od, step.descPrefix)
			}
		} else if qd != od {
			t.Errorf("%s: error desc QEMU %q, ours %q", step.name, qd, od)
		}
	}
	for i, step := range conformanceScript {
		t.Logf("%-24s QEMU %v %s", step.name, qemuTrace[i].order, shapeString(qemuTrace[i].reply))
		t.Logf("%-24s ours %v %s", "", ourTrace[i].order, shapeString(ourTrace[i].reply))
	}
}
