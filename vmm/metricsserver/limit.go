package metricsserver

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener holds at most max connections at a time. When all are
// held and another client connects, the oldest connection whose request
// has not been read whole yet is closed to make room: a client that
// sends its headers a byte at a time (slowloris) keeps its slot only
// until somebody else needs it, not for the server's header timeout, and
// a scraper's request, sent in one write, gets in. A connection being
// answered keeps its slot for stallAfter; one answered for longer (a
// client that does not read its reply, so that the write waits on it) is
// closed to make room in the same way, once no connection is left that
// is still sending its request. When every slot holds a connection
// answered more recently, accept waits for one to end or to stall, and
// further clients wait in the kernel's backlog.
type limitListener struct {
	net.Listener
	max        int
	stallAfter time.Duration
	mu         sync.Mutex
	held       []*limitConn  // in the order they were accepted
	released   chan struct{} // a token when a slot is given back
	done       chan struct{}
	once       sync.Once
}

func newLimitListener(ln net.Listener, max int, stallAfter time.Duration) *limitListener {
	return &limitListener{
		Listener:   ln,
		max:        max,
		stallAfter: stallAfter,
		released:   make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

// accept returns the next connection once it has a slot.
func (l *limitListener) accept() (*limitConn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		select {
		case <-l.done: // closed while Accept returned: hold nothing more
			l.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		default:
		}
		if len(l.held) < l.max {
			lc := &limitConn{Conn: c, l: l}
			l.held = append(l.held, lc)
			l.mu.Unlock()
			return lc, nil
		}
		victim, wait := l.victim(time.Now())
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-l.released:
		case <-timer.C: // the oldest answered connection stalls now
		case <-l.done:
			timer.Stop()
			c.Close()
			return nil, net.ErrClosed
		}
		timer.Stop()
	}
}

// victim is the connection to close for a newcomer at now: the
// longest-held one whose request has not been read whole, else the one
// answered longest, if that is stallAfter or more; or nil, and how long
// until that one stalls. l.mu is held.
func (l *limitListener) victim(now time.Time) (*limitConn, time.Duration) {
	var stalled *limitConn
	first := now.UnixNano()
	for _, c := range l.held {
		at := c.answeredAt.Load()
		if at == 0 {
			return c, 0
		}
		if at < first {
			first, stalled = at, c
		}
	}
	if wait := time.Duration(first + int64(l.stallAfter) - now.UnixNano()); wait > 0 {
		return nil, wait
	}
	return stalled, 0
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

// Close closes the listener and every connection it holds, and ends an
// accept waiting for a slot.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	err := l.Listener.Close()
	l.mu.Lock()
	held := append([]*limitConn(nil), l.held...)
	l.mu.Unlock()
	for _, c := range held {
		c.Close()
	}
	return err
}

// limitConn gives its slot back on its first Close, before closing, so
// that a client seeing its connection end can count on the slot.
type limitConn struct {
	net.Conn
	l *limitListener
	// answeredAt is when the request had been read whole (UnixNano; 0
	// until then): from then on the connection keeps its slot while it
	// is answered, for stallAfter.
	answeredAt atomic.Int64
	once       sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}
