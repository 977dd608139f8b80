package exitstats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/govmm/govmm/kvm"
)

// KernelStat is one statistic as KVM's binary stats fd reports it: its
// descriptor (name, type, unit, exponent) and its raw values.
type KernelStat struct {
	kvm.StatDesc
	// Values holds one value, or one per bucket for a histogram, in raw
	// units: multiply by Scale() for Unit.
	Values []uint64
}

// Value returns the first raw value: the value of a non-histogram stat.
func (s KernelStat) Value() uint64 {
	if len(s.Values) == 0 {
		return 0
	}
	return s.Values[0]
}

// KernelVCPU is one reading of a vCPU's stats fd.
type KernelVCPU struct {
	ID    int
	Stats []KernelStat // in the order of the fd's descriptors
}

// KernelSnapshot is one reading of every stats fd of a VM.
type KernelSnapshot struct {
	VM    []KernelStat // VM-wide statistics; empty when the VM fd is absent
	VCPUs []KernelVCPU
}

// maxKernelStats bounds the statistics of one fd in a snapshot read from
// JSON: KVM has a few dozen per vCPU.
const maxKernelStats = 1024

// UnmarshalJSON reads what json.Marshal writes, refusing more than
// MaxVCPUs vCPUs or more than maxKernelStats statistics in one fd before
// it decodes them: a statistic costs ~30 times its JSON as "{}", and a
// QMP reply to govmm stat's live view may be 64 MiB (found in review).
func (s *KernelSnapshot) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	err := eachField(dec, func(key string) error {
		switch {
		case strings.EqualFold(key, "VM"):
			n, err := countElements(dec, nil)
			if err == nil && n > maxKernelStats {
				err = fmt.Errorf("kernel table: %d VM statistics, at most %d", n, maxKernelStats)
			}
			return err
		case strings.EqualFold(key, "VCPUs"):
			if err := boundVCPUs(dec, "Stats", maxKernelStats, "statistics"); err != nil {
				return fmt.Errorf("kernel table: %w", err)
			}
			return nil
		}
		return skipValue(dec)
	})
	if err != nil {
		return err
	}
	type plain KernelSnapshot // without this method
	return json.Unmarshal(b, (*plain)(s))
}

// VCPUTotal adds a non-histogram statistic over every vCPU, saturating.
// ok is false when no vCPU has a statistic of that name.
func (s KernelSnapshot) VCPUTotal(name string) (total uint64, ok bool) {
	for _, v := range s.VCPUs {
		for _, st := range v.Stats {
			if st.Name == name && !st.IsHistogram() {
				total, ok = addSat(total, st.Value()), true
			}
		}
	}
	return total, ok
}

// KernelStats reads the binary statistics fds of a VM and its vCPUs. Their
// names, types and units come from the descriptors each fd carries, so
// whatever this kernel counts is read, and nothing here knows a stat by
// name. Reading touches only the fds, never the vCPU threads. Safe for
// concurrent use.
type KernelStats struct {
	vm    *kvm.StatsFile
	vcpus []*kvm.StatsFile

	// mu serializes reads because they share buf; only readers take it.
	mu  sync.Mutex
	buf []byte
}

// NewKernelStats reads from vm (may be nil) and from one stats fd per vCPU,
// vcpus[i] being vCPU i (nil entries are skipped). It takes ownership of
// the files: Close closes them.
func NewKernelStats(vm *kvm.StatsFile, vcpus []*kvm.StatsFile) *KernelStats {
	return &KernelStats{vm: vm, vcpus: vcpus}
}

