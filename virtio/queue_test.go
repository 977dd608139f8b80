package virtio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// testMem is guest RAM for tests: a byte slice at guest address 0, with
// the same checks as vmm.Memory.
type testMem []byte

func (m testMem) Slice(gpa, n uint64) ([]byte, error) {
	size := uint64(len(m))
	if gpa > size || n > size-gpa {
		return nil, fmt.Errorf("guest range %#x+%#x outside RAM (%#x bytes)", gpa, n, size)
	}
	return m[gpa : gpa+n : gpa+n], nil
}

// testIRQ records the interrupts a device raises.
type testIRQ struct {
	mu     sync.Mutex
	counts map[int]int
	ch     chan int // one value per Queue call, dropped when full
	failed []error  // what Fail reported
}

func newTestIRQ() *testIRQ { return &testIRQ{counts: map[int]int{}, ch: make(chan int, 1024)} }

func (i *testIRQ) Queue(q int) error {
	i.mu.Lock()
	i.counts[q]++
	i.mu.Unlock()
	select {
	case i.ch <- q:
	default:
	}
	return nil
}

func (i *testIRQ) Config() error { return nil }

func (i *testIRQ) Fail(err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.failed = append(i.failed, err)
}

// failures returns the errors the device reported through Fail.
func (i *testIRQ) failures() []error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]error(nil), i.failed...)
}

func (i *testIRQ) count(q int) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.counts[q]
}

// testBuf describes one buffer of a chain a test driver adds: readable
// with data, or writable of n bytes.
type testBuf struct {
	data  []byte
	n     uint32
	write bool
}

func rd(data []byte) testBuf { return testBuf{data: data, n: uint32(len(data))} }
func wr(n uint32) testBuf    { return testBuf{n: n, write: true} }

// testDriver plays the guest's side of a split virtqueue: it lays the
// rings out in a testMem, writes descriptors and avail entries, and
// reads the used ring, with the ordering a real driver uses (atomic
// index words around plain ring writes).
type testDriver struct {
	t                 testing.TB
	mem               testMem
	q                 *Queue
	size              uint16
	desc, avail, used uint64
	nextDesc          uint16 // next free descriptor, allocated round robin
	availIdx          uint16
	availFlags        uint16
	usedSeen          uint16
	heap              uint64 // bump allocator for buffers
}

const testMemSize = 4 << 20

// newTestDriver lays out a queue of size entries in fresh memory and
// enables it.
func newTestDriver(t testing.TB, size uint16) *testDriver {
	return newTestDriverAt(t, NewQueue(size), size, 0x1000, 0)
}

// newTestDriverAt lays out q with its descriptor table at desc and the
// avail ring availSkew bytes past the next 4-byte boundary.
func newTestDriverAt(t testing.TB, q *Queue, size uint16, desc, availSkew uint64) *testDriver {
	t.Helper()
	return newTestDriverIn(t, make(testMem, testMemSize), q, size, desc, availSkew)
}

// newTestDriverIn is newTestDriverAt in memory the caller provides (the
// fuzz targets reuse theirs); it resets q first.
func newTestDriverIn(t testing.TB, mem testMem, q *Queue, size uint16, desc, availSkew uint64) *testDriver {
	t.Helper()
	q.Reset()
	d := &testDriver{t: t, mem: mem, q: q, size: size, desc: desc}
	n := uint64(size)
	d.avail = align(desc+16*n, 4) + availSkew
	d.used = align(d.avail+6+2*n, 4)
	d.heap = align(d.used+6+8*n, 4096)
	if err := q.SetSize(size); err != nil {
		t.Fatal(err)
	}
	if err := q.SetAddresses(d.desc, d.avail, d.used); err != nil {
		t.Fatal(err)
	}
	if err := q.SetReady(true); err != nil {
		t.Fatal(err)
	}
	return d
}

func align(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

func (d *testDriver) alloc(n uint32) uint64 {
	a := d.heap
	d.heap = align(d.heap+uint64(n), 16)
	if d.heap > uint64(len(d.mem)) {
		d.t.Fatal("test memory exhausted")
	}
	return a
}

func (d *testDriver) writeDesc(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	e := d.mem[table+16*uint64(i):]
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], n)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

// chain writes bufs as a chain of descriptors and returns its head and
// the guest address of each buffer; it does not publish it.
func (d *testDriver) chain(bufs ...testBuf) (uint16, []uint64) {
	addrs := make([]uint64, len(bufs))
	for i, b := range bufs {
		addrs[i] = d.alloc(b.n)
	}
	return d.chainAt(addrs, bufs...), addrs
}

