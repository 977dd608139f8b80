package virtio

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// directEnv is a cache=none disk on a test driver whose guest RAM is an
// anonymous mapping, so that guest addresses have the alignment of host
// addresses (page-aligned at guest 0), as in a VM.
type directEnv struct {
	*testDriver
	b    *Block
	d    *directIO
	path string
	disk []byte
}

// openDirectBlock opens path as a cache=none disk, closed when tb ends;
// it skips tb where the file system has no O_DIRECT.
func openDirectBlock(tb testing.TB, path string, readOnly bool) *Block {
	tb.Helper()
	b, err := OpenBlock(BlockConfig{Path: path, ReadOnly: readOnly, Direct: true})
	if err != nil {
		if strings.Contains(err.Error(), "does not support O_DIRECT") {
			tb.Skipf("the test directory's file system has no O_DIRECT: %v", err)
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

func newDirectEnv(t *testing.T, readOnly bool) *directEnv {
	t.Helper()
	return newDirectEnvSectors(t, readOnly, 128)
}

// newDirectEnvSectors is newDirectEnv with an image of that many sectors.
func newDirectEnvSectors(t *testing.T, readOnly bool, sectors int) *directEnv {
	t.Helper()
	path, disk := testImage(t, "direct.img", sectors)
	b := openDirectBlock(t, path, readOnly)
	raw, err := unix.Mmap(-1, 0, testMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(raw) })
	d := newTestDriverIn(t, testMem(raw), NewQueue(b.QueueSizes()[0]), b.QueueSizes()[0], 0x1000, 0)
	if err := b.Activate(d.mem, FeatureVersion1|blkFFlush, []*Queue{d.q}, newTestIRQ()); err != nil {
		t.Fatal(err)
	}
	return &directEnv{testDriver: d, b: b, d: b.direct, path: path, disk: disk}
}

// Guest addresses of the request parts: the header, a page-aligned data
// area and the status byte, apart so that data may be placed anywhere.
const (
	directHeader = 0x100000
	directData   = 0x101000
	directStatus = 0x110000
)

// read reads n bytes at sector into guest memory at directData+skew, in
// pieces of the given lengths (one piece of n without them), and returns
// them.
func (e *directEnv) read(sector uint64, n, skew uint64, pieces ...uint32) []byte {
	e.t.Helper()
	if len(pieces) == 0 {
		pieces = []uint32{uint32(n)}
	}
	bufs := []testBuf{rd(blkHeader(blkTIn, sector))}
	addrs := []uint64{directHeader}
	at := directData + skew
	for _, p := range pieces {
		bufs, addrs = append(bufs, wr(p)), append(addrs, at)
		at += uint64(p)
	}
	bufs, addrs = append(bufs, wr(1)), append(addrs, directStatus)
	clear(e.mem[directData : directData+skew+n])
	e.mem[directStatus] = 0xff
	e.submit(addrs, bufs)
	return append([]byte(nil), e.mem[directData+skew:directData+skew+n]...)
}

// write writes data at sector from guest memory at directData+skew.
func (e *directEnv) write(sector uint64, data []byte, skew uint64) {
	e.t.Helper()
	e.mem[directStatus] = 0xff
	e.submit([]uint64{directHeader, directData + skew, directStatus},
		[]testBuf{rd(blkHeader(blkTOut, sector)), rd(data), wr(1)})
}

func (e *directEnv) submit(addrs []uint64, bufs []testBuf) {
	e.t.Helper()
	e.publish(e.chainAt(addrs, bufs...))
	if err := e.b.Notify(0); err != nil {
		e.t.Fatalf("Notify: %v", err)
	}
	e.mustUsed()
	if st := e.mem[directStatus]; st != blkSOK {
		e.t.Fatalf("status %d", st)
	}
}

// paths reports the bounced and buffered transfers since the last call.
func (e *directEnv) paths() (bounced, buffered uint64) {
	return e.d.bounced.Swap(0), e.d.buffered.Swap(0)
}

func (e *directEnv) fileSectors(sector, n uint64) []byte {
	e.t.Helper()
	f, err := os.ReadFile(e.path) // another descriptor, through the page cache
	if err != nil {
		e.t.Fatal(err)
	}
	return f[sector*SectorSize : sector*SectorSize+n]
}

// TestBlockDirectReads: aligned reads go straight to guest memory,
// unaligned ones through a bounce buffer, and every one returns the
// image's bytes.
func TestBlockDirectReads(t *testing.T) {
	e := newDirectEnv(t, false)
	if e.d.memAlign < 1 || e.d.offAlign < SectorSize || e.d.offAlign&(e.d.offAlign-1) != 0 {
		t.Fatalf("alignment mem %d, offset %d", e.d.memAlign, e.d.offAlign)
	}
	t.Logf("O_DIRECT alignment: addresses %d, offsets and lengths %d", e.d.memAlign, e.d.offAlign)
	if fl, err := unix.FcntlInt(uintptr(e.d.fd), unix.F_GETFL, 0); err != nil || fl&unix.O_DIRECT == 0 {
		t.Fatalf("the direct descriptor's flags %#x (%v) lack O_DIRECT", fl, err)
	}
	page := uint64(os.Getpagesize())
	tests := []struct {
		name         string
		sector, n    uint64
		skew         uint64
		pieces       []uint32
		bounce       bool
		alignedFSOff bool // needs offAlign to divide the offset and length
	}{
		{name: "aligned page", sector: 8, n: page, alignedFSOff: true},
		{name: "aligned two pieces", sector: 16, n: 2 * page, pieces: []uint32{uint32(page), uint32(page)}, alignedFSOff: true},
		{name: "odd address", sector: 8, n: page, skew: 1, bounce: e.d.memAlign > 1, alignedFSOff: true},
		{name: "piece lengths not blocks", sector: 8, n: page, pieces: []uint32{700, uint32(page) - 700}, bounce: true, alignedFSOff: true},
	}
	for _, tt := range tests {
		if tt.alignedFSOff && (tt.sector*SectorSize%uint64(e.d.offAlign) != 0 || tt.n%uint64(e.d.offAlign) != 0) {
			t.Logf("%s: skipped, the file system's O_DIRECT offset alignment is %d", tt.name, e.d.offAlign)
			continue
		}
		got := e.read(tt.sector, tt.n, tt.skew, tt.pieces...)
		if want := e.disk[tt.sector*SectorSize : tt.sector*SectorSize+tt.n]; !bytes.Equal(got, want) {
			t.Errorf("%s: data differs from the image", tt.name)
		}
		bounced, buffered := e.paths()
		if wantB := uint64(0); tt.bounce {
			wantB = 1
			if bounced != wantB {
				t.Errorf("%s: %d bounced transfers, want %d", tt.name, bounced, wantB)
			}
		} else if bounced != 0 {
			t.Errorf("%s: %d bounced transfers, want none", tt.name, bounced)
		}
		if buffered != 0 {
			t.Errorf("%s: %d transfers through the page cache, want none", tt.name, buffered)
		}
	}
}

// TestBlockDirectWrites: direct and bounced writes reach the file, as
// another descriptor reads it at once (no flush), and the device reads
// what another descriptor wrote.
func TestBlockDirectWrites(t *testing.T) {
	e := newDirectEnv(t, false)
	page := uint64(os.Getpagesize())
	if page%uint64(e.d.offAlign) != 0 {
		t.Skipf("O_DIRECT offset alignment %d above a page", e.d.offAlign)
	}
	data := bytes.Repeat([]byte("direct-io-write!"), int(page)/16)
	for i, skew := range []uint64{0, 8} {
		sector := uint64(8 * (i + 1))
		data[0] = byte(i)
		e.write(sector, data, skew)
		if got := e.fileSectors(sector, page); !bytes.Equal(got, data) {
			t.Errorf("skew %d: the file read through another descriptor differs from the write", skew)
		}
		if got := e.read(sector, page, 0); !bytes.Equal(got, data) {
			t.Errorf("skew %d: reading the write back differs", skew)
		}
		bounced, buffered := e.paths()
		want := uint64(0) // the write's transfer (the read back is aligned)
		if skew%uint64(e.d.memAlign) != 0 {
			want = 1
		}
		if bounced != want {
			t.Errorf("skew %d: %d bounced transfers, want %d", skew, bounced, want)
		}
		if buffered != 0 {
			t.Errorf("skew %d: %d transfers through the page cache", skew, buffered)
		}
	}

	// Written by someone else through the page cache: a direct read
	// sees it (the kernel writes the cached pages back first).
	f, err := os.OpenFile(e.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Repeat([]byte{0xa5}, int(page))
	if _, err := f.WriteAt(other, 32*SectorSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := e.read(32, page, 0); !bytes.Equal(got, other) {
		t.Error("a direct read missed what another descriptor wrote")
	}
}

// TestBlockDirectUnalignedOffset: with a file system that wants 4 KiB
// offsets, a sector-sized write goes through the page cache, and direct
// reads of the block around it see it. The alignment is forced, since
// the test's file system may take 512-byte offsets.
func TestBlockDirectUnalignedOffset(t *testing.T) {
	e := newDirectEnv(t, false)
	if os.Getpagesize() != 4096 || e.d.offAlign > 4096 {
		t.Skip("needs 4 KiB pages and an O_DIRECT offset alignment of at most 4 KiB")
	}
	e.d.offAlign = 4096
	sector := bytes.Repeat([]byte{0x3c}, SectorSize)
	e.write(1, sector, 0)
	if _, buffered := e.paths(); buffered != 1 {
		t.Errorf("%d transfers through the page cache, want 1", buffered)
	}
	want := append(append(append([]byte(nil), e.disk[:SectorSize]...), sector...), e.disk[2*SectorSize:8*SectorSize]...)
	if got := e.read(0, 4096, 0); !bytes.Equal(got, want) {
		t.Error("direct read of the block differs from the sector written through the page cache and the image around it")
	}
	if bounced, buffered := e.paths(); bounced != 0 || buffered != 0 {
		t.Errorf("the aligned read took a slower path: bounced %d, buffered %d", bounced, buffered)
	}
	if got := e.fileSectors(0, 4096); !bytes.Equal(got, want) {
		t.Error("the file differs")
	}
	// A flush reaches the O_DIRECT and the buffered writes alike.
	e.mem[directStatus] = 0xff
	e.submit([]uint64{directHeader, directStatus}, []testBuf{rd(blkHeader(blkTFlush, 0)), wr(1)})
}

// TestBlockDirectRefusedFallsBack: where O_DIRECT refuses a transfer the
// device believed aligned (wrong alignment information), the request
// still succeeds, through the page cache.
func TestBlockDirectRefusedFallsBack(t *testing.T) {
	e := newDirectEnv(t, false)
	if e.d.memAlign <= 1 {
		t.Skip("the file system takes O_DIRECT buffers at any address")
	}
	e.d.memAlign = 1 // a lie: odd addresses now look aligned
	page := uint64(os.Getpagesize())
	if page%uint64(e.d.offAlign) != 0 {
		t.Skipf("O_DIRECT offset alignment %d above a page", e.d.offAlign)
	}
	if got := e.read(8, page, 1); !bytes.Equal(got, e.disk[8*SectorSize:8*SectorSize+page]) {
		t.Error("data differs from the image")
	}
	if bounced, buffered := e.paths(); bounced != 0 || buffered != 1 {
		t.Errorf("bounced %d, buffered %d; want 0 and 1", bounced, buffered)
	}
}

func TestBlockDirectReadOnly(t *testing.T) {
	e := newDirectEnv(t, true)
	page := uint64(os.Getpagesize())
	if got := e.read(0, page, 0); !bytes.Equal(got, e.disk[:page]) {
		t.Error("data differs from the image")
	}
	e.mem[directStatus] = 0xff
	e.publish(e.chainAt([]uint64{directHeader, directData, directStatus},
		rd(blkHeader(blkTOut, 0)), rd(make([]byte, SectorSize)), wr(1)))
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	e.mustUsed()
	if e.mem[directStatus] != blkSIOErr {
		t.Errorf("write to a read-only cache=none disk: status %d", e.mem[directStatus])
	}
}

func TestBlockDirectOpenErrors(t *testing.T) {
	if _, err := OpenBlock(BlockConfig{Path: "/nonexistent/disk.img", Direct: true}); err == nil {
		t.Error("OpenBlock of a missing file succeeded")
	}
	// A file system without O_DIRECT is a clear error, not a silent
	// page cache: /dev/shm is a tmpfs, which has O_DIRECT only from
	// Linux 6.6.
	f, err := os.CreateTemp("/dev/shm", "govmm-direct-*.img")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.Remove(f.Name())
	f.Truncate(1 << 20)
	f.Close()
	b, err := OpenBlock(BlockConfig{Path: f.Name(), Direct: true})
	switch {
	case err == nil:
		b.Close() // this kernel's tmpfs takes O_DIRECT
	case !strings.Contains(err.Error(), "O_DIRECT"):
		t.Errorf("error %q does not name O_DIRECT", err)
	case !errors.Is(err, unix.EINVAL):
		t.Errorf("error %v is not EINVAL", err)
	}
}

// TestBlockAIOBatch: one notification with many requests of every kind
// in the ring: the aligned reads and writes go to Linux AIO together,
// the others are served beside them, and every one completes with the
// right status and data.
func TestBlockAIOBatch(t *testing.T) {
	e := newDirectEnv(t, false)
	page := uint64(os.Getpagesize())
	if page%uint64(e.d.offAlign) != 0 {
		t.Skipf("O_DIRECT offset alignment %d above a page", e.d.offAlign)
	}
	a := e.b.queues[0].aio
	if a == nil {
		t.Fatal("a cache=none queue has no AIO context")
	}
	const reads, writes = 24, 8
	type req struct {
		head   uint16
		data   uint64 // guest address of the data
		status uint64
		want   byte
		check  func() bool
	}
	var reqs []req
	next := uint64(0x200000)
	alloc := func(n uint64) uint64 {
		at := next
		next += (n + page - 1) / page * page
		return at
	}
	add := func(want byte, check func(data uint64) bool, bufs []testBuf, dataAt uint64) {
		addrs := make([]uint64, len(bufs))
		for i, b := range bufs {
			switch {
			case i == 1 && dataAt != 0:
				addrs[i] = dataAt
			default:
				addrs[i] = alloc(uint64(b.n))
			}
		}
		head := e.chainAt(addrs, bufs...)
		e.publish(head)
		status := addrs[len(addrs)-1] + uint64(bufs[len(bufs)-1].n) - 1
		e.mem[status] = 0xff
		r := req{head: head, data: addrs[1], status: status, want: want}
		if check != nil {
			r.check = func() bool { return check(addrs[1]) }
		}
		reqs = append(reqs, r)
	}
	for i := range reads {
		sector := uint64(i%8) * 8
		add(blkSOK, func(at uint64) bool {
			return bytes.Equal(e.mem[at:at+page], e.disk[sector*SectorSize:sector*SectorSize+page])
		}, []testBuf{rd(blkHeader(blkTIn, sector)), wr(uint32(page)), wr(1)}, 0)
	}
	for i := range writes {
		data := bytes.Repeat([]byte{byte(0x40 + i)}, int(page))
		add(blkSOK, nil, []testBuf{rd(blkHeader(blkTOut, uint64(64+8*i))), rd(data), wr(1)}, 0)
	}
	add(blkSOK, nil, []testBuf{rd(blkHeader(blkTFlush, 0)), wr(1)}, 0)
	add(blkSOK, nil, []testBuf{rd(blkHeader(blkTGetID, 0)), wr(20), wr(1)}, 0)
	add(blkSIOErr, nil, []testBuf{rd(blkHeader(blkTIn, 1<<40)), wr(uint32(page)), wr(1)}, 0)
	odd := alloc(2*page) + 1 // a read that must bounce
	add(blkSOK, func(at uint64) bool {
		return bytes.Equal(e.mem[at:at+page], e.disk[8*SectorSize:8*SectorSize+page])
	}, []testBuf{rd(blkHeader(blkTIn, 8)), wr(uint32(page)), wr(1)}, odd)

	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	done := map[uint32]bool{}
	for range reqs {
		id, _ := e.mustUsed()
		done[id] = true
	}
	e.noUsed()
	for i, r := range reqs {
		if !done[uint32(r.head)] {
			t.Errorf("request %d (head %d) not completed", i, r.head)
		}
		if got := e.mem[r.status]; got != r.want {
			t.Errorf("request %d: status %d, want %d", i, got, r.want)
		}
		if r.check != nil && !r.check() {
			t.Errorf("request %d: data wrong", i)
		}
	}
	if a.submitted != reads+writes {
		t.Errorf("%d requests went to AIO, want %d", a.submitted, reads+writes)
	}
	if a.inflight() != 0 {
		t.Errorf("%d requests still in flight", a.inflight())
	}
	for i := range writes {
		if got := e.fileSectors(uint64(64+8*i), page); !bytes.Equal(got, bytes.Repeat([]byte{byte(0x40 + i)}, int(page))) {
			t.Errorf("write %d did not reach the file", i)
		}
	}
}

// TestBlockAIOBytesBounded: AIO cannot be cancelled, so a reset or a
// stop waits for whatever is in flight. A ring of chunk-sized reads puts
// at most blkAIOMaxBytes through AIO at once; the rest are served on the
// ordinary path, and every one completes with the disk's data.
func TestBlockAIOBytesBounded(t *testing.T) {
	e := newDirectEnvSectors(t, false, 2*blkIOChunk/SectorSize)
	a := e.b.queues[0].aio
	if a == nil {
		t.Fatal("a cache=none queue has no AIO context")
	}
	const n = 2 * blkAIOMaxBytes / blkIOChunk
	const data = 0x200000 // every read lands here: page aligned, a chunk long
	for i := range uint64(n) {
		head := e.chainAt([]uint64{directHeader + 64*i, data, directStatus + i},
			rd(blkHeader(blkTIn, 0)), wr(blkIOChunk), wr(1))
		e.mem[directStatus+i] = 0xff
		e.publish(head)
	}
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	for range n {
		e.mustUsed()
	}
	e.noUsed()
	for i := range uint64(n) {
		if got := e.mem[directStatus+i]; got != blkSOK {
			t.Errorf("read %d: status %d", i, got)
		}
	}
	if !bytes.Equal(e.mem[data:data+blkIOChunk], e.disk[:blkIOChunk]) {
		t.Error("data wrong")
	}
	if want := uint64(blkAIOMaxBytes / blkIOChunk); a.submitted != want {
		t.Errorf("%d chunk-sized reads went to AIO at once, want %d", a.submitted, want)
	}
	if a.inflight() != 0 || a.bytes != 0 {
		t.Errorf("%d requests, %d bytes still in flight", a.inflight(), a.bytes)
	}
}

// TestBlockAIORefusedFallsBack: reads that O_DIRECT refuses after all
// (the alignment the device believed is a lie here) still succeed when
// they went to AIO together: through the page cache.
func TestBlockAIORefusedFallsBack(t *testing.T) {
	e := newDirectEnv(t, false)
	page := uint64(os.Getpagesize())
	if e.d.memAlign <= 1 || page%uint64(e.d.offAlign) != 0 {
		t.Skip("the file system takes O_DIRECT buffers at any address, or wants offsets above a page")
	}
	e.d.memAlign = 1 // odd addresses now look aligned
	const reads = 4
	var data, status [reads]uint64
	for i := range reads {
		data[i], status[i] = directData+uint64(i)*2*page+1, directStatus+uint64(i)
		e.mem[status[i]] = 0xff
		e.publish(e.chainAt([]uint64{directHeader + 16*uint64(i), data[i], status[i]},
			rd(blkHeader(blkTIn, uint64(8*i))), wr(uint32(page)), wr(1)))
	}
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	for i := range reads {
		e.mustUsed()
		if e.mem[status[i]] != blkSOK {
			t.Errorf("read %d: status %d", i, e.mem[status[i]])
		}
		if !bytes.Equal(e.mem[data[i]:data[i]+page], e.disk[8*i*SectorSize:8*i*SectorSize+int(page)]) {
			t.Errorf("read %d: data differs from the image", i)
		}
	}
	// They went to AIO in one batch, which refused each, and each went
	// through the page cache instead.
	if _, buffered := e.paths(); buffered != reads {
		t.Errorf("%d transfers through the page cache, want %d", buffered, reads)
	}
}
