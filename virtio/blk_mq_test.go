package virtio

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBlockMultiQueueConfig(t *testing.T) {
	path, _ := testImage(t, "disk.img", 8)
	for _, tc := range []struct {
		queues, want int
		mq           bool
	}{{0, 1, false}, {1, 1, false}, {2, 2, true}, {BlockMaxQueues, BlockMaxQueues, true}} {
		b, err := OpenBlock(BlockConfig{Path: path, Queues: tc.queues})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(b.QueueSizes()); n != tc.want || b.Queues() != tc.want {
			t.Errorf("queues=%d: %d queue sizes, Queues() %d, want %d", tc.queues, n, b.Queues(), tc.want)
		}
		if got := b.Features()&blkFMQ != 0; got != tc.mq {
			t.Errorf("queues=%d: VIRTIO_BLK_F_MQ %v, want %v", tc.queues, got, tc.mq)
		}
		cfg := make([]byte, 2)
		b.ReadConfig(34, cfg)
		if n := binary.LittleEndian.Uint16(cfg); int(n) != tc.want {
			t.Errorf("queues=%d: num_queues %d, want %d", tc.queues, n, tc.want)
		}
		if err := b.Notify(tc.want); err == nil {
			t.Errorf("queues=%d: Notify(%d) succeeded", tc.queues, tc.want)
		}
		b.Close()
	}
	for _, bad := range []int{-1, BlockMaxQueues + 1} {
		if b, err := OpenBlock(BlockConfig{Path: path, Queues: bad}); err == nil && bad > 0 {
			b.Close()
			t.Errorf("OpenBlock with %d queues succeeded", bad)
		} else if err == nil {
			b.Close()
		}
	}
}