// chainAt writes bufs as a chain of descriptors with the buffers at the
// guest addresses addrs, and returns its head; it does not publish it.
func (d *testDriver) chainAt(addrs []uint64, bufs ...testBuf) uint16 {
	head := d.nextDesc % d.size
	for i, b := range bufs {
		idx := d.nextDesc % d.size
		d.nextDesc++
		copy(d.mem[addrs[i]:], b.data)
		var flags uint16
		if b.write {
			flags |= descFlagWrite
		}
		if i < len(bufs)-1 {
			flags |= descFlagNext
		}
		d.writeDesc(d.desc, idx, addrs[i], b.n, flags, d.nextDesc%d.size)
	}
	return head
}

// add writes and publishes a chain.
func (d *testDriver) add(bufs ...testBuf) (uint16, []uint64) {
	head, addrs := d.chain(bufs...)
	d.publish(head)
	return head, addrs
}

// publish makes head available: the ring entry first, then the index.
func (d *testDriver) publish(head uint16) {
	binary.LittleEndian.PutUint16(d.mem[d.avail+4+2*uint64(d.availIdx%d.size):], head)
	d.setAvailIdx(d.availIdx + 1)
}

// setAvailIdx publishes avail.idx (with the flags, one aligned word).
func (d *testDriver) setAvailIdx(v uint16) {
	d.availIdx = v
	if d.avail%4 == 0 {
		atomicStore32(d.mem[d.avail:], uint32(d.availFlags)|uint32(v)<<16)
		return
	}
	binary.LittleEndian.PutUint16(d.mem[d.avail:], d.availFlags)
	binary.LittleEndian.PutUint16(d.mem[d.avail+2:], v)
}

func (d *testDriver) setAvailFlags(f uint16) {
	d.availFlags = f
	d.setAvailIdx(d.availIdx)
}

func (d *testDriver) setUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(d.mem[d.avail+4+2*uint64(d.size):], v)
}

func (d *testDriver) availEvent() uint16 {
	return binary.LittleEndian.Uint16(d.mem[d.used+4+8*uint64(d.size):])
}

func (d *testDriver) usedIdx() uint16 { return uint16(atomicLoad32(d.mem[d.used:]) >> 16) }

// popUsed returns the next used element, if the device published one.
func (d *testDriver) popUsed() (id, n uint32, ok bool) {
	if d.usedIdx() == d.usedSeen {
		return 0, 0, false
	}
	e := d.mem[d.used+4+8*uint64(d.usedSeen%d.size):]
	d.usedSeen++
	return binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:]), true
}

// mustUsed returns the next used element and fails the test without one.
func (d *testDriver) mustUsed() (id, n uint32) {
	d.t.Helper()
	id, n, ok := d.popUsed()
	if !ok {
		d.t.Fatal("no used element")
	}
	return id, n
}

func (d *testDriver) noUsed() {
	d.t.Helper()
	if id, n, ok := d.popUsed(); ok {
		d.t.Fatalf("unexpected used element id %d len %d", id, n)
	}
}

func mustPop(t *testing.T, q *Queue, mem Memory) *Chain {
	t.Helper()
	c, err := q.Pop(mem)
	if err != nil {
		t.Fatalf("Pop: %v", err)
	}
	if c == nil {
		t.Fatal("Pop: no chain")
	}
	return c
}

func TestQueuePopPush(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.q
	if c, err := q.Pop(d.mem); c != nil || err != nil {
		t.Fatalf("empty queue: Pop = %v, %v", c, err)
	}
	head, addrs := d.add(rd([]byte("hello ")), rd([]byte("world")), wr(3), wr(5))
	c := mustPop(t, q, d.mem)
	if c.Head != head || len(c.Descs) != 4 {
		t.Fatalf("chain head %d with %d descriptors, want %d with 4", c.Head, len(c.Descs), head)
	}
	for i, want := range []Desc{{Addr: addrs[0], Len: 6}, {Addr: addrs[1], Len: 5}, {Addr: addrs[2], Len: 3, Write: true}, {Addr: addrs[3], Len: 5, Write: true}} {
		got := c.Descs[i]
		if got.Addr != want.Addr || got.Len != want.Len || got.Write != want.Write {
			t.Errorf("desc %d = %+v, want %+v", i, got, want)
		}
	}
	if c.ReadableLen() != 11 || c.WritableLen() != 8 {
		t.Errorf("lengths %d/%d, want 11/8", c.ReadableLen(), c.WritableLen())
	}
	// Gather across the descriptor boundary, and short at the end.
	p := make([]byte, 8)
	if n := c.Gather(p, 4); n != 7 || string(p[:n]) != "o world" {
		t.Errorf("Gather = %d %q", n, p[:n])
	}
	if n := c.Scatter([]byte("abcdefghij"), 1); n != 7 {
		t.Errorf("Scatter wrote %d, want 7", n)
	}
	if got := string(d.mem[addrs[2]:addrs[2]+3]) + string(d.mem[addrs[3]:addrs[3]+5]); got != "\x00abcdefg" {
		t.Errorf("writable part = %q", got)
	}
	if c, err := q.Pop(d.mem); c != nil || err != nil {
		t.Fatalf("second Pop = %v, %v", c, err)
	}
	if got := d.availEvent(); got != 1 {
		t.Errorf("avail_event = %d, want 1", got)
	}
	if err := q.Push(d.mem, c.Head, 8); err != nil {
		t.Fatal(err)
	}
	if id, n := d.mustUsed(); id != uint32(head) || n != 8 {
		t.Errorf("used = %d/%d, want %d/8", id, n, head)
	}
	if err := q.Push(d.mem, 8, 0); err == nil {
		t.Error("Push of head 8 in a queue of 8 succeeded")
	}
}

