package devices

// ACPIPM register layout: three consecutive 8-bit I/O ports, named in the
// FADT as SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG (the vmm/acpi
// package writes those tables; its tests check these values match).
const (
	ACPIPMSize = 3

	ACPIPMSleepControl = 0 // offset of the sleep control register
	ACPIPMSleepStatus  = 1 // offset of the sleep status register
	ACPIPMReset        = 2 // offset of the reset register

	// ACPIS5SleepType is the SLP_TYP the DSDT's \_S5_ object gives.
	ACPIS5SleepType = 5
	// ACPIResetValue is the FADT RESET_VALUE.
	ACPIResetValue = 1

	// Sleep control register bits (ACPI 6.5 §4.8.3.7): Linux writes
	// SLP_EN | SLP_TYP<<2 in one byte (0x34 for S5).
	acpiSleepTypeShift = 2
	acpiSleepTypeMask  = 0x7
	acpiSleepEnable    = 1 << 5
)

// ACPIPM is the HW-reduced ACPI platform's power management: the sleep
// control register, through which the guest enters S5 (power-off), the
// sleep status register, and the reset register. It has no state: only S5
// is offered (the DSDT defines no other \_Sx), so a write is either a
// request to act now or ignored.
type ACPIPM struct {
	powerOff, reset func()
}

// NewACPIPM returns the registers. powerOff runs when the guest sets
// SLP_EN with SLP_TYP == ACPIS5SleepType; reset runs when it writes
// ACPIResetValue to the reset register. Either may be nil.
//
// Both run on the vCPU thread that made the write, with no lock held,
// and may run more than once (several vCPUs, or a guest that retries): they
// must be idempotent and must not block, in particular not wait for the
// vCPUs to stop. After a power-off request Linux spins reading the sleep
// status register, which always reads 0, until the VMM stops the vCPU.
func NewACPIPM(powerOff, reset func()) *ACPIPM {
	return &ACPIPM{powerOff: powerOff, reset: reset}
}

// Read returns 0 for every register: WAK_STS never sets, since the
// machine never wakes from S5.
func (p *ACPIPM) Read(offset uint64, data []byte) {
	clear(data)
}

// Write handles each byte as a write to its own port, as a wider OUT to
// consecutive ports would reach them (ACPICA itself writes one byte, as
// the FADT's 8-bit register widths ask).
func (p *ACPIPM) Write(offset uint64, data []byte) {
	if offset >= ACPIPMSize {
		return // also keeps offset+i below from wrapping
	}
	for i, v := range data {
		switch offset + uint64(i) {
		case ACPIPMSleepControl:
			if v&acpiSleepEnable != 0 && (v>>acpiSleepTypeShift)&acpiSleepTypeMask == ACPIS5SleepType && p.powerOff != nil {
				p.powerOff()
			}
		case ACPIPMSleepStatus:
			// Writing WAK_STS (bit 7) clears it; it is never set.
		case ACPIPMReset:
			if v == ACPIResetValue && p.reset != nil {
				p.reset()
			}
		}
	}
}
