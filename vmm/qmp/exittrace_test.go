package qmp

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// traceMachine is a fakeMachine that records an exit trace.
type traceMachine struct {
	*fakeMachine
	files []string // what DumpExitTrace was asked to write (fakeMachine.mu)
	err   error    // what it returns
}

func (m *traceMachine) DumpExitTrace(filename string) (TraceDump, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files = append(m.files, filename)
	return TraceDump{Events: 7, Dropped: 1}, m.err
}

// x-govmm-dump-exit-trace takes one string argument, filename, checked as
// QEMU checks a command's arguments, and hands it to the machine.
func TestDumpExitTrace(t *testing.T) {
	m := &traceMachine{fakeMachine: newFakeMachine()}
	c := dial(t, startServer(t, m).Path())
	c.handshake()
	for _, tc := range []struct{ req, want string }{
		{`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":"/tmp/trace.json"}}`, `{"return":{"events":7,"dropped":1}}`},
		{`{"execute":"x-govmm-dump-exit-trace"}`, `{"error":{"class":"GenericError","desc":"Parameter 'filename' is missing"}}`},
		{`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":5}}`, `{"error":{"class":"GenericError","desc":"Invalid parameter type for 'filename', expected: string"}}`},
		{`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":null}}`, `{"error":{"class":"GenericError","desc":"Invalid parameter type for 'filename', expected: string"}}`},
		{`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":"a","mode":1}}`, `{"error":{"class":"GenericError","desc":"Parameter 'mode' is unexpected"}}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			got, _ := json.Marshal(r)
			t.Errorf("%s:\n got %s\nwant %s", tc.req, got, tc.want)
		}
	}
	m.mu.Lock()
	files := slices.Clone(m.files)
	m.err = errors.New("exit tracing is off: start govmm with --exit-trace FILE")
	m.mu.Unlock()
	if !slices.Equal(files, []string{"/tmp/trace.json"}) {
		t.Errorf("machine asked to write %q, want only the valid request's file", files)
	}
	r, _ := c.cmd(`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":"t.json"}}`)
	if !jsonEqual(r, `{"error":{"class":"GenericError","desc":"exit tracing is off: start govmm with --exit-trace FILE"}}`) {
		t.Errorf("machine's error: %v", r)
	}

	plain := dial(t, startServer(t, newFakeMachine()).Path())
	plain.handshake()
	r, _ = plain.cmd(`{"execute":"x-govmm-dump-exit-trace","arguments":{"filename":"t.json"}}`)
	if !jsonEqual(r, `{"error":{"class":"GenericError","desc":"this machine records no exit trace"}}`) {
		t.Errorf("machine without a trace: %v", r)
	}
}