// TestQueueWrap runs the 16-bit ring indices through their wrap-around.
func TestQueueWrap(t *testing.T) {
	d := newTestDriver(t, 4)
	for i := range 70000 {
		head, _ := d.add(wr(1))
		if i%3 == 0 { // let some pile up
			head2, _ := d.add(wr(1))
			for _, h := range []uint16{head, head2} {
				c := mustPop(t, d.q, d.mem)
				if c.Head != h {
					t.Fatalf("iteration %d: head %d, want %d", i, c.Head, h)
				}
				if err := d.q.Push(d.mem, c.Head, 1); err != nil {
					t.Fatal(err)
				}
			}
			d.mustUsed()
			d.mustUsed()
			continue
		}
		c := mustPop(t, d.q, d.mem)
		if err := d.q.Push(d.mem, c.Head, 1); err != nil {
			t.Fatal(err)
		}
		if id, _ := d.mustUsed(); id != uint32(head) {
			t.Fatalf("iteration %d: used %d, want %d", i, id, head)
		}
	}
	if c, err := d.q.Pop(d.mem); c != nil || err != nil {
		t.Fatalf("Pop after wrap = %v, %v", c, err)
	}
}

// TestQueueMalformed feeds one broken queue per case and expects an
// error from Pop, never a panic or a hang.
func TestQueueMalformed(t *testing.T) {
	const size = 8
	end := uint64(testMemSize)
	tests := []struct {
		name  string
		setup func(d *testDriver)
		want  string
	}{
		{"loop", func(d *testDriver) {
			d.writeDesc(d.desc, 0, d.alloc(8), 8, descFlagNext, 1)
			d.writeDesc(d.desc, 1, d.alloc(8), 8, descFlagNext, 0)
			d.publish(0)
		}, "longer than"},
		{"self loop", func(d *testDriver) {
			d.writeDesc(d.desc, 3, d.alloc(8), 8, descFlagNext, 3)
			d.publish(3)
		}, "longer than"},
		{"head beyond queue", func(d *testDriver) {
			d.publish(size)
		}, "beyond table"},
		{"next beyond queue", func(d *testDriver) {
			d.writeDesc(d.desc, 0, d.alloc(8), 8, descFlagNext, 0xffff)
			d.publish(0)
		}, "beyond table"},
		{"buffer outside memory", func(d *testDriver) {
			d.writeDesc(d.desc, 0, end-4, 8, 0, 0)
			d.publish(0)
		}, "outside RAM"},
		{"buffer address overflows", func(d *testDriver) {
			d.writeDesc(d.desc, 0, ^uint64(0)-2, 16, 0, 0)
			d.publish(0)
		}, "outside RAM"},
		{"later buffer outside memory", func(d *testDriver) {
			d.writeDesc(d.desc, 0, d.alloc(8), 8, descFlagNext, 1)
			d.writeDesc(d.desc, 1, end, 1, descFlagWrite, 0)
			d.publish(0)
		}, "outside RAM"},
		{"avail idx jump", func(d *testDriver) {
			d.setAvailIdx(size + 1)
		}, "ahead"},
		{"avail idx behind", func(d *testDriver) {
			d.setAvailIdx(0xffff) // 65535 entries "ahead" of 0
		}, "ahead"},
		{"nested indirect", func(d *testDriver) {
			inner := d.alloc(32)
			d.writeDesc(inner, 0, d.alloc(16), 16, descFlagIndirect, 0)
			d.writeDesc(d.desc, 0, inner, 32, descFlagIndirect, 0)
			d.publish(0)
		}, "nested"},
		{"indirect with next", func(d *testDriver) {
			table := d.alloc(16)
			d.writeDesc(table, 0, d.alloc(8), 8, 0, 0)
			d.writeDesc(d.desc, 0, table, 16, descFlagIndirect|descFlagNext, 1)
			d.publish(0)
		}, "NEXT"},
		{"indirect length", func(d *testDriver) {
			d.writeDesc(d.desc, 0, d.alloc(24), 24, descFlagIndirect, 0)
			d.publish(0)
		}, "multiple of 16"},
		{"indirect empty", func(d *testDriver) {
			d.writeDesc(d.desc, 0, d.alloc(16), 0, descFlagIndirect, 0)
			d.publish(0)
		}, "multiple of 16"},
		{"indirect too long", func(d *testDriver) {
			d.writeDesc(d.desc, 0, 0, 16*(maxIndirect+1), descFlagIndirect, 0)
			d.publish(0)
		}, "limit"},
		{"indirect outside memory", func(d *testDriver) {
			d.writeDesc(d.desc, 0, end-16, 32, descFlagIndirect, 0)
			d.publish(0)
		}, "outside RAM"},
		{"indirect loop", func(d *testDriver) {
			table := d.alloc(32)
			d.writeDesc(table, 0, d.alloc(8), 8, descFlagNext, 1)
			d.writeDesc(table, 1, d.alloc(8), 8, descFlagNext, 0)
			d.writeDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
			d.publish(0)
		}, "longer than"},
		{"indirect next beyond table", func(d *testDriver) {
			table := d.alloc(32)
			d.writeDesc(table, 0, d.alloc(8), 8, descFlagNext, 2)
			d.writeDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
			d.publish(0)
		}, "beyond table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, size)
			tt.setup(d)
			for range 2 { // a broken queue stays broken
				c, err := d.q.Pop(d.mem)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Pop = %v, %v; want error containing %q", c, err, tt.want)
				}
			}
		})
	}
}

