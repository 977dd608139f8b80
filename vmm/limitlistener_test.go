package vmm

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// At most n connections are accepted at once; the next is accepted when
// one closes, and Close ends an Accept waiting for a slot.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(ln, 2)
	accepted := make(chan net.Conn)
	ended := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				ended <- err
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close gives back nothing more
	third := <-accepted
	second.Close()
	third.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// The metrics server holds at most maxMetricsConns connections: a
// scraper past them is answered only once one of them closes. A
// connection that has had its answer is closed by the server (no
// keep-alive), so idle ones hold no slot: 16 clients that made one
// request each and went quiet used to shut a scraper out for two minutes
// (found by a lifecycle audit).
func TestMetricsConnectionCap(t *testing.T) {
	vm := ranPortLoop(t, 10)
	addr, closeMetrics, err := vm.ServeMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closeMetrics()
	// get sends one keep-alive request on c and returns its status.
	get := func(c net.Conn, r *bufio.Reader) (int, error) {
		if _, err := c.Write([]byte("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(time.Minute))
		return c
	}
	// Answered connections are closed: they hold no slot.
	for i := range maxMetricsConns + 1 {
		c := dial()
		r := bufio.NewReader(c)
		if code, err := get(c, r); err != nil || code != http.StatusNotFound {
			t.Fatalf("connection %d: %d, %v", i, code, err)
		}
		if _, err := r.ReadByte(); err != io.EOF {
			t.Fatalf("connection %d still open after its answer: %v", i, err)
		}
	}
	// Connections in the middle of a request hold theirs.
	var held []net.Conn
	for range maxMetricsConns {
		c := dial()
		if _, err := c.Write([]byte("GET /nothing HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra := dial()
	answered := make(chan error, 1)
	go func() {
		_, err := get(extra, bufio.NewReader(extra))
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("connection %d was served while %d were open (%v)", maxMetricsConns+1, maxMetricsConns, err)
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("once a connection closed: %v", err)
	}
}
