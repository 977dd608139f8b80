package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/internal/testenv"
	"golang.org/x/sys/unix"
)

// The device fuzz targets below share one harness: the fuzz input
// describes descriptor chains, which the test lays out as a driver would
// (rings first, then buffers, nothing overlapping the rings), runs the
// device, and then checks what the device did against what the chains
// allowed. Hostile ring layouts are FuzzQueuePop's job; these targets
// fuzz the request parsing behind a well-formed ring.

const (
	fuzzQueueSize = 32
	fuzzMemSize   = 256 << 10 // one queue's rings and buffers
	fuzzMaxDescs  = 6         // buffers per chain
	fuzzMaxBuf    = 4096      // bytes per buffer
)

// Per-descriptor flag bits of the fuzz input.
const (
	fuzzWrite = 1 // device-writable
	fuzzAlias = 2 // writable buffer placed over the chain's last readable one
	fuzzAlign = 4 // buffer placed on a sector boundary (O_DIRECT takes it as it is)
)

// fuzzBuf is one buffer of a fuzz chain as the test laid it out.
type fuzzBuf struct {
	addr  uint64
	n     uint32
	write bool
}

// fuzzChain is one chain as the test made it available.
type fuzzChain struct {
	head uint16
	bufs []fuzzBuf
}

// part returns the readable (write false) or writable bytes of c in m.
func (c *fuzzChain) part(m []byte, write bool) []byte {
	var out []byte
	for _, b := range c.bufs {
		if b.write == write {
			out = append(out, m[b.addr:b.addr+uint64(b.n)]...)
		}
	}
	return out
}

func (c *fuzzChain) writableLen() uint64 {
	var n uint64
	for _, b := range c.bufs {
		if b.write {
			n += uint64(b.n)
		}
	}
	return n
}

// fuzzChains decodes up to max chains from in and makes them available
// on d's queue, using d's heap up to heapEnd. Per chain: a count byte (1 to
// fuzzMaxDescs buffers), a byte whose bit 0 asks for an indirect table;
// per buffer: a flag byte (fuzzWrite, fuzzAlias, fuzzAlign) and a le16 length,
// followed, for a readable buffer, by its contents. It returns the chains
// and the input it did not use.
func fuzzChains(d *testDriver, in []byte, heapEnd uint64, max int) ([]fuzzChain, []byte) {
	var chains []fuzzChain
	used := 0 // descriptor table entries taken
	for len(in) >= 2 && len(chains) < max {
		nd := int(in[0])%fuzzMaxDescs + 1
		indirect := in[1]&1 != 0
		in = in[2:]
		slots := nd
		if indirect {
			slots = 1
		}
		if used+slots > int(d.size) {
			break
		}
		var c fuzzChain
		lastRead := -1
		for range nd {
			if len(in) < 3 {
				break
			}
			flags, n := in[0], uint32(binary.LittleEndian.Uint16(in[1:]))%(fuzzMaxBuf+1)
			in = in[3:]
			b := fuzzBuf{n: n, write: flags&fuzzWrite != 0}
			if b.write && flags&fuzzAlias != 0 && lastRead >= 0 {
				r := c.bufs[lastRead]
				b.addr, b.n = r.addr, min(n, r.n)
				lastRead = -1 // writable buffers never overlap each other
			} else {
				if flags&fuzzAlign != 0 {
					d.heap = align(d.heap, SectorSize)
				}
				if d.heap+uint64(n)+16 > heapEnd {
					break
				}
				b.addr = d.alloc(n)
			}
			if !b.write {
				in = in[copy(d.mem[b.addr:b.addr+uint64(b.n)], in):]
				lastRead = len(c.bufs)
			}
			c.bufs = append(c.bufs, b)
		}
		if len(c.bufs) == 0 || (indirect && d.heap+16*uint64(len(c.bufs))+16 > heapEnd) {
			break
		}
		c.head = uint16(used)
		table, base := d.desc, uint16(used)
		if indirect {
			table, base = d.alloc(16*uint32(len(c.bufs))), 0
		}
		for i, b := range c.bufs {
			var flags uint16
			if b.write {
				flags = descFlagWrite
			}
			if i < len(c.bufs)-1 {
				flags |= descFlagNext
			}
			d.writeDesc(table, base+uint16(i), b.addr, b.n, flags, base+uint16(i)+1)
		}
		if indirect {
			d.writeDesc(d.desc, c.head, table, 16*uint32(len(c.bufs)), descFlagIndirect, 0)
		}
		used += slots
		d.publish(c.head)
		chains = append(chains, c)
	}
	return chains, in
}

// fuzzUsed is a chain the device gave back, with the length it reported.
type fuzzUsed struct {
	*fuzzChain
	len uint32
}

// usedChains reads d's used ring and matches each element to its chain:
// every id must be a head the test made available, each at most once,
// and the length no more than the chain's writable bytes.
func usedChains(t *testing.T, d *testDriver, chains []fuzzChain) []fuzzUsed {
	t.Helper()
	var out []fuzzUsed
	seen := map[uint32]bool{}
	for {
		id, n, ok := d.popUsed()
		if !ok {
			return out
		}
		i := slices.IndexFunc(chains, func(c fuzzChain) bool { return uint32(c.head) == id })
		if i < 0 || seen[id] {
			t.Fatalf("used id %d was not available (or came back twice)", id)
		}
		seen[id] = true
		if uint64(n) > chains[i].writableLen() {
			t.Fatalf("chain %d: used length %d, only %d writable bytes", id, n, chains[i].writableLen())
		}
		out = append(out, fuzzUsed{&chains[i], n})
	}
}

// checkWrites fails unless every byte that differs between before and
// after lies in one of the drivers' used rings or in a writable buffer
// of a used chain.
func checkWrites(t *testing.T, before, after []byte, drivers []*testDriver, used []fuzzUsed) {
	t.Helper()
	type span struct{ lo, hi uint64 }
	var allowed []span
	for _, d := range drivers {
		allowed = append(allowed, span{d.used, d.used + 6 + 8*uint64(d.size)})
	}
	for _, u := range used {
		for _, b := range u.bufs {
			if b.write {
				allowed = append(allowed, span{b.addr, b.addr + uint64(b.n)})
			}
		}
	}
	slices.SortFunc(allowed, func(a, b span) int { return int(a.lo) - int(b.lo) })
	pos := uint64(0)
	// bytes.Equal over the gaps rather than a byte loop: fuzzing
	// instruments loops.
	for _, s := range append(allowed, span{uint64(len(after)), uint64(len(after))}) {
		if s.lo > pos && !bytes.Equal(before[pos:s.lo], after[pos:s.lo]) {
			for i := pos; i < s.lo; i++ {
				if before[i] != after[i] {
					t.Fatalf("device wrote %#x at %#x, outside the writable buffers and used ring", after[i], i)
				}
			}
		}
		pos = max(pos, s.hi)
	}
}