func TestQueueIndirect(t *testing.T) {
	d := newTestDriver(t, 2)
	table := d.alloc(48)
	a0, a1, a2 := d.alloc(4), d.alloc(4), d.alloc(4)
	copy(d.mem[a0:], "abcd")
	copy(d.mem[a1:], "efgh")
	// Out of order inside the table, to follow next rather than position.
	d.writeDesc(table, 0, a0, 4, descFlagNext, 2)
	d.writeDesc(table, 2, a1, 4, descFlagNext, 1)
	d.writeDesc(table, 1, a2, 4, descFlagWrite, 0)
	// A direct descriptor may precede the indirect one; WRITE on the
	// indirect descriptor itself is ignored.
	pre := d.alloc(2)
	copy(d.mem[pre:], "<>")
	d.writeDesc(d.desc, 1, pre, 2, descFlagNext, 0)
	d.writeDesc(d.desc, 0, table, 48, descFlagIndirect|descFlagWrite, 0)
	d.publish(1)
	c := mustPop(t, d.q, d.mem)
	if c.Head != 1 || len(c.Descs) != 4 {
		t.Fatalf("head %d with %d descriptors, want 1 with 4", c.Head, len(c.Descs))
	}
	p := make([]byte, 16)
	if n := c.Gather(p, 0); string(p[:n]) != "<>abcdefgh" {
		t.Errorf("readable part %q", p[:n])
	}
	if c.WritableLen() != 4 || c.Descs[3].Addr != a2 {
		t.Errorf("writable part %d bytes at %#x, want 4 at %#x", c.WritableLen(), c.Descs[3].Addr, a2)
	}
}

// TestQueueLongChain accepts a chain exactly as long as the queue.
func TestQueueLongChain(t *testing.T) {
	d := newTestDriver(t, 4)
	d.add(wr(1), wr(1), wr(1), wr(1))
	if c := mustPop(t, d.q, d.mem); len(c.Descs) != 4 {
		t.Errorf("%d descriptors, want 4", len(c.Descs))
	}
}

