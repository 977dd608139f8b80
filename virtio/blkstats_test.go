package virtio

import (
	"testing"
)

// TestBlockStats: each completed request is counted with its bytes and
// some service time, failures and guest mistakes in their own counters;
// GET_ID and unknown requests are not block I/O.
func TestBlockStats(t *testing.T) {
	path, _ := testImage(t, "disk.img", 16)
	e := newBlkEnv(t, path, false, blkFFlush)
	reqs := []struct {
		name string
		bufs []testBuf
		want byte
	}{
		{"read 2 sectors", []testBuf{rd(blkHeader(blkTIn, 3)), wr(1024), wr(1)}, blkSOK},
		{"read 1 sector", []testBuf{rd(blkHeader(blkTIn, 0)), wr(513)}, blkSOK},
		{"write 3 sectors at 5", []testBuf{rd(blkHeader(blkTOut, 5)), rd(make([]byte, 1536)), wr(1)}, blkSOK},
		{"write 1 sector at 1", []testBuf{rd(blkHeader(blkTOut, 1)), rd(make([]byte, 512)), wr(1)}, blkSOK},
		{"flush", []testBuf{rd(blkHeader(blkTFlush, 0)), wr(1)}, blkSOK},
		{"read past the end", []testBuf{rd(blkHeader(blkTIn, 16)), wr(513)}, blkSIOErr},
		{"partial sector write", []testBuf{rd(blkHeader(blkTOut, 0)), rd(make([]byte, 100)), wr(1)}, blkSIOErr},
		{"get id", []testBuf{rd(blkHeader(blkTGetID, 0)), wr(21)}, blkSOK},
		{"unknown type", []testBuf{rd(blkHeader(99, 0)), wr(1)}, blkSUnsupp},
	}
	for _, r := range reqs {
		if _, st := e.do(r.bufs...); st != r.want {
			t.Fatalf("%s: status %d, want %d", r.name, st, r.want)
		}
	}
	s := e.b.Stats()
	want := BlockStats{
		ReadBytes: 1536, WriteBytes: 2048,
		ReadOps: 2, WriteOps: 2, FlushOps: 1,
		InvalidReadOps: 1, InvalidWriteOps: 1,
		WriteHighestOffset: 8 * SectorSize,
	}
	if s.ReadTimeNs == 0 || s.WriteTimeNs == 0 || s.FlushTimeNs == 0 {
		t.Errorf("service times not counted: %+v", s)
	}
	s.ReadTimeNs, s.WriteTimeNs, s.FlushTimeNs = 0, 0, 0
	if s != want {
		t.Errorf("stats\n got %+v\nwant %+v", s, want)
	}

	// A write to a read-only disk fails on the host side.
	rpath, _ := testImage(t, "ro.img", 8)
	ro := newBlkEnv(t, rpath, true, blkFFlush)
	if _, st := ro.do(rd(blkHeader(blkTOut, 0)), rd(make([]byte, 512)), wr(1)); st != blkSIOErr {
		t.Fatalf("write to read-only disk: status %d", st)
	}
	if s := ro.b.Stats(); s.FailedWriteOps != 1 || s.WriteOps != 0 || s.WriteBytes != 0 {
		t.Errorf("read-only write: %+v", s)
	}
}
