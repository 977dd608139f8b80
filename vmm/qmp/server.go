package qmp

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxQueuedBytes is how much output may wait for a slow client before it
// is disconnected, so that neither Emit (the VMM) nor a command ever waits
// on a client that does not read.
const maxQueuedBytes = 8 << 20

// drainTimeout bounds how long a closing connection may take to write
// what is queued for it.
const drainTimeout = time.Second

// MaxClients caps the connections served at once. QEMU serves one client
// per monitor socket; govmm allows a few, so that `govmm stat` can watch a
// VM that something else controls. Each connection costs a descriptor, two
// goroutines and buffers: uncapped, 20,000 idle clients used up the
// process's descriptors (a new client got no greeting) and 248 MiB.
// Clients past the cap get an error object and are hung up on at once.
const MaxClients = 16

// Server serves QMP on a unix socket.
type Server struct {
	m    Machine
	path string
	ln   *net.UnixListener
	sock os.FileInfo // identity of the socket file at path, for Close

	// cmdMu serializes command execution across clients, as QEMU's main
	// loop does, so that "was it running?" checks and the events that
	// follow them are consistent.
	cmdMu sync.Mutex

	mu      sync.Mutex // guards clients and closed
	clients map[*client]struct{}
	closed  bool

	handlers sync.WaitGroup // connection goroutines, waited for by Serve
	slots    chan struct{}  // one token per connection served, MaxClients at most

	// ended is set, under cmdMu, by the command that ends the machine
	// (quit, or system_reset with -no-reboot). No command runs after it,
	// from any client: QEMU's main loop exits after such a command, and
	// the VM must not be paused, reset or resumed once clients were told
	// SHUTDOWN.
	ended atomic.Bool
	// gone is set, under cmdMu, by Ended: the machine ended on its own,
	// and no command that acts on it runs any more.
	gone atomic.Bool
}

// Listen creates the QMP socket at path with mode 0600. A stale socket
// left at path by a dead process is replaced; a live one, or any other
// file, is an error.
func Listen(path string, m Machine) (*Server, error) {
	if m == nil {
		return nil, errors.New("qmp: Listen: nil Machine")
	}
	ln, fi, err := listenPrivate(path)
	if err != nil {
		return nil, err
	}
	return &Server{m: m, path: path, ln: ln, sock: fi, clients: map[*client]struct{}{}, slots: make(chan struct{}, MaxClients)}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts clients until Close, serving each on its own goroutine.
// After Close it waits for the connection goroutines and returns nil.
func (s *Server) Serve() error {
	var backoff time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				s.handlers.Wait()
				return nil
			}
			// Running out of file descriptors is transient: wait and retry
			// rather than leave the VM without its control socket.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			s.handlers.Wait()
			return err
		}
		backoff = 0
		select {
		case s.slots <- struct{}{}:
		default:
			refuse(conn)
			continue
		}
		c := newClient(conn)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			<-s.slots
			continue
		}
		s.clients[c] = struct{}{}
		s.handlers.Add(3) // reader, writer, and the slot's release
		s.mu.Unlock()
		go s.serveClient(c)
		go func() {
			defer s.handlers.Done()
			<-c.done // shut: its descriptor is closed
			<-s.slots
		}()
	}
}

// errTooManyClients is what a client past MaxClients reads before the
// server hangs up.
var errTooManyClients = genericError("too many QMP clients: at most %d are served at once", MaxClients)

// refuse tells a client past MaxClients why, and hangs up. The refusal is
// one non-blocking write: a fresh connection's buffer takes it whole, and
// nothing can make the accept loop wait. (A write deadline would: under
// load the deadline could pass before the write began, and the client
// got a bare EOF.)
func refuse(conn net.Conn) {
	if b, err := encode(response{Error: errTooManyClients}); err == nil {
		if sc, ok := conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Write(func(fd uintptr) bool {
					syscall.Write(int(fd), b)
					return true // written or not, never wait
				})
			}
		}
	}
	conn.Close()
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Emit sends an event to every client that has completed capabilities
// negotiation. It never blocks on a client; it is safe to call from any
// goroutine, including from Machine methods. data may be nil for events
// without data.
func (s *Server) Emit(name string, data any) { s.EmitAll(Event{name, data}) }

// Event is one event for EmitAll.
type Event struct {
	Name string
	Data any // nil for events without data
}

