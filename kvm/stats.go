package kvm

import (
	"encoding/binary"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// StatType is the kind of one binary statistic (KVM_STATS_TYPE_*).
type StatType uint8

// Statistic types.
const (
	StatCumulative StatType = 0
	StatInstant    StatType = 1
	StatPeak       StatType = 2
	StatLinearHist StatType = 3
	StatLogHist    StatType = 4
)

var statTypeNames = [...]string{"cumulative", "instant", "peak", "linear-hist", "log-hist"}

func (t StatType) String() string {
	if int(t) < len(statTypeNames) {
		return statTypeNames[t]
	}
	return fmt.Sprintf("StatType(%d)", uint8(t))
}

// StatUnit is the unit of one binary statistic (KVM_STATS_UNIT_*).
type StatUnit uint8

// Statistic units.
const (
	UnitNone    StatUnit = 0
	UnitBytes   StatUnit = 1
	UnitSeconds StatUnit = 2
	UnitCycles  StatUnit = 3
	UnitBoolean StatUnit = 4
)

var statUnitNames = [...]string{"none", "bytes", "seconds", "cycles", "boolean"}

func (u StatUnit) String() string {
	if int(u) < len(statUnitNames) {
		return statUnitNames[u]
	}
	return fmt.Sprintf("StatUnit(%d)", uint8(u))
}

// StatDesc describes one statistic, read from the fd's descriptor block.
type StatDesc struct {
	Name       string
	Type       StatType
	Unit       StatUnit
	Pow2       bool  // base of Exponent: 2 if set, else 10
	Exponent   int16 // value * base^Exponent is in Unit
	Size       int   // number of uint64 values (buckets for histograms)
	BucketSize uint32
	offset     uint32
}

// StatsFile is a KVM binary statistics fd (Documentation/virt/kvm/api.rst,
// KVM_GET_STATS_FD). The descriptors are read once; values are read with
// one pread per Read call.
type StatsFile struct {
	fd      int
	ID      string
	Descs   []StatDesc
	dataOff int64
	dataLen int
}

// Scale is what a raw value is multiplied by to be in Unit: base^Exponent
// (1e-9 for a nanosecond count in seconds).
func (d StatDesc) Scale() float64 {
	if d.Pow2 {
		return math.Ldexp(1, int(d.Exponent))
	}
	return math.Pow10(int(d.Exponent))
}

// IsHistogram reports whether the statistic has one value per bucket.
func (d StatDesc) IsHistogram() bool {
	return d.Type == StatLinearHist || d.Type == StatLogHist
}

// BucketUpperBound returns the inclusive upper bound, in raw units, of
// bucket i of a histogram, or ok false for the last bucket, which takes
// every larger value, and for anything that is not a bucket. KVM files a
// value v in bucket v/BucketSize (linear) or fls64(v) (logarithmic: bucket 0
// holds 0, bucket i > 0 holds 2^(i-1) to 2^i - 1), capped at the last one.
func (d StatDesc) BucketUpperBound(i int) (bound uint64, ok bool) {
	if !d.IsHistogram() || i < 0 || i >= d.Size-1 {
		return 0, false
	}
	if d.Type == StatLinearHist {
		if d.BucketSize == 0 {
			return 0, false
		}
		return uint64(i+1)*uint64(d.BucketSize) - 1, true
	}
	if i >= 64 {
		return 0, false // fls64 never exceeds 64: later buckets stay empty
	}
	return 1<<i - 1, true
}

const statsHeaderSize = 24

func openStats(ownerFD int) (*StatsFile, error) {
	fd, err := ioctl(ownerFD, reqGetStatsFD, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_STATS_FD: %w", err)
	}
	unix.CloseOnExec(int(fd))
	s := &StatsFile{fd: int(fd)}
	if err := s.readDescriptors(); err != nil {
		unix.Close(int(fd))
		return nil, err
	}
	return s, nil
}

func (s *StatsFile) readDescriptors() error {
	hdr := make([]byte, statsHeaderSize)
	if _, err := unix.Pread(s.fd, hdr, 0); err != nil {
		return fmt.Errorf("read stats header: %w", err)
	}
	le := binary.LittleEndian
	nameSize := le.Uint32(hdr[4:])
	numDesc := le.Uint32(hdr[8:])
	idOff := le.Uint32(hdr[12:])
	descOff := le.Uint32(hdr[16:])
	dataOff := le.Uint32(hdr[20:])
	if nameSize == 0 || nameSize > 4096 || numDesc > 65536 {
		return fmt.Errorf("stats header: name size %d, %d descriptors", nameSize, numDesc)
	}
	id := make([]byte, nameSize)
	if _, err := unix.Pread(s.fd, id, int64(idOff)); err != nil {
		return fmt.Errorf("read stats id: %w", err)
	}
	s.ID = cstring(id)
	descSize := 16 + int(nameSize)
	descs := make([]byte, descSize*int(numDesc))
	if _, err := unix.Pread(s.fd, descs, int64(descOff)); err != nil {
		return fmt.Errorf("read stats descriptors: %w", err)
	}
	for i := 0; i < int(numDesc); i++ {
		d := descs[i*descSize : (i+1)*descSize]
		flags := le.Uint32(d[0:])
		desc := StatDesc{
			Type:       StatType(flags & 0xf),
			Unit:       StatUnit(flags >> 4 & 0xf),
			Pow2:       flags>>8&0xf == 1,
			Exponent:   int16(le.Uint16(d[4:])),
			Size:       int(le.Uint16(d[6:])),
			offset:     le.Uint32(d[8:]),
			BucketSize: le.Uint32(d[12:]),
			Name:       cstring(d[16:]),
		}
		if end := int(desc.offset) + 8*desc.Size; end > s.dataLen {
			s.dataLen = end
		}
		s.Descs = append(s.Descs, desc)
	}
	s.dataOff = int64(dataOff)
	return nil
}

// Read returns the current values: one slice per descriptor, in order
// (a histogram has one value per bucket). buf is reused when large enough.
func (s *StatsFile) Read(buf []byte) ([][]uint64, []byte, error) {
	if cap(buf) < s.dataLen {
		buf = make([]byte, s.dataLen)
	}
	buf = buf[:s.dataLen]
	if _, err := unix.Pread(s.fd, buf, s.dataOff); err != nil {
		return nil, buf, fmt.Errorf("read stats: %w", err)
	}
	out := make([][]uint64, len(s.Descs))
	for i, d := range s.Descs {
		vals := make([]uint64, d.Size)
		for j := range vals {
			vals[j] = binary.LittleEndian.Uint64(buf[int(d.offset)+8*j:])
		}
		out[i] = vals
	}
	return out, buf, nil
}

// Close closes the statistics fd.
func (s *StatsFile) Close() error { return unix.Close(s.fd) }

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
