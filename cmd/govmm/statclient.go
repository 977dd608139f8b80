package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// statMonitor is the QMP client of govmm stat, a qmp.Monitor for runQMP.
// go-qemu's SocketMonitor reads messages with a bufio.Scanner capped at
// 64 KiB (query-exit-stats of a 12-vCPU VM is 74 KB) and waits for the
// greeting and for replies without a deadline, so a big VM failed and a
// stopped or hostile server hung `govmm stat` for ever (found by a
// lifecycle audit). Here every exchange has a deadline and a message may
// be up to maxStatMessage bytes.
type statMonitor struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// maxStatMessage bounds one QMP message govmm stat reads.
const maxStatMessage = 64 << 20

var _ qmp.Monitor = (*statMonitor)(nil)

// dialStat connects to a QMP unix socket and negotiates capabilities,
// each step within timeout.
func dialStat(path string, timeout time.Duration) (*statMonitor, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	m := &statMonitor{conn: c, r: bufio.NewReader(c), timeout: timeout}
	c.SetDeadline(time.Now().Add(timeout))
	greeting, err := m.read()
	if err == nil && greeting["QMP"] == nil {
		err = errors.New("no QMP greeting")
	}
	if err == nil {
		_, err = m.Run([]byte(`{"execute":"qmp_capabilities"}`))
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	return m, nil
}

// read reads one message: a JSON object on a line of its own.
func (m *statMonitor) read() (map[string]json.RawMessage, error) {
	var line []byte
	for {
		chunk, err := m.r.ReadSlice('\n')
		if len(line)+len(chunk) > maxStatMessage {
			return nil, fmt.Errorf("a message longer than %d bytes", maxStatMessage)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(line), &msg); err != nil {
		return nil, fmt.Errorf("not a QMP message: %w", err)
	}
	return msg, nil
}

// Run sends a command and returns its reply, skipping events; a QMP error
// is an error.
func (m *statMonitor) Run(cmd []byte) ([]byte, error) {
	m.conn.SetDeadline(time.Now().Add(m.timeout))
	if _, err := m.conn.Write(append(cmd, '\n')); err != nil {
		return nil, err
	}
	for {
		msg, err := m.read()
		if err != nil {
			return nil, err
		}
		switch {
		case msg["event"] != nil:
			continue
		case msg["error"] != nil:
			var e struct{ Class, Desc string }
			json.Unmarshal(msg["error"], &e)
			return nil, fmt.Errorf("%s: %s", e.Class, e.Desc)
		case msg["return"] != nil:
			return json.Marshal(map[string]json.RawMessage{"return": msg["return"]})
		}
		return nil, errors.New("a QMP message that is neither a reply nor an event")
	}
}

// Connect is done by dialStat.
func (m *statMonitor) Connect() error { return nil }

func (m *statMonitor) Disconnect() error { return m.conn.Close() }

// Events are not read: Run skips them.
func (m *statMonitor) Events(context.Context) (<-chan qmp.Event, error) {
	return nil, errors.New("govmm stat reads no events")
}