// fuzzMem is guest memory and its copy from before the device ran.
type fuzzMem struct{ mem, before testMem }

func newFuzzMem() *fuzzMem {
	return &fuzzMem{make(testMem, fuzzMemSize), make(testMem, fuzzMemSize)}
}

// queue lays out a fresh queue of fuzzQueueSize at base in m.
func (m *fuzzMem) queue(t *testing.T, q *Queue, base uint64) *testDriver {
	return newTestDriverIn(t, m.mem, q, fuzzQueueSize, base, 0)
}

func (m *fuzzMem) snapshot() { copy(m.before, m.mem) }

// fuzzTempDir is a directory for a fuzz target's disk image, in memory
// where possible: FLUSH requests fdatasync it thousands of times.
func fuzzTempDir(f *testing.F) string {
	if dir, err := os.MkdirTemp("/dev/shm", "govmm-fuzz-"); err == nil {
		f.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return f.TempDir()
}

// fuzzSeed encodes chains for fuzzChains: each chain is a list of
// buffers, readable ones with contents.
type seedBuf struct {
	flags byte
	n     uint16
	data  []byte
}

func seedChain(indirect bool, bufs ...seedBuf) []byte {
	out := []byte{byte(len(bufs) - 1), 0}
	if indirect {
		out[1] = 1
	}
	for _, b := range bufs {
		out = append(out, b.flags)
		out = binary.LittleEndian.AppendUint16(out, b.n)
		if b.flags&fuzzWrite == 0 {
			out = append(out, b.data...)
		}
	}
	return out
}

func sRd(data []byte) seedBuf  { return seedBuf{n: uint16(len(data)), data: data} }
func sWr(n uint16) seedBuf     { return seedBuf{flags: fuzzWrite, n: n} }
func sAlias(n uint16) seedBuf  { return seedBuf{flags: fuzzWrite | fuzzAlias, n: n} }
func sRdA(data []byte) seedBuf { return seedBuf{flags: fuzzAlign, n: uint16(len(data)), data: data} }
func sWrA(n uint16) seedBuf    { return seedBuf{flags: fuzzWrite | fuzzAlign, n: n} }
func seeds(c ...[]byte) []byte { return bytes.Join(c, nil) }

const blkFuzzSectors = 16

// addBlockSeeds adds the block fuzz targets' seeds: one of each request
// type, good and bad, and reads and writes in sector-aligned buffers
// (which a cache=none disk sends to Linux AIO, several in a batch).
func addBlockSeeds(f *testing.F) {
	hdr := func(typ uint32, sector uint64) seedBuf { return sRd(blkHeader(typ, sector)) }
	dwz := func(sector uint64, n, flags uint32) []byte { return blkSegment(sector, n, flags) }
	sector := bytes.Repeat([]byte("written!"), SectorSize/8)
	for name, s := range map[string][]byte{
		"read":        seedChain(false, hdr(blkTIn, 3), sWr(2*SectorSize), sWr(1)),
		"write":       seedChain(false, hdr(blkTOut, 15), sRd(sector), sWr(1)),
		"write-read":  seeds(seedChain(false, hdr(blkTOut, 1), sRd(sector), sWr(1)), seedChain(true, hdr(blkTIn, 1), sWr(SectorSize+1))),
		"past-end":    seedChain(false, hdr(blkTIn, blkFuzzSectors-1), sWr(2*SectorSize), sWr(1)),
		"flush-getid": seeds(seedChain(false, hdr(blkTFlush, 0), sWr(1)), seedChain(false, hdr(blkTGetID, 0), sWr(20), sWr(1))),
		"split-hdr":   seedChain(true, sRd(blkHeader(blkTIn, 0)[:5]), sRd(blkHeader(blkTIn, 0)[5:]), sWr(SectorSize), sWr(1)),
		"alias":       seedChain(false, hdr(blkTIn, 0), sRd(sector), sAlias(SectorSize), sWr(1)),
		"no-status":   seedChain(false, hdr(blkTIn, 0)),
		"unsupported": seedChain(false, hdr(99, 0), sWr(1)),
		"discard":     seeds(seedChain(false, hdr(blkTDiscard, 0), sRd(dwz(2, 4, 0)), sRd(dwz(10, 1, 0)), sWr(1)), seedChain(true, hdr(blkTIn, 1), sWr(SectorSize+1))),
		"zeroes":      seeds(seedChain(false, hdr(blkTWriteZeroes, 0), sRd(dwz(3, 2, blkWZUnmap)), sRd(dwz(7, 1, 0)), sWr(1)), seedChain(true, hdr(blkTIn, 3), sWr(SectorSize+1))),
		"discard-bad": seeds(seedChain(false, hdr(blkTDiscard, 0), sRd(dwz(2, 4, 0)), sRd(dwz(blkFuzzSectors-1, 2, 0)), sWr(1)), seedChain(false, hdr(blkTDiscard, 0), sRd(dwz(0, 1, blkWZUnmap)), sWr(1))),
		"aligned":     seeds(seedChain(false, hdr(blkTOut, 2), sRdA(bytes.Repeat(sector, 8)), sWr(1)), seedChain(false, hdr(blkTIn, 0), sWrA(8*SectorSize), sWr(1)), seedChain(true, hdr(blkTIn, 8), sWrA(2*SectorSize), sWrA(2*SectorSize), sWr(1))),
		"aligned-mix": seeds(seedChain(false, hdr(blkTOut, 4), sRdA(sector), sWr(1)), seedChain(false, hdr(blkTOut, 4), sRd(sector), sWr(1)), seedChain(false, hdr(blkTIn, 4), sWrA(SectorSize), sWr(1)), seedChain(false, hdr(blkTIn, 3), sWr(3*SectorSize), sWr(1))),
	} {
		testenv.AddSeed(f, name, s)
	}
}

// FuzzBlockRequest runs virtio-blk requests decoded by fuzzChains
// against a 16-sector image and checks them against a model of the
// disk: the device writes only the writable buffers of the requests it
// completed, reads and writes only whole sectors inside the image, and
// every request comes back once with the status and length the spec
// gives it.
func FuzzBlockRequest(f *testing.F) {
	addBlockSeeds(f)
	path, image := blkFuzzImage(f, fuzzTempDir(f))
	b, err := NewBlock(path, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	// Requests in flight together have no order (as on a disk with a
	// queue): served one at a time, they follow the ring, which the model
	// needs for overlapping ones. TestBlockManyInFlight covers the rest.
	b.workers = 0
	fuzzBlock(f, b, image, func() blkModel { return orderedDisk(slices.Clone(image)) })
}

// FuzzBlockWorkers is FuzzBlockRequest with the queue's workers on, as
// a page-cache disk runs: requests behind others go to workers, or, for
// reads the page cache holds, are served on the loop (tryCached). They
// have no order, so the model is FuzzBlockDirect's.
func FuzzBlockWorkers(f *testing.F) {
	addBlockSeeds(f)
	// Not /dev/shm: tmpfs refuses RWF_NOWAIT, and every read would take
	// the blocking way.
	path, image := blkFuzzImage(f, f.TempDir())
	b, err := NewBlock(path, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	fuzzBlock(f, b, image, func() blkModel { return newUnorderedDisk(image) })
}

// FuzzBlockDirect is FuzzBlockRequest on a cache=none disk: requests in
// sector-aligned buffers go to Linux AIO, several in a batch, and the
// rest through the aligned bounce buffer or the page cache, while the
// batch is in flight. Requests in flight together have no order, so the
// model (unorderedDisk) accepts any order of them; the rest is checked
// as FuzzBlockRequest checks it.
func FuzzBlockDirect(f *testing.F) {
	addBlockSeeds(f)
	// Not /dev/shm: tmpfs has no O_DIRECT.
	path, image := blkFuzzImage(f, f.TempDir())
	b := openDirectBlock(f, path, false)
	fuzzBlock(f, b, image, func() blkModel { return newUnorderedDisk(image) })
}

// blkFuzzImage writes the block fuzz targets' image into dir.
func blkFuzzImage(f *testing.F, dir string) (path string, image []byte) {
	path = filepath.Join(dir, "disk.img")
	image = make([]byte, blkFuzzSectors*SectorSize)
	for i := range image {
		image[i] = byte(i * 7 % 251)
	}
	if err := os.WriteFile(path, image, 0o644); err != nil {
		f.Fatal(err)
	}
	return path, image
}

// fuzzBlock serves each input's requests (fuzzChains) on b's one queue,
// its image first reset to image, and checks them: only the used ring
// and the writable buffers of completed requests change, every request
// completes, each as checkBlockRequest wants against a fresh model, and
// the image ends as the model allows.
func fuzzBlock(f *testing.F, b *Block, image []byte, newModel func() blkModel) {
	m, q := newFuzzMem(), NewQueue(fuzzQueueSize)
	disk := make([]byte, len(image)+1) // one more, to see growth
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := b.f.WriteAt(image, 0); err != nil {
			t.Fatal(err)
		}
		clear(m.mem)
		d := m.queue(t, q, 0)
		chains, _ := fuzzChains(d, in, fuzzMemSize, fuzzQueueSize)
		m.snapshot()
		if err := b.Activate(m.mem, FeatureVersion1|RingFeatures|blkFFlush|blkFDiscard|blkFWriteZeroes, []*Queue{q}, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		err := b.Notify(0)
		b.Reset()
		if err != nil {
			t.Fatalf("Notify on a well-formed ring: %v", err)
		}
		used := usedChains(t, d, chains)
		if len(used) != len(chains) {
			t.Fatalf("%d of %d requests completed", len(used), len(chains))
		}
		checkWrites(t, m.before, m.mem, []*testDriver{d}, used)

		model := newModel()
		for _, u := range used {
			checkBlockRequest(t, u, m, model, b.ID())
		}
		n, _ := b.f.ReadAt(disk, 0)
		model.check(t, disk[:n])
	})
}

// blkModel is the disk as a fuzz target's checker sees it: a read's
// data is checked against it, a write's (or discard's zeroes) applied.
type blkModel interface {
	sectors() uint64
	read(t *testing.T, sector uint64, data []byte)
	write(sector uint64, data []byte)
	// check fails t unless final, the image after the requests, is
	// what they leave.
	check(t *testing.T, final []byte)
}

// orderedDisk models a disk whose requests ran one at a time, in ring
// order: its bytes are the disk's.
type orderedDisk []byte

func (d orderedDisk) sectors() uint64 { return uint64(len(d)) / SectorSize }

func (d orderedDisk) read(t *testing.T, sector uint64, data []byte) {
	t.Helper()
	if off := sector * SectorSize; !bytes.Equal(data, d[off:off+uint64(len(data))]) {
		t.Fatalf("read of sector %d returned other data", sector)
	}
}

func (d orderedDisk) write(sector uint64, data []byte) { copy(d[sector*SectorSize:], data) }

func (d orderedDisk) check(t *testing.T, final []byte) {
	t.Helper()
	if !bytes.Equal(final, d) {
		t.Fatalf("disk image differs from the model (%d bytes, want %d)", len(final), len(d))
	}
}

// unorderedDisk models a disk whose requests ran in any order: a sector
// no request wrote reads, and ends, as the image has it; one that
// requests wrote reads as the image or any of them has it, and ends as
// one of them has it. (A sector is the unit a disk writes whole.) Reads
// are kept until check, which knows every write.
type unorderedDisk struct {
	image  []byte
	writes map[uint64][][]byte // per sector, what requests wrote there
	reads  []sectorRead
}

type sectorRead struct {
	sector uint64
	data   []byte
}

func newUnorderedDisk(image []byte) *unorderedDisk {
	return &unorderedDisk{image: image, writes: map[uint64][][]byte{}}
}

func (d *unorderedDisk) sectors() uint64 { return uint64(len(d.image)) / SectorSize }

func (d *unorderedDisk) read(t *testing.T, sector uint64, data []byte) {
	for i := uint64(0); i < uint64(len(data))/SectorSize; i++ {
		d.reads = append(d.reads, sectorRead{sector + i, slices.Clone(data[i*SectorSize : (i+1)*SectorSize])})
	}
}

func (d *unorderedDisk) write(sector uint64, data []byte) {
	for i := uint64(0); i < uint64(len(data))/SectorSize; i++ {
		d.writes[sector+i] = append(d.writes[sector+i], data[i*SectorSize:(i+1)*SectorSize])
	}
}

// imageSector is sector s of the image.
func (d *unorderedDisk) imageSector(s uint64) []byte { return d.image[s*SectorSize : (s+1)*SectorSize] }

// check fails unless every read returned, and final (the disk after the
// requests) holds, what some order of the requests gives.
func (d *unorderedDisk) check(t *testing.T, final []byte) {
	t.Helper()
	if len(final) != len(d.image) {
		t.Fatalf("disk image of %d bytes, want %d", len(final), len(d.image))
	}
	oneOf := func(got []byte, want [][]byte) bool {
		return slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(got, w) })
	}
	for _, r := range d.reads {
		if !oneOf(r.data, append([][]byte{d.imageSector(r.sector)}, d.writes[r.sector]...)) {
			t.Fatalf("read of sector %d returned data neither the image nor a write had there", r.sector)
		}
	}
	for s := range d.sectors() {
		want := d.writes[s]
		if len(want) == 0 {
			want = [][]byte{d.imageSector(s)}
		}
		if !oneOf(final[s*SectorSize:(s+1)*SectorSize], want) {
			t.Fatalf("sector %d ends with data no order of the requests leaves there", s)
		}
	}
}

