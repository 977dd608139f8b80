package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testImage creates a disk image of sectors sectors whose byte i holds
// i*7 mod 251, so that any misplaced sector shows.
func testImage(t testing.TB, name string, sectors int) (string, []byte) {
	t.Helper()
	data := make([]byte, sectors*SectorSize)
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func blkHeader(typ uint32, sector uint64) []byte {
	h := make([]byte, blkHeaderLen)
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// blkEnv is a block device activated on a test driver.
type blkEnv struct {
	*testDriver
	b   *Block
	irq *testIRQ
}

func newBlkEnv(t *testing.T, path string, readOnly bool, features uint64) *blkEnv {
	t.Helper()
	b, err := NewBlock(path, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	d := newTestDriver(t, b.QueueSizes()[0])
	irq := newTestIRQ()
	if err := b.Activate(d.mem, features|FeatureVersion1, []*Queue{d.q}, irq); err != nil {
		t.Fatal(err)
	}
	return &blkEnv{testDriver: d, b: b, irq: irq}
}

// do submits one request and returns its used length and status byte
// (the last byte of the last writable buffer).
func (e *blkEnv) do(bufs ...testBuf) (n uint32, status byte) {
	e.t.Helper()
	head, addrs := e.add(bufs...)
	if err := e.b.Notify(0); err != nil {
		e.t.Fatalf("Notify: %v", err)
	}
	id, n := e.mustUsed()
	if id != uint32(head) {
		e.t.Fatalf("used id %d, want %d", id, head)
	}
	for i := len(bufs) - 1; i >= 0; i-- {
		if bufs[i].write && bufs[i].n > 0 {
			return n, e.mem[addrs[i]+uint64(bufs[i].n)-1]
		}
	}
	return n, 0xff
}

func TestBlockReadWrite(t *testing.T) {
	path, disk := testImage(t, "disk.img", 64)
	e := newBlkEnv(t, path, false, blkFFlush)

	// Read sectors 3-4 into two buffers, with the status byte in its own.
	head, addrs := e.add(rd(blkHeader(blkTIn, 3)), wr(700), wr(324), wr(1))
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if id, n := e.mustUsed(); id != uint32(head) || n != 1025 {
		t.Fatalf("used %d/%d, want %d/1025", id, n, head)
	}
	got := append(append([]byte{}, e.mem[addrs[1]:addrs[1]+700]...), e.mem[addrs[2]:addrs[2]+324]...)
	if !bytes.Equal(got, disk[3*512:5*512]) {
		t.Error("read data differs from the image")
	}
	if e.mem[addrs[3]] != blkSOK {
		t.Errorf("status %d", e.mem[addrs[3]])
	}
	if e.irq.count(0) != 1 {
		t.Errorf("%d interrupts, want 1", e.irq.count(0))
	}

	// Write sector 10 from two buffers; status shares the last buffer
	// with nothing else.
	w := bytes.Repeat([]byte("0123456789abcdef"), 32)
	if _, st := e.do(rd(blkHeader(blkTOut, 10)), rd(w[:100]), rd(w[100:]), wr(1)); st != blkSOK {
		t.Fatalf("write status %d", st)
	}
	if _, st := e.do(rd(blkHeader(blkTFlush, 0)), wr(1)); st != blkSOK {
		t.Fatalf("flush status %d", st)
	}
	f, _ := os.ReadFile(path)
	if !bytes.Equal(f[10*512:11*512], w) || !bytes.Equal(f[:10*512], disk[:10*512]) || !bytes.Equal(f[11*512:], disk[11*512:]) {
		t.Error("image after write is wrong")
	}
	// And read it back through the device.
	_, addrs = e.add(rd(blkHeader(blkTIn, 10)), wr(513))
	e.b.Notify(0)
	e.mustUsed()
	if !bytes.Equal(e.mem[addrs[1]:addrs[1]+512], w) || e.mem[addrs[1]+512] != blkSOK {
		t.Error("read back differs")
	}
}

func TestBlockGetID(t *testing.T) {
	path, _ := testImage(t, "a-rather-long-disk-image-name.img", 8)
	e := newBlkEnv(t, path, false, 0)
	_, addrs := e.add(rd(blkHeader(blkTGetID, 0)), wr(20), wr(1))
	e.b.Notify(0)
	if _, n := e.mustUsed(); n != 21 {
		t.Errorf("used len %d, want 21", n)
	}
	if got := string(e.mem[addrs[1] : addrs[1]+20]); got != "a-rather-long-disk-i" {
		t.Errorf("id %q", got)
	}
	if e.mem[addrs[2]] != blkSOK {
		t.Errorf("status %d", e.mem[addrs[2]])
	}
	// A short ID buffer gets what fits.
	path2, _ := testImage(t, "d.img", 8)
	e2 := newBlkEnv(t, path2, false, 0)
	_, addrs = e2.add(rd(blkHeader(blkTGetID, 0)), wr(21))
	e2.b.Notify(0)
	if got := e2.mem[addrs[1] : addrs[1]+21]; string(got) != "d.img\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("id buffer %q", got)
	}
}

// TestBlockBadRequests: every malformed request fails alone, with IOERR
// where a status byte exists, and the device keeps serving.
func TestBlockBadRequests(t *testing.T) {
	path, _ := testImage(t, "disk.img", 16)
	e := newBlkEnv(t, path, false, blkFFlush)
	tests := []struct {
		name string
		bufs []testBuf
		want byte
	}{
		{"read past the end", []testBuf{rd(blkHeader(blkTIn, 16)), wr(513)}, blkSIOErr},
		{"read straddling the end", []testBuf{rd(blkHeader(blkTIn, 15)), wr(1025)}, blkSIOErr},
		{"sector overflow", []testBuf{rd(blkHeader(blkTIn, 1<<62)), wr(513)}, blkSIOErr},
		{"huge sector", []testBuf{rd(blkHeader(blkTIn, ^uint64(0))), wr(513)}, blkSIOErr},
		{"write past the end", []testBuf{rd(blkHeader(blkTOut, 16)), rd(make([]byte, 512)), wr(1)}, blkSIOErr},
		{"partial sector read", []testBuf{rd(blkHeader(blkTIn, 0)), wr(101)}, blkSIOErr},
		{"partial sector write", []testBuf{rd(blkHeader(blkTOut, 0)), rd(make([]byte, 100)), wr(1)}, blkSIOErr},
		{"short header", []testBuf{rd(make([]byte, 8)), wr(1)}, blkSIOErr},
		{"no header", []testBuf{wr(513)}, blkSIOErr},
		{"unknown type", []testBuf{rd(blkHeader(99, 0)), wr(1)}, blkSUnsupp},
		{"empty read", []testBuf{rd(blkHeader(blkTIn, 0)), wr(1)}, blkSIOErr},
		{"empty write", []testBuf{rd(blkHeader(blkTOut, 0)), wr(1)}, blkSIOErr},
		{"segment above size_max", []testBuf{rd(blkHeader(blkTIn, 0)), wr(blkSizeMax + 512), wr(1)}, blkSIOErr},
	}
	for _, tt := range tests {
		if _, st := e.do(tt.bufs...); st != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, st, tt.want)
		}
	}
	// No writable byte at all: nothing to report, used with length 0.
	if n, _ := e.do(rd(blkHeader(blkTIn, 0))); n != 0 {
		t.Errorf("request without status: used len %d", n)
	}
	if _, st := e.do(rd(blkHeader(blkTIn, 0)), wr(513)); st != blkSOK {
		t.Errorf("valid read after bad ones: status %d", st)
	}
}

