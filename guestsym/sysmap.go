package guestsym

import (
	"bufio"
	"bytes"
	"errors"
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

// ReadSystemMap reads a symbol table in System.map format from the size
// bytes of r, one symbol a line: a hexadecimal address, a one-letter nm
// type and a name, separated by blanks. A fourth field in brackets (a
// module, as /proc/kallsyms writes) is allowed and ignored. Only code
// symbols (types t, T, w, W) are kept; the table reads their names from r
// as long as it is used. A file larger than MaxMapSize, or a line that is
// not of this form, is an error naming the line.
func ReadSystemMap(r io.ReaderAt, size int64) (*Table, error) {
	if size > MaxMapSize {
		return nil, fmt.Errorf("System.map: larger than %d MiB", MaxMapSize>>20)
	}
	// Two passes, so that nothing grows: how many, then the symbols.
	count := 0
	if err := eachMapSymbol(r, size, func(mapSymbol) { count++ }); err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, fmt.Errorf("System.map: no code symbols (types t, T, w, W)")
	}
	b := newBuilder(count, r, 0, ' ')
	if err := eachMapSymbol(r, size, func(s mapSymbol) { b.add(s.addr, s.name, s.global) }); err != nil {
		return nil, err
	}
	if len(b.addrs) != count {
		return nil, fmt.Errorf("System.map: changed while it was read")
	}
	return b.table(), nil
}

// mapSymbol is a code symbol of a System.map; its name starts at the
// file offset name.
type mapSymbol struct {
	addr   uint64
	name   uint32
	global bool
}

// eachMapSymbol calls code for every code symbol in the size bytes of r.
func eachMapSymbol(r io.ReaderAt, size int64, code func(mapSymbol)) error {
	rd := bufio.NewReaderSize(io.NewSectionReader(r, 0, size), maxLine+2)
	var off int64
	for n := 1; ; n++ {
		line, err := rd.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("System.map line %d: longer than %d bytes", n, maxLine)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("System.map: %w", err)
		}
		start := off
		off += int64(len(line))
		body := bytes.TrimSuffix(line, []byte("\n"))
		if len(body) > maxLine {
			return fmt.Errorf("System.map line %d: longer than %d bytes", n, maxLine)
		}
		s, keep, perr := parseLine(body)
		if perr != nil {
			return fmt.Errorf("System.map line %d: %w", n, perr)
		}
		if keep {
			s.name += uint32(start) // from the line's start to the file's
			code(s)
		}
		if err != nil { // io.EOF: the last line had no newline, or there was none
			return nil
		}
	}
}

// parseLine parses one line; code reports whether it is a code symbol,
// whose name starts at s.name in line. A blank line is not one, and no
// error.
func parseLine(line []byte) (s mapSymbol, code bool, err error) {
	f, at, n := fields(line)
	switch {
	case n == 0:
		return mapSymbol{}, false, nil
	case n == 4 && f[3][0] == '[' && f[3][len(f[3])-1] == ']':
	case n != 3:
		return mapSymbol{}, false, fmt.Errorf("%d fields, want ADDRESS TYPE NAME", n)
	}
	addr, err := strconv.ParseUint(string(f[0]), 16, 64)
	if err != nil {
		return mapSymbol{}, false, fmt.Errorf("address %q is not a 64-bit hexadecimal number", f[0])
	}
	if len(f[1]) != 1 {
		return mapSymbol{}, false, fmt.Errorf("type %q is not one letter", f[1])
	}
	if len(f[2]) > maxName {
		return mapSymbol{}, false, fmt.Errorf("name of %d bytes, longer than %d", len(f[2]), maxName)
	}
	if i := controlAt(f[2]); i >= 0 {
		return mapSymbol{}, false, fmt.Errorf("name has a control character at byte %d", i)
	}
	name := uint32(at[2])
	switch f[1][0] {
	case 't', 'w':
		return mapSymbol{addr: addr, name: name}, true, nil
	case 'T', 'W':
		return mapSymbol{addr: addr, name: name, global: true}, true, nil
	}
	return mapSymbol{}, false, nil
}

// fields splits line at ASCII blanks, as bytes.Fields does, and returns
// the first four fields, where each starts, and how many there are.
func fields(line []byte) (f [4][]byte, at [4]int, n int) {
	for i := 0; i < len(line); {
		if isBlank(line[i]) {
			i++
			continue
		}
		j := i
		for j < len(line) && !isBlank(line[j]) {
			j++
		}
		if n < len(f) {
			f[n], at[n] = line[i:j], i
		}
		n++
		i = j
	}
	return f, at, n
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
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