// checkBlockRequest checks one completed request against the spec and
// applies it to the disk model.
func checkBlockRequest(t *testing.T, u fuzzUsed, m *fuzzMem, disk blkModel, id [blkIDLen]byte) {
	t.Helper()
	w := u.writableLen()
	if w == 0 {
		if u.len != 0 {
			t.Fatalf("request %d without a status byte: used length %d", u.head, u.len)
		}
		return
	}
	data := u.part(m.mem, true)
	status, data := data[w-1], data[:w-1]
	rd := u.part(m.before, false)
	expect := func(st byte, n uint32) {
		t.Helper()
		if status != st || u.len != n {
			t.Fatalf("request %d (%d readable, %d writable bytes): status %d, used length %d; want %d, %d",
				u.head, len(rd), w, status, u.len, st, n)
		}
	}
	if len(rd) < blkHeaderLen {
		expect(blkSIOErr, 1)
		return
	}
	typ, sector := binary.LittleEndian.Uint32(rd[0:]), binary.LittleEndian.Uint64(rd[8:])
	inDisk := func(n uint64) bool {
		size := disk.sectors() * SectorSize
		// At least one whole sector, inside the disk (an empty transfer
		// is an error too).
		return n > 0 && n%SectorSize == 0 && sector <= size/SectorSize && n <= size-sector*SectorSize
	}
	switch typ {
	case blkTIn:
		if !inDisk(uint64(len(data))) {
			expect(blkSIOErr, 1)
			return
		}
		expect(blkSOK, uint32(len(data))+1)
		disk.read(t, sector, data)
	case blkTOut:
		payload := rd[blkHeaderLen:]
		if !inDisk(uint64(len(payload))) {
			expect(blkSIOErr, 1)
			return
		}
		expect(blkSOK, 1)
		disk.write(sector, payload)
	case blkTFlush:
		expect(blkSOK, 1)
	case blkTGetID:
		n := min(len(data), blkIDLen)
		expect(blkSOK, uint32(n)+1)
		if !bytes.Equal(data[:n], id[:n]) {
			t.Fatalf("GET_ID returned %q", data[:n])
		}
	case blkTDiscard, blkTWriteZeroes:
		// Every segment is checked before any is applied; a discard,
		// like a write of zeroes, leaves zeroes (the fuzz image is on
		// tmpfs, which punches holes).
		segs := rd[blkHeaderLen:]
		if len(segs) == 0 || len(segs)%blkSegLen != 0 || len(segs)/blkSegLen > blkDiscardSegs {
			expect(blkSIOErr, 1)
			return
		}
		for s := segs; len(s) > 0; s = s[blkSegLen:] {
			sector, n := binary.LittleEndian.Uint64(s[0:]), uint64(binary.LittleEndian.Uint32(s[8:]))
			flags := binary.LittleEndian.Uint32(s[12:])
			size := disk.sectors()
			switch {
			case flags&^blkWZUnmap != 0 || (typ == blkTDiscard && flags != 0):
				expect(blkSUnsupp, 1)
				return
			case n == 0 || n > blkDiscardSectors || sector > size || n > size-sector:
				expect(blkSIOErr, 1)
				return
			}
		}
		expect(blkSOK, 1)
		for s := segs; len(s) > 0; s = s[blkSegLen:] {
			sector, n := binary.LittleEndian.Uint64(s[0:]), uint64(binary.LittleEndian.Uint32(s[8:]))
			disk.write(sector, make([]byte, n*SectorSize))
		}
	default:
		expect(blkSUnsupp, 1)
	}
}

