package qmp

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzRequestParsing: no input makes the framer or the request parser
// panic, texts stay within the limit, and whatever parses is sound.
func FuzzRequestParsing(f *testing.F) {
	for _, s := range []string{
		`{"execute":"query-status"}`,
		`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}`,
		`{"exec-oob":"x","execute":"y","id":[{}]}`,
		"garbage\n}{\"a\":[}\n\"str\" 5 null",
		"{\"execute\":\"query-kvm\"\xff{\"id\":\"\\\"}",
		`{"execute":"q","arguments":{"a":{"b":[1,2,{"c":"}"}]}}}`,
		`[[[[[[[[[[`,
		`{"execute":"x","arguments":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := framer{r: bufio.NewReader(bytes.NewReader(in))}
		for {
			msg, err := fr.next()
			if err == errStray {
				continue
			}
			if err != nil {
				return
			}
			if len(msg) > MaxMessageSize {
				t.Fatalf("text of %d bytes", len(msg))
			}
			for _, oob := range []bool{false, true} {
				req, qerr := parseRequest(msg, oob)
				if qerr != nil {
					if qerr.Class == "" || qerr.Desc == "" {
						t.Fatalf("empty error for %q", msg)
					}
					continue
				}
				if req.args == nil {
					t.Fatalf("accepted %q without args map", msg)
				}
				if _, err := encode(response{ID: req.id, Return: empty}); err != nil {
					t.Fatalf("cannot echo id of %q: %v", msg, err)
				}
			}
		}
	})
}

// FuzzConnection drives a whole connection with arbitrary bytes after the
// handshake: no panic, and the server still answers afterwards (unless the
// input overran the size limit, which ends the connection by design).
func FuzzConnection(f *testing.F) {
	for _, s := range []string{
		`{"execute":"stop"}{"execute":"cont"}`,
		`{"execute":"query-cpus","id":{"x":[1]}}`,
		"\xff\xfe}{",
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"query-exit-stats","arguments":{"x":null}}`,
	} {
		f.Add([]byte(s))
	}
	m := newFakeMachine()
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{m: m, clients: map[*client]struct{}{}}
		srv, cli := net.Pipe()
		defer cli.Close()
		c := newClient(srv)
		s.clients[c] = struct{}{}
		s.handlers.Add(2)
		go s.serveClient(c)
		go io.Copy(io.Discard, cli) // everything the server says
		cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cli.Write([]byte(`{"execute":"qmp_capabilities"}`))
		cli.Write(in)
		s.Emit("X", nil)
		cli.Close()
		done := make(chan struct{})
		go func() { s.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection goroutines did not finish")
		}
	})
}