func TestBlockReadOnly(t *testing.T) {
	path, disk := testImage(t, "ro.img", 8)
	e := newBlkEnv(t, path, true, blkFFlush)
	if e.b.Features()&blkFRO == 0 {
		t.Error("VIRTIO_BLK_F_RO not offered")
	}
	if _, st := e.do(rd(blkHeader(blkTOut, 0)), rd(make([]byte, 512)), wr(1)); st != blkSIOErr {
		t.Errorf("write to read-only disk: status %d", st)
	}
	if _, st := e.do(rd(blkHeader(blkTFlush, 0)), wr(1)); st != blkSOK {
		t.Errorf("flush of read-only disk: status %d", st)
	}
	if _, st := e.do(rd(blkHeader(blkTIn, 1)), wr(513)); st != blkSOK {
		t.Errorf("read of read-only disk: status %d", st)
	}
	if f, _ := os.ReadFile(path); !bytes.Equal(f, disk) {
		t.Error("read-only image changed")
	}
}

func TestBlockConfig(t *testing.T) {
	path, _ := testImage(t, "disk.img", 100)
	// A trailing partial sector is not part of the disk.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("tail"))
	f.Close()
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Type() != IDBlock || b.Name() != "virtio-blk" || len(b.QueueSizes()) != 1 {
		t.Errorf("identity %d %q %v", b.Type(), b.Name(), b.QueueSizes())
	}
	want := uint64(blkFSizeMax | blkFSegMax | blkFBlkSize | blkFFlush | blkFDiscard | blkFWriteZeroes | RingFeatures)
	if b.Features() != want {
		t.Errorf("features %#x, want %#x", b.Features(), want)
	}
	cfg := make([]byte, 24)
	b.ReadConfig(0, cfg)
	if c := binary.LittleEndian.Uint64(cfg[0:]); c != 100 {
		t.Errorf("capacity %d, want 100", c)
	}
	if s := binary.LittleEndian.Uint32(cfg[8:]); s != blkSizeMax {
		t.Errorf("size_max %d", s)
	}
	if s := binary.LittleEndian.Uint32(cfg[12:]); s != blkSegMax {
		t.Errorf("seg_max %d", s)
	}
	if s := binary.LittleEndian.Uint32(cfg[20:]); s != 512 {
		t.Errorf("blk_size %d", s)
	}
	// Partial and out-of-range reads.
	part := []byte{0xff, 0xff}
	b.ReadConfig(1, part[:1])
	if part[0] != 0 {
		t.Errorf("capacity byte 1 = %d", part[0])
	}
	b.ReadConfig(1<<20, part)
	if part[0] != 0 || part[1] != 0 {
		t.Error("out-of-range config not zero")
	}
	b.WriteConfig(0, []byte{1, 2, 3, 4})
	b.ReadConfig(0, cfg[:8])
	if binary.LittleEndian.Uint64(cfg) != 100 {
		t.Error("config write changed capacity")
	}
	// The image is locked against a second writer, and a writer
	// against readers.
	if b2, err := NewBlock(path, false); err == nil {
		b2.Close()
		t.Error("second writable open of an image in use succeeded")
	}
	if b2, err := NewBlock(path, true); err == nil {
		b2.Close()
		t.Error("read-only open of an image open for writing succeeded")
	}
	ro, _ := testImage(t, "shared.img", 8)
	r1, err := NewBlock(ro, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := NewBlock(ro, true)
	if err != nil {
		t.Errorf("second read-only open: %v", err)
	} else {
		r2.Close()
	}
	if _, err := NewBlock(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Error("NewBlock of a missing file succeeded")
	}
}

// TestBlockBrokenQueue: a malformed queue breaks the device until reset,
// requests completed before it still complete.
func TestBlockBrokenQueue(t *testing.T) {
	path, _ := testImage(t, "disk.img", 8)
	e := newBlkEnv(t, path, false, 0)
	e.add(rd(blkHeader(blkTIn, 0)), wr(513))
	e.writeDesc(e.desc, 5, e.alloc(16), 16, descFlagNext, 5)
	e.publish(5)
	err := e.b.Notify(0)
	if err == nil || !strings.Contains(err.Error(), "virtio-blk") {
		t.Fatalf("Notify on a looping chain: %v", err)
	}
	e.mustUsed()
	if e.irq.count(0) != 1 {
		t.Error("completed request not signalled")
	}
	if e.b.Notify(0) == nil {
		t.Error("broken device recovered without reset")
	}
	e.b.Reset()
	if err := e.b.Notify(0); err != nil {
		t.Errorf("Notify after Reset: %v", err)
	}
	if err := e.b.Notify(1); err == nil {
		t.Error("Notify(1) on a one-queue device succeeded")
	}
	if err := e.b.Activate(e.mem, 0, []*Queue{nil}, e.irq); err == nil {
		t.Error("Activate without the queue succeeded")
	}
	if err := e.b.Close(); err != nil {
		t.Error(err)
	}
	if err := e.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.b.Activate(e.mem, 0, []*Queue{e.q}, e.irq); err == nil {
		t.Error("Activate after Close succeeded")
	}
}

// TestBlockWriteThrough: a driver without FLUSH still gets its writes.
func TestBlockWriteThrough(t *testing.T) {
	path, _ := testImage(t, "disk.img", 8)
	e := newBlkEnv(t, path, false, 0)
	w := bytes.Repeat([]byte{0x5a}, 1024)
	if _, st := e.do(rd(blkHeader(blkTOut, 6)), rd(w), wr(1)); st != blkSOK {
		t.Fatalf("status %d", st)
	}
	if f, _ := os.ReadFile(path); !bytes.Equal(f[6*512:], w) {
		t.Error("write lost")
	}
}

// blkChain publishes a request of segs data segments of segLen bytes
// each through an indirect table; the segments all alias one buffer, so
// a small memory can hold a large request. It returns the guest address
// of the status byte.
func blkChain(d *testDriver, typ uint32, sector uint64, segs int, segLen uint32) uint64 {
	d.t.Helper()
	table := d.alloc(uint32(16 * (segs + 2)))
	hdr := d.alloc(16)
	copy(d.mem[hdr:], blkHeader(typ, sector))
	d.writeDesc(table, 0, hdr, 16, descFlagNext, 1)
	data := d.alloc(segLen)
	var flags uint16 = descFlagNext
	if typ == blkTIn {
		flags |= descFlagWrite
	}
	for i := range segs {
		d.writeDesc(table, uint16(i+1), data, segLen, flags, uint16(i+2))
	}
	status := d.alloc(1)
	d.mem[status] = 0xff
	d.writeDesc(table, uint16(segs+1), status, 1, descFlagWrite, 0)
	head := d.nextDesc % d.size
	d.nextDesc++
	d.writeDesc(d.desc, head, table, uint32(16*(segs+2)), descFlagIndirect, 0)
	d.publish(head)
	return status
}

// TestBlockSegMax: the device enforces the seg_max it advertises, and
// a request at the limit works.
func TestBlockSegMax(t *testing.T) {
	path, disk := testImage(t, "disk.img", 2048)
	e := newBlkEnv(t, path, false, 0)
	status := blkChain(e.testDriver, blkTIn, 5, blkSegMax, 512)
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := e.mustUsed(); n != blkSegMax*512+1 || e.mem[status] != blkSOK {
		t.Errorf("seg_max segments: used len %d, status %d", n, e.mem[status])
	}
	data := status - align(512, 16) // blkChain allocates data, then status
	if want := disk[(5+blkSegMax-1)*512 : (5+blkSegMax)*512]; !bytes.Equal(e.mem[data:data+512], want) {
		t.Error("last segment does not hold the last sector read")
	}
	status = blkChain(e.testDriver, blkTIn, 5, blkSegMax+1, 512)
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := e.mustUsed(); n != 1 || e.mem[status] != blkSIOErr {
		t.Errorf("seg_max+1 segments: used len %d, status %d, want 1 and IOERR", n, e.mem[status])
	}
	if s := e.b.Stats(); s.InvalidReadOps != 1 || s.ReadOps != 1 {
		t.Errorf("stats %+v, want one read and one invalid read", s)
	}
}

// sparseImage creates a sparse disk image of size bytes.
func sparseImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Skipf("sparse %d-byte image: %v", size, err)
	}
	return path
}