func TestQueueConfig(t *testing.T) {
	q := NewQueue(256)
	if q.Size() != 256 || q.MaxSize() != 256 || q.Ready() {
		t.Fatalf("new queue: size %d max %d ready %v", q.Size(), q.MaxSize(), q.Ready())
	}
	for _, n := range []uint16{0, 3, 100, 512} {
		if err := q.SetSize(n); err == nil {
			t.Errorf("SetSize(%d) succeeded", n)
		}
	}
	if err := q.SetSize(16); err != nil || q.Size() != 16 {
		t.Fatalf("SetSize(16) = %v, size %d", err, q.Size())
	}
	for _, a := range [][3]uint64{{0x1008, 0x2000, 0x3000}, {0x1000, 0x2001, 0x3000}, {0x1000, 0x2000, 0x3002}} {
		q.SetAddresses(a[0], a[1], a[2])
		if err := q.SetReady(true); err == nil || q.Ready() {
			t.Errorf("SetReady with rings at %#x accepted", a)
		}
	}
	if err := q.SetAddresses(0x1000, 0x2002, 0x3004); err != nil {
		t.Fatal(err)
	}
	if err := q.SetReady(true); err != nil || !q.Ready() {
		t.Fatalf("SetReady = %v", err)
	}
	if q.DescTable() != 0x1000 || q.AvailRing() != 0x2002 || q.UsedRing() != 0x3004 {
		t.Errorf("addresses %#x %#x %#x", q.DescTable(), q.AvailRing(), q.UsedRing())
	}
	if q.SetSize(8) == nil || q.SetAddresses(0, 0, 0) == nil {
		t.Error("configuration changed while the queue is enabled")
	}
	// Rings outside guest memory fail on first use.
	if _, err := q.Pop(testMem(make([]byte, 0x3000))); err == nil || !strings.Contains(err.Error(), "used ring") {
		t.Errorf("Pop with the used ring outside memory: %v", err)
	}
	q.Reset()
	if q.Ready() || q.Size() != 256 || q.DescTable() != 0 {
		t.Errorf("after Reset: ready %v size %d desc %#x", q.Ready(), q.Size(), q.DescTable())
	}
	if _, err := q.Pop(testMem(make([]byte, 0x10000))); err == nil {
		t.Error("Pop on a disabled queue succeeded")
	}
}

// TestQueueUnalignedAvailIdx covers an avail ring that is 2- but not
// 4-byte aligned, where avail.idx starts an aligned word.
func TestQueueUnalignedAvailIdx(t *testing.T) {
	d := newTestDriverAt(t, NewQueue(8), 8, 0x1000, 2)
	if d.avail%4 != 2 {
		t.Fatalf("avail at %#x", d.avail)
	}
	for range 20 {
		head, _ := d.add(wr(4))
		c := mustPop(t, d.q, d.mem)
		if c.Head != head {
			t.Fatalf("head %d, want %d", c.Head, head)
		}
		d.q.Push(d.mem, c.Head, 4)
		d.mustUsed()
	}
	d.setAvailFlags(availFlagNoInterrupt)
	if d.q.NeedsInterrupt(d.mem, 0) {
		t.Error("NO_INTERRUPT ignored")
	}
}

func TestQueueNeedsInterrupt(t *testing.T) {
	d := newTestDriver(t, 8)
	pushOne := func() {
		d.add(wr(1))
		c := mustPop(t, d.q, d.mem)
		if err := d.q.Push(d.mem, c.Head, 1); err != nil {
			t.Fatal(err)
		}
	}
	pushOne()
	if !d.q.NeedsInterrupt(d.mem, 0) {
		t.Error("no interrupt without suppression")
	}
	d.setAvailFlags(availFlagNoInterrupt)
	pushOne()
	if d.q.NeedsInterrupt(d.mem, 0) {
		t.Error("interrupt despite VIRTQ_AVAIL_F_NO_INTERRUPT")
	}

	// EVENT_IDX: flags are ignored; used_event decides. The first call
	// always signals (nothing to compare with).
	if !d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("EVENT_IDX: first call did not signal")
	}
	// used idx is 2. Ask for an interrupt once entry 3 is used (idx 4).
	d.setUsedEvent(3)
	pushOne() // idx 3
	if d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("EVENT_IDX: interrupt before used_event")
	}
	pushOne() // idx 4: entry 3 used
	if !d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("EVENT_IDX: no interrupt at used_event")
	}
	pushOne()
	if d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("EVENT_IDX: interrupt past used_event")
	}
	// A batch crossing used_event signals once.
	d.setUsedEvent(6)
	pushOne()
	pushOne()
	pushOne()
	if !d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("EVENT_IDX: batch crossing used_event did not signal")
	}
}

// TestQueueAvailEvent checks that an empty Pop leaves avail_event at the
// next entry, so an EVENT_IDX driver notifies for it.
func TestQueueAvailEvent(t *testing.T) {
	d := newTestDriver(t, 8)
	for i := range 5 {
		d.add(wr(1))
		mustPop(t, d.q, d.mem)
		if c, _ := d.q.Pop(d.mem); c != nil {
			t.Fatal("unexpected chain")
		}
		if got := d.availEvent(); got != uint16(i+1) {
			t.Fatalf("avail_event %d, want %d", got, i+1)
		}
	}
	d.add(wr(1))
	mustPop(t, d.q, d.mem)
	d.q.Unpop(1)
	if c := mustPop(t, d.q, d.mem); c == nil {
		t.Fatal("Unpop lost the chain")
	}
}