// Snapshot reads every fd once. An fd that cannot be read makes it fail as
// a whole: a reading with holes would show a vCPU as idle.
func (k *KernelStats) Snapshot() (KernelSnapshot, error) {
	if k == nil {
		return KernelSnapshot{}, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var s KernelSnapshot
	if k.vm != nil {
		stats, err := k.read(k.vm)
		if err != nil {
			return KernelSnapshot{}, fmt.Errorf("KVM stats of the VM: %w", err)
		}
		s.VM = stats
	}
	for id, f := range k.vcpus {
		if f == nil {
			continue
		}
		stats, err := k.read(f)
		if err != nil {
			return KernelSnapshot{}, fmt.Errorf("KVM stats of vCPU %d: %w", id, err)
		}
		s.VCPUs = append(s.VCPUs, KernelVCPU{ID: id, Stats: stats})
	}
	return s, nil
}

// read reads one fd; k.mu must be held (it reuses k.buf).
func (k *KernelStats) read(f *kvm.StatsFile) ([]KernelStat, error) {
	vals, buf, err := f.Read(k.buf)
	k.buf = buf
	if err != nil {
		return nil, err
	}
	stats := make([]KernelStat, len(f.Descs))
	for i, d := range f.Descs {
		stats[i] = KernelStat{StatDesc: d, Values: vals[i]}
	}
	return stats, nil
}

// descriptors returns the descriptors of the VM fd and the union of those
// of the vCPU fds (every vCPU of one kernel has the same list), each in fd
// order.
func (k *KernelStats) descriptors() (vm, vcpu []kvm.StatDesc) {
	if k == nil {
		return nil, nil
	}
	if k.vm != nil {
		vm = k.vm.Descs
	}
	seen := map[string]bool{}
	for _, f := range k.vcpus {
		if f == nil {
			continue
		}
		for _, d := range f.Descs {
			if !seen[d.Name] {
				seen[d.Name] = true
				vcpu = append(vcpu, d)
			}
		}
	}
	return vm, vcpu
}

// Close closes every stats fd.
func (k *KernelStats) Close() error {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var errs []error
	if k.vm != nil {
		errs = append(errs, k.vm.Close())
		k.vm = nil
	}
	for i, f := range k.vcpus {
		if f != nil {
			errs = append(errs, f.Close())
			k.vcpus[i] = nil
		}
	}
	return errors.Join(errs...)
}

// kernelTableTitle heads the in-kernel block of the exit table.
const kernelTableTitle = "in-kernel (KVM stats fd)"

// WriteKernelTable prints the block of in-kernel counters that goes beside
// WriteTable's user-space rows. A nil ks (the kernel has no binary stats
// fd) prints one line saying so.
func WriteKernelTable(w io.Writer, ks *KernelStats) error {
	if ks == nil {
		_, err := fmt.Fprintf(w, "%s: not available (no KVM_CAP_BINARY_STATS_FD on this host)\n", kernelTableTitle)
		return err
	}
	s, err := ks.Snapshot()
	if err != nil {
		return err
	}
	return s.WriteTable(w)
}

// WriteTable prints the non-zero cumulative counters: per-vCPU ones with
// their total over the vCPUs (and, with more than one vCPU, a column per
// vCPU), then, in a block of their own, VM-wide ones. Values are raw, in the unit of the unit column,
// as KVM counts them. Instant values, peaks and histograms are left to the
// Prometheus endpoint: a single reading of them says little.
func (s KernelSnapshot) WriteTable(w io.Writer) error {
	header := []string{"type", "unit", "total"}
	perVCPU := len(s.VCPUs) > 1
	if perVCPU {
		for _, v := range s.VCPUs {
			header = append(header, fmt.Sprintf("vCPU %d", v.ID))
		}
	}
	cells := [][]string{header}

	// Rows follow the descriptor order, which groups related counters
	// (halt_*, pf_*, *_exits) the way the kernel declares them.
	var names []string
	descs := map[string]kvm.StatDesc{}
	for _, v := range s.VCPUs {
		for _, st := range v.Stats {
			if _, ok := descs[st.Name]; !ok && st.Type == kvm.StatCumulative {
				descs[st.Name] = st.StatDesc
				names = append(names, st.Name)
			}
		}
	}
	for _, name := range names {
		total, _ := s.VCPUTotal(name)
		if total == 0 {
			continue
		}
		line := []string{printableName(name), unitLabel(descs[name]), strconv.FormatUint(total, 10)}
		if perVCPU {
			for _, v := range s.VCPUs {
				cell := "-"
				for _, st := range v.Stats {
					if st.Name == name && st.Type == kvm.StatCumulative {
						cell = strconv.FormatUint(st.Value(), 10)
					}
				}
				line = append(line, cell)
			}
		}
		cells = append(cells, line)
	}

	var b strings.Builder
	writeCells(&b, kernelTableTitle, cells, 2)
	// VM-wide counters get a block of their own: they belong to no vCPU,
	// and a column of dashes would hide that less clearly than a title.
	vmCells := [][]string{{"type", "unit", "value"}}
	for _, st := range s.VM {
		if st.Type == kvm.StatCumulative && st.Value() != 0 {
			vmCells = append(vmCells, []string{printableName(st.Name), unitLabel(st.StatDesc), strconv.FormatUint(st.Value(), 10)})
		}
	}
	if len(vmCells) > 1 {
		b.WriteByte('\n')
		writeCells(&b, kernelTableTitle+", VM-wide", vmCells, 2)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// unitLabel names the unit of a raw value: "ns" for seconds x 10^-9, "-"
// for plain counts.
func unitLabel(d kvm.StatDesc) string {
	prefixed := func(base string) string {
		if d.Exponent == 0 {
			return base
		}
		if !d.Pow2 {
			switch d.Exponent {
			case -3:
				return "m" + base
			case -6:
				return "u" + base
			case -9:
				return "n" + base
			}
			return fmt.Sprintf("%s*10^%d", base, d.Exponent)
		}
		return fmt.Sprintf("%s*2^%d", base, d.Exponent)
	}
	switch d.Unit {
	case kvm.UnitNone:
		if d.Exponent == 0 {
			return "-"
		}
		return prefixed("")
	case kvm.UnitSeconds:
		return prefixed("s")
	case kvm.UnitBytes:
		if d.Pow2 && d.Exponent%10 == 0 && d.Exponent > 0 && d.Exponent <= 30 {
			return [...]string{"KiB", "MiB", "GiB"}[d.Exponent/10-1]
		}
		return prefixed("bytes")
	case kvm.UnitCycles:
		return prefixed("cycles")
	case kvm.UnitBoolean:
		return "bool"
	}
	return d.Unit.String()
}