// TestBlockHugeReadRejected: a read of 4 GiB on a 4 GiB sparse image,
// through an indirect table of 4096 descriptors of 1 MiB (which the
// queue accepts), fails at once instead of making the device copy 4 GiB.
func TestBlockHugeReadRejected(t *testing.T) {
	path := sparseImage(t, 4<<30)
	e := newBlkEnv(t, path, false, 0)
	status := blkChain(e.testDriver, blkTIn, 0, maxIndirect-2, 1<<20)
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := e.mustUsed(); n != 1 || e.mem[status] != blkSIOErr {
		t.Errorf("4 GiB read: used len %d, status %d, want 1 and IOERR", n, e.mem[status])
	}
}

// TestBlockAbortedTransfer: a request on an aborted queue stops between
// chunks, before it moved all of its bytes, and is not completed.
func TestBlockAbortedTransfer(t *testing.T) {
	path := sparseImage(t, 1<<30)
	e := newBlkEnv(t, path, false, 0)
	e.q.abort()
	bufs := [][]byte{make([]byte, 2*blkIOChunk)}
	if err := e.b.transfer(e.q, bufs, 0, false); !errors.Is(err, errAborted) {
		t.Errorf("transfer on an aborted queue: %v, want errAborted", err)
	}
	e.add(rd(blkHeader(blkTIn, 0)), wr(512), wr(1))
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	e.noUsed()
}

