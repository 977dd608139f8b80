package boot

import "fmt"

// Intel MultiProcessor Specification 1.4 structures: Linux finds its CPUs
// and interrupt routing here when there is no ACPI MADT.
const (
	mpFloatingLen  = 16
	mpConfigHdrLen = 44
	mpProcLen      = 20
	mpEntryLen     = 8 // bus, IOAPIC, I/O and local interrupt entries
	mpISAIRQs      = 16

	mpEntryProc   = 0
	mpEntryBus    = 1
	mpEntryIOAPIC = 2
	mpEntryIOInt  = 3
	mpEntryLocInt = 4

	mpIntINT    = 0
	mpIntNMI    = 1
	mpIntExtINT = 3

	mpCPUEnabled = 1
	mpCPUBSP     = 2

	lapicVersion  = 0x14 // integrated xAPIC
	ioapicVersion = 0x11
	cpuSignature  = 0x600 // family 6
	cpuFeatures   = 0x201 // FPU | APIC
	// LAPICAddr and IOAPICAddr are the architectural MMIO bases the MP table
	// announces; KVM's in-kernel irqchip sits there.
	LAPICAddr  = 0xfee00000
	IOAPICAddr = 0xfec00000
	// MaxMPCPUs: APIC IDs are 8 bits, 0xff is the broadcast ID, and the
	// IOAPIC takes the ID after the last CPU.
	MaxMPCPUs = 254
)

// MPTableSize is the size of the MP floating pointer plus configuration
// table WriteMPTable writes for ncpus CPUs.
func MPTableSize(ncpus int) int {
	return mpFloatingLen + mpConfigHdrLen + ncpus*mpProcLen + (1+1+mpISAIRQs+2)*mpEntryLen
}

// WriteMPTable writes an MP table at MPTableAddr for ncpus CPUs (APIC IDs
// 0..ncpus-1, CPU 0 the BSP), an ISA bus, one IOAPIC (ID ncpus) with ISA IRQ
// i on pin i, and LINT0 as ExtINT, LINT1 as NMI: the wiring of a PC with an
// in-kernel PIC and IOAPIC, as KVM_CREATE_IRQCHIP provides.
func WriteMPTable(mem []byte, ncpus int) error {
	if ncpus < 1 || ncpus > MaxMPCPUs {
		return fmt.Errorf("MP table: %d CPUs, want 1..%d", ncpus, MaxMPCPUs)
	}
	size := MPTableSize(ncpus)
	if end := MPTableAddr + size; end > HighMemStart || end > len(mem) {
		return fmt.Errorf("MP table: %d bytes at %#x do not fit below %#x in %#x bytes of memory", size, MPTableAddr, HighMemStart, len(mem))
	}
	t := mem[MPTableAddr : MPTableAddr+size]
	clear(t)
	fp, ct := t[:mpFloatingLen], t[mpFloatingLen:]

	copy(ct, "PCMP")
	ct[6] = 4 // spec revision 1.4
	copy(ct[8:], "GOVMM   ")
	copy(ct[16:], "000000000000")
	le.PutUint32(ct[36:], LAPICAddr)
	p, count := mpConfigHdrLen, 0
	entry := func(n int) []byte { // the next n-byte entry
		e := ct[p : p+n]
		p += n
		count++
		return e
	}
	for i := 0; i < ncpus; i++ {
		e := entry(mpProcLen)
		e[0], e[1], e[2], e[3] = mpEntryProc, byte(i), lapicVersion, mpCPUEnabled
		if i == 0 {
			e[3] |= mpCPUBSP
		}
		le.PutUint32(e[4:], cpuSignature)
		le.PutUint32(e[8:], cpuFeatures)
	}
	const isaBus = 0
	e := entry(mpEntryLen)
	e[0], e[1] = mpEntryBus, isaBus
	copy(e[2:], "ISA   ")
	ioapicID := byte(ncpus)
	e = entry(mpEntryLen)
	e[0], e[1], e[2], e[3] = mpEntryIOAPIC, ioapicID, ioapicVersion, 1 // enabled
	le.PutUint32(e[4:], IOAPICAddr)
	for irq := byte(0); irq < mpISAIRQs; irq++ {
		// Flags 0: polarity and trigger conform to the ISA bus (active high, edge).
		e = entry(mpEntryLen)
		e[0], e[1], e[4], e[5], e[6], e[7] = mpEntryIOInt, mpIntINT, isaBus, irq, ioapicID, irq
	}
	for lint, kind := range [...]byte{mpIntExtINT, mpIntNMI} {
		e = entry(mpEntryLen)
		e[0], e[1], e[4], e[5], e[6], e[7] = mpEntryLocInt, kind, isaBus, 0, 0xff, byte(lint) // 0xff: every local APIC
	}
	le.PutUint16(ct[4:], uint16(p)) // base table length
	le.PutUint16(ct[34:], uint16(count))
	ct[7] = mpChecksum(ct[:p])

	copy(fp, "_MP_")
	le.PutUint32(fp[4:], MPTableAddr+mpFloatingLen)
	fp[8] = 1 // length in 16-byte units
	fp[9] = 4 // spec revision 1.4
	fp[10] = mpChecksum(fp)
	return nil
}

// mpChecksum returns the byte that makes b (whose checksum byte is still 0)
// sum to zero.
func mpChecksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}