// twoQueues lays out queue 0 in the lower half of m and queue 1 in the
// upper half, and decodes chains for them from in: in[0] is the most
// chains queue 0 gets, its chains follow, then queue 1's. It returns the
// input left over.
func (m *fuzzMem) twoQueues(t *testing.T, q0, q1 *Queue, in []byte) (d [2]*testDriver, chains [2][]fuzzChain, rest []byte) {
	clear(m.mem)
	half := uint64(fuzzMemSize / 2)
	d[0], d[1] = m.queue(t, q0, 0), m.queue(t, q1, half)
	if len(in) == 0 {
		return d, chains, nil
	}
	n0 := int(in[0]) % (fuzzQueueSize + 1)
	chains[0], rest = fuzzChains(d[0], in[1:], half, n0)
	chains[1], rest = fuzzChains(d[1], rest, fuzzMemSize, fuzzQueueSize)
	return d, chains, rest
}

// twoQueueSeed encodes chains for twoQueues.
func twoQueueSeed(q0, q1 [][]byte, rest []byte) []byte {
	return seeds([]byte{byte(len(q0))}, seeds(q0...), seeds(q1...), rest)
}

// FuzzConsole posts receive buffers, feeds host input and transmits
// buffers: input reaches the guest in order, filling each receive buffer
// before the next, and what does not fit waits; output is the readable
// bytes of the transmit chains in order; nothing else in guest memory
// changes.
func FuzzConsole(f *testing.F) {
	hostInput := func(p string) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(len(p))) }
	for name, s := range map[string][]byte{
		"echo": seeds(hostInput("hello\n"), []byte("hello\n"), twoQueueSeed(
			[][]byte{seedChain(false, sWr(4)), seedChain(true, sWr(2), sWr(8))},
			[][]byte{seedChain(false, sRd([]byte("$ ")), sRd([]byte("ls\n")), sWr(3))}, nil)),
		"no-buffers": seeds(hostInput("pending"), []byte("pending"), twoQueueSeed(nil,
			[][]byte{seedChain(true, sRd([]byte("out")))}, nil)),
		"empty-buffer": seeds(hostInput("x"), []byte("x"), twoQueueSeed(
			[][]byte{seedChain(false, sRd([]byte("r")), sWr(0)), seedChain(false, sWr(1))}, nil, nil)),
	} {
		testenv.AddSeed(f, name, s)
	}
	var out bytes.Buffer
	c := NewConsole(&out)
	m, rxq, txq := newFuzzMem(), NewQueue(fuzzQueueSize), NewQueue(fuzzQueueSize)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		input := in[2:min(len(in), 2+int(binary.LittleEndian.Uint16(in)))]
		d, chains, _ := m.twoQueues(t, rxq, txq, in[2+len(input):])
		m.snapshot()
		out.Reset()
		c.pending = c.pending[:0]
		if err := c.Activate(m.mem, FeatureVersion1|RingFeatures, []*Queue{rxq, txq}, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		c.Input(input)
		errRx, errTx := c.Notify(0), c.Notify(1)
		c.Reset()
		c.Flush() // output reaches out from the console's goroutine
		if errRx != nil || errTx != nil {
			t.Fatalf("Notify on well-formed rings: %v, %v", errRx, errTx)
		}
		rx, tx := usedChains(t, d[0], chains[0]), usedChains(t, d[1], chains[1])
		checkWrites(t, m.before, m.mem, d[:], rx) // transmit buffers stay as they were

		var delivered []byte
		for i, u := range rx {
			if i < len(rx)-1 && uint64(u.len) != u.writableLen() {
				t.Fatalf("receive buffer %d got %d of %d bytes, yet more input followed", u.head, u.len, u.writableLen())
			}
			delivered = append(delivered, u.part(m.mem, true)[:u.len]...)
		}
		if !bytes.Equal(append(delivered, c.pending...), input) {
			t.Fatalf("guest got %q and %q waits, host sent %q", delivered, c.pending, input)
		}
		if len(c.pending) > 0 && len(rx) != len(chains[0]) {
			t.Fatalf("input waits with %d of %d receive buffers unused", len(chains[0])-len(rx), len(chains[0]))
		}
		var want []byte
		for _, u := range tx {
			if u.len != 0 {
				t.Fatalf("transmit chain %d: used length %d", u.head, u.len)
			}
			p := u.part(m.before, false)
			want = append(want, p[:min(len(p), consoleTxMax)]...) // the rest is dropped
		}
		if len(tx) != len(chains[1]) || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("output %q from %d of %d chains, want %q", out.Bytes(), len(tx), len(chains[1]), want)
		}
	})
}