// BenchmarkBlockRead4K serves one 4 KiB read per notification, with and
// without request telemetry (whose cost is the difference).
func BenchmarkBlockRead4K(b *testing.B) {
	b.Run("telemetry=off", func(b *testing.B) { benchmarkBlockRead4K(b, false) })
	b.Run("telemetry=on", func(b *testing.B) { benchmarkBlockRead4K(b, true) })
}

func benchmarkBlockRead4K(b *testing.B, telemetry bool) {
	path, _ := testImage(b, "disk.img", 2048)
	blk, err := NewBlock(path, false)
	if err != nil {
		b.Fatal(err)
	}
	defer blk.Close()
	d := newTestDriver(b, 256)
	if telemetry {
		d.q.tel = newQueueTelemetry(blk.RequestOps(0), 256)
	}
	irq := newTestIRQ()
	if err := blk.Activate(d.mem, FeatureRingEventIdx, []*Queue{d.q}, irq); err != nil {
		b.Fatal(err)
	}
	head, addrs := d.chain(rd(blkHeader(blkTIn, 0)), wr(4096), wr(1))
	b.SetBytes(4096)
	b.ResetTimer()
	for i := range b.N {
		binary.LittleEndian.PutUint64(d.mem[addrs[0]+8:], uint64(i%256)*8)
		d.publish(head)
		d.q.tel.notify()
		if err := blk.Notify(0); err != nil {
			b.Fatal(err)
		}
		if _, n, ok := d.popUsed(); !ok || n != 4097 || d.mem[addrs[2]] != blkSOK {
			b.Fatalf("request %d: used %v len %d status %d", i, ok, n, d.mem[addrs[2]])
		}
	}
}

