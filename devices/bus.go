package devices

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/guestlog"
)

// Device handles accesses at an offset inside its range. data's length is
// the access size (1, 2, 4 or 8; port I/O up to 4). Read fills data.
//
// Implementations are called concurrently from several vCPU threads and
// must do their own locking.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// IRQLine raises or lowers one interrupt line of the VM's interrupt
// controller (implemented elsewhere over KVM_IRQ_LINE).
type IRQLine interface {
	SetLevel(high bool) error
}

// Range is one registered device window. Treat it as read-only: the bus
// keeps its ranges sorted by Base and relies on them not changing.
type Range struct {
	Name string
	Base uint64
	Size uint64
	Dev  Device
	// ID is the registration index on this bus, stable for the bus's
	// lifetime, so callers can keep per-device stats in a plain slice.
	ID int
}

// Last is the highest address inside the range (Base+Size can overflow).
func (r *Range) Last() uint64 { return r.Base + r.Size - 1 }

func (r *Range) String() string {
	return fmt.Sprintf("%s [%#x-%#x]", r.Name, r.Base, r.Last())
}

// Errors returned by Register.
var (
	ErrEmptyRange    = errors.New("range size is zero")
	ErrRangeOverflow = errors.New("range wraps past the end of the address space")
	ErrOverlap       = errors.New("range overlaps an existing range")
	ErrNilDevice     = errors.New("device is nil")
)

// maxAccess is the widest access any exit can carry (an MMIO quadword).
const maxAccess = 8

// Bus routes accesses to the device whose range contains the address.
//
// Readers never lock: the range list is an immutable sorted slice swapped
// atomically by Register, so a Register after the vCPUs started is safe.
type Bus struct {
	name   string
	ranges atomic.Pointer[[]*Range]
	// regMu serializes Register so concurrent registrations do not lose
	// each other's copy-on-write update.
	regMu sync.Mutex
	// nextID counts successful registrations; regMu must be held.
	nextID int

	unclaimed atomic.Uint64
	// log gets a line per unclaimed access, rate limited.
	log *guestlog.Logger
}

// NewBus returns an empty bus; name prefixes its log messages.
func NewBus(name string) *Bus {
	b := &Bus{name: name, log: guestlog.New(name)}
	empty := []*Range{}
	b.ranges.Store(&empty)
	return b
}

// Name returns the name given to NewBus.
func (b *Bus) Name() string { return b.name }

// Register claims [base, base+size) for dev.
func (b *Bus) Register(name string, base, size uint64, dev Device) (*Range, error) {
	if size == 0 {
		return nil, fmt.Errorf("%s: register %s at %#x: %w", b.name, name, base, ErrEmptyRange)
	}
	if size-1 > math.MaxUint64-base {
		return nil, fmt.Errorf("%s: register %s at %#x size %#x: %w", b.name, name, base, size, ErrRangeOverflow)
	}
	if dev == nil {
		return nil, fmt.Errorf("%s: register %s at %#x: %w", b.name, name, base, ErrNilDevice)
	}
	b.regMu.Lock()
	defer b.regMu.Unlock()

	r := &Range{Name: name, Base: base, Size: size, Dev: dev, ID: b.nextID}
	old := b.load()
	for _, o := range old {
		if r.Base <= o.Last() && o.Base <= r.Last() {
			return nil, fmt.Errorf("%s: register %s: %w %s", b.name, r, ErrOverlap, o)
		}
	}
	i := b.search(old, base) + 1
	next := make([]*Range, 0, len(old)+1)
	next = append(next, old[:i]...)
	next = append(next, r)
	next = append(next, old[i:]...)
	b.ranges.Store(&next)
	b.nextID++
	return r, nil
}

func (b *Bus) load() []*Range {
	if p := b.ranges.Load(); p != nil {
		return *p
	}
	return nil
}

// search returns the index of the last range with Base <= addr, or -1.
// Hand-written rather than sort.Search to keep the hot path free of
// closures.
func (b *Bus) search(rs []*Range, addr uint64) int {
	lo, hi := 0, len(rs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if rs[mid].Base <= addr {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo - 1
}

// Find returns the range containing addr, or nil if none claims it.
func (b *Bus) Find(addr uint64) *Range {
	rs := b.load()
	i := b.search(rs, addr)
	if i < 0 {
		return nil
	}
	if r := rs[i]; addr-r.Base < r.Size {
		return r
	}
	return nil
}

// Ranges returns the registered ranges sorted by base address.
func (b *Bus) Ranges() []*Range {
	rs := b.load()
	out := make([]*Range, len(rs))
	copy(out, rs)
	return out
}

// Dispatch routes one access at addr to its device. An access nobody
// claims, one that runs past the end of its range, or one of a size no
// exit can produce reads as 0xff bytes (an empty ISA bus) and is otherwise
// dropped; it returns nil in that case.
func (b *Bus) Dispatch(addr uint64, data []byte, write bool) *Range {
	r := b.Find(addr)
	n := uint64(len(data))
	// The straddle check is written as a subtraction so it cannot overflow:
	// addr-Base < Size holds, so Size-(addr-Base) is at least 1.
	if r == nil || n == 0 || n > maxAccess || n > r.Size-(addr-r.Base) {
		b.unclaimedAccess(addr, data, write)
		return nil
	}
	if write {
		r.Dev.Write(addr-r.Base, data)
	} else {
		r.Dev.Read(addr-r.Base, data)
	}
	return r
}

func (b *Bus) unclaimedAccess(addr uint64, data []byte, write bool) {
	b.unclaimed.Add(1)
	dir := "read"
	if write {
		dir = "write"
	} else {
		for i := range data {
			data[i] = 0xff
		}
	}
	b.log.Printf("unclaimed_"+dir, "unclaimed %s at %#x size %d", dir, addr, len(data))
}

// SetGuestLog makes the bus log unclaimed accesses to l (the VM's, to
// count them) instead of a logger of its own. Call it before the bus is
// used.
func (b *Bus) SetGuestLog(l *guestlog.Logger) { b.log = l }

// Unclaimed returns how many accesses no device handled.
func (b *Bus) Unclaimed() uint64 { return b.unclaimed.Load() }
