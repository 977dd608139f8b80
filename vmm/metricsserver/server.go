// Package metricsserver answers Prometheus scrapes: GET or HEAD of
// /metrics over HTTP/1.1, one request per connection, the exposition
// format negotiated from the Accept header as client_golang's promhttp
// does.
//
// It is not net/http's Server on purpose. A scraper needs one path and
// one reply; net/http's server brings HTTP/2, TLS and keep-alive
// handling with it, 1.9 MB of govmm's 10.6 MB of code and tables, and
// Linux maps a binary's page-cache pages 64 KiB around every page a
// process touches, so that size is the VMM's resident memory (1.1 MiB of
// it here). Firecracker serves its API through a small HTTP/1.1 parser
// of its own (micro_http) for the same reasons. The request head is read
// by net/textproto, net/http's own header parser. Replies are not
// compressed (identity is always acceptable to a scraper); promhttp's
// handler timeout has no counterpart, as gathering never waits on the
// guest.
package metricsserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Options bound what clients can hold. Zero values take the defaults.
type Options struct {
	// MaxConns is how many connections are held at once (default 16).
	// Past it, the oldest connection still sending its request is
	// closed, or else the oldest answered for StallAfter; if every one
	// is being answered more recently, the kernel's backlog holds
	// newcomers.
	MaxConns int
	// MaxInFlight is how many scrapes are gathered and encoded at once
	// (default 4); more are answered 503. Writing a reply holds no slot.
	MaxInFlight int
	// HeaderTimeout is how long a client has to send its request
	// (default 10 s), WriteTimeout how long to take the reply (30 s).
	HeaderTimeout, WriteTimeout time.Duration
	// StallAfter is how long a connection being answered keeps its slot
	// when all are held and another client connects (default 2 s): a
	// reply takes milliseconds to gather and write to a client that
	// reads it, so one still in progress after that waits on a client
	// that does not read.
	StallAfter time.Duration
	// ErrorLog gets gathering and accept errors (default log.Default()).
	ErrorLog *log.Logger
}

// The defaults of Options. Prometheus scrapes a target every 15 s to 1
// min, so a few connections and scrapes at once serve any real scraper.
const (
	DefaultMaxConns      = 16
	DefaultMaxInFlight   = 4
	DefaultHeaderTimeout = 10 * time.Second
	DefaultWriteTimeout  = 30 * time.Second
	DefaultStallAfter    = 2 * time.Second
)

// MaxHeadBytes bounds a request's line and headers together. A scrape's
// are a few hundred bytes; a larger head is answered 431.
const MaxHeadBytes = 16 << 10

// lingerTime is how long a connection that has bytes of the client's
// left unread (a body nobody asked for, a second request) waits, once
// answered, for the client to close first: closing with them unread
// makes the kernel reset the connection, and the client may lose the
// reply. Other connections close at once, as net/http's do.
const lingerTime = 500 * time.Millisecond

// Server serves one Gatherer. Close stops it.
type Server struct {
	ln       *limitListener
	g        prometheus.Gatherer
	opts     Options
	inFlight chan struct{}
	wg       sync.WaitGroup
}

