package vmm

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vmm/metricsserver"
)

// The metrics server holds at most metricsserver.DefaultMaxConns
// connections: a scraper past them is answered only once one of them
// closes. A connection that has had its answer is closed by the server
// (no keep-alive), so idle ones hold no slot: 16 clients that made one
// request each and went quiet used to shut a scraper out for two
// minutes (found by a lifecycle audit).
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
	for i := range metricsserver.DefaultMaxConns + 1 {
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
	for range metricsserver.DefaultMaxConns {
		c := dial()
		if _, err := c.Write([]byte("GET /nothing HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra := dial()
	if code, err := get(extra, bufio.NewReader(extra)); err != nil || code != http.StatusNotFound {
		t.Fatalf("connection %d: %d, %v", metricsserver.DefaultMaxConns+1, code, err)
	}
	// The server accepts in the order of connection: the first was closed,
	// the others can finish their requests.
	if err := testenv.ClosedByPeer(held[0]); err != nil {
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
