package vmm

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// maxMetricsConns bounds the connections the metrics server holds at
// once. Prometheus scrapes a target every 15 s to 1 min by default.
const maxMetricsConns = 16

// limitListener holds at most max connections at a time. When all are
// held and another client connects, the oldest connection whose request
// has not reached its handler yet is closed to make room: a client that
// sends its headers a byte at a time (slowloris) keeps its slot only
// until somebody else needs it, not for the server's ReadHeaderTimeout,
// and a scraper's request, sent in one write, gets in. Connections being
// answered are never closed: when every slot holds one, Accept waits for
// it to end, and further clients wait in the kernel's backlog.
//
// A connection counts as answered once serveAnswering's handler has seen
// its request, so the server must be set up by serveLimited.
type limitListener struct {
	net.Listener
	max      int
	mu       sync.Mutex
	held     []*limitConn  // in the order they were accepted
	released chan struct{} // a token when a slot is given back
	done     chan struct{}
	once     sync.Once
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{
		Listener: ln,
		max:      max,
		released: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		if len(l.held) < l.max {
			lc := &limitConn{Conn: c, l: l}
			l.held = append(l.held, lc)
			l.mu.Unlock()
			return lc, nil
		}
		victim := l.oldestUnanswered()
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			continue
		}
		select {
		case <-l.released:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// oldestUnanswered is the longest-held connection whose request has not
// reached its handler, or nil. l.mu is held.
func (l *limitListener) oldestUnanswered() *limitConn {
	for _, c := range l.held {
		if !c.answering.Load() {
			return c
		}
	}
	return nil
}

func (l *limitListener) release(c *limitConn) {
	l.mu.Lock()
	for i, h := range l.held {
		if h == c {
			l.held = append(l.held[:i], l.held[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	select {
	case l.released <- struct{}{}:
	default: // a token is already waiting
	}
}

// Close closes the listener and ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back on its first Close, before closing, so
// that a client seeing its connection end can count on the slot.
type limitConn struct {
	net.Conn
	l         *limitListener
	answering atomic.Bool
	once      sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}

// connKey finds a request's connection in its context.
type connKey struct{}

// serveLimited makes srv serve ln through a limitListener of max
// connections, marking each connection answered when its request reaches
// srv's handler. It returns the listener to pass to srv.Serve.
func serveLimited(srv *http.Server, ln net.Listener, max int) net.Listener {
	next := srv.Handler
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*limitConn); ok {
			c.answering.Store(true)
		}
		next.ServeHTTP(w, r)
	})
	return newLimitListener(ln, max)
}
