package guestsym

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Bounds on a System.map, which is user input: a distribution kernel's is
// a few MiB with names far below the kernel's own KSYM_NAME_LEN (512).
const (
	MaxMapSize = 64 << 20 // bytes
	maxLine    = 1024     // bytes, newline excluded
	maxName    = 512      // bytes
)

// ReadSystemMap reads a symbol table in System.map format, one symbol a
// line: a hexadecimal address, a one-letter nm type and a name, separated
// by blanks. A fourth field in brackets (a module, as /proc/kallsyms
// writes) is allowed and ignored. Only code symbols (types t, T, w, W)
// are kept. A file larger than MaxMapSize, or a line that is not of this
// form, is an error naming the line.
func ReadSystemMap(r io.Reader) (*Table, error) {
	// Read whole, within the bound, so that a file cut at the bound is
	// refused for its size rather than for a half line.
	b, err := io.ReadAll(io.LimitReader(r, MaxMapSize+1))
	if err != nil {
		return nil, fmt.Errorf("System.map: %w", err)
	}
	if len(b) > MaxMapSize {
		return nil, fmt.Errorf("System.map: larger than %d MiB", MaxMapSize>>20)
	}
	var es []entry
	for n := 1; len(b) > 0; n++ {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		if len(line) > maxLine {
			return nil, fmt.Errorf("System.map line %d: longer than %d bytes", n, maxLine)
		}
		e, code, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("System.map line %d: %w", n, err)
		}
		if code {
			es = append(es, e)
		}
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("System.map: no code symbols (types t, T, w, W)")
	}
	return newTable(es), nil
}

// parseLine parses one line; code reports whether it is a code symbol.
// A blank line is not one, and no error.
func parseLine(line []byte) (e entry, code bool, err error) {
	f := bytes.Fields(line)
	switch {
	case len(f) == 0:
		return entry{}, false, nil
	case len(f) == 4 && f[3][0] == '[' && f[3][len(f[3])-1] == ']':
		f = f[:3]
	case len(f) != 3:
		return entry{}, false, fmt.Errorf("%d fields, want ADDRESS TYPE NAME", len(f))
	}
	addr, err := strconv.ParseUint(string(f[0]), 16, 64)
	if err != nil {
		return entry{}, false, fmt.Errorf("address %q is not a 64-bit hexadecimal number", f[0])
	}
	if len(f[1]) != 1 {
		return entry{}, false, fmt.Errorf("type %q is not one letter", f[1])
	}
	if len(f[2]) > maxName {
		return entry{}, false, fmt.Errorf("name of %d bytes, longer than %d", len(f[2]), maxName)
	}
	if i := controlAt(string(f[2])); i >= 0 {
		return entry{}, false, fmt.Errorf("name has a control character at byte %d", i)
	}
	switch f[1][0] {
	case 't', 'w':
		return entry{addr: addr, name: string(f[2])}, true, nil
	case 'T', 'W':
		return entry{addr: addr, name: string(f[2]), global: true}, true, nil
	}
	return entry{}, false, nil
}

// controlAt returns the index of the first ASCII control character in
// name, or -1: names end up in tables and on terminals.
func controlAt[T string | []byte](name T) int {
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] == 0x7f {
			return i
		}
	}
	return -1
}
