package devices

import (
	"github.com/govmm/govmm/guestlog"

	"bytes"
	"errors"
	"log"
	"math"
	"strings"
	"sync"
	"testing"
)

// recorder is a Device that remembers its last access.
type recorder struct {
	mu     sync.Mutex
	offset uint64
	size   int
	write  bool
	calls  int
	fill   byte
}

func (r *recorder) Read(offset uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offset, r.size, r.write = offset, len(data), false
	r.calls++
	for i := range data {
		data[i] = r.fill
	}
}

func (r *recorder) Write(offset uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offset, r.size, r.write = offset, len(data), true
	r.calls++
}

// captureLog redirects the standard logger for the test's duration.
func captureLog(t *testing.T) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	out, flags := log.Writer(), log.Flags()
	log.SetOutput(&buf)
	log.SetFlags(0)
	t.Cleanup(func() {
		log.SetOutput(out)
		log.SetFlags(flags)
	})
	return &buf
}

func TestRegister(t *testing.T) {
	b := NewBus("pio")
	if _, err := b.Register("a", 0x100, 0x10, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Register("top", math.MaxUint64-0xf, 0x10, &recorder{}); err != nil {
		t.Fatalf("range ending at the top of the address space: %v", err)
	}
	tests := []struct {
		name       string
		base, size uint64
		dev        Device
		want       error
	}{
		{"zero size", 0x200, 0, &recorder{}, ErrEmptyRange},
		{"overflow", math.MaxUint64 - 1, 3, &recorder{}, ErrRangeOverflow},
		{"nil device", 0x200, 1, nil, ErrNilDevice},
		{"same range", 0x100, 0x10, &recorder{}, ErrOverlap},
		{"overlap start", 0xf8, 0x10, &recorder{}, ErrOverlap},
		{"overlap end", 0x10f, 1, &recorder{}, ErrOverlap},
		{"inside", 0x104, 2, &recorder{}, ErrOverlap},
		{"covering", 0x0, 0x1000, &recorder{}, ErrOverlap},
		{"overlap top", math.MaxUint64, 1, &recorder{}, ErrOverlap},
		{"adjacent below", 0xf0, 0x10, &recorder{}, nil},
		{"adjacent above", 0x110, 0x10, &recorder{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Register(tt.name, tt.base, tt.size, tt.dev)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Register(%#x, %#x) = %v, want %v", tt.base, tt.size, err, tt.want)
			}
		})
	}
	rs := b.Ranges()
	wantNames := []string{"adjacent below", "a", "adjacent above", "top"}
	wantIDs := []int{2, 0, 3, 1}
	if len(rs) != len(wantNames) {
		t.Fatalf("got %d ranges, want %d", len(rs), len(wantNames))
	}
	for i, r := range rs {
		if r.Name != wantNames[i] || r.ID != wantIDs[i] {
			t.Errorf("range %d = %s id %d, want %s id %d", i, r.Name, r.ID, wantNames[i], wantIDs[i])
		}
	}
}

func TestFind(t *testing.T) {
	b := NewBus("pio")
	for _, r := range []struct {
		name       string
		base, size uint64
	}{{"serial", 0x3f8, 8}, {"rtc", 0x70, 2}, {"post", 0x80, 1}, {"top", math.MaxUint64, 1}} {
		if _, err := b.Register(r.name, r.base, r.size, &recorder{}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		addr uint64
		want string
	}{
		{0, ""},
		{0x6f, ""},
		{0x70, "rtc"},
		{0x71, "rtc"},
		{0x72, ""},
		{0x7f, ""},
		{0x80, "post"},
		{0x81, ""},
		{0x3f7, ""},
		{0x3f8, "serial"},
		{0x3ff, "serial"},
		{0x400, ""},
		{math.MaxUint64 - 1, ""},
		{math.MaxUint64, "top"},
	}
	for _, tt := range tests {
		r := b.Find(tt.addr)
		got := ""
		if r != nil {
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("Find(%#x) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if r := NewBus("empty").Find(0); r != nil {
		t.Errorf("empty bus Find(0) = %v", r)
	}
}

func TestDispatch(t *testing.T) {
	logs := captureLog(t)
	b := NewBus("mmio")
	dev := &recorder{fill: 0x5a}
	if _, err := b.Register("dev", 0x1000, 0x10, dev); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		addr      uint64
		size      int
		write     bool
		claimed   bool
		wantOff   uint64
		unclaimed uint64 // counter after the access
	}{
		{"read start", 0x1000, 4, false, true, 0, 0},
		{"write last byte", 0x100f, 1, true, true, 0xf, 0},
		{"read last quad", 0x1008, 8, false, true, 8, 0},
		{"read unclaimed", 0x2000, 4, false, false, 0, 1},
		{"write unclaimed", 0x2000, 4, true, false, 0, 2},
		{"straddle end", 0x100e, 4, false, false, 0, 3},
		{"straddle start", 0xffe, 4, false, false, 0, 4},
		{"zero size", 0x1000, 0, false, false, 0, 5},
		{"too wide", 0x1000, 16, false, false, 0, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dev.calls
			data := make([]byte, tt.size)
			r := b.Dispatch(tt.addr, data, tt.write)
			if (r != nil) != tt.claimed {
				t.Fatalf("Dispatch returned %v, claimed want %v", r, tt.claimed)
			}
			if tt.claimed {
				if dev.calls != before+1 || dev.offset != tt.wantOff || dev.size != tt.size || dev.write != tt.write {
					t.Errorf("device saw off %#x size %d write %v, want off %#x size %d write %v",
						dev.offset, dev.size, dev.write, tt.wantOff, tt.size, tt.write)
				}
				if !tt.write && !bytes.Equal(data, bytes.Repeat([]byte{0x5a}, tt.size)) {
					t.Errorf("read data % x, want device fill", data)
				}
			} else {
				if dev.calls != before {
					t.Errorf("device was called for an unclaimed access")
				}
				if !tt.write && !bytes.Equal(data, bytes.Repeat([]byte{0xff}, tt.size)) {
					t.Errorf("unclaimed read data % x, want all 0xff", data)
				}
			}
			if got := b.Unclaimed(); got != tt.unclaimed {
				t.Errorf("Unclaimed() = %d, want %d", got, tt.unclaimed)
			}
		})
	}
	for _, want := range []string{"mmio: unclaimed read at 0x2000 size 4", "0x100e", "0xffe"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q; log:\n%s", want, logs)
		}
	}
}

// TestUnclaimedLogIsBounded: a guest probing many unclaimed addresses
// gets a burst of log lines, not one per access; every access counts.
func TestUnclaimedLogIsBounded(t *testing.T) {
	logs := captureLog(t)
	b := NewBus("pio")
	var data [1]byte
	const probes = 10000
	for a := uint64(0); a < probes; a++ {
		b.Dispatch(a, data[:], false)
	}
	if got := strings.Count(logs.String(), "\n"); got != guestlog.Burst {
		t.Errorf("%d log lines for %d probes, want %d", got, probes, guestlog.Burst)
	}
	if got := b.Unclaimed(); got != probes {
		t.Errorf("Unclaimed() = %d", got)
	}
	if got := b.log.Counts()["unclaimed_read"]; got != probes {
		t.Errorf("logger counted %d, want %d", got, probes)
	}
}

func TestRegisterWhileDispatching(t *testing.T) {
	b := NewBus("pio")
	if _, err := b.Register("first", 0, 1, &recorder{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			var data [1]byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				if b.Dispatch(0, data[:], false) == nil {
					t.Error("range 0 lost during concurrent Register")
					return
				}
			}
		})
	}
	for i := uint64(1); i <= 200; i++ {
		if _, err := b.Register("r", i*2, 1, &recorder{}); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := len(b.Ranges()); got != 201 {
		t.Errorf("%d ranges, want 201", got)
	}
}

func BenchmarkDispatch(b *testing.B) {
	bus := NewBus("pio")
	for i := uint64(0); i < 32; i++ {
		if _, err := bus.Register("r", i*0x10, 8, NewDiscard(0)); err != nil {
			b.Fatal(err)
		}
	}
	var data [1]byte
	for b.Loop() {
		bus.Dispatch(0x1f3, data[:], false)
	}
}
