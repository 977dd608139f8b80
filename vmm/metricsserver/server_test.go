package metricsserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/govmm/govmm/internal/testenv"
)

const scrapeRequest = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"

// families is what the test gatherers return: a counter and a gauge.
func families() []*dto.MetricFamily {
	return []*dto.MetricFamily{
		{
			Name: proto.String("test_requests_total"), Help: proto.String("Requests."),
			Type:   dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(42)}}},
		},
		{
			Name: proto.String("test_temperature"), Help: proto.String("Degrees."),
			Type:   dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(-3.5)}}},
		},
	}
}

type fixedGatherer struct{}

func (fixedGatherer) Gather() ([]*dto.MetricFamily, error) { return families(), nil }

// failingGatherer fails, with or without some metrics gathered.
type failingGatherer struct{ partial bool }

func (g failingGatherer) Gather() ([]*dto.MetricFamily, error) {
	err := errors.New("collector broke")
	if g.partial {
		return families()[:1], err
	}
	return nil, err
}

// holdingGatherer sends on entered and waits for release to close.
type holdingGatherer struct{ entered, release chan struct{} }

func newHoldingGatherer() holdingGatherer {
	return holdingGatherer{make(chan struct{}, 100), make(chan struct{})}
}

func (g holdingGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.entered <- struct{}{}
	<-g.release
	return families(), nil
}

// serve starts a server of g on a loopback port, closed at the test's end.
func serve(t *testing.T, g prometheus.Gatherer, opts Options) (string, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = log.New(io.Discard, "", 0)
	}
	srv := Serve(ln, g, opts)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), srv
}

// send writes a request's text on a new connection.
func send(t *testing.T, addr, text string) net.Conn {
	t.Helper()
	return sendBy(t, &net.Dialer{}, addr, text)
}

// sendBy is send, connecting with d.
func sendBy(t *testing.T, d *net.Dialer, addr, text string) net.Conn {
	t.Helper()
	c, err := d.Dial("tcp", addr)
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

type reply struct {
	code   int
	header http.Header
	body   string
}

// answer reads the reply on c to a request of method, and
// checks that the server closes the connection after it.
func answer(c net.Conn, method string) (reply, error) {
	r := bufio.NewReader(c)
	req := &http.Request{Method: method}
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return reply{}, errors.New("connection still open after the reply")
	}
	return reply{resp.StatusCode, resp.Header, string(body)}, nil
}

// roundTrip sends text on a new connection and reads the reply.
func roundTrip(t *testing.T, addr, text string) reply {
	t.Helper()
	method, _, _ := strings.Cut(text, " ")
	resp, err := answer(send(t, addr, text), method)
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return resp
}