// EmitAll sends events to every client back to back, as Emit does each:
// no event emitted elsewhere comes between them. QEMU emits GUEST_PANICKED
// and the STOP of the pause it causes under one lock (the BQL), so a
// client that answers the first with cont sees RESUME after both.
func (s *Server) EmitAll(events ...Event) {
	now := time.Now()
	encoded := make([][]byte, len(events))
	for i, e := range events {
		encoded[i] = encodeEvent(e.Name, e.Data, now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		for _, b := range encoded {
			c.sendEvent(b)
		}
	}
}

// Close stops accepting, disconnects every client and removes the socket
// file. Like QEMU's exit path, it first lets each client's queued output
// (a SHUTDOWN event just emitted, say) drain, for at most drainTimeout. It
// does not wait for the connection goroutines (Serve does), so a Machine
// method may call it.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	deadline := time.Now().Add(drainTimeout)
	for _, c := range clients {
		c.drain(deadline)
	}
	for _, c := range clients {
		select {
		case <-c.done:
		case <-time.After(time.Until(deadline) + 100*time.Millisecond):
			c.close()
		}
	}
	return errors.Join(err, s.RemoveSocket())
}

// RemoveSocket removes the server's socket file, if it is still the one
// Listen made, and nothing else: for an exit that cannot wait for Close.
func (s *Server) RemoveSocket() error { return removeSocket(s.path, s.sock) }

// removeSocket removes path if it is still the socket sock describes
// (os.Lstat of it when it was made): another server, or a user, may have
// put a file of their own there since someone deleted ours.
func removeSocket(path string, sock os.FileInfo) error {
	if fi, err := os.Lstat(path); err != nil || !os.SameFile(fi, sock) {
		return nil
	}
	return os.Remove(path)
}

func (s *Server) serveClient(c *client) {
	defer s.handlers.Done()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		// Replies to what the client sent before it stopped still go out.
		c.drain(time.Now().Add(drainTimeout))
	}()
	go func() {
		defer s.handlers.Done()
		c.writeLoop()
	}()
	c.send(encodeGreeting())
	fr := framer{r: bufio.NewReader(c.conn)}
	for {
		msg, err := fr.next()
		switch {
		case err == nil:
			s.dispatch(c, msg)
		case errors.Is(err, errStray):
			c.reply(nil, nil, genericError("%s", errStray.Error()))
		case errors.Is(err, errTooLarge):
			// Say why, then hang up: where the request ends is unknown.
			c.reply(nil, nil, genericError("%s", errTooLarge.Error()))
			return
		default:
			return // EOF, a broken connection, or Close
		}
	}
}

// client is one QMP connection. Its messages leave through one queue, in
// order, one write each, so an event and a reply never share a write and a
// reply can never overtake the events its command caused.
type client struct {
	conn net.Conn
	wake chan struct{} // nudges writeLoop; capacity 1
	done chan struct{} // closed when the connection is shut

	mu         sync.Mutex // guards the fields below
	queue      [][]byte   // written by writeLoop in order
	queued     int        // bytes in queue
	negotiated bool       // events flow only after qmp_capabilities
	draining   bool       // no more input; close once the queue is written
	closed     bool

	oob bool // the client enabled the oob capability; reader goroutine only
}

func newClient(conn net.Conn) *client {
	return &client{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (c *client) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
}

// closeLocked shuts the connection; c.mu must be held.
func (c *client) closeLocked() {
	if c.closed {
		return
	}
	c.closed = true
	c.queue, c.queued = nil, 0
	close(c.done)
	c.conn.Close()
}

// pushLocked queues m; c.mu must be held. The queue never blocks its
// producer (Emit runs on VMM goroutines); a client that lets more than
// maxQueuedBytes pile up is not reading and is disconnected instead. QEMU
// buffers without bound; a burst of events well under the budget reaches
// every client that reads.
func (c *client) pushLocked(b []byte) {
	if c.closed {
		return
	}
	if c.queued+len(b) > maxQueuedBytes {
		c.closeLocked()
		return
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// drain stops reading from the client and has writeLoop close the
// connection once everything queued is written, or at deadline.
func (c *client) drain(deadline time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.draining {
		return
	}
	c.draining = true
	c.conn.SetWriteDeadline(deadline)
	if cr, ok := c.conn.(interface{ CloseRead() error }); ok {
		cr.CloseRead() // ends the reader's blocking read
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes queued messages until the connection shuts.
func (c *client) writeLoop() {
	for {
		c.mu.Lock()
		for len(c.queue) == 0 {
			if c.draining {
				c.closeLocked()
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.done:
				return
			}
			c.mu.Lock()
		}
		b := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.mu.Unlock()

		if _, err := c.conn.Write(b); err != nil {
			c.close()
			return
		}
		c.mu.Lock()
		c.queued -= len(b)
		c.mu.Unlock()
	}
}

// send queues a greeting or a reply.
func (c *client) send(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pushLocked(b)
}

// sendEvent queues an event if the client has negotiated; c.mu orders it
// against the negotiated flag. Called with the server's mu held.
func (c *client) sendEvent(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.negotiated {
		c.pushLocked(b)
	}
}