// TestBlockMultiQueueServe: requests on each enabled queue complete on
// that queue, with that queue's interrupt; a queue the driver left
// disabled ignores notifications.
func TestBlockMultiQueueServe(t *testing.T) {
	path, disk := testImage(t, "disk.img", 64)
	b, err := OpenBlock(BlockConfig{Path: path, Queues: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	mem := make(testMem, testMemSize)
	// Two drivers' rings side by side in one memory: queue 0 and 2.
	d0 := newTestDriverIn(t, mem, NewQueue(blkQueueSize), 16, 0x1000, 0)
	d2 := newTestDriverIn(t, mem, NewQueue(blkQueueSize), 16, 0x100000, 0)
	d2.heap = 0x200000
	irq := newTestIRQ()
	if err := b.Activate(mem, FeatureVersion1|RingFeatures, []*Queue{d0.q, nil, d2.q}, irq); err != nil {
		t.Fatal(err)
	}
	for i, d := range []*testDriver{d0, d2} {
		q := 2 * i
		_, addrs := d.add(rd(blkHeader(blkTIn, uint64(q))), wr(SectorSize+1))
		if err := b.Notify(q); err != nil {
			t.Fatal(err)
		}
		if _, n := d.mustUsed(); n != SectorSize+1 {
			t.Errorf("queue %d: used length %d", q, n)
		}
		if !bytes.Equal(mem[addrs[1]:addrs[1]+SectorSize], disk[q*SectorSize:(q+1)*SectorSize]) {
			t.Errorf("queue %d: wrong data", q)
		}
		if irq.count(q) != 1 {
			t.Errorf("queue %d: %d interrupts, want 1", q, irq.count(q))
		}
	}
	if err := b.Notify(1); err != nil {
		t.Errorf("Notify on a disabled queue: %v", err)
	}
}

// TestBlockManyInFlight: a full ring of requests of mixed sizes, served
// by the calling goroutine and up to blkWorkers others, all complete
// with the right data and status, each once, in whatever order they
// finished (the used ring may hold them out of order).
func TestBlockManyInFlight(t *testing.T) {
	const sectors = 4096 // 2 MiB
	path, disk := testImage(t, "disk.img", sectors)
	e := newBlkEnv(t, path, false, RingFeatures)
	type req struct {
		sector, n uint64
		data      uint64 // guest address of the data buffer
	}
	reqs := map[uint16]req{}
	for i := range 64 {
		n := uint64(1+i%8) * SectorSize
		if i%16 == 0 {
			n = 256 << 10 // a few big ones among the small
		}
		sector := uint64(i*37) % (sectors - n/SectorSize)
		head, addrs := e.add(rd(blkHeader(blkTIn, sector)), wr(uint32(n)), wr(1))
		reqs[head] = req{sector, n, addrs[1]}
	}
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for range reqs {
		id, n := e.mustUsed()
		r, ok := reqs[uint16(id)]
		if !ok || seen[id] {
			t.Fatalf("used id %d: unknown or completed twice", id)
		}
		seen[id] = true
		if uint64(n) != r.n+1 {
			t.Errorf("request %d: used length %d, want %d", id, n, r.n+1)
		}
		if !bytes.Equal(e.mem[r.data:r.data+r.n], disk[r.sector*SectorSize:r.sector*SectorSize+r.n]) || e.mem[r.data+r.n] != blkSOK {
			t.Errorf("request %d: wrong data or status", id)
		}
	}
	e.noUsed()
}

// abortingMem is guest memory that aborts q when the device looks up
// the buffer at trigger: the abort lands at a known point of the work.
type abortingMem struct {
	testMem
	q       *Queue
	trigger uint64
}

func (m *abortingMem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa == m.trigger {
		m.q.abort()
	}
	return m.testMem.Slice(gpa, n)
}

// TestBlockAbortWithWorkers: an abort that comes while a ring of huge
// reads is being served (as the second request is taken, the first
// already on a worker) ends Notify, and completes neither the request
// in hand nor any later one.
func TestBlockAbortWithWorkers(t *testing.T) {
	path := sparseImage(t, 1<<30)
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	d := newTestDriver(t, blkQueueSize)
	// 8 reads of 62.5 MiB each (250 descriptors of 256 KiB, indirect).
	var status []uint64
	for range 8 {
		status = append(status, blkChain(d, blkTIn, 0, 250, 256<<10))
	}
	mem := &abortingMem{testMem: d.mem, q: d.q, trigger: status[1]}
	if err := b.Activate(mem, FeatureVersion1, []*Queue{d.q}, newTestIRQ()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Notify(0) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Notify did not return after the abort")
	}
	// Only the first request, on a worker before the abort, may have
	// finished.
	if id, _, ok := d.popUsed(); ok && id != 0 {
		t.Errorf("request %d completed after the abort", id)
	}
	d.noUsed()
	// The requests after the one in hand were not even started.
	for i, s := range status[2:] {
		if d.mem[s] != 0xff {
			t.Errorf("request %d got status %d after the abort", i+2, d.mem[s])
		}
	}
}

func allocatedSectors(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks // 512-byte units
}

// TestBlockDiscard: DISCARD punches its segments out of the image (the
// host file's allocated blocks drop, the ranges read zero), WRITE_ZEROES
// zeroes them with or without unmapping, and a bad segment anywhere in a
// request fails it before any segment is applied.
func TestBlockDiscard(t *testing.T) {
	const sectors = 2048 // 1 MiB
	path, disk := testImage(t, "disk.img", sectors)
	e := newBlkEnv(t, path, false, blkFDiscard|blkFWriteZeroes|blkFFlush)
	if f := e.b.Features(); f&(blkFDiscard|blkFWriteZeroes) != blkFDiscard|blkFWriteZeroes {
		t.Fatalf("features %#x lack DISCARD/WRITE_ZEROES", f)
	}
	cfg := make([]byte, 24)
	e.b.ReadConfig(36, cfg)
	for i, want := range []uint32{blkDiscardSectors, blkDiscardSegs, 1, blkDiscardSectors, blkDiscardSegs} {
		if got := binary.LittleEndian.Uint32(cfg[4*i:]); got != want {
			t.Errorf("config word %d at 36: %d, want %d", i, got, want)
		}
	}
	if cfg[20] != 1 {
		t.Error("write_zeroes_may_unmap not set")
	}
	req := func(typ uint32, segs ...[]byte) byte {
		bufs := []testBuf{rd(blkHeader(typ, 0))}
		for _, s := range segs {
			bufs = append(bufs, rd(s))
		}
		_, st := e.do(append(bufs, wr(1))...)
		return st
	}
	image := func() []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := bytes.Clone(disk)
	zero := func(sector, n uint64) { clear(want[sector*SectorSize : (sector+n)*SectorSize]) }

	before := allocatedSectors(t, path)
	if st := req(blkTDiscard, blkSegment(0, 512, 0), blkSegment(1024, 512, 0)); st != blkSOK {
		t.Fatalf("discard status %d", st)
	}
	zero(0, 512)
	zero(1024, 512)
	if !bytes.Equal(image(), want) {
		t.Error("image after discard: ranges not zero, or others changed")
	}
	if after := allocatedSectors(t, path); after > before-1024 {
		t.Errorf("allocated sectors %d -> %d after discarding 1024", before, after)
	}
	if st := req(blkTWriteZeroes, blkSegment(600, 8, 0), blkSegment(700, 16, blkWZUnmap)); st != blkSOK {
		t.Fatalf("write-zeroes status %d", st)
	}
	zero(600, 8)
	zero(700, 16)
	if !bytes.Equal(image(), want) {
		t.Error("image after write-zeroes differs")
	}
	if s := e.b.Stats(); s.UnmapOps != 1 || s.UnmapBytes != 1024*SectorSize || s.WriteOps != 1 || s.WriteBytes != 24*SectorSize {
		t.Errorf("stats %+v", s)
	}

	// Each bad request changes nothing, even with a good segment first.
	good := blkSegment(1600, 8, 0)
	for _, tc := range []struct {
		name string
		typ  uint32
		segs [][]byte
		want byte
	}{
		{"past the end", blkTDiscard, [][]byte{good, blkSegment(sectors-1, 2, 0)}, blkSIOErr},
		{"sector beyond", blkTWriteZeroes, [][]byte{good, blkSegment(1<<62, 1, 0)}, blkSIOErr},
		{"empty segment", blkTDiscard, [][]byte{good, blkSegment(0, 0, 0)}, blkSIOErr},
		{"over max_discard_sectors", blkTDiscard, [][]byte{good, blkSegment(0, blkDiscardSectors+1, 0)}, blkSIOErr},
		{"no segments", blkTDiscard, nil, blkSIOErr},
		{"partial segment", blkTDiscard, [][]byte{good[:12]}, blkSIOErr},
		{"unmap on discard", blkTDiscard, [][]byte{good, blkSegment(0, 1, blkWZUnmap)}, blkSUnsupp},
		{"unknown flag", blkTWriteZeroes, [][]byte{good, blkSegment(0, 1, 2)}, blkSUnsupp},
		{"over max_discard_seg", blkTDiscard, slicesRepeat(good, blkDiscardSegs+1), blkSIOErr},
	} {
		if st := req(tc.typ, tc.segs...); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
	if !bytes.Equal(image(), want) {
		t.Error("a refused request changed the image")
	}
	if st := req(blkTDiscard, slicesRepeat(good, blkDiscardSegs)...); st != blkSOK {
		t.Errorf("max_discard_seg segments: status %d", st)
	}

	// Without the feature negotiated: UNSUPP. Read-only: IOERR, and not
	// offered.
	e.b.Close()
	e2 := newBlkEnv(t, path, false, 0)
	if _, st := e2.do(rd(blkHeader(blkTDiscard, 0)), rd(good), wr(1)); st != blkSUnsupp {
		t.Errorf("discard without the feature: status %d", st)
	}
	e2.b.Close()
	ro := newBlkEnv(t, path, true, blkFDiscard|blkFWriteZeroes)
	if ro.b.Features()&(blkFDiscard|blkFWriteZeroes) != 0 {
		t.Error("read-only disk offers DISCARD/WRITE_ZEROES")
	}
	for _, typ := range []uint32{blkTDiscard, blkTWriteZeroes} {
		if _, st := ro.do(rd(blkHeader(typ, 0)), rd(blkSegment(0, 8, 0)), wr(1)); st != blkSIOErr {
			t.Errorf("type %d on a read-only disk: status %d", typ, st)
		}
	}
	if !bytes.Equal(image()[:SectorSize*8], want[:SectorSize*8]) {
		t.Error("read-only disk changed")
	}
}

func slicesRepeat(b []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