// FuzzRNG fills the writable buffers of every chain: each comes back
// with at most its writable bytes and at most rngMaxRequest, and nothing
// outside them changes.
func FuzzRNG(f *testing.F) {
	testenv.AddSeed(f, "buffers", seeds(seedChain(false, sWr(16)), seedChain(true, sWr(1), sWr(4096)), seedChain(false, sRd([]byte("x")), sWr(0))))
	testenv.AddSeed(f, "large", seeds(seedChain(false, sWr(4096), sWr(4096), sWr(4096), sWr(4096), sWr(4096), sWr(4096))))
	r := NewRNG()
	m, q := newFuzzMem(), NewQueue(fuzzQueueSize)
	f.Fuzz(func(t *testing.T, in []byte) {
		clear(m.mem)
		d := m.queue(t, q, 0)
		chains, _ := fuzzChains(d, in, fuzzMemSize, fuzzQueueSize)
		m.snapshot()
		if err := r.Activate(m.mem, FeatureVersion1|RingFeatures, []*Queue{q}, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		err := r.Notify(0)
		r.Reset()
		if err != nil {
			t.Fatalf("Notify on a well-formed ring: %v", err)
		}
		used := usedChains(t, d, chains)
		if len(used) != len(chains) {
			t.Fatalf("%d of %d chains filled", len(used), len(chains))
		}
		for _, u := range used {
			if u.len > rngMaxRequest {
				t.Fatalf("chain %d got %d bytes, limit %d", u.head, u.len, rngMaxRequest)
			}
		}
		checkWrites(t, m.before, m.mem, []*testDriver{d}, used)
	})
}

// fuzzTap records the frames a Net writes; the frames it reads come
// from host, the other end of a socketpair that keeps packet boundaries
// like a tap.
type fuzzTap struct {
	*sockTap
	host   *os.File
	frames [][]byte
}

func newFuzzTap(f *testing.F) *fuzzTap {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		f.Fatal(err)
	}
	host := os.NewFile(uintptr(fds[1]), "tap-host")
	f.Cleanup(func() { host.Close() })
	return &fuzzTap{sockTap: &sockTap{File: os.NewFile(uintptr(fds[0]), "tap-dev")}, host: host}
}

func (p *fuzzTap) WriteFrame(bufs [][]byte) error {
	p.frames = append(p.frames, bytes.Join(bufs, nil))
	return nil
}

// fuzzNetFeatures maps bits 1-9 of FuzzNet's feature word to the
// offload features the driver accepts; bit 0 picks the device with
// offloads on.
var fuzzNetFeatures = []uint64{netFCsum, netFGuestCsum, netFGuestTSO4, netFGuestTSO6, netFGuestECN,
	netFHostTSO4, netFHostTSO6, netFHostECN, netFMrgRxbuf}

// fuzzNetPayload[k] is byte(k): the bytes of FuzzNet's received
// frames, copied rather than written a byte at a time, because fuzzing
// instruments every loop iteration and frames run to 12 KiB.
var fuzzNetPayload = func() []byte {
	b := make([]byte, 256+3*fuzzMaxBuf)
	for k := range b {
		b[k] = byte(k)
	}
	return b
}()

// badBufferAhead reports whether a device with MRG_RXBUF, holding the
// receive buffers chains from the first on, meets one too small for a
// header (5.1.6.3.1) before those it holds take the largest frame.
func badBufferAhead(chains []fuzzChain) bool {
	var room uint64
	for i := 0; i < len(chains) && room < netMaxPacket; i++ {
		w := chains[i].writableLen()
		if w < NetHdrLen {
			return true
		}
		room += w
	}
	return false
}

// fuzzNetHdrLen is the header each received frame of FuzzNet carries in
// the input: flags through csum_offset (num_buffers is the device's).
const fuzzNetHdrLen = netNumBuffersOff

