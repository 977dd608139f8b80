package exitstats

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The tables read from JSON (govmm stat's files and QMP replies) are
// user input whose every empty object costs kilobytes once decoded: their
// vCPU and row counts are checked first by walking the JSON's tokens,
// keeping nothing.

// boundVCPUs reads an array of vCPUs from dec, keeping nothing, and
// refuses more than MaxVCPUs of them, or more than most elements (what)
// in one's list.
func boundVCPUs(dec *json.Decoder, list string, most int, what string) error {
	n, err := countElements(dec, func(i int) error {
		return eachField(dec, func(key string) error {
			if !strings.EqualFold(key, list) { // as json matches keys
				return skipValue(dec)
			}
			m, err := countElements(dec, nil)
			if err == nil && m > most {
				err = fmt.Errorf("vCPU %d: %d %s, at most %d", i, m, what, most)
			}
			return err
		})
	})
	if err == nil && n > MaxVCPUs {
		err = fmt.Errorf("%d vCPUs, at most %d", n, MaxVCPUs)
	}
	return err
}

// eachField reads an object from dec, calling field for each key with
// dec at its value, which field must consume. A null is no object and no
// error.
func eachField(dec *json.Decoder, field func(key string) error) error {
	t, err := dec.Token()
	if err != nil || t == nil {
		return err
	}
	if t != json.Delim('{') {
		return fmt.Errorf("want an object, got %v", t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if err := field(t.(string)); err != nil {
			return err
		}
	}
	_, err = dec.Token() // '}'
	return err
}

// countElements reads an array from dec and returns its length, calling
// element (with dec at the element, which it must consume) for each, or
// skipping them; no element is kept. A null counts none.
func countElements(dec *json.Decoder, element func(i int) error) (int, error) {
	t, err := dec.Token()
	if err != nil || t == nil {
		return 0, err
	}
	if t != json.Delim('[') {
		return 0, fmt.Errorf("want an array, got %v", t)
	}
	n := 0
	for ; dec.More(); n++ {
		if element != nil {
			err = element(n)
		} else {
			err = skipValue(dec)
		}
		if err != nil {
			return n, err
		}
	}
	_, err = dec.Token() // ']'
	return n, err
}

// skipValue reads one value of any kind from dec and keeps nothing.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}
