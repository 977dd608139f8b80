package qmp

import (
	"bufio"
	"errors"
	"fmt"
)

// MaxMessageSize bounds one request. QEMU allows 64 MiB tokens; a VMM
// control socket has no need for more than this, and the bound keeps a
// hostile client from making the server buffer without limit.
const MaxMessageSize = 64 << 10

// errTooLarge ends the connection: once a request overruns the limit the
// framer cannot tell where it ends, so nothing after it can be trusted.
var errTooLarge = fmt.Errorf("QMP input exceeds the limit of %d bytes", MaxMessageSize)

// errStray reports a 0xFF byte. QEMU documents it as the way for a client
// to reset the parser: the partial request is dropped and an error sent.
var errStray = errors.New("JSON parse error, stray '\\xff'")

// framer splits the byte stream into top-level JSON texts the way QEMU's
// JSON streamer does: by bracket depth, not by lines. go-qemu's Run writes a
// command with no trailing newline, and QEMU accepts several requests on one
// line or one request over several, so line splitting would hang or misparse
// real clients. A text that is not well-formed is still returned whole so
// that the caller can answer with a parse error and go on with the next one.
type framer struct {
	r   *bufio.Reader
	buf []byte
	// recovering is set by a stray 0xFF: what follows it may be the rest
	// of a string, so it is skipped up to a point where a text may start
	// (recover), as QEMU's lexer skips after an error.
	recovering bool
}

func isJSONSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

// next returns the next JSON text, owned by the caller. Its errors are
// errStray (recoverable), errTooLarge, or the reader's.
func (f *framer) next() ([]byte, error) {
	if f.recovering {
		if err := f.recover(); err != nil {
			return nil, err
		}
	}
	f.buf = f.buf[:0]
	var (
		closers  []byte // expected closing brackets, innermost last
		inString bool
		escaped  bool
		scalar   bool // a bare top-level token such as 5 or garbage
	)
	for {
		b, err := f.r.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == 0xff {
			f.recovering = true
			return nil, errStray
		}
		if len(f.buf) == 0 && isJSONSpace(b) {
			continue
		}
		if scalar && (isJSONSpace(b) || b == '{' || b == '}' || b == '[' || b == ']' || b == ',' || b == ':' || b == '"') {
			// The byte belongs to the next text; whitespace is dropped there.
			_ = f.r.UnreadByte()
			return f.take(), nil
		}
		if len(f.buf) >= MaxMessageSize {
			return nil, errTooLarge
		}
		f.buf = append(f.buf, b)
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
				if len(closers) == 0 {
					return f.take(), nil
				}
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{':
			closers = append(closers, '}')
		case '[':
			closers = append(closers, ']')
		case '}', ']':
			// A mismatched or stray closer ends the text at once; the JSON
			// parser then reports it instead of us waiting for input that
			// may never balance.
			if len(closers) == 0 || closers[len(closers)-1] != b {
				return f.take(), nil
			}
			closers = closers[:len(closers)-1]
			if len(closers) == 0 {
				return f.take(), nil
			}
		default:
			if len(closers) == 0 {
				scalar = true
			}
		}
	}
}

// recover skips input after a stray 0xFF up to a bracket or a control
// character other than a tab, which it leaves to be read (a line end: a
// client's next request starts after it), or through a 0xFE or 0xFF,
// QEMU's IN_RECOVERY state. Without it the 0xFF's string would go on
// being read as a string, every quote after it opening or closing one
// the wrong way, and no later request would be understood.
func (f *framer) recover() error {
	for {
		b, err := f.r.ReadByte()
		if err != nil {
			return err
		}
		switch {
		case b == 0xfe || b == 0xff:
		case b == '{' || b == '}' || b == '[' || b == ']' || b < 0x20 && b != '\t':
			_ = f.r.UnreadByte()
		default:
			continue
		}
		f.recovering = false
		return nil
	}
}

// take hands out a copy: the reply may outlive the next read.
func (f *framer) take() []byte {
	return append([]byte(nil), f.buf...)
}