// Serve answers scrapes of g on ln until Close. g must not block
// indefinitely: Close waits for the scrapes in progress.
func Serve(ln net.Listener, g prometheus.Gatherer, opts Options) *Server {
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.HeaderTimeout <= 0 {
		opts.HeaderTimeout = DefaultHeaderTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.StallAfter <= 0 {
		opts.StallAfter = DefaultStallAfter
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = log.Default()
	}
	s := &Server{
		ln:       newLimitListener(ln, opts.MaxConns, opts.StallAfter),
		g:        g,
		opts:     opts,
		inFlight: make(chan struct{}, opts.MaxInFlight),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Close stops accepting, closes every connection and waits for the
// server's goroutines to end.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors, or a connection aborted before it was
			// taken: wait and go on, as net/http does.
			if backoff == 0 {
				s.opts.ErrorLog.Printf("metrics: accept: %v (retrying)", err)
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			select {
			case <-time.After(backoff):
			case <-s.ln.done:
				return
			}
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

// request is what a scrape's head says that the answer depends on.
type request struct {
	method string
	path   string
	query  url.Values
	accept []string // every Accept header's value
	// unread: the client sent bytes past the head, or announced a body.
	unread bool
}

// statusError is a request the server answers with an error status.
type statusError struct {
	code   int
	reason string
}

func (e *statusError) Error() string { return e.reason }

func (s *Server) serveConn(c *limitConn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(s.opts.HeaderTimeout))
	req, err := readRequest(c)
	c.answeredAt.Store(time.Now().UnixNano())
	c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	var se *statusError
	switch {
	case errors.As(err, &se):
		s.writeError(c, false, se.code, se.reason, nil)
	case err != nil:
		return // the client left, or timed out: nobody to answer
	default:
		s.answer(c, req)
	}
	if err != nil || req.unread {
		linger(c)
	}
}

// readRequest reads a request's line and headers from r.
func readRequest(r io.Reader) (request, error) {
	lr := &io.LimitedReader{R: r, N: MaxHeadBytes}
	br := bufio.NewReaderSize(lr, 4096)
	req, err := parseHead(textproto.NewReader(br))
	if err != nil && lr.N == 0 {
		return request{}, &statusError{http.StatusRequestHeaderFieldsTooLarge,
			fmt.Sprintf("request line and headers over %d bytes", MaxHeadBytes)}
	}
	req.unread = req.unread || br.Buffered() > 0
	return req, err
}

func parseHead(tp *textproto.Reader) (request, error) {
	line, err := tp.ReadLine()
	if err != nil {
		return request{}, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !isToken(method) || target == "" {
		return request{}, &statusError{http.StatusBadRequest, "malformed request line"}
	}
	if proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		if strings.HasPrefix(proto, "HTTP/") {
			return request{}, &statusError{http.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"}
		}
		return request{}, &statusError{http.StatusBadRequest, "malformed request line"}
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil && !isReadError(err) {
		return request{}, &statusError{http.StatusBadRequest, "malformed header: " + err.Error()}
	}
	if err != nil {
		return request{}, err
	}
	// Origin form (/metrics?x) or absolute form (http://host/metrics).
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return request{}, &statusError{http.StatusBadRequest, "malformed request target"}
	}
	// What of the query parses, as promhttp reads it (url.URL.Query).
	query, _ := url.ParseQuery(u.RawQuery)
	body := hdr.Get("Transfer-Encoding") != "" || hdr.Get("Content-Length") != "" && hdr.Get("Content-Length") != "0"
	return request{method: method, path: u.Path, query: query, accept: hdr.Values("Accept"), unread: body}, nil
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2), as a
// method must be.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// isReadError tells an error of the connection (it ended, timed out,
// was reset) from textproto's verdict on what it read.
func isReadError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

// answer writes the reply to a well-formed request.
func (s *Server) answer(w io.Writer, req request) {
	head := req.method == "HEAD"
	if req.path != "/metrics" {
		s.writeError(w, head, http.StatusNotFound, "404 page not found", nil)
		return
	}
	if req.method != "GET" && req.method != "HEAD" {
		s.writeError(w, false, http.StatusMethodNotAllowed, "only GET and HEAD are served", []string{"Allow: GET, HEAD"})
		return
	}
	// The slot is held while gathering and encoding, not while writing:
	// a client that does not read its reply would otherwise hold it for
	// WriteTimeout, and MaxInFlight such clients would have every other
	// scrape answered 503. (promhttp's handler, behind the
	// http.TimeoutHandler its Timeout option adds, also gave its slot
	// back before the reply was written.)
	select {
	case s.inFlight <- struct{}{}:
	default:
		s.writeError(w, head, http.StatusServiceUnavailable,
			fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", cap(s.inFlight)), nil)
		return
	}
	body, format, err := s.exposition(req)
	<-s.inFlight
	if err != nil {
		s.writeError(w, head, http.StatusInternalServerError, "An error has occurred while serving metrics:\n\n"+err.Error(), nil)
		return
	}
	length := len(body)
	if head {
		body = nil
	}
	writeReply(w, http.StatusOK, string(format), length, []string{"Vary: Accept"}, body)
}

// exposition gathers and encodes the metrics in the format the request
// accepts, keeping only the families named by name[] parameters if it
// has any (promhttp's filter). A failed collector costs its own metrics
// only: the error is logged and the rest served, as promhttp's
// ContinueOnError; an error is returned only when nothing was gathered.
func (s *Server) exposition(req request) ([]byte, expfmt.Format, error) {
	mfs, err := s.g.Gather()
	if err != nil {
		s.opts.ErrorLog.Println("metrics: error gathering metrics:", err)
		if len(mfs) == 0 {
			return nil, "", err
		}
	}
	format := expfmt.NegotiateAccept(http.Header{"Accept": req.accept}, expfmt.DefaultAcceptedFormats()...)
	var keep map[string]bool
	if names := req.query["name[]"]; len(names) > 0 {
		keep = make(map[string]bool, len(names))
		for _, n := range names {
			keep[n] = true
		}
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range mfs {
		if keep != nil && !keep[mf.GetName()] {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			s.opts.ErrorLog.Println("metrics: error encoding metric family:", err)
		}
	}
	if closer, ok := enc.(expfmt.Closer); ok {
		if err := closer.Close(); err != nil {
			s.opts.ErrorLog.Println("metrics: error encoding metric family:", err)
		}
	}
	return buf.Bytes(), format, nil
}

// writeError writes an error reply; to a HEAD request (head), without
// its body, as every reply to HEAD is.
func (s *Server) writeError(w io.Writer, head bool, code int, text string, extra []string) {
	body := []byte(text + "\n")
	length := len(body)
	if head {
		body = nil
	}
	writeReply(w, code, "text/plain; charset=utf-8", length,
		append(extra, "X-Content-Type-Options: nosniff"), body)
}

// writeReply writes a whole reply: the body's length is known, and the
// connection is closed after it.
func writeReply(w io.Writer, code int, contentType string, length int, extra []string, body []byte) {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	fmt.Fprintf(bw, "Content-Type: %s\r\n", contentType)
	bw.WriteString("Content-Length: " + strconv.Itoa(length) + "\r\n")
	bw.WriteString("Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n")
	bw.WriteString("Connection: close\r\n")
	for _, h := range extra {
		bw.WriteString(h + "\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(body)
	bw.Flush()
}

// linger half-closes c and waits, for at most lingerTime, for the client
// to close its side, discarding what it still sends.
func linger(c *limitConn) {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}
