package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// dialQMP connects to a QMP unix socket with go-qemu's SocketMonitor and
// negotiates capabilities. govmm speaks to itself through the same client
// as any go-qemu user would, so what works here works for them.
func dialQMP(path string, timeout time.Duration) (*qmp.SocketMonitor, error) {
	mon, err := qmp.NewSocketMonitor("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	if err := mon.Connect(); err != nil {
		mon.Disconnect()
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	return mon, nil
}

// runQMP runs one command and decodes its "return" value into out (which
// may be nil). args, when not nil, is sent as the command's arguments.
//
// go-qemu's SocketMonitor (at the pinned version) hands Run a slice of
// its line scanner's buffer and goes on scanning: an event that arrives
// right after the reply can overwrite the reply before it is decoded,
// against QEMU as against govmm. A query (query-*, which changes
// nothing) whose reply does not parse is therefore asked again, a few
// times; any other command's reply is reported as it came.
func runQMP(mon qmp.Monitor, cmd string, args, out any) error {
	req, err := json.Marshal(qmp.Command{Execute: cmd, Args: args})
	if err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	attempts := 1
	if strings.HasPrefix(cmd, "query-") {
		attempts = 3
	}
	for try := 1; ; try++ {
		err := runOnce(mon, req, out)
		var syntax *json.SyntaxError
		if err != nil && errors.As(err, &syntax) && try < attempts {
			continue
		}
		if err != nil {
			return fmt.Errorf("QMP %s: %w", cmd, err)
		}
		return nil
	}
}

// runOnce sends req and decodes the reply's "return" into out.
func runOnce(mon qmp.Monitor, req []byte, out any) error {
	reply, err := mon.Run(req)
	if err != nil || out == nil {
		return err
	}
	var r struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(reply, &r); err != nil {
		return err
	}
	return json.Unmarshal(r.Return, out)
}
