package metricsserver

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// Connections being answered keep their slots: past the cap, a client
// waits until one ends, and Close ends an accept waiting for a slot.
// (StallAfter is far off: on a loaded host the test must not reach it;
// TestStalledRepliesGiveWay covers what happens then.)
func TestLimitKeepsAnswered(t *testing.T) {
	g := newHoldingGatherer()
	addr, srv := serve(t, g, Options{MaxConns: 2, StallAfter: time.Hour})
	first := send(t, addr, scrapeRequest)
	second := send(t, addr, scrapeRequest)
	<-g.entered
	<-g.entered
	third := send(t, addr, "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		_, err := answer(third, "GET")
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was answered while two were being answered (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.release)
	for i, c := range []net.Conn{first, second} {
		if resp, err := answer(c, "GET"); err != nil || resp.code != http.StatusOK {
			t.Fatalf("held connection %d: %+v, %v", i, resp, err)
		}
	}
	if err := <-answered; err != nil {
		t.Fatalf("once a slot was free: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	// Two held and a third waiting for a slot: Close ends it all, and
	// the held scrapes finish first.
	g = newHoldingGatherer()
	addr, srv = serve(t, g, Options{MaxConns: 2, StallAfter: time.Hour})
	send(t, addr, scrapeRequest)
	send(t, addr, scrapeRequest)
	<-g.entered
	<-g.entered
	waiting := send(t, addr, "GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	<-srv.ln.done // closed: the waiting client gets no slot a scrape gives back
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := testenv.ClosedByPeer(waiting); err != nil {
		t.Fatalf("connection waiting for a slot at Close: %v", err)
	}
}

// Connections whose request has not been read whole give their slots
// to newcomers, oldest first (a slowloris client sending a header byte at
// a time held a slot for the header timeout; found by a lifecycle audit).
func TestLimitEvictsUnanswered(t *testing.T) {
	addr, srv := serve(t, fixedGatherer{}, Options{MaxConns: 2})
	slow1 := send(t, addr, "GET /metrics HTTP/1.1\r\n")
	waitHeld(t, srv, 1)
	slow2 := send(t, addr, "GET /metrics HTTP/1.1\r\n")
	waitHeld(t, srv, 2)
	third := send(t, addr, scrapeRequest)
	if resp, err := answer(third, "GET"); err != nil || resp.code != http.StatusOK {
		t.Fatalf("newcomer: %+v, %v", resp, err)
	}
	if err := testenv.ClosedByPeer(slow1); err != nil {
		t.Fatalf("oldest unanswered connection: %v", err)
	}
	// The younger one kept its slot: it can still finish its request.
	if _, err := slow2.Write([]byte("Host: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if resp, err := answer(slow2, "GET"); err != nil || resp.code != http.StatusOK {
		t.Fatalf("younger unanswered connection: %+v, %v", resp, err)
	}
}

// waitHeld waits until srv holds n connections: the kernel completes a
// handshake before the server accepts it, so a client cannot tell.
func waitHeld(t *testing.T, srv *Server, n int) {
	t.Helper()
	for i := 0; ; i++ {
		srv.ln.mu.Lock()
		held := len(srv.ln.held)
		srv.ln.mu.Unlock()
		if held == n {
			return
		}
		if i == 10000 {
			t.Fatalf("server holds %d connections, want %d", held, n)
		}
		time.Sleep(time.Millisecond)
	}
}
