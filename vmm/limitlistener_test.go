package vmm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// limitedServer serves a test handler through serveLimited with max
// slots: /hold answers once release is closed, and each request reaching
// it is sent on entered; anything else is answered at once. accepted
// gets every connection the server has accepted.
func limitedServer(t *testing.T, max int) (addr string, entered chan struct{}, release chan struct{}, accepted chan struct{}, srv *http.Server, served chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered = make(chan struct{}, 100)
	release = make(chan struct{})
	accepted = make(chan struct{}, 100)
	srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				entered <- struct{}{}
				<-release
			}
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted <- struct{}{}
			}
		},
	}
	srv.SetKeepAlivesEnabled(false)
	l := serveLimited(srv, ln, max)
	served = make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), entered, release, accepted, srv, served
}

// send writes a request's text on a new connection.
func send(t *testing.T, addr, text string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	return c
}

// answer reads the response on c.
func answer(c net.Conn) (int, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closedByServer checks that the server closed c without answering: EOF,
// or a reset when the server's side still held unread request bytes.
func closedByServer(c net.Conn) error {
	n, err := c.Read(make([]byte, 1))
	if n == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
		return nil
	}
	return fmt.Errorf("read %d bytes, %v: want EOF or a reset", n, err)
}

// Connections being answered keep their slots: past max, a client waits
// until one ends, and Close ends an Accept waiting for a slot.
func TestLimitListenerKeepsAnswered(t *testing.T) {
	addr, entered, release, _, _, _ := limitedServer(t, 2)
	first := send(t, addr, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	second := send(t, addr, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	<-entered
	third := send(t, addr, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		_, err := answer(third)
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was answered while two were being answered (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for i, c := range []net.Conn{first, second} {
		if code, err := answer(c); err != nil || code != http.StatusOK {
			t.Fatalf("held connection %d: %d, %v", i, code, err)
		}
	}
	if err := <-answered; err != nil {
		t.Fatalf("once a slot was free: %v", err)
	}

	// Two held and a third waiting for a slot: Close ends it all.
	addr, entered, release, _, srv, served := limitedServer(t, 2)
	defer close(release)
	send(t, addr, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	send(t, addr, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	<-entered
	send(t, addr, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// Connections whose request has not reached a handler give their slots
// to newcomers, oldest first (a slowloris client sending a header byte at
// a time held a slot for ReadHeaderTimeout; found by a lifecycle audit).
func TestLimitListenerEvictsUnanswered(t *testing.T) {
	addr, _, _, accepted, _, _ := limitedServer(t, 2)
	slow1 := send(t, addr, "GET /quick HTTP/1.1\r\n")
	<-accepted
	slow2 := send(t, addr, "GET /quick HTTP/1.1\r\n")
	<-accepted
	third := send(t, addr, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, err := answer(third); err != nil || code != http.StatusOK {
		t.Fatalf("newcomer: %d, %v", code, err)
	}
	if err := closedByServer(slow1); err != nil {
		t.Fatalf("oldest unanswered connection: %v", err)
	}
	// The younger one kept its slot: it can still finish its request.
	if _, err := slow2.Write([]byte("Host: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if code, err := answer(slow2); err != nil || code != http.StatusOK {
		t.Fatalf("younger unanswered connection: %d, %v", code, err)
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
	// Connections in the middle of a request hold theirs until somebody
	// else needs one: the oldest then gives its slot up.
	var held []net.Conn
	for range maxMetricsConns {
		c := dial()
		if _, err := c.Write([]byte("GET /nothing HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra := dial()
	if code, err := get(extra, bufio.NewReader(extra)); err != nil || code != http.StatusNotFound {
		t.Fatalf("connection %d: %d, %v", maxMetricsConns+1, code, err)
	}
	// The server accepts in the order of connection: the first was closed,
	// the others can finish their requests.
	if err := closedByServer(held[0]); err != nil {
		t.Fatalf("oldest connection in the middle of a request: %v", err)
	}
	for i, c := range held[1:] {
		if _, err := c.Write([]byte("Host: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d in the middle of a request: %v", i+1, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("connection %d in the middle of a request: %s", i+1, resp.Status)
		}
	}
}