func TestScrape(t *testing.T) {
	addr, _ := serve(t, fixedGatherer{}, Options{})
	resp := roundTrip(t, addr, scrapeRequest)
	if resp.code != http.StatusOK {
		t.Fatalf("status %d: %s", resp.code, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); expfmt.ResponseFormat(resp.header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("Content-Type %q, want the text format", ct)
	}
	if cl := resp.header.Get("Content-Length"); cl != strconv.Itoa(len(resp.body)) {
		t.Fatalf("Content-Length %q for %d bytes", cl, len(resp.body))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	got, err := p.TextToMetricFamilies(strings.NewReader(resp.body))
	if err != nil {
		t.Fatalf("%v\n%s", err, resp.body)
	}
	if v := got["test_requests_total"].GetMetric()[0].GetCounter().GetValue(); v != 42 {
		t.Fatalf("test_requests_total %v, want 42\n%s", v, resp.body)
	}
	if v := got["test_temperature"].GetMetric()[0].GetGauge().GetValue(); v != -3.5 {
		t.Fatalf("test_temperature %v, want -3.5\n%s", v, resp.body)
	}

	// HEAD: the same head, no body.
	head := roundTrip(t, addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	if head.code != http.StatusOK || head.body != "" || head.header.Get("Content-Length") != strconv.Itoa(len(resp.body)) {
		t.Fatalf("HEAD: %+v", head)
	}
	// HTTP/1.0, and a target in absolute form.
	for _, req := range []string{
		"GET /metrics HTTP/1.0\r\n\r\n",
		"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /metrics?a=%zz;b HTTP/1.1\r\nHost: x\r\n\r\n", // a query that does not parse is ignored, as promhttp ignores it
	} {
		if r := roundTrip(t, addr, req); r.code != http.StatusOK || r.body != resp.body {
			t.Fatalf("%q: %d\n%s", req, r.code, r.body)
		}
	}
}

// The format follows the Accept header as promhttp's does, and name[]
// parameters pick families.
func TestScrapeNegotiation(t *testing.T) {
	addr, _ := serve(t, fixedGatherer{}, Options{})
	resp := roundTrip(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: "+
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3\r\n\r\n")
	if resp.code != http.StatusOK || expfmt.ResponseFormat(resp.header).FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("protobuf asked for: %d, Content-Type %q", resp.code, resp.header.Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(strings.NewReader(resp.body), expfmt.ResponseFormat(resp.header))
	var names []string
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		names = append(names, mf.GetName())
	}
	if strings.Join(names, ",") != "test_requests_total,test_temperature" {
		t.Fatalf("protobuf reply holds %v", names)
	}

	resp = roundTrip(t, addr, "GET /metrics?name[]=test_temperature HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.code != http.StatusOK || strings.Contains(resp.body, "test_requests_total") || !strings.Contains(resp.body, "test_temperature -3.5") {
		t.Fatalf("name[]=test_temperature: %d\n%s", resp.code, resp.body)
	}
}

// Every request that is not a scrape gets a status that says why (as
// net/http's, except that a method other than GET and HEAD gets 405
// where promhttp answered anything), and the connection is closed after
// the reply.
func TestBadRequests(t *testing.T) {
	addr, _ := serve(t, fixedGatherer{}, Options{})
	for _, tc := range []struct {
		req  string
		code int
	}{
		{"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound},
		{"GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound},
		{"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", http.StatusMethodNotAllowed},
		{"GET /metrics HTTP/2.0\r\n\r\n", http.StatusHTTPVersionNotSupported},
		{"GET /metrics\r\n\r\n", http.StatusBadRequest},
		{"GET  /metrics HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"hello\r\n\r\n", http.StatusBadRequest},
		{"G\rT /metrics HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", http.StatusBadRequest},
		{"GET metrics HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"GET /metrics HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"GET /" + strings.Repeat("a", MaxHeadBytes) + " HTTP/1.1\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	} {
		resp := roundTrip(t, addr, tc.req)
		if resp.code != tc.code {
			t.Errorf("%.60q: status %d (%s), want %d", tc.req, resp.code, resp.body, tc.code)
		}
		if tc.code == http.StatusMethodNotAllowed && resp.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("405 without Allow: %v", resp.header)
		}
	}
}

// A collector that fails costs its own metrics: the rest are served and
// the error logged; with nothing gathered the scrape gets a 500.
func TestGatherErrors(t *testing.T) {
	var logs testenv.SyncBuffer
	addr, _ := serve(t, failingGatherer{partial: true}, Options{ErrorLog: log.New(&logs, "", 0)})
	resp := roundTrip(t, addr, scrapeRequest)
	if resp.code != http.StatusOK || !strings.Contains(resp.body, "test_requests_total 42") {
		t.Fatalf("partial gather: %d\n%s", resp.code, resp.body)
	}
	if !strings.Contains(logs.String(), "collector broke") {
		t.Fatalf("partial gather not logged: %q", logs.String())
	}
	addr, _ = serve(t, failingGatherer{}, Options{})
	resp = roundTrip(t, addr, scrapeRequest)
	if resp.code != http.StatusInternalServerError || !strings.Contains(resp.body, "collector broke") {
		t.Fatalf("failed gather: %d\n%s", resp.code, resp.body)
	}
}

// Past MaxInFlight scrapes being gathered, a scrape gets a 503 at once.
func TestInFlightLimit(t *testing.T) {
	g := newHoldingGatherer()
	addr, _ := serve(t, g, Options{MaxInFlight: 2})
	held := []net.Conn{send(t, addr, scrapeRequest), send(t, addr, scrapeRequest)}
	<-g.entered
	<-g.entered
	if resp := roundTrip(t, addr, scrapeRequest); resp.code != http.StatusServiceUnavailable {
		t.Fatalf("third scrape: %d, want 503", resp.code)
	}
	// Requests that gather nothing are still answered.
	if resp := roundTrip(t, addr, "GET / HTTP/1.1\r\n\r\n"); resp.code != http.StatusNotFound {
		t.Fatalf("GET /: %d", resp.code)
	}
	close(g.release)
	for _, c := range held {
		if resp, err := answer(c, "GET"); err != nil || resp.code != http.StatusOK {
			t.Fatalf("held scrape: %+v, %v", resp, err)
		}
	}
}

// A client that never finishes its request is closed after the header
// timeout, without a reply.
func TestHeaderTimeout(t *testing.T) {
	addr, _ := serve(t, fixedGatherer{}, Options{HeaderTimeout: 50 * time.Millisecond})
	c := send(t, addr, "GET /metrics HTTP/1.1\r\nHost:")
	if err := testenv.ClosedByPeer(c); err != nil {
		t.Fatal(err)
	}
}

// Close returns with clients connected, idle or half-way through a
// request, and the listener's port is free again.
func TestCloseWithClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := Serve(ln, fixedGatherer{}, Options{})
	idle := send(t, addr, "")
	half := send(t, addr, "GET /metrics HTTP/1.1\r\n")
	waitHeld(t, srv, 2)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{idle, half} {
		if err := testenv.ClosedByPeer(c); err != nil {
			t.Fatal(err)
		}
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still taken after Close: %v", err)
	}
	ln2.Close()
}

// Whatever a client sends, the head parser answers a status or an
// error, and never panics.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(scrapeRequest))
	f.Add([]byte("HEAD http://h/metrics?name[]=a HTTP/1.0\r\nAccept: text/plain\r\n\r\n"))
	f.Add([]byte("GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := readRequest(bytes.NewReader(b))
		var se *statusError
		switch {
		case errors.As(err, &se):
			switch se.code {
			case http.StatusBadRequest, http.StatusRequestHeaderFieldsTooLarge, http.StatusHTTPVersionNotSupported:
			default:
				t.Fatalf("status %d %q", se.code, se.reason)
			}
			if se.reason == "" {
				t.Fatalf("status %d without a reason", se.code)
			}
		case err != nil:
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v", err)
			}
		default:
			if !isToken(req.method) {
				t.Fatalf("request %+v from %q", req, b)
			}
		}
	})
}

// manyGatherer returns one gauge family of n metrics.
type manyGatherer struct{ n int }

func (g manyGatherer) Gather() ([]*dto.MetricFamily, error) {
	mf := &dto.MetricFamily{Name: proto.String("test_many"), Help: proto.String("Many."), Type: dto.MetricType_GAUGE.Enum()}
	for i := range g.n {
		mf.Metric = append(mf.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("i"), Value: proto.String(strconv.Itoa(i))}},
			Gauge: &dto.Gauge{Value: proto.Float64(float64(i))},
		})
	}
	return []*dto.MetricFamily{mf}, nil
}

// Clients that ask for a reply and never read it hold no in-flight slot
// while their replies wait to be written: MaxInFlight of them had every
// other scrape answered 503 for the write timeout (found by an audit).
func TestInFlightNotHeldByNonReaders(t *testing.T) {
	g := manyGatherer{10000} // 190 KB of text
	addr, srv := serve(t, g, Options{MaxInFlight: 2})
	var stalled []net.Conn
	for range cap(srv.inFlight) {
		stalled = append(stalled, dialStalling(t, addr))
		waitHeld(t, srv, len(stalled))
	}
	waitGathered(t, srv, "in-flight slots held by clients that read nothing")
	if resp := roundTrip(t, addr, scrapeRequest); resp.code != http.StatusOK {
		t.Fatalf("scrape beside stalled clients: %d %s", resp.code, resp.body)
	}
	// The stalled replies are still whole once read.
	for _, c := range stalled {
		if resp, err := answer(c, "GET"); err != nil || resp.code != http.StatusOK || !strings.Contains(resp.body, "test_many{i=\"9999\"} 9999") {
			t.Fatalf("stalled reply: %d, %v", resp.code, err)
		}
	}
}

// waitGathered waits until no scrape holds an in-flight slot, and fails
// with why (and how many still do) if that takes too long.
func waitGathered(t *testing.T, srv *Server, why string) {
	t.Helper()
	for i := 0; len(srv.inFlight) > 0; i++ {
		if i == 5000 {
			t.Fatalf("%s: %d in-flight slots held", why, len(srv.inFlight))
		}
		time.Sleep(time.Millisecond)
	}
}

// dialStalling connects to addr as a client that sends a scrape and
// reads nothing: a small window and an Ethernet MSS, so that the reply
// of a manyGatherer outgrows what the sockets buffer (on loopback's 64
// KiB MSS the server's send buffer would start at megabytes and take it).
func dialStalling(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			if err == nil {
				err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1448)
			}
		})
		return err
	}}
	return sendBy(t, &d, addr, scrapeRequest)
}

