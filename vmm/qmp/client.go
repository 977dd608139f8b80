package qmp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// Client is a minimal QMP client: enough for `govmm stat` and for tests
// that steer a running govmm. Events that arrive between replies are kept
// in order for the caller.
type Client struct {
	conn   net.Conn
	dec    *json.Decoder
	Events []Event // events read so far, oldest first
}

// Event is one asynchronous QMP message.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// Error is an error reply.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Dial connects to a QMP unix socket and negotiates capabilities.
func Dial(path string, timeout time.Duration) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", path, err)
	}
	c := &Client{conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if err := c.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: no greeting (%v)", path, err)
	}
	if err := c.Execute("qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// Execute runs one command and decodes its "return" value into out (which
// may be nil).
func (c *Client) Execute(cmd string, args any, out any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	for {
		var msg struct {
			Event  string          `json:"event"`
			Data   json.RawMessage `json:"data"`
			Return json.RawMessage `json:"return"`
			Error  *Error          `json:"error"`
		}
		if err := c.dec.Decode(&msg); err != nil {
			return fmt.Errorf("QMP %s: %w", cmd, err)
		}
		switch {
		case msg.Event != "":
			c.Events = append(c.Events, Event{Name: msg.Event, Data: msg.Data})
		case msg.Error != nil:
			return fmt.Errorf("QMP %s: %w", cmd, msg.Error)
		case msg.Return != nil:
			if out == nil {
				return nil
			}
			return json.Unmarshal(msg.Return, out)
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
