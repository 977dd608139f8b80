package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// ClosedByPeer checks that the other end closed c without sending
// anything: EOF, or a reset when that end still held unread bytes of
// ours.
func ClosedByPeer(c net.Conn) error {
	n, err := c.Read(make([]byte, 1))
	if n == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
		return nil
	}
	return fmt.Errorf("read %d bytes, %v: want EOF or a reset", n, err)
}