// Clients that ask for a scrape and never read it give their slots to a
// newcomer once answered for StallAfter: MaxConns of them shut every
// scraper out for the write timeout (found by an audit).
func TestStalledRepliesGiveWay(t *testing.T) {
	addr, srv := serve(t, manyGatherer{10000}, Options{MaxConns: 2, StallAfter: 100 * time.Millisecond})
	for i := range 2 {
		dialStalling(t, addr)
		waitHeld(t, srv, i+1)
	}
	// Both answered, their replies stuck in the sockets: wait until the
	// gathers are done, so that the newcomer finds them being written.
	waitGathered(t, srv, "the stalled clients' scrapes never finished gathering")
	c := send(t, addr, scrapeRequest)
	c.SetDeadline(time.Now().Add(10 * time.Second)) // the write timeout is 30 s
	if resp, err := answer(c, "GET"); err != nil || resp.code != http.StatusOK {
		t.Fatalf("scrape beside stalled clients: %+v, %v", resp.code, err)
	}
}

// A reply to HEAD has no body, whatever its status (RFC 9110 9.3.2):
// error replies carried theirs (found by an audit).
func TestHeadErrorWithoutBody(t *testing.T) {
	addr, _ := serve(t, failingGatherer{}, Options{})
	for _, tc := range []struct {
		req  string
		code int
	}{
		{"HEAD /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound},
		{"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusInternalServerError},
	} {
		c := send(t, addr, tc.req)
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		head, body, _ := strings.Cut(string(b), "\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 "+strconv.Itoa(tc.code)+" ") || body != "" {
			t.Errorf("%q: reply %q, want a %d without a body", tc.req, b, tc.code)
		}
		if !strings.Contains(head, "\r\nContent-Length: ") {
			t.Errorf("%q: no Content-Length in %q", tc.req, head)
		}
	}
}
