package exittrace

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/govmm/govmm/exitstats"
)

// Written says what Write put in a trace.
type Written struct {
	Events  uint64 // slices written, all tracks
	Dropped uint64 // events recorded but no longer (or not yet) in the rings
}

// Track numbers (the trace's tid): vCPU i is track i+1, so that no track
// is 0; device tracks follow from deviceTrack0, out of the way of vCPUs.
const (
	pid          = 1
	deviceTrack0 = 1000
)

// track is one ring's snapshot, ready to write.
type track struct {
	tid     int
	name    string
	events  []event
	dropped uint64
}

// Write writes the trace in the Chrome trace-event JSON format: a
// complete ("X") event per exit, notify and interrupt, flow ("s", "f")
// events from each notify to the interrupts raised in it, and metadata
// ("M") events naming the process and the tracks. Times are microseconds
// since New, with nanosecond decimals. It may run while the VM runs: it
// writes what the rings hold when it copies them.
func (t *Trace) Write(w io.Writer) (Written, error) {
	if t == nil {
		return Written{}, fmt.Errorf("exit tracing is off")
	}
	vcpuTracks, notifyTracks, irqTracks := t.snapshot()
	var total Written
	dropped := map[string]uint64{}
	all := slices.Concat(vcpuTracks, notifyTracks, irqTracks)
	for _, tr := range all {
		total.Events += uint64(len(tr.events))
		total.Dropped += tr.dropped
		dropped[tr.name] = tr.dropped
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	e := &encoder{w: bw, base: t.base}
	other, err := json.Marshal(map[string]any{"producer": "govmm", "track_events": t.events, "dropped": dropped})
	if err != nil {
		return total, err
	}
	e.raw(`{"displayTimeUnit":"ns","otherData":`)
	e.raw(string(other))
	e.raw(`,"traceEvents":[`)
	e.meta("process_name", 0, "name", strconv.Quote("govmm"))
	for _, tr := range all {
		e.meta("thread_name", tr.tid, "name", jsonString(tr.name))
		e.meta("thread_sort_index", tr.tid, "sort_index", strconv.Itoa(tr.tid))
	}
	names := rowNames{reg: t.names, cache: map[uint64]string{}}
	syms := symbols{symbol: t.symbol, cache: map[uint64]string{}}
	for _, tr := range vcpuTracks {
		for _, ev := range tr.events {
			e.exit(tr.tid, names.name(ev.c), syms.name(ev.b), ev)
		}
	}
	for _, tr := range notifyTracks {
		for _, ev := range tr.events {
			e.slice(tr.tid, "notify", ev)
		}
	}
	for _, tr := range irqTracks {
		for _, ev := range tr.events {
			e.slice(tr.tid, "interrupt", ev)
		}
	}
	for i := range notifyTracks {
		e.flows(notifyTracks[i], irqTracks[i])
	}
	e.raw("\n]}\n")
	if e.err == nil {
		e.err = bw.Flush()
	}
	return total, e.err
}

// snapshot copies every ring; each track's events come out in time order.
func (t *Trace) snapshot() (vcpus, notifies, irqs []track) {
	t.mu.Lock()
	vs, qs := slices.Clone(t.vcpus), slices.Clone(t.queues)
	t.mu.Unlock()
	slices.SortStableFunc(vs, func(a, b *VCPU) int { return cmp.Compare(a.id, b.id) })
	for _, v := range vs {
		evs, n := v.ring.snapshot()
		vcpus = append(vcpus, track{tid: v.id + 1, name: fmt.Sprintf("vCPU %d", v.id), events: evs, dropped: n - uint64(len(evs))})
	}
	for i, q := range qs {
		// Several writers reserve event numbers in one order and may
		// finish in another: sort by time.
		evs, n := q.notifies.snapshot()
		slices.SortStableFunc(evs, byStart)
		notifies = append(notifies, track{tid: deviceTrack0 + 2*i, name: q.name + " notify", events: evs, dropped: n - uint64(len(evs))})
		evs, n = q.irqs.snapshot()
		slices.SortStableFunc(evs, byStart)
		irqs = append(irqs, track{tid: deviceTrack0 + 2*i + 1, name: q.name + " interrupts", events: evs, dropped: n - uint64(len(evs))})
	}
	return vcpus, notifies, irqs
}

func byStart(a, b event) int { return cmp.Compare(a.start, b.start) }

// rowNames names exit rows, each looked up once per Write.
type rowNames struct {
	reg   *exitstats.Registry
	cache map[uint64]string
}

func (r rowNames) name(kind uint64) string {
	if n, ok := r.cache[kind]; ok {
		return n
	}
	n := exitstats.OtherName
	if kind <= 0xffff {
		n = r.reg.Name(exitstats.Kind(kind))
	}
	n = jsonString(n)
	r.cache[kind] = n
	return n
}

// symbols names RIPs, each looked up once per Write.
type symbols struct {
	symbol func(uint64) string
	cache  map[uint64]string // JSON strings, "" for none
}

func (s symbols) name(rip uint64) string {
	if s.symbol == nil || rip == 0 {
		return ""
	}
	n, ok := s.cache[rip]
	if !ok {
		if n = s.symbol(rip); n != "" {
			n = jsonString(n)
		}
		s.cache[rip] = n
	}
	return n
}

// jsonString quotes s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// encoder writes events by hand: a trace holds hundreds of thousands of
// them, which encoding/json would box one by one.
type encoder struct {
	w      *bufio.Writer
	base   int64
	n      int // events written, for the commas
	flowID uint64
	buf    []byte
	err    error
}

func (e *encoder) raw(s string) {
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
}

// begin starts an event object with its common fields.
func (e *encoder) begin(ph, name string, tid int) {
	if e.n > 0 {
		e.buf = append(e.buf, ',')
	}
	e.n++
	e.buf = append(e.buf, "\n{\"ph\":\""...)
	e.buf = append(e.buf, ph...)
	e.buf = append(e.buf, "\",\"name\":"...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ",\"pid\":"...)
	e.buf = strconv.AppendInt(e.buf, pid, 10)
	e.buf = append(e.buf, ",\"tid\":"...)
	e.buf = strconv.AppendInt(e.buf, int64(tid), 10)
}

// end closes the event and writes it out.
func (e *encoder) end() {
	e.buf = append(e.buf, '}')
	if e.err == nil {
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
}

func (e *encoder) meta(name string, tid int, arg, value string) {
	e.begin("M", strconv.Quote(name), tid)
	e.buf = append(e.buf, ",\"args\":{\""...)
	e.buf = append(e.buf, arg...)
	e.buf = append(e.buf, "\":"...)
	e.buf = append(e.buf, value...)
	e.buf = append(e.buf, "}"...)
	e.end()
}

// times appends the ts and dur of a slice.
func (e *encoder) times(ev event) {
	e.buf = append(e.buf, ",\"ts\":"...)
	e.buf = appendMicros(e.buf, ev.start-e.base)
	e.buf = append(e.buf, ",\"dur\":"...)
	e.buf = appendMicros(e.buf, ev.dur)
}

// exit writes a vCPU's exit: a = ns in guest before it, b = RIP, c = row;
// sym names the RIP ("" for none).
func (e *encoder) exit(tid int, name, sym string, ev event) {
	e.begin("X", name, tid)
	e.buf = append(e.buf, ",\"cat\":\"exit\""...)
	e.times(ev)
	e.buf = append(e.buf, ",\"args\":{\"guest_us\":"...)
	e.buf = appendMicros(e.buf, int64(ev.a))
	if ev.b != 0 {
		e.buf = append(e.buf, ",\"rip\":\"0x"...)
		e.buf = strconv.AppendUint(e.buf, ev.b, 16)
		e.buf = append(e.buf, '"')
	}
	if sym != "" {
		e.buf = append(e.buf, ",\"sym\":"...)
		e.buf = append(e.buf, sym...)
	}
	e.buf = append(e.buf, '}')
	e.end()
}

// slice writes a notify or an interrupt: a = the notify's number.
func (e *encoder) slice(tid int, name string, ev event) {
	e.begin("X", strconv.Quote(name), tid)
	e.buf = append(e.buf, ",\"cat\":\"virtio\""...)
	e.times(ev)
	if ev.a != 0 {
		e.buf = append(e.buf, ",\"args\":{\"notify\":"...)
		e.buf = strconv.AppendUint(e.buf, ev.a, 10)
		e.buf = append(e.buf, '}')
	}
	e.end()
}

// flows draws an arrow from each notify to every interrupt raised while
// it was served, when both are still in the rings. Each end sits 1 ns
// inside its slice, where viewers bind a flow to the enclosing slice.
func (e *encoder) flows(notifies, irqs track) {
	byID := make(map[uint64]event, len(notifies.events))
	for _, n := range notifies.events {
		byID[n.a] = n
	}
	for _, irq := range irqs.events {
		n, ok := byID[irq.a]
		if irq.a == 0 || !ok || n.dur < 2 || irq.dur < 2 || irq.start < n.start {
			continue
		}
		e.flowID++
		e.flowEnd("s", notifies.tid, n.start+1)
		e.flowEnd("f", irqs.tid, irq.start+1)
	}
}

func (e *encoder) flowEnd(ph string, tid int, at int64) {
	e.begin(ph, `"notify"`, tid)
	e.buf = append(e.buf, ",\"cat\":\"virtio\",\"id\":"...)
	e.buf = strconv.AppendUint(e.buf, e.flowID, 10)
	e.buf = append(e.buf, ",\"ts\":"...)
	e.buf = appendMicros(e.buf, at-e.base)
	if ph == "f" {
		e.buf = append(e.buf, ",\"bp\":\"e\""...)
	}
	e.end()
}

// appendMicros writes ns as microseconds with three decimals, exactly.
func appendMicros(b []byte, ns int64) []byte {
	if ns < 0 {
		b = append(b, '-')
		ns = -ns
	}
	b = strconv.AppendInt(b, ns/1000, 10)
	frac := ns % 1000
	b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	return b
}