// FuzzNet transmits the chains of queue 1 and receives frames into those
// of queue 0, on a device with offloads on or off and a driver that
// accepts some of them. A transmitted frame reaches the tap whole, with
// a header that uses only what was negotiated and offsets inside the
// frame, or is dropped; a received frame lands whole behind a header the
// guest negotiated and the right num_buffers, in the next receive buffer
// that holds it (or, with MRG_RXBUF, as many as it takes), or is dropped
// and leaves the buffers for the next frame; nothing else in guest
// memory changes. After the chains the input holds a le16 feature word
// (fuzzNetFeatures) and per frame a le16 size and its header.
func FuzzNet(f *testing.F) {
	type frameSpec struct {
		size uint16
		hdr  netHdr
	}
	rest := func(features uint16, frames ...frameSpec) []byte {
		b := binary.LittleEndian.AppendUint16(nil, features)
		for _, fr := range frames {
			b = binary.LittleEndian.AppendUint16(b, fr.size)
			h := make([]byte, NetHdrLen)
			fr.hdr.put(h, 0)
			b = append(b, h[:fuzzNetHdrLen]...)
		}
		return b
	}
	hdr := func(h netHdr) []byte {
		b := make([]byte, NetHdrLen)
		h.put(b, 0)
		return b
	}
	ping := append(make([]byte, NetHdrLen), "ethernet frame"...)
	tso := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	all := uint16(1<<(len(fuzzNetFeatures)+1) - 1)
	for name, s := range map[string][]byte{
		"both-ways": twoQueueSeed(
			[][]byte{seedChain(false, sWr(1526)), seedChain(true, sWr(NetHdrLen), sWr(100))},
			[][]byte{seedChain(false, sRd(ping)), seedChain(true, sRd(ping[:5]), sRd(ping[5:]))},
			rest(0, frameSpec{size: 60}, frameSpec{size: 112})),
		"small-buffer": twoQueueSeed(
			[][]byte{seedChain(false, sWr(64)), seedChain(false, sWr(2000))},
			[][]byte{seedChain(false, sRd(ping[:NetHdrLen-1]))},
			rest(0, frameSpec{size: 1514}, frameSpec{size: 40}, frameSpec{size: 5})),
		"offloads": twoQueueSeed(
			[][]byte{seedChain(false, sWr(1526)), seedChain(false, sWr(4096), sWr(4096)), seedChain(false, sWr(4096)), seedChain(false, sWr(4096))},
			[][]byte{seedChain(false, sRd(hdr(tso)), sRd(make([]byte, 3000))), seedChain(false, sRd(hdr(netHdr{flags: netHdrFNeedsCsum, csumStart: 100})), sRd(make([]byte, 60)))},
			rest(all, frameSpec{size: 9000, hdr: tso}, frameSpec{size: 100, hdr: netHdr{flags: 3}}, frameSpec{size: 3000, hdr: netHdr{gsoType: 3}})),
		"mergeable-short": twoQueueSeed(
			[][]byte{seedChain(false, sWr(4096)), seedChain(false, sWr(8)), seedChain(false, sWr(4096))},
			nil,
			rest(1|1<<9, frameSpec{size: 100}, frameSpec{size: 5000}, frameSpec{size: 100})),
	} {
		testenv.AddSeed(f, name, s)
	}
	taps := [2]*fuzzTap{newFuzzTap(f), newFuzzTap(f)}
	nets := [2]*Net{mustNewNet(f, taps[0], net.HardwareAddr{2, 0, 0, 0, 0, 1}, false), mustNewNet(f, taps[1], net.HardwareAddr{2, 0, 0, 0, 0, 1}, true)}
	f.Cleanup(func() { nets[0].Close(); nets[1].Close() })
	m, rxq, txq := newFuzzMem(), NewQueue(fuzzQueueSize), NewQueue(fuzzQueueSize)
	f.Fuzz(func(t *testing.T, in []byte) {
		d, chains, rest := m.twoQueues(t, rxq, txq, in)
		var word uint16
		if len(rest) >= 2 {
			word, rest = binary.LittleEndian.Uint16(rest), rest[2:]
		}
		n, tap := nets[word&1], taps[word&1]
		// No EVENT_IDX: the receive goroutine would read used_event.
		features := uint64(FeatureVersion1 | FeatureRingIndirect)
		for i, f := range fuzzNetFeatures {
			if word>>(i+1)&1 != 0 {
				features |= f
			}
		}
		features &= n.Features() | FeatureVersion1
		m.snapshot()
		tap.frames = tap.frames[:0]
		if err := n.Activate(m.mem, features, []*Queue{rxq, txq}, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		if err := n.Notify(1); err != nil {
			t.Fatalf("transmit on a well-formed ring: %v", err)
		}

		// Receive, feeding only frames the model says will not wait
		// for buffers (receive would block for the guest's next one).
		type landing struct {
			frame  []byte // header as the guest must see it, then the frame
			chains int    // buffers it takes
		}
		var landed []landing
		mergeable := features&netFMrgRxbuf != 0
		next, broken := 0, false
		for i := 0; i+2 <= len(rest); {
			size := int(binary.LittleEndian.Uint16(rest[i:])) % (3 * fuzzMaxBuf)
			i += 2
			p := make([]byte, size)
			copy(p, fuzzNetPayload[i%256:]) // p[j] = byte(i+j)
			i += copy(p[:min(len(p), fuzzNetHdrLen)], rest[i:min(len(rest), i+fuzzNetHdrLen)])
			if len(p) >= NetHdrLen {
				p[netNumBuffersOff], p[netNumBuffersOff+1] = 0, 0
			}
			var h netHdr
			var herr error
			if len(p) >= NetHdrLen {
				h, herr = parseNetHdr(p).checkRx(features, len(p)-NetHdrLen)
			}
			if mergeable && !broken {
				// Before it reads any frame the device holds buffers
				// for the largest one: a buffer too small for a header
				// among them breaks receiveq first, even one past
				// those this frame needs.
				broken = badBufferAhead(chains[0][next:])
			}
			switch {
			case len(p) < NetHdrLen || herr != nil || broken:
				// dropped before any buffer is taken
			case !mergeable:
				if next >= len(chains[0]) {
					i = len(rest) // would wait
					continue
				}
				if chains[0][next].writableLen() >= uint64(len(p)) {
					want := slices.Clone(p)
					h.put(want, 1)
					landed = append(landed, landing{want, 1})
					next++
				}
			default:
				// No buffer in reach is too small (badBufferAhead).
				room, k := uint64(0), 0
				for room < uint64(len(p)) && next+k < len(chains[0]) {
					room += chains[0][next+k].writableLen()
					k++
				}
				switch {
				case room < uint64(len(p)):
					i = len(rest) // would wait
					continue
				default:
					want := slices.Clone(p)
					h.put(want, uint16(k))
					landed = append(landed, landing{want, k})
					next += k
				}
			}
			// The socket holds a few frames; when it is full, the
			// device reads them (none of them waits for buffers).
			for {
				_, err := tap.host.Write(p)
				if err == nil {
					break
				}
				if !errors.Is(err, unix.EAGAIN) {
					t.Fatal(err)
				}
				waitTapDrained(t, tap.sockTap)
			}
		}
		// Reset waits for the frame the receive goroutine is delivering:
		// once the last one has been read, every one is in guest memory.
		waitTapDrained(t, tap.sockTap)
		n.Reset()

		tx := usedChains(t, d[1], chains[1])
		if len(tx) != len(chains[1]) {
			t.Fatalf("%d of %d transmit chains used", len(tx), len(chains[1]))
		}
		var want [][]byte
		for _, u := range tx {
			rd := u.part(m.before, false)
			if len(rd) < NetHdrLen {
				continue
			}
			h, err := parseNetHdr(rd).checkTx(features, len(rd)-NetHdrLen)
			if err != nil {
				continue
			}
			if h.flags != 0 && features&netFCsum == 0 || h.gsoType != 0 && features&(netFHostTSO4|netFHostTSO6) == 0 {
				t.Fatalf("header %+v accepted with features %#x", h, features)
			}
			p := slices.Clone(rd)
			h.put(p, 0)
			want = append(want, p)
		}
		if len(want) != len(tap.frames) || !slices.EqualFunc(want, tap.frames, bytes.Equal) {
			t.Fatalf("tap got %d frames, want %d (or other bytes)", len(tap.frames), len(want))
		}

		rx := usedChains(t, d[0], chains[0])
		// The device reads each frame straight into the receive buffers
		// it holds, so those it took and did not use (yet) may change
		// too: they are the device's until it uses them or resets.
		var taken []fuzzUsed
		for i := range chains[0] {
			taken = append(taken, fuzzUsed{&chains[0][i], 0})
		}
		checkWrites(t, m.before, m.mem, d[:], taken)
		k := 0 // the next used buffer
		for _, l := range landed {
			var got []byte
			for j := range l.chains {
				if k+j >= len(rx) || rx[k+j].head != chains[0][k+j].head {
					t.Fatalf("frame of %d bytes did not land in receive buffer %d", len(l.frame), k+j)
				}
				got = append(got, rx[k+j].part(m.mem, true)[:rx[k+j].len]...)
			}
			if !bytes.Equal(got, l.frame) {
				t.Fatalf("receive buffers %d-%d hold other bytes (%d, want %d)", k, k+l.chains-1, len(got), len(l.frame))
			}
			k += l.chains
		}
		if k != len(rx) {
			t.Fatalf("%d receive buffers used, %d filled by frames", len(rx), k)
		}
	})
}

// transportFuzzOp encodes one access for FuzzTransport: op, le16 offset,
// le32 value. op&3 is 0 to read and 1 to write BAR 0 at offset%BARSize,
// 2 to read and 3 to write configuration space at 0x40+offset%0xc0; op>>2&3
// selects 1, 2, 4 or 8 bytes (at most 4 in configuration space).
func transportFuzzOp(kind byte, off uint16, size int, v uint32) []byte {
	sizes := map[int]byte{1: 0, 2: 1, 4: 2, 8: 3}
	b := []byte{kind | sizes[size]<<2}
	b = binary.LittleEndian.AppendUint16(b, off)
	return binary.LittleEndian.AppendUint32(b, v)
}

// FuzzTransport throws arbitrary accesses at a virtio-pci function's BAR
// (common configuration, ISR, device configuration, MSI-X table and
// PBA, notify area) and configuration space (capabilities, the PCI_CFG
// window, MSI-X control). Beyond never panicking: the MSI-X table
// changes only through well-formed table writes, and exactly as written;
// table entries and PBA bits past the table size read as zero; vectors
// read back in range or as NO_VECTOR; num_queues is fixed and a queue
// that does not exist has size 0; the device is notified only of queues
// it has.
func FuzzTransport(f *testing.F) {
	op := transportFuzzOp
	cc := func(off int, size int, v uint32) []byte { return op(1, uint16(pciCommonOff+off), size, v) }
	setup := bytes.Join([][]byte{
		cc(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver),
		cc(ccDriverFeatureSelect, 4, 1), cc(ccDriverFeature, 4, 1),
		cc(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK),
		cc(ccQueueSelect, 2, 0), cc(ccQueueSize, 2, 8), cc(ccQueueDesc, 4, 0x10000), cc(ccQueueDriver, 4, 0x11000),
		cc(ccQueueDevice, 4, 0x12000), cc(ccQueueMSIXVector, 2, 0), cc(ccQueueEnable, 2, 1),
		cc(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK),
	}, nil)
	tr, err := NewTransport(newFakeDevice(16, 16), TransportConfig{Memory: sliceMemory{}, MSI: &fakeMSI{}})
	if err != nil {
		f.Fatal(err)
	}
	// Configuration space offsets as the ops encode them.
	msixCtrl, window := uint16(tr.msixCap+2-0x40), uint16(tr.pciCfgAt-0x40)
	tr.Close()
	msix := bytes.Join([][]byte{
		op(3, msixCtrl, 2, 1<<15|1<<14),
		op(1, pciMSIXOff, 4, 0xfee00000), op(1, pciMSIXOff+8, 4, 0x4021), op(1, pciMSIXOff+12, 4, 0),
		op(1, pciMSIXOff+16, 8, 0xfee01000), op(1, pciMSIXOff+0x30, 4, 0xdead), op(0, pciMSIXOff+0x30, 4, 0),
		op(0, pciPBAOff, 8, 0), op(1, pciNotifyOff, 2, 0), op(1, pciNotifyOff+4, 2, 1), op(1, pciNotifyOff+8, 2, 2),
		op(0, pciISROff, 1, 0),
	}, nil)
	testenv.AddSeed(f, "driver-setup", setup)
	testenv.AddSeed(f, "msix", seeds(setup, msix))
	testenv.AddSeed(f, "pci-cfg-window", seeds(
		op(3, window+pciCfgBar, 1, 0), op(3, window+pciCfgOffset, 4, pciMSIXOff+4), op(3, window+pciCfgLength, 4, 4),
		op(3, window+pciCfgData, 4, 0x12345678), op(2, window+pciCfgData, 4, 0), op(3, msixCtrl, 2, 1<<15)))
	testenv.AddSeed(f, "odd-widths", seeds(op(0, ccQueueDesc+1, 8, 0), op(1, pciMSIXOff+2, 2, 0xffff),
		op(1, pciMSIXOff+4, 8, 0xffffffff), op(0, pciPBAOff+4, 8, 0), op(1, pciDeviceOff+pciDeviceSize-2, 4, 0)))

	logTo := log.Writer()
	log.SetOutput(io.Discard) // a hostile driver makes the transport warn
	f.Cleanup(func() { log.SetOutput(logTo) })

	// newRig's guest memory, allocated once: a megabyte per execution
	// was most of this target's time, in clearing and collecting it.
	mem := make(sliceMemory, 1<<20)
	f.Fuzz(func(t *testing.T, in []byte) {
		clear(mem) // the notify area's polling writes ring flags
		dev := newFakeDevice(16, 16)
		r := newRigWith(t, dev, mem, false)
		r.dev = dev
		m := r.tr.msix
		model := newMSIXImage(m.entries)
		for ; len(in) >= 7; in = in[7:] {
			kind, size := in[0]&3, 1<<(in[0]>>2&3)
			off := uint64(binary.LittleEndian.Uint16(in[1:]))
			b := binary.LittleEndian.AppendUint64(nil, uint64(binary.LittleEndian.Uint32(in[3:]))*0x100000001)[:size]
			switch kind {
			case 0, 1:
				off %= BARSize
				// Unclaimed: past the notify area, or across the end
				// of a region.
				claimed := r.mmio.Dispatch(testBARBase+off, b, kind == 1) != nil
				if t := off - pciMSIXOff; claimed && kind == 1 && off >= pciMSIXOff && t < uint64(len(model)) && tableAccess(t, uint64(size)) {
					copy(model[t:], b)
				}
				if claimed && kind == 0 {
					checkTransportRead(t, r.tr, off, b)
				}
			case 2, 3:
				// The capabilities; the header, which could move the
				// BAR away, is FuzzPCIConfigPorts's.
				off = 0x40 + off%(devices.PCIConfigSize-0x40)
				b = b[:min(size, 4, devices.PCIConfigSize-int(off))]
				if kind == 2 {
					r.tr.ReadConfig(off, b)
				} else {
					r.tr.WriteConfig(off, b)
				}
				if pciOverlaps(off, len(b), r.tr.pciCfgAt+pciCfgData, 4) {
					// The window may have written the table: follow it.
					m.mu.Lock()
					model = newMSIXImage(m.entries)
					m.mu.Unlock()
				}
			}
			m.mu.Lock()
			ok := model.matches(m.entries)
			m.mu.Unlock()
			if !ok {
				t.Fatalf("MSI-X table differs from what was written to it")
			}
		}
		_, _, notifies := r.dev.state()
		for _, q := range notifies {
			if q < 0 || q >= 2 {
				t.Fatalf("device notified of queue %d of 2", q)
			}
		}
	})
}

// msixImage is the MSI-X table as the bytes a guest wrote to it (PCI
// 3.0, 6.8.2): address, data, vector control, 16 bytes per entry.
type msixImage []byte

func newMSIXImage(entries []msixEntry) msixImage {
	img := make(msixImage, 16*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(img[16*i:], e.addr)
		binary.LittleEndian.PutUint32(img[16*i+8:], e.data)
		if e.masked {
			img[16*i+12] = 1
		}
	}
	return img
}

// matches reports whether entries hold what img says: the message, and
// the mask bit, the only bit of vector control defined. It runs after
// every access, so it compares in place rather than building images.
func (img msixImage) matches(entries []msixEntry) bool {
	if len(img) != 16*len(entries) {
		return false
	}
	le := binary.LittleEndian
	for i, e := range entries {
		m := img[16*i:]
		if le.Uint64(m) != e.addr || le.Uint32(m[8:]) != e.data || (m[12]&1 != 0) != e.masked {
			return false
		}
	}
	return true
}

// checkTransportRead checks a BAR read of b at off.
func checkTransportRead(t *testing.T, tr *Transport, off uint64, b []byte) {
	t.Helper()
	n := uint64(len(b))
	le := binary.LittleEndian
	field := func(at, size uint64) (uint64, bool) { // the field, if b holds it whole
		if off > pciCommonOff+at || off+n < pciCommonOff+at+size {
			return 0, false
		}
		v := make([]byte, 8)
		copy(v, b[pciCommonOff+at-off:pciCommonOff+at-off+size])
		return le.Uint64(v), true
	}
	switch {
	case off < pciISROff:
		entries := uint64(tr.msix.size())
		for _, at := range []uint64{ccMSIXConfig, ccQueueMSIXVector} {
			if v, ok := field(at, 2); ok && v >= entries && v != NoVector {
				t.Fatalf("vector register %#x reads %d, table of %d", at, v, entries)
			}
		}
		if v, ok := field(ccNumQueues, 2); ok && v != 2 {
			t.Fatalf("num_queues reads %d", v)
		}
		sel, okSel := field(ccQueueSelect, 2)
		if size, ok := field(ccQueueSize, 2); okSel && ok && sel >= 2 && size != 0 {
			t.Fatalf("queue %d of 2 has size %d", sel, size)
		}
	case off < pciDeviceOff:
		if off == pciISROff && b[0]&^(isrQueue|isrConfig) != 0 {
			t.Fatalf("ISR reads %#x", b[0])
		}
	case off >= pciMSIXOff && off < pciPBAOff:
		if !tableAccess(off-pciMSIXOff, n) || (off-pciMSIXOff)/16 >= uint64(tr.msix.size()) {
			if !bytes.Equal(b, make([]byte, n)) {
				t.Fatalf("MSI-X table read at %#x of %d bytes: %x, want zeros", off, n, b)
			}
		}
	case off >= pciPBAOff && off < pciNotifyOff:
		var pba [8]byte
		copy(pba[:], b)
		bits := le.Uint64(pba[:])
		if !tableAccess(off-pciPBAOff, n) {
			bits = ^uint64(0) // nothing may read back
		} else if first := (off - pciPBAOff) * 8; first < uint64(tr.msix.size()) {
			bits &^= 1<<(uint64(tr.msix.size())-first) - 1 // bits of entries that exist
		}
		if pba != [8]byte{} && bits != 0 {
			t.Fatalf("PBA read at %#x of %d bytes: %x, table of %d", off, n, b, tr.msix.size())
		}
	}
}
