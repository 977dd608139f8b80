package main

import (
	"encoding/json"
	"fmt"
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
func runQMP(mon qmp.Monitor, cmd string, args, out any) error {
	req, err := json.Marshal(qmp.Command{Execute: cmd, Args: args})
	if err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	reply, err := mon.Run(req)
	if err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	if out == nil {
		return nil
	}
	var r struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(reply, &r); err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	if err := json.Unmarshal(r.Return, out); err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	return nil
}