// TestBlockMultiChunk: a request larger than blkIOChunk moves in several
// calls and still lands whole, in both directions.
func TestBlockMultiChunk(t *testing.T) {
	path, disk := testImage(t, "disk.img", 8192)
	e := newBlkEnv(t, path, false, blkFFlush)
	// Segments that chunk boundaries cut in the middle.
	lens := []uint32{blkIOChunk * 3 / 4, blkIOChunk * 3 / 4, blkSizeMax}
	_, addrs := e.add(rd(blkHeader(blkTIn, 3)), wr(lens[0]), wr(lens[1]), wr(lens[2]), wr(1))
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := e.mustUsed(); n != lens[0]+lens[1]+lens[2]+1 || e.mem[addrs[4]] != blkSOK {
		t.Fatalf("read: used len %d, status %d", n, e.mem[addrs[4]])
	}
	var got []byte
	for i, l := range lens {
		got = append(got, e.mem[addrs[i+1]:addrs[i+1]+uint64(l)]...)
	}
	if !bytes.Equal(got, disk[3*512:3*512+len(got)]) {
		t.Error("multi-chunk read returned other data")
	}
	// Write the same buffers back one sector further on.
	hdr, status := e.alloc(16), e.alloc(1)
	copy(e.mem[hdr:], blkHeader(blkTOut, 4))
	head := e.nextDesc % e.size
	descs := []struct {
		addr  uint64
		n     uint32
		flags uint16
	}{{hdr, 16, 0}, {addrs[1], lens[0], 0}, {addrs[2], lens[1], 0}, {addrs[3], lens[2], 0}, {status, 1, descFlagWrite}}
	for i, d := range descs {
		idx := e.nextDesc % e.size
		e.nextDesc++
		flags := d.flags
		if i < len(descs)-1 {
			flags |= descFlagNext
		}
		e.writeDesc(e.desc, idx, d.addr, d.n, flags, e.nextDesc%e.size)
	}
	e.publish(head)
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := e.mustUsed(); n != 1 || e.mem[status] != blkSOK {
		t.Fatalf("write: used len %d, status %d", n, e.mem[status])
	}
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f[4*512:4*512+len(got)], got) {
		t.Error("multi-chunk write stored other data")
	}
}

