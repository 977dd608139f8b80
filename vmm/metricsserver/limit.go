package metricsserver

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener holds at most max connections at a time. When all are
// held and another client connects, the oldest connection whose request
// has not been read whole yet is closed to make room: a client that
// sends its headers a byte at a time (slowloris) keeps its slot only
// until somebody else needs it, not for the server's header timeout, and
// a scraper's request, sent in one write, gets in. Connections being
// answered are never closed: when every slot holds one, accept waits for
// one to end, and further clients wait in the kernel's backlog.
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
// been read whole, or nil. l.mu is held.
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
	// answering is set once the request has been read whole: from then
	// on the connection keeps its slot until it is answered.
	answering atomic.Bool
	once      sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}
