package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// msixEntry is one MSI-X table entry (PCI 3.0, 6.8.2.6) and its delivery
// state.
type msixEntry struct {
	addr    uint64
	data    uint32
	masked  bool // vector control bit 0
	pending bool // the PBA bit: fired while masked

	vec MSIVector
	// routed says vec carries addr/data already: the message is handed
	// to the controller (a KVM route update) only when it can be used.
	routed             bool
	routedAddr         uint64
	routedData         uint32
	routeErrorReported bool
}

// msix emulates the MSI-X table, the PBA and the capability's enable
// and function-mask bits for one function.
type msix struct {
	mu      sync.Mutex
	enabled bool
	fmask   bool // function mask
	// busMaster mirrors the command register's Bus Master Enable: an
	// MSI-X message is a memory write, which a function without it must
	// not make (PCI 3.0, 6.2.2); QEMU's bus-master address space drops
	// it likewise.
	busMaster bool
	entries   []msixEntry
}

func newMSIX(ctrl MSIController, n int) (*msix, error) {
	m := &msix{entries: make([]msixEntry, n)}
	for i := range m.entries {
		v, err := ctrl.NewVector()
		if err != nil {
			m.close()
			return nil, fmt.Errorf("MSI-X vector %d: %w", i, err)
		}
		// Entries come out of reset masked (PCI 3.0, 6.8.2.9).
		m.entries[i] = msixEntry{vec: v, masked: true}
	}
	return m, nil
}

func (m *msix) size() int { return len(m.entries) }

// reset disables MSI-X and masks and clears every entry, as at power-on;
// the vectors (and their KVM routes) are kept for reuse.
func (m *msix) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled, m.fmask, m.busMaster = false, false, false
	for i := range m.entries {
		e := &m.entries[i]
		e.addr, e.data, e.masked, e.pending = 0, 0, true, false
	}
}

func (m *msix) close() error {
	var errs []error
	for i := range m.entries {
		if v := m.entries[i].vec; v != nil {
			errs = append(errs, v.Close())
			m.entries[i].vec = nil
		}
	}
	return errors.Join(errs...)
}

// checkVector returns v if the table has that entry, else NoVector.
func (m *msix) checkVector(v uint16) uint16 {
	if int(v) < len(m.entries) {
		return v
	}
	return NoVector
}

func (m *msix) isEnabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// deliverable reports whether entry i may send its message now; mu must
// be held.
func (m *msix) deliverable(i int) bool {
	return m.enabled && !m.fmask && !m.entries[i].masked
}

// route hands entry i's message to the controller if it changed since
// the last time; mu must be held.
func (m *msix) route(i int) error {
	e := &m.entries[i]
	if e.vec == nil {
		return errors.New("vector closed")
	}
	if e.routed && e.routedAddr == e.addr && e.routedData == e.data {
		return nil
	}
	if err := e.vec.SetMessage(e.addr, e.data); err != nil {
		e.routed = false
		return err
	}
	e.routed, e.routedAddr, e.routedData = true, e.addr, e.data
	return nil
}

// fire sends vector v, or sets its pending bit while it is masked. With
// MSI-X disabled or v out of range (NO_VECTOR) nothing is sent: INTx is
// not implemented, and Linux always uses MSI-X for virtio-pci.
func (m *msix) fire(v uint16) error {
	m.mu.Lock()
	if !m.enabled || !m.busMaster || int(v) >= len(m.entries) {
		m.mu.Unlock()
		return nil
	}
	e := &m.entries[v]
	if m.fmask || e.masked {
		e.pending = true
		m.mu.Unlock()
		return nil
	}
	if err := m.route(int(v)); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("MSI-X vector %d: %w", v, err)
	}
	vec := e.vec
	m.mu.Unlock()
	// Sent outside the lock: a mask racing with an interrupt in flight
	// may lose to it, as on hardware.
	return vec.Fire()
}