// blkSegment is one struct virtio_blk_discard_write_zeroes.
func blkSegment(sector uint64, n, flags uint32) []byte {
	b := binary.LittleEndian.AppendUint64(nil, sector)
	b = binary.LittleEndian.AppendUint32(b, n)
	return binary.LittleEndian.AppendUint32(b, flags)
}

// A write that finds no space on the host is kept, not failed: the hook
// SetNoSpace gave is told once, later writes are kept too, reads go on,
// and after Resume the kept writes run again and succeed once there is
// room. They failed with IOERR, and the guest's file system lost them (an
// audit: QEMU's werror=enospc pauses the VM instead).
func TestBlockKeepsWritesWithoutSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 4<<20); err != nil { // sparse: bigger than the file system
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()

	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var stops []error
	b.SetNoSpace(func(err error) { stops = append(stops, err) })
	d := newTestDriver(t, b.QueueSizes()[0])
	if err := b.Activate(d.mem, blkFFlush|blkFWriteZeroes|FeatureVersion1, []*Queue{d.q}, newTestIRQ()); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 4096)
	status := func(addrs []uint64) byte { return d.mem[addrs[len(addrs)-1]] }
	w1, w1addrs := d.add(rd(blkHeader(blkTOut, 0)), rd(data), wr(1))
	w2, w2addrs := d.add(rd(blkHeader(blkTOut, 2048)), rd(data), wr(1))
	// Zeroes written in place (no unmap) take space too.
	wz, wzaddrs := d.add(rd(blkHeader(blkTWriteZeroes, 0)), rd(blkSegment(4096, 8, 0)), wr(1))
	if err := b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if n := d.usedIdx(); n != 0 {
		t.Fatalf("%d requests used with no space on the host, want all kept", n)
	}
	if len(stops) != 1 || !errors.Is(stops[0], unix.ENOSPC) {
		t.Fatalf("SetNoSpace's hook told %v, want ENOSPC once", stops)
	}
	// Reads go on; the kept writes wait for Resume, however often the
	// queue is served.
	r, _ := d.add(rd(blkHeader(blkTIn, 0)), wr(4096), wr(1))
	if err := b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if id, _ := d.mustUsed(); id != uint32(r) {
		t.Fatalf("used %d, want the read %d", id, r)
	}
	if err := b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if n := d.usedIdx(); n != 1 {
		t.Fatalf("%d requests used before Resume, want the read alone", n)
	}
	// Room is made; the VM resumes.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	b.Resume()
	if err := b.Notify(0); err != nil {
		t.Fatal(err)
	}
	// In the order they failed, which the queue's workers decide.
	used := map[uint32]bool{}
	for range 3 {
		id, _ := d.mustUsed()
		used[uint32(id)] = true
	}
	if !used[uint32(w1)] || !used[uint32(w2)] || !used[uint32(wz)] {
		t.Fatalf("used %v, want the kept requests %d, %d and %d", used, w1, w2, wz)
	}
	for _, addrs := range [][]uint64{w1addrs, w2addrs, wzaddrs} {
		if st := status(addrs); st != blkSOK {
			t.Fatalf("a kept request ended with status %d, want OK", st)
		}
	}
	got := make([]byte, 4096)
	img, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, off := range []int64{0, 2048 * SectorSize} {
		if _, err := img.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("image at %d after the retry: %v, data equal %v", off, err, bytes.Equal(got, data))
		}
	}
	if len(stops) != 1 {
		t.Errorf("hook told %d times, want once", len(stops))
	}
}

