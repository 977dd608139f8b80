package qmp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// QEMU-compatible version. Clients gate features on the QEMU version in the
// greeting and in query-version (go-qemu parses both into its Version), so
// govmm reports the QEMU release whose QMP dialect it follows, 7.2.0, and
// names itself in "package".
const (
	qemuMajor   = 7
	qemuMinor   = 2
	qemuMicro   = 0
	packageName = "govmm"
)

// Error classes, as QEMU names them.
const (
	classGeneric         = "GenericError"
	classCommandNotFound = "CommandNotFound"
)

// qmpError is the body of an error reply.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

func genericError(format string, args ...any) *qmpError {
	return &qmpError{Class: classGeneric, Desc: fmt.Sprintf(format, args...)}
}

// response is a command's reply. Exactly one of Return and Error is set.
// Handlers never return a nil slice or map, so "return" is never null.
type response struct {
	Return any             `json:"return,omitempty"`
	Error  *qmpError       `json:"error,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"` // echoed verbatim, any JSON value
}

type versionTriple struct {
	Micro int `json:"micro"`
	Minor int `json:"minor"`
	Major int `json:"major"`
}

type versionInfo struct {
	QEMU    versionTriple `json:"qemu"`
	Package string        `json:"package"`
}

var ourVersion = versionInfo{
	QEMU:    versionTriple{Micro: qemuMicro, Minor: qemuMinor, Major: qemuMajor},
	Package: packageName,
}

type greeting struct {
	QMP struct {
		Version      versionInfo `json:"version"`
		Capabilities []string    `json:"capabilities"`
	} `json:"QMP"`
}

type timestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

type event struct {
	Timestamp timestamp `json:"timestamp"`
	Event     string    `json:"event"`
	Data      any       `json:"data,omitempty"` // QEMU omits it for events without data
}

// encode marshals one message with QEMU's framing: compact JSON ended by
// CRLF. HTML escaping is off so an id such as "<&>" comes back byte for
// byte, as QEMU sends it.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := b.Bytes()
	out = append(out[:len(out)-1], '\r', '\n')
	return out, nil
}

func encodeGreeting() []byte {
	var g greeting
	g.QMP.Version = ourVersion
	g.QMP.Capabilities = []string{"oob"}
	b, err := encode(g)
	if err != nil {
		panic(err) // static data: cannot fail
	}
	return b
}

// encodeEvent marshals an event. If data cannot be marshaled the event
// still goes out, without data: its name alone tells a client what
// happened, and dropping it could leave a client waiting forever.
func encodeEvent(name string, data any, now time.Time) []byte {
	us := now.UnixMicro()
	ev := event{
		Timestamp: timestamp{Seconds: us / 1e6, Microseconds: us % 1e6},
		Event:     name,
		Data:      data,
	}
	b, err := encode(ev)
	if err != nil {
		ev.Data = nil
		b, _ = encode(ev) // cannot fail without data
	}
	return b
}

// request is a parsed, validated QMP request.
type request struct {
	id      json.RawMessage // nil when absent
	command string
	oob     bool                       // sent as exec-oob
	args    map[string]json.RawMessage // never nil
}

// parseRequest checks a JSON text like QEMU's qmp_dispatch and
// qmp_dispatch_check_obj, with the same error messages. The returned id is
// set whenever the text is an object with an id, so that error replies
// echo it as QEMU does. allowOOB is whether the client enabled the oob
// capability; without it exec-oob is an unexpected member.
func parseRequest(msg []byte, allowOOB bool) (request, *qmpError) {
	var req request
	if !json.Valid(msg) {
		var v any
		err := json.Unmarshal(msg, &v)
		return req, genericError("JSON parse error, %v", err)
	}
	if err := checkStrict(msg); err != nil {
		return req, genericError("JSON parse error, %v", err)
	}
	var obj map[string]json.RawMessage
	if msg[0] != '{' || json.Unmarshal(msg, &obj) != nil {
		return req, genericError("QMP input must be a JSON object")
	}
	req.id = obj["id"]

	// QEMU walks the members in hash order; sorting makes the first
	// complaint deterministic.
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	hasExec := false
	for _, k := range keys {
		v := obj[k]
		switch {
		case k == "execute" || (k == "exec-oob" && allowOOB):
			var s string
			if v[0] != '"' || json.Unmarshal(v, &s) != nil {
				return req, genericError("QMP input member '%s' must be a string", k)
			}
			if hasExec {
				return req, genericError("QMP input member '%s' clashes with '%s'", "exec-oob", "execute")
			}
			hasExec = true
			req.command = s
			req.oob = k == "exec-oob"
		case k == "arguments":
			if v[0] != '{' || json.Unmarshal(v, &req.args) != nil {
				return req, genericError("QMP input member 'arguments' must be an object")
			}
		case k == "id":
		default:
			return req, genericError("QMP input member '%s' is unexpected", k)
		}
	}
	if !hasExec {
		return req, genericError("QMP input lacks member 'execute'")
	}
	if req.args == nil {
		req.args = map[string]json.RawMessage{}
	}
	return req, nil
}