// TestQueueConcurrent has the driver add buffers on one goroutine while
// the device pops and pushes on another; run with -race it checks the
// ordering of ring accesses.
func TestQueueConcurrent(t *testing.T) {
	const total = 5000
	d := newTestDriver(t, 16)
	notify := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		got := 0
		for got < total {
			c, err := d.q.Pop(d.mem)
			if err != nil {
				done <- err
				return
			}
			if c == nil {
				<-notify
				continue
			}
			var b [8]byte
			c.Gather(b[:], 0)
			if v := binary.LittleEndian.Uint64(b[:]); v != uint64(got) {
				done <- fmt.Errorf("chain %d carries %d", got, v)
				return
			}
			if err := d.q.Push(d.mem, c.Head, 0); err != nil {
				done <- err
				return
			}
			got++
		}
		done <- nil
	}()
	sent, outstanding := 0, 0
	buf := make([]byte, 8)
	for sent < total || outstanding > 0 {
		for outstanding < 16 && sent < total {
			binary.LittleEndian.PutUint64(buf, uint64(sent))
			d.heap = align(d.used+6+8*16, 4096) + 64*uint64(sent%16)
			d.add(rd(buf))
			sent++
			outstanding++
		}
		for {
			if _, _, ok := d.popUsed(); !ok {
				break
			}
			outstanding--
		}
		select {
		case notify <- struct{}{}:
		default:
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
			runtime.Gosched()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// FuzzQueuePop builds a queue from fuzz bytes in fake guest memory and
// checks that Pop never panics or loops, and that every chain it returns
// lies inside memory. Input: size exponent, ring addresses (le16 each),
// feature byte, then guest memory from address 0.
func FuzzQueuePop(f *testing.F) {
	const memSize = 16 << 10
	seed := func(size uint16, build func(d *testDriver)) []byte {
		q := NewQueue(size)
		d := newTestDriverAt(f, q, size, 0x100, 0)
		d.mem = d.mem[:memSize]
		d.heap = 0x1000
		build(d)
		hdr := []byte{byte(bitsLen(size) - 1), 0, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint16(hdr[1:], uint16(d.desc))
		binary.LittleEndian.PutUint16(hdr[3:], uint16(d.avail))
		binary.LittleEndian.PutUint16(hdr[5:], uint16(d.used))
		return append(hdr, d.mem[:0x1400]...)
	}
	testenv.AddSeed(f, "chain", seed(8, func(d *testDriver) { d.add(rd([]byte("header")), wr(64), wr(1)) }))
	testenv.AddSeed(f, "two-chains", seed(4, func(d *testDriver) { d.add(wr(16)); d.add(rd([]byte("x"))) }))
	testenv.AddSeed(f, "indirect", seed(8, func(d *testDriver) {
		table := d.alloc(32)
		d.writeDesc(table, 0, d.alloc(8), 8, descFlagNext, 1)
		d.writeDesc(table, 1, d.alloc(8), 8, descFlagWrite, 0)
		d.writeDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
		d.publish(0)
	}))
	testenv.AddSeed(f, "loop", seed(2, func(d *testDriver) {
		d.writeDesc(d.desc, 0, d.alloc(8), 8, descFlagNext, 1)
		d.writeDesc(d.desc, 1, d.alloc(8), 8, descFlagNext, 0)
		d.publish(0)
	}))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 8 {
			return
		}
		mem := make(testMem, memSize)
		copy(mem, data[8:])
		size := uint16(1) << (data[0] % 10)
		q := NewQueue(size)
		le := binary.LittleEndian
		// Keep most ring addresses near memory and aligned, so that
		// the fuzzer spends its time inside the rings; bit 1 of the
		// feature byte lets it try the raw values.
		desc, avail, used := uint64(le.Uint16(data[1:])), uint64(le.Uint16(data[3:])), uint64(le.Uint16(data[5:]))
		if data[7]&2 == 0 {
			desc, avail, used = desc%memSize&^15, avail%memSize&^1, used%memSize&^3
		}
		q.SetAddresses(desc, avail, used)
		if q.SetReady(true) != nil {
			return
		}
		features := uint64(0)
		if data[7]&1 != 0 {
			features = FeatureRingEventIdx
		}
		for range 2*int(size) + 2 {
			c, err := q.Pop(mem)
			if err != nil || c == nil {
				break
			}
			if len(c.Descs) > int(size)+maxIndirect {
				t.Fatalf("chain of %d descriptors", len(c.Descs))
			}
			var total uint64
			for _, d := range c.Descs {
				if d.Addr+uint64(d.Len) > memSize || d.Addr+uint64(d.Len) < d.Addr {
					t.Fatalf("descriptor %+v outside memory", d)
				}
				total += uint64(d.Len)
			}
			if c.ReadableLen()+c.WritableLen() != total {
				t.Fatalf("lengths %d+%d, descriptors %d", c.ReadableLen(), c.WritableLen(), total)
			}
			var n uint64
			for _, b := range c.Buffers(true, 0, ^uint64(0)) {
				n += uint64(len(b))
			}
			if n != c.WritableLen() {
				t.Fatalf("writable buffers %d bytes, WritableLen %d", n, c.WritableLen())
			}
			c.Scatter(bytes.Repeat([]byte{0xa5}, 64), 0)
			if err := q.Push(mem, c.Head, 0); err != nil {
				t.Fatalf("Push of a popped chain: %v", err)
			}
			q.NeedsInterrupt(mem, features)
		}
	})
}

func bitsLen(n uint16) int {
	l := 0
	for ; n != 0; n >>= 1 {
		l++
	}
	return l
}

// TestQueueNotifySuppression: while the transport polls, an empty Pop
// leaves avail_event behind (the driver stays quiet); EnableNotify asks
// again and reports what arrived meanwhile, so nothing waits unseen.
func TestQueueNotifySuppression(t *testing.T) {
	d := newTestDriver(t, 8)
	if d.q.HasAvail(d.mem) {
		t.Fatal("HasAvail on an empty ring")
	}
	d.add(wr(1))
	if !d.q.HasAvail(d.mem) {
		t.Fatal("HasAvail missed an entry")
	}
	d.q.SuppressNotify()
	mustPop(t, d.q, d.mem)
	if c, _ := d.q.Pop(d.mem); c != nil {
		t.Fatal("unexpected chain")
	}
	if got := d.availEvent(); got != 0 {
		t.Errorf("avail_event %d while suppressed, want 0 (not moved)", got)
	}
	if d.q.EnableNotify(d.mem) {
		t.Error("EnableNotify reported work on an empty ring")
	}
	if got := d.availEvent(); got != 1 {
		t.Errorf("avail_event %d after EnableNotify, want 1", got)
	}
	// An entry published while suppressed is reported by EnableNotify.
	d.q.SuppressNotify()
	d.add(wr(1))
	if !d.q.EnableNotify(d.mem) {
		t.Error("EnableNotify missed an entry published while suppressed")
	}
	mustPop(t, d.q, d.mem)
	// A successful Pop does not move avail_event: the driver notifies
	// only once the device found the ring empty and asked.
	d.add(wr(1))
	d.add(wr(1))
	mustPop(t, d.q, d.mem)
	if got := d.availEvent(); got != 1 {
		t.Errorf("avail_event %d after a Pop with more queued, want 1", got)
	}
	// A held queue has nothing to poll.
	d.q.hold()
	if d.q.HasAvail(d.mem) || d.q.EnableNotify(d.mem) {
		t.Error("a held queue reported work")
	}
	d.q.release()
	if !d.q.HasAvail(d.mem) {
		t.Error("HasAvail missed the queued entry after release")
	}
}

// TestQueueEventIdxWrap runs VIRTIO_F_EVENT_IDX's comparisons through the
// 16-bit wrap of the indices: used_event for interrupts, avail_event for
// notifications.
func TestQueueEventIdxWrap(t *testing.T) {
	d := newTestDriver(t, 8)
	// Start both rings just below the wrap, as after 65534 requests.
	d.q.lastAvail, d.availIdx = 0xfffe, 0xfffe
	d.setAvailIdx(0xfffe)
	d.q.usedIdx, d.usedSeen = 0xfffe, 0xfffe
	d.q.signalled, d.q.signalledValid = 0xfffe, true
	// Interrupt when used.idx passes 0xffff, i.e. reaches 0.
	d.setUsedEvent(0xffff)
	push := func() {
		t.Helper()
		d.add(wr(1))
		c := mustPop(t, d.q, d.mem)
		if err := d.q.Push(d.mem, c.Head, 1); err != nil {
			t.Fatal(err)
		}
		d.mustUsed()
	}
	push() // used.idx 0xffff
	if d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("interrupt before used.idx passed used_event 0xffff")
	}
	push() // used.idx 0
	if !d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("no interrupt when used.idx wrapped past used_event")
	}
	push() // used.idx 1: used_event is behind
	if d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("interrupt after used_event was passed")
	}
	// A batch that wraps and crosses used_event signals once.
	d.q.usedIdx, d.usedSeen, d.q.signalled = 0xfffd, 0xfffd, 0xfffd
	d.setUsedEvent(0xfffe)
	for range 4 { // 0xfffe, 0xffff, 0, 1
		push()
	}
	if !d.q.NeedsInterrupt(d.mem, FeatureRingEventIdx) {
		t.Error("a batch across the wrap and used_event did not signal")
	}
	// avail_event follows lastAvail through the wrap.
	if c, _ := d.q.Pop(d.mem); c != nil {
		t.Fatal("unexpected chain")
	}
	if got, want := d.availEvent(), d.q.lastAvail; got != want {
		t.Errorf("avail_event %#x after the wrap, want %#x", got, want)
	}
}