// Once an fdatasync of the image has failed, every later flush fails too,
// and so does Close: Linux marks the pages it could not write clean, and
// the next fdatasync succeeds with their data lost (an audit: a guest
// retrying its fsync was told its data was safe).
func TestBlockFlushFailureSticks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, b.QueueSizes()[0])
	if err := b.Activate(d.mem, blkFFlush|FeatureVersion1, []*Queue{d.q}, newTestIRQ()); err != nil {
		t.Fatal(err)
	}
	flush := func() byte {
		t.Helper()
		_, addrs := d.add(rd(blkHeader(blkTFlush, 0)), wr(1))
		if err := b.Notify(0); err != nil {
			t.Fatal(err)
		}
		d.mustUsed()
		return d.mem[addrs[len(addrs)-1]]
	}
	if st := flush(); st != blkSOK {
		t.Fatalf("first flush: status %d, want OK", st)
	}
	// An fdatasync that fails: on a pipe, EINVAL.
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	image := b.fd
	b.fd = p[1]
	if st := flush(); st != blkSIOErr {
		t.Fatalf("flush whose fdatasync fails: status %d, want IOERR", st)
	}
	b.fd = image
	for i := range 2 {
		if st := flush(); st != blkSIOErr {
			t.Errorf("flush %d after the failure: status %d, want IOERR", i, st)
		}
	}
	if err := b.Close(); err == nil || !strings.Contains(err.Error(), "fdatasync of the image failed") {
		t.Errorf("Close after a failed flush: %v, want the failure", err)
	}
}

// Reads behind others on the ring are served on the queue's loop when
// the host's page cache holds their data (preadv2 RWF_NOWAIT), and by
// workers when it does not; either way each gets its own sectors.
func TestBlockCachedReads(t *testing.T) {
	path, disk := testImage(t, "disk.img", 64)
	for _, cached := range []bool{true, false} {
		e := newBlkEnv(t, path, false, 0)
		if !cached {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			unix.Fdatasync(int(f.Fd()))
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
		const n = 16
		heads := map[uint32]uint64{} // head -> sector
		bufs := map[uint32][]uint64{}
		for i := range n {
			sector := uint64(i * 3 % 64)
			head, addrs := e.add(rd(blkHeader(blkTIn, sector)), wr(512), wr(1))
			heads[uint32(head)], bufs[uint32(head)] = sector, addrs
		}
		if err := e.b.Notify(0); err != nil {
			t.Fatal(err)
		}
		for range n {
			id, used := e.mustUsed()
			sector, ok := heads[id]
			if !ok || used != 513 {
				t.Fatalf("cached %v: used %d/%d", cached, id, used)
			}
			a := bufs[id]
			if !bytes.Equal(e.mem[a[1]:a[1]+512], disk[sector*512:(sector+1)*512]) || e.mem[a[2]] != blkSOK {
				t.Fatalf("cached %v: sector %d read wrong (status %d)", cached, sector, e.mem[a[2]])
			}
			delete(heads, id)
		}
		got := e.b.cachedReads.Load()
		switch {
		case e.b.noNowait.Load():
			t.Logf("this host's file system refuses RWF_NOWAIT: every read went the blocking way")
		case cached && got != n-1:
			// The last one available is served on the loop the ordinary way.
			t.Errorf("%d of %d reads served from the page cache, want %d", got, n, n-1)
		case !cached:
			// The first read brings the whole small image in (readahead).
			t.Logf("after the cache was dropped, %d of %d reads served from it", got, n)
		}
		e.b.Close()
	}
}
