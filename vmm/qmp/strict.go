package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// errDuplicateKey and errInvalidUTF8 are QEMU 7.2's wording.
var (
	errDuplicateKey = errors.New("duplicate key")
	errInvalidUTF8  = errors.New("invalid UTF-8 sequence in string")
)

// checkStrict reports what QEMU's JSON parser refuses but encoding/json
// lets through: a key given twice in one object (encoding/json keeps the
// last, so {"execute":"query-status","execute":"stop"} would stop), a
// string that is not valid UTF-8 (it would be echoed back in an id), and
// a \u escape of something that is not a Unicode character. msg must be
// valid JSON otherwise (json.Valid). It walks msg in text order, checking
// a key's duplicate once its value is done, as QEMU's parser does, so the
// first complaint is QEMU's first complaint, in QEMU's words.
func checkStrict(msg []byte) error {
	type object struct {
		keys    map[string]bool
		pending string // the key whose value is being read
		inValue bool
	}
	var stack []*object // nil entries are arrays
	for i := 0; i < len(msg); {
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch msg[i] {
		case '{':
			stack = append(stack, &object{keys: map[string]bool{}})
		case '[':
			stack = append(stack, nil)
		case ',', '}':
			if top != nil && top.inValue {
				if top.keys[top.pending] {
					return errDuplicateKey
				}
				top.keys[top.pending], top.inValue = true, false
			}
			if msg[i] == '}' {
				stack = stack[:len(stack)-1]
			}
		case ']':
			stack = stack[:len(stack)-1]
		case '"':
			end, err := checkString(msg, i)
			if err != nil {
				return err
			}
			if top != nil && !top.inValue {
				if err := json.Unmarshal(msg[i:end], &top.pending); err != nil {
					return err // cannot happen after checkString and json.Valid
				}
				top.inValue = true
			}
			i = end
			continue
		}
		i++
	}
	return nil
}

// checkString checks the string starting at msg[start] (a quote) and
// returns the index just past its closing quote.
func checkString(msg []byte, start int) (end int, err error) {
	for i := start + 1; i < len(msg); {
		switch c := msg[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\' && i+1 < len(msg) && msg[i+1] == 'u':
			n, err := checkEscape(msg[i:])
			if err != nil {
				return 0, err
			}
			i += n
		case c == '\\':
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(msg[i:])
			if r == utf8.RuneError && n <= 1 || !isUnicodeCharacter(r) {
				return 0, errInvalidUTF8
			}
			i += n
		}
	}
	return len(msg), nil // json.Valid has seen the closing quote
}

// checkEscape checks the \uXXXX escape (or surrogate pair) at the start of
// s and returns its length. Like QEMU, a high surrogate takes the \u
// escape after it only if that is a low surrogate, and the message quotes
// the escape text read.
func checkEscape(s []byte) (int, error) {
	cp, n := hex4(s[2:]), 6
	if cp >= 0xd800 && cp <= 0xdbff && len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
		cp = 0 // not a character, unless a low surrogate follows
		if low := hex4(s[8:]); low >= 0xdc00 && low <= 0xdfff {
			cp, n = 0x10000+(hex4(s[2:])-0xd800)<<10+(low-0xdc00), 12
		}
		if cp == 0 {
			return 0, fmt.Errorf("%s is not a valid Unicode character", s[:6])
		}
	}
	if !isUnicodeCharacter(rune(cp)) {
		return 0, fmt.Errorf("%s is not a valid Unicode character", s[:n])
	}
	return n, nil
}

// hex4 decodes four hex digits, which json.Valid has checked.
func hex4(s []byte) int {
	v := 0
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | int(c-'a'+10)
		default:
			v = v<<4 | int(c-'A'+10)
		}
	}
	return v
}

// isUnicodeCharacter is QEMU's is_valid_codepoint: within Unicode, and
// neither a surrogate nor a noncharacter (U+FDD0..U+FDEF, U+xxFFFE,
// U+xxFFFF).
func isUnicodeCharacter(r rune) bool {
	switch {
	case r < 0 || r > utf8.MaxRune:
		return false
	case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
		return false
	case r >= 0xd800 && r <= 0xdfff:
		return false
	}
	return true
}