// TestQueueOutOfOrderPush: chains go back in the order the device
// finishes them, not the order it took them; the used ring carries each
// head with its length.
func TestQueueOutOfOrderPush(t *testing.T) {
	d := newTestDriver(t, 8)
	var chains []*Chain
	for range 4 {
		d.add(wr(8))
		chains = append(chains, mustPop(t, d.q, d.mem))
	}
	for _, i := range []int{2, 0, 3, 1} {
		if err := d.q.Push(d.mem, chains[i].Head, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{2, 0, 3, 1} {
		if id, n := d.mustUsed(); id != uint32(chains[i].Head) || n != uint32(i) {
			t.Errorf("used %d/%d, want %d/%d", id, n, chains[i].Head, i)
		}
	}
	d.noUsed()
}

// TestQueuePutPublish: elements Put are invisible to the driver until
// Publish, which shows them all at once (a frame in mergeable buffers).
func TestQueuePutPublish(t *testing.T) {
	d := newTestDriver(t, 8)
	var chains []*Chain
	for range 3 {
		d.add(wr(8))
		chains = append(chains, mustPop(t, d.q, d.mem))
	}
	for i, c := range chains {
		if err := d.q.Put(d.mem, c.Head, uint32(i+1)); err != nil {
			t.Fatal(err)
		}
		if got := d.usedIdx(); got != 0 {
			t.Fatalf("used.idx %d after Put %d, want 0 until Publish", got, i)
		}
	}
	d.q.Publish()
	if got := d.usedIdx(); got != 3 {
		t.Fatalf("used.idx %d after Publish, want 3", got)
	}
	for i, c := range chains {
		if id, n := d.mustUsed(); id != uint32(c.Head) || n != uint32(i+1) {
			t.Errorf("used %d/%d, want %d/%d", id, n, c.Head, i+1)
		}
	}
	d.noUsed()
	if err := d.q.Put(d.mem, 8, 0); err == nil {
		t.Error("Put of descriptor 8 in a queue of 8: no error")
	}
}

// TestQueueRecycle: a chain given back is reused by the next Pop, which
// fills it with the new chain's descriptors and nothing of the old.
func TestQueueRecycle(t *testing.T) {
	d := newTestDriver(t, 8)
	q, m := d.q, d.mem
	first := d.chainAt([]uint64{0x10000, 0x11000}, wr(64), wr(32))
	second := d.chainAt([]uint64{0x12000}, wr(16))
	d.publish(first)
	d.publish(second)
	c, err := q.Pop(m)
	if err != nil || c == nil || c.Head != first || len(c.Descs) != 2 {
		t.Fatalf("first Pop: %+v, %v", c, err)
	}
	q.Recycle(c)
	c2, err := q.Pop(m)
	if err != nil || c2 == nil {
		t.Fatalf("second Pop: %v", err)
	}
	if c2 != c {
		t.Error("Pop did not reuse the recycled chain")
	}
	if c2.Head != second || len(c2.Descs) != 1 || c2.WritableLen() != 16 {
		t.Errorf("reused chain: head %d, %d descriptors, %d writable bytes; want %d, 1, 16", c2.Head, len(c2.Descs), c2.WritableLen(), second)
	}
}

// TestQueueRecycleDropsLongChains: a chain with room for more than a few
// descriptors is not kept for reuse, so a guest's long chains cannot
// pin their memory.
func TestQueueRecycleDropsLongChains(t *testing.T) {
	d := newTestDriver(t, 64)
	q, m := d.q, d.mem
	addrs := make([]uint64, 40)
	bufs := make([]testBuf, 40)
	for i := range addrs {
		addrs[i], bufs[i] = 0x10000+uint64(i)*0x100, wr(16)
	}
	long := d.chainAt(addrs, bufs...)
	short := d.chainAt([]uint64{0x20000}, wr(16))
	d.publish(long)
	d.publish(short)
	c, err := q.Pop(m)
	if err != nil || c == nil || len(c.Descs) != 40 {
		t.Fatalf("first Pop: %v, %v", c, err)
	}
	q.Recycle(c)
	c2, err := q.Pop(m)
	if err != nil || c2 == nil || c2.Head != short {
		t.Fatalf("second Pop: %v, %v", c2, err)
	}
	if c2 == c {
		t.Errorf("a chain with room for %d descriptors was kept for reuse (at most %d)", cap(c.Descs), recycleMaxDescs)
	}
}