// setBusMaster follows the command register's Bus Master Enable. Without
// it a pending entry stays pending as it unmasks; once it is back, the
// unmasked entries' pending messages go out, as an unmask would send them.
func (m *msix) setBusMaster(on bool) {
	m.mu.Lock()
	var vecs []MSIVector
	if on && !m.busMaster {
		m.busMaster = true
		vecs = m.unmaskedLocked()
	}
	m.busMaster = on
	m.mu.Unlock()
	fireVectors(vecs) // nil unless the bit came back
}

// isBusMaster reports the command register's Bus Master Enable.
func (m *msix) isBusMaster() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busMaster
}

// setControl applies the capability's enable and function-mask bits.
func (m *msix) setControl(enabled, fmask bool) {
	m.mu.Lock()
	m.enabled, m.fmask = enabled, fmask
	vecs := m.unmaskedLocked()
	m.mu.Unlock()
	fireVectors(vecs)
}

// unmaskedLocked routes every deliverable entry and collects those with
// a pending bit to fire now, clearing the bit; mu must be held.
func (m *msix) unmaskedLocked() []MSIVector {
	var out []MSIVector
	for i := range m.entries {
		if !m.deliverable(i) {
			continue
		}
		e := &m.entries[i]
		if err := m.route(i); err != nil {
			if !e.routeErrorReported {
				e.routeErrorReported = true
				pciLogf("MSI-X vector %d: %v", i, err)
			}
			continue
		}
		if e.pending && m.busMaster {
			e.pending = false
			out = append(out, e.vec)
		}
	}
	return out
}

func fireVectors(vecs []MSIVector) {
	for _, v := range vecs {
		if err := v.Fire(); err != nil {
			pciLogf("MSI-X: %v", err)
		}
	}
}

// tableAccess reports whether an access to the MSI-X table or PBA is one
// the spec allows: dword or qword, naturally aligned (PCI 3.0, 6.8.2).
func tableAccess(off, n uint64) bool { return (n == 4 || n == 8) && off%n == 0 }

// readTable reads the table: dword or qword accesses, naturally aligned
// (PCI 3.0, 6.8.2); others read as zero.
func (m *msix) readTable(off uint64, data []byte) {
	clear(data)
	n := uint64(len(data))
	if !tableAccess(off, n) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := uint64(0); k < n; k += 4 {
		i, field := (off+k)/16, (off+k)%16
		if i >= uint64(len(m.entries)) {
			return
		}
		e := &m.entries[i]
		var v uint32
		switch field {
		case 0:
			v = uint32(e.addr)
		case 4:
			v = uint32(e.addr >> 32)
		case 8:
			v = e.data
		case 12:
			if e.masked {
				v = 1
			}
		}
		binary.LittleEndian.PutUint32(data[k:], v)
	}
}

// writeTable writes the table. A message change of a live vector is
// re-routed at once; unmasking a vector with its pending bit set sends it.
func (m *msix) writeTable(off uint64, data []byte) {
	n := uint64(len(data))
	if !tableAccess(off, n) {
		return
	}
	m.mu.Lock()
	for k := uint64(0); k < n; k += 4 {
		i, field := (off+k)/16, (off+k)%16
		if i >= uint64(len(m.entries)) {
			break
		}
		e := &m.entries[i]
		v := binary.LittleEndian.Uint32(data[k:])
		switch field {
		case 0:
			e.addr = e.addr&^0xffffffff | uint64(v)
		case 4:
			e.addr = e.addr&0xffffffff | uint64(v)<<32
		case 8:
			e.data = v
		case 12:
			e.masked = v&1 != 0
		}
	}
	vecs := m.unmaskedLocked()
	m.mu.Unlock()
	fireVectors(vecs)
}

// readPBA reads the pending bit array: bit i of the array is entry i.
func (m *msix) readPBA(off uint64, data []byte) {
	clear(data)
	n := uint64(len(data))
	if !tableAccess(off, n) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for b := uint64(0); b < n*8; b++ {
		i := off*8 + b
		if i >= uint64(len(m.entries)) {
			break
		}
		if m.entries[i].pending {
			data[b/8] |= 1 << (b % 8)
		}
	}
}
