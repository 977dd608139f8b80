package qmp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// FuzzRequestParsing: no input makes the framer or the request parser
// panic, texts stay within the limit, and whatever parses is sound.
func FuzzRequestParsing(f *testing.F) {
	for i, s := range []string{
		`{"execute":"query-status"}`,
		`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":1}`,
		`{"exec-oob":"x","execute":"y","id":[{}]}`,
		"garbage\n}{\"a\":[}\n\"str\" 5 null",
		"{\"execute\":\"query-kvm\"\xff{\"id\":\"\\\"}",
		`{"execute":"q","arguments":{"a":{"b":[1,2,{"c":"}"}]}}}`,
		`[[[[[[[[[[`,
		`{"execute":"x","arguments":[]}`,
	} {
		testenv.AddSeed(f, fmt.Sprint("request-", i), []byte(s))
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
	for i, s := range []string{
		`{"execute":"stop"}{"execute":"cont"}`,
		`{"execute":"query-cpus","id":{"x":[1]}}`,
		"\xff\xfe}{",
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"query-exit-stats","arguments":{"x":null}}`,
	} {
		testenv.AddSeed(f, fmt.Sprint("session-", i), []byte(s))
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

// frameAll runs a framer over r to the end: the texts it returns, with
// "\xff" standing for each stray-byte error.
func frameAll(t *testing.T, r io.Reader) [][]byte {
	t.Helper()
	fr := framer{r: bufio.NewReaderSize(r, 16)}
	var out [][]byte
	for {
		msg, err := fr.next()
		switch {
		case err == errStray:
			out = append(out, []byte{0xff})
			continue
		case err != nil:
			return out
		}
		if len(msg) > MaxMessageSize || cap(fr.buf) > 2*MaxMessageSize {
			t.Fatalf("text of %d bytes, buffer of %d", len(msg), cap(fr.buf))
		}
		out = append(out, msg)
	}
}

// FuzzFramerSplit: the framer returns the same texts whether the input
// arrives whole or a byte at a time, and those texts are the input's own
// bytes in order, separated only by whitespace and by what a stray 0xFF
// dropped: itself and what recovery skips after it (recovered).
func FuzzFramerSplit(f *testing.F) {
	for name, s := range map[string]string{
		"commands":   `{"execute":"qmp_capabilities"} {"execute":"query-status","id":"a"}` + "\n",
		"split-nest": "{\"execute\":\n\"x\",\"arguments\":{\"a\":[1,{\"b\":\"}]\\\"\"}]}}\r\n[1]",
		"scalars":    `5 null "str"true{"a":1}-0.5e3`,
		"stray":      "{\"execute\":\xff{\"execute\":\"stop\"}\xff\xff  \"x\xff",
		"mismatch":   `{"a":[}]}]{"b":1}`,
		"escapes":    `"\\" "\"}" {"s":"\\\\\"{"}`,
	} {
		testenv.AddSeed(f, name, []byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := frameAll(t, bytes.NewReader(in))
		split := frameAll(t, iotest.OneByteReader(bytes.NewReader(in)))
		if !slices.EqualFunc(whole, split, bytes.Equal) {
			t.Fatalf("whole input gave %q, byte by byte %q", whole, split)
		}
		pos := 0
		for _, msg := range whole {
			if len(msg) == 1 && msg[0] == 0xff {
				pos = recovered(in, pos+bytes.IndexByte(in[pos:], 0xff)+1)
				continue
			}
			for pos < len(in) && isJSONSpace(in[pos]) {
				pos++
			}
			if !bytes.HasPrefix(in[pos:], msg) {
				t.Fatalf("text %q is not the input at %d (%q)", msg, pos, in[pos:min(len(in), pos+len(msg))])
			}
			pos += len(msg)
		}
	})
}

// recovered is where the framer resumes after a stray 0xFF just before
// in[pos], by QEMU's rule: at the next bracket or control character other
// than a tab, or after the next 0xFE or 0xFF.
func recovered(in []byte, pos int) int {
	for ; pos < len(in); pos++ {
		switch b := in[pos]; {
		case b == 0xfe || b == 0xff:
			return pos + 1
		case b == '{' || b == '}' || b == '[' || b == ']' || b < 0x20 && b != '\t':
			return pos
		}
	}
	return pos
}

// A stray 0xFF inside a string does not leave the rest of the stream read
// inside out: what follows it up to a bracket is dropped, and requests
// after it are framed whole (QEMU answers: the stray byte, an unexpected
// '}', then the request).
func TestFramerRecoversFromStrayByte(t *testing.T) {
	in := "{\"execute\":\"query-status\",\"id\":\"a\xffb\"}\n{\"execute\":\"query-version\",\"id\":0}\n" +
		"{\"execute\":\xff\t\"x\" 5 \xfe{\"id\":1}"
	got := frameAll(t, strings.NewReader(in))
	want := []string{"\xff", "}", `{"execute":"query-version","id":0}`, "\xff", `{"id":1}`}
	if len(got) != len(want) {
		t.Fatalf("framed %q, want %q", got, want)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("framed %q, want %q", got, want)
		}
	}
}
