package qmp

import "testing"

// QEMU refuses duplicate keys and strings that are not Unicode; so does
// govmm, in QEMU 7.2's words (TestConformanceWithQEMU compares them with
// a real QEMU). encoding/json alone kept the last duplicate, so the first
// request below used to stop the machine, and echoed invalid UTF-8 back.
func TestStrictJSON(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	const (
		dup     = "JSON parse error, duplicate key"
		badUTF8 = "JSON parse error, invalid UTF-8 sequence in string"
	)
	for _, tc := range []struct{ in, desc string }{
		{`{"execute":"query-status","execute":"stop"}`, dup},
		{`{"execute":"stop","id":1,"id":2}`, dup},
		{`{"execute":"stop","arguments":{"a":1,"a":2}}`, dup},
		{`{"execute":"stop","id":{"k":[{"a\u0062":1,"ab":2}]}}`, dup},
		{"{\"execute\":\"stop\",\"id\":\"\xc3\x28\"}", badUTF8},
		{"{\"execute\":\"stop\",\"id\":\"\xe2\x82\"}", badUTF8},
		{"{\"execute\":\"stop\",\"id\":\"\xed\xa0\x80\"}", badUTF8},     // an encoded surrogate
		{"{\"execute\":\"stop\",\"id\":\"\xc0\x80\"}", badUTF8},         // overlong (QEMU takes this one as NUL)
		{"{\"execute\":\"stop\",\"id\":\"\xf4\x90\x80\x80\"}", badUTF8}, // past U+10FFFF
		{"{\"execute\":\"stop\",\"id\":\"\xef\xb7\x90\"}", badUTF8},     // noncharacter U+FDD0
		{"{\"execute\":\"st\x80op\"}", badUTF8},
		{"{\"execute\":\"stop\",\"x\":\"\xc3\",\"execute\":1}", badUTF8}, // the first complaint wins
		{"{\"execute\":\"stop\",\"execute\":\"\xc3\"}", badUTF8},         // a value is read before its key's duplicate is seen
		{`{"execute":"stop","id":"\udc00"}`, `JSON parse error, \udc00 is not a valid Unicode character`},
		{`{"execute":"stop","id":"\ud800\u0041"}`, `JSON parse error, \ud800 is not a valid Unicode character`},
		{`{"execute":"stop","id":"\ud800x"}`, `JSON parse error, \ud800 is not a valid Unicode character`},
		{`{"execute":"stop","id":"\uFFFF"}`, `JSON parse error, \uFFFF is not a valid Unicode character`},
		{`{"execute":"stop","id":"\udbff\udfff"}`, `JSON parse error, \udbff\udfff is not a valid Unicode character`},
	} {
		r, _ := c.cmd(tc.in)
		e, _ := r["error"].(map[string]any)
		if e["class"] != "GenericError" || e["desc"] != tc.desc {
			t.Errorf("%q: got %v, want GenericError %q", tc.in, r, tc.desc)
		}
		if _, hasID := r["id"]; hasID {
			t.Errorf("%q: parse error echoes an id: %v", tc.in, r)
		}
	}
	if calls := m.callLog(); len(calls) != 0 {
		t.Errorf("refused requests reached the machine: %v", calls)
	}
	// Valid Unicode, escaped or not, still passes and is echoed.
	for _, id := range []string{`"\ud83d\ude00"`, "\"\xf0\x9f\x98\x80\"", `"\u0000"`, "\"\xc3\xa9\"", `{"a":1,"b":{"a":2}}`} {
		r, _ := c.cmd(`{"execute":"query-kvm","id":` + id + `}`)
		if !jsonEqual(r["id"], id) {
			t.Errorf("id %s: got %v", id, r)
		}
	}
}
