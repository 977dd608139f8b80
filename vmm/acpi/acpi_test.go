package acpi

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govmm/govmm/devices"
)

// testConfig is what govmm's VMM is expected to pass.
func testConfig(cpus int) Config {
	return Config{
		CPUs:             cpus,
		IOAPICID:         uint8(cpus),
		IOAPICAddr:       0xfec00000,
		LAPICAddr:        0xfee00000,
		SleepControlPort: 0x600,
		SleepStatusPort:  0x601,
		ResetPort:        0x602,
		Serial:           []SerialPort{{Port: 0x3f8, GSI: 4}},
	}
}

const testMemSize = 2 << 20

func writeTables(t *testing.T, cfg Config) ([]byte, uint64) {
	t.Helper()
	mem := make([]byte, testMemSize)
	end, err := Write(mem, DefaultRSDPAddr, DefaultTablesAddr, cfg)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return mem, end
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// table returns the table at addr after checking its signature, length
// and checksum.
func table(t *testing.T, mem []byte, addr uint64, sig string) []byte {
	t.Helper()
	if addr == 0 || addr+headerLen > uint64(len(mem)) {
		t.Fatalf("%s: address %#x outside memory", sig, addr)
	}
	h := mem[addr:]
	if got := string(h[:4]); got != sig {
		t.Fatalf("table at %#x: signature %q, want %q", addr, got, sig)
	}
	n := le.Uint32(h[4:])
	if n < headerLen || addr+uint64(n) > uint64(len(mem)) {
		t.Fatalf("%s: bad length %d", sig, n)
	}
	tb := h[:n]
	if s := sum(tb); s != 0 {
		t.Errorf("%s: checksum: bytes sum to %#x, want 0", sig, s)
	}
	if got := string(tb[10:16]); got != "GOVMM " {
		t.Errorf("%s: OEM ID %q", sig, got)
	}
	return tb
}

type parsed struct {
	rsdp, xsdt, fadt, dsdt, madt []byte
	xsdtEntries                  []uint64
}

// parse walks the tables as Linux does: RSDP, XSDT, then each entry.
func parse(t *testing.T, mem []byte) parsed {
	t.Helper()
	var p parsed
	// Find the RSDP by scanning the BIOS area on 16-byte boundaries.
	for a := biosAreaStart; a < biosAreaEnd; a += 16 {
		if string(mem[a:a+8]) == "RSD PTR " && sum(mem[a:a+rsdpV1Len]) == 0 {
			p.rsdp = mem[a : a+rsdpLen]
			break
		}
	}
	if p.rsdp == nil {
		t.Fatal("no RSDP found in 0xe0000-0xfffff")
	}
	if p.rsdp[15] != 2 {
		t.Errorf("RSDP revision %d, want 2", p.rsdp[15])
	}
	if n := le.Uint32(p.rsdp[20:]); n != rsdpLen {
		t.Errorf("RSDP length %d, want %d", n, rsdpLen)
	}
	if s := sum(p.rsdp); s != 0 {
		t.Errorf("RSDP extended checksum: sum %#x", s)
	}
	if got := string(p.rsdp[9:15]); got != "GOVMM " {
		t.Errorf("RSDP OEM ID %q", got)
	}
	p.xsdt = table(t, mem, le.Uint64(p.rsdp[24:]), "XSDT")
	for i := headerLen; i+8 <= len(p.xsdt); i += 8 {
		p.xsdtEntries = append(p.xsdtEntries, le.Uint64(p.xsdt[i:]))
	}
	for _, a := range p.xsdtEntries {
		switch sig := string(mem[a : a+4]); sig {
		case "FACP":
			p.fadt = table(t, mem, a, sig)
		case "APIC":
			p.madt = table(t, mem, a, sig)
		default:
			t.Errorf("unexpected XSDT entry %q at %#x", sig, a)
		}
	}
	if p.fadt == nil || p.madt == nil {
		t.Fatalf("XSDT %#x lacks FADT or MADT", p.xsdtEntries)
	}
	p.dsdt = table(t, mem, le.Uint64(p.fadt[140:]), "DSDT")
	if d32 := le.Uint32(p.fadt[40:]); uint64(d32) != le.Uint64(p.fadt[140:]) {
		t.Errorf("FADT DSDT %#x != X_DSDT %#x", d32, le.Uint64(p.fadt[140:]))
	}
	return p
}

func TestTablesParse(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, MaxCPUs} {
		mem, end := writeTables(t, testConfig(cpus))
		p := parse(t, mem)
		if len(p.xsdtEntries) != 2 {
			t.Errorf("%d CPUs: XSDT has %d entries, want 2 (FADT, MADT)", cpus, len(p.xsdtEntries))
		}
		// Every table lies inside [DefaultTablesAddr, end).
		for _, a := range append(p.xsdtEntries, le.Uint64(p.rsdp[24:]), le.Uint64(p.fadt[140:])) {
			if a < DefaultTablesAddr || a >= end {
				t.Errorf("%d CPUs: table at %#x outside [%#x, %#x)", cpus, a, DefaultTablesAddr, end)
			}
		}
		if end > biosAreaEnd {
			t.Errorf("%d CPUs: tables end at %#x, past the BIOS area", cpus, end)
		}
	}
}

func TestFADT(t *testing.T) {
	mem, _ := writeTables(t, testConfig(2))
	f := parse(t, mem).fadt
	if len(f) != fadtLen || f[8] != fadtRevision || f[131] != fadtMinorRevision {
		t.Errorf("FADT length %d revision %d.%d, want %d 6.5", len(f), f[8], f[131], fadtLen)
	}
	flags := le.Uint32(f[112:])
	for _, bit := range []uint32{fadtHWReducedACPI, fadtResetRegSup, fadtPowerButton, fadtSleepButton} {
		if flags&bit == 0 {
			t.Errorf("FADT flags %#x lack %#x", flags, bit)
		}
	}
	arch := le.Uint16(f[109:])
	if arch != iapcLegacyDevices|iapc8042|iapcVGANotPresent {
		t.Errorf("IAPC_BOOT_ARCH %#x", arch)
	}
	if arch&(1<<5) != 0 {
		t.Error("IAPC_BOOT_ARCH says no CMOS RTC; the RTC at 0x70 must stay in use")
	}
	for _, r := range []struct {
		name string
		off  int
		port uint16
	}{{"RESET_REG", 116, 0x602}, {"SLEEP_CONTROL_REG", 244, 0x600}, {"SLEEP_STATUS_REG", 256, 0x601}} {
		g := f[r.off : r.off+gasLen]
		// ACPICA rejects the reset register unless it is 8 bits at
		// offset 0, and accesses the sleep registers with the width given.
		want := []byte{gasSystemIO, 8, 0, gasAccessByte, byte(r.port), byte(r.port >> 8), 0, 0, 0, 0, 0, 0}
		if !bytes.Equal(g, want) {
			t.Errorf("%s = % x, want % x", r.name, g, want)
		}
	}
	if f[128] != ResetValue {
		t.Errorf("RESET_VALUE %#x", f[128])
	}
	if le.Uint32(f[36:]) != 0 || le.Uint64(f[132:]) != 0 {
		t.Error("FADT names a FACS; a HW-reduced platform has none")
	}
	if le.Uint16(f[46:]) != 0 {
		t.Error("FADT names an SCI; a HW-reduced platform has none")
	}
}

func TestFADTNoReset(t *testing.T) {
	cfg := testConfig(1)
	cfg.ResetPort = 0
	mem, _ := writeTables(t, cfg)
	f := parse(t, mem).fadt
	if le.Uint32(f[112:])&fadtResetRegSup != 0 || le.Uint64(f[120:]) != 0 {
		t.Error("reset register advertised without a reset port")
	}
}

type madtEntry struct {
	typ byte
	b   []byte
}

func madtEntries(t *testing.T, m []byte) []madtEntry {
	t.Helper()
	var out []madtEntry
	for p := madtFixedLen; p < len(m); {
		if p+2 > len(m) || m[p+1] < 2 || p+int(m[p+1]) > len(m) {
			t.Fatalf("MADT entry at offset %d runs past the table", p)
		}
		out = append(out, madtEntry{m[p], m[p : p+int(m[p+1])]})
		p += int(m[p+1])
	}
	return out
}

func TestMADT(t *testing.T) {
	const cpus = 4
	mem, _ := writeTables(t, testConfig(cpus))
	m := parse(t, mem).madt
	if le.Uint32(m[36:]) != 0xfee00000 {
		t.Errorf("local APIC address %#x", le.Uint32(m[36:]))
	}
	var lapics []byte
	var ioapics, isos, nmis int
	for _, e := range madtEntries(t, m) {
		switch e.typ {
		case madtLAPIC:
			if len(e.b) != 8 || e.b[2] != e.b[3] || le.Uint32(e.b[4:])&madtLAPICEnabled == 0 {
				t.Errorf("LAPIC entry % x", e.b)
			}
			lapics = append(lapics, e.b[3])
		case madtIOAPIC:
			ioapics++
			if e.b[2] != cpus || le.Uint32(e.b[4:]) != 0xfec00000 || le.Uint32(e.b[8:]) != 0 {
				t.Errorf("IOAPIC entry % x", e.b)
			}
		case madtISO:
			isos++
			if e.b[2] != 0 || e.b[3] != 0 || le.Uint32(e.b[4:]) != 2 || le.Uint16(e.b[8:]) != madtFlagsEdgeHigh {
				t.Errorf("ISO entry % x, want ISA IRQ0 -> GSI 2 edge/high", e.b)
			}
		case madtLAPICNMI:
			nmis++
			if e.b[2] != 0xff || e.b[5] != 1 {
				t.Errorf("LAPIC NMI entry % x, want all processors, LINT1", e.b)
			}
		default:
			t.Errorf("unexpected MADT entry type %d", e.typ)
		}
	}
	if !bytes.Equal(lapics, []byte{0, 1, 2, 3}) {
		t.Errorf("LAPIC IDs %v, want 0..%d", lapics, cpus-1)
	}
	if ioapics != 1 || isos != 1 || nmis != 1 {
		t.Errorf("%d IOAPIC, %d ISO, %d NMI entries; want one each", ioapics, isos, nmis)
	}
}

func TestDSDTS5(t *testing.T) {
	cfg := testConfig(1)
	cfg.Serial = nil
	mem, _ := writeTables(t, cfg)
	d := parse(t, mem).dsdt
	want := []byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, S5SleepType, 0x00}
	if got := d[headerLen:]; !bytes.Equal(got, want) {
		t.Errorf("DSDT AML % x, want % x", got, want)
	}
}

// The DSDT and FADT promise values devices.ACPIPM acts on.
func TestMatchesACPIPM(t *testing.T) {
	if S5SleepType != devices.ACPIS5SleepType || ResetValue != devices.ACPIResetValue {
		t.Errorf("S5 type %d / reset value %d here, %d / %d in devices.ACPIPM",
			S5SleepType, ResetValue, devices.ACPIS5SleepType, devices.ACPIResetValue)
	}
	cfg := testConfig(1)
	base := uint16(0x600)
	if cfg.SleepControlPort != base+devices.ACPIPMSleepControl ||
		cfg.SleepStatusPort != base+devices.ACPIPMSleepStatus ||
		cfg.ResetPort != base+devices.ACPIPMReset {
		t.Error("test ports do not follow the devices.ACPIPM register layout")
	}
}

func TestWriteErrors(t *testing.T) {
	good := testConfig(2)
	tests := []struct {
		name     string
		memSize  int
		rsdp     uint64
		tables   uint64
		mutate   func(*Config)
		wantErr  error
		wantText string
	}{
		{name: "mem too small for tables", memSize: DefaultTablesAddr + 100, wantErr: ErrLayout},
		{name: "mem too small for RSDP", memSize: DefaultRSDPAddr + 10, wantErr: ErrLayout},
		{name: "RSDP below BIOS area", rsdp: 0x9fc00, wantErr: ErrRSDPAddr},
		{name: "RSDP unaligned", rsdp: 0xe0008, wantErr: ErrRSDPAddr},
		{name: "RSDP at top", rsdp: 0xffff0, wantErr: ErrRSDPAddr},
		{name: "tables over RSDP", tables: DefaultRSDPAddr + 16, wantErr: ErrLayout},
		{name: "tables below, reaching RSDP", tables: DefaultRSDPAddr - 64, wantErr: ErrLayout},
		{name: "tables at end of address space", tables: ^uint64(0) - 8, wantErr: ErrLayout},
		{name: "no CPUs", mutate: func(c *Config) { c.CPUs = 0 }, wantErr: ErrConfig},
		{name: "too many CPUs", mutate: func(c *Config) { c.CPUs = MaxCPUs + 1 }, wantErr: ErrConfig},
		{name: "no sleep status", mutate: func(c *Config) { c.SleepStatusPort = 0 }, wantErr: ErrConfig},
		{name: "serial port wraps", mutate: func(c *Config) { c.Serial = []SerialPort{{Port: 0xfffc}} }, wantErr: ErrConfig},
		{name: "PCI without MMIO", mutate: func(c *Config) { c.PCI = &PCIHostBridge{} }, wantErr: ErrConfig},
		{name: "PCI MMIO past 4G", mutate: func(c *Config) { c.PCI = &PCIHostBridge{MMIO32Base: 0xf0000000, MMIO32Size: 0x20000000} }, wantErr: ErrConfig},
		{name: "PCI IO over 0xcf8", mutate: func(c *Config) {
			c.PCI = &PCIHostBridge{MMIO32Base: 0xc0000000, MMIO32Size: 0x1000, IOBase: 0x0, IOSize: 0x10000}
		}, wantErr: ErrConfig},
		{name: "PCI route pin", mutate: func(c *Config) {
			c.PCI = &PCIHostBridge{MMIO32Base: 0xc0000000, MMIO32Size: 0x1000, Routes: []PCIRoute{{Device: 1, Pin: 4}}}
		}, wantErr: ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			size, rsdp, tables := tt.memSize, tt.rsdp, tt.tables
			if size == 0 {
				size = testMemSize
			}
			if rsdp == 0 {
				rsdp = DefaultRSDPAddr
			}
			if tables == 0 {
				tables = DefaultTablesAddr
			}
			mem := make([]byte, size)
			_, err := Write(mem, rsdp, tables, cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Write: %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(mem, make([]byte, size)) {
				t.Error("failed Write modified memory")
			}
		})
	}
}

// Tables placed below the RSDP (in the same window) work too.
func TestTablesBelowRSDP(t *testing.T) {
	mem := make([]byte, testMemSize)
	end, err := Write(mem, 0xf0000, 0xe0000, testConfig(2))
	if err != nil || end > 0xf0000 {
		t.Fatalf("Write: end %#x, %v", end, err)
	}
	parse(t, mem)
}

func pciConfig() Config {
	cfg := testConfig(2)
	cfg.Serial = append(cfg.Serial, SerialPort{Port: 0x2f8, GSI: 3})
	cfg.PCI = &PCIHostBridge{
		MMIO32Base: 0xc0000000, MMIO32Size: 0x3ec00000,
		MMIO64Base: 1 << 40, MMIO64Size: 1 << 36,
		IOBase: 0x1000, IOSize: 0xf000,
		Routes: []PCIRoute{{Device: 1, Pin: 0, GSI: 16}, {Device: 2, Pin: 3, GSI: 19}},
	}
	return cfg
}

// A power button must not share its interrupt with a serial port.
func TestPowerButtonGSI(t *testing.T) {
	cfg := testConfig(1)
	cfg.PowerButton = &PowerButton{GSI: 4}
	if _, err := Write(make([]byte, testMemSize), DefaultRSDPAddr, DefaultTablesAddr, cfg); !errors.Is(err, ErrConfig) {
		t.Errorf("GSI shared with COM1: err %v, want ErrConfig", err)
	}
}

func TestEISAID(t *testing.T) {
	for id, want := range map[string]uint32{"PNP0501": 0x0105d041, "PNP0A03": 0x030ad041} {
		if got := amlEISAID(id); got != want {
			t.Errorf("EISAID(%s) = %#x, want %#x", id, got, want)
		}
	}
}

func TestPkgLength(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},          // 65 = 0x041
		{0xffd, []byte{0x4f, 0xff}},       // 0xfff
		{0xffe, []byte{0x81, 0x00, 0x01}}, // 0x1001
	} {
		if got := amlPkgLength(tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("PkgLength(%d) = % x, want % x", tt.n, got, tt.want)
		}
	}
}

// TestDSDTDisassembles feeds the DSDT to iasl (Debian package
// acpica-tools), the reference AML disassembler, and checks the objects
// Linux looks for come back intact.
func TestDSDTDisassembles(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (apt-get install acpica-tools)")
	}
	button := testConfig(1)
	button.PowerButton = &PowerButton{GSI: 9}
	for name, cfg := range map[string]Config{"default": testConfig(2), "pci": pciConfig(), "button": button} {
		t.Run(name, func(t *testing.T) {
			mem, _ := writeTables(t, cfg)
			dsdt := parse(t, mem).dsdt
			dir := t.TempDir()
			bin := filepath.Join(dir, "dsdt.dat")
			if err := os.WriteFile(bin, dsdt, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(iasl, "-d", bin).CombinedOutput()
			if err != nil {
				t.Fatalf("iasl -d: %v\n%s", err, out)
			}
			dsl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
			if err != nil {
				t.Fatalf("iasl wrote no dsdt.dsl: %v\n%s", err, out)
			}
			text := string(dsl)
			want := []string{
				`Name (\_S5, Package (0x02)`,
				`0x05,`,
				`Device (COM1)`,
				`EisaId ("PNP0501")`,
				`IO (Decode16,`,
				`0x03F8,             // Range Minimum`,
				`Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )`,
				`0x00000004,`,
			}
			if name == "pci" {
				want = append(want,
					`Device (COM2)`, `0x02F8,             // Range Minimum`, `Device (PCI0)`, `EisaId ("PNP0A03")`,
					`WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,`,
					`WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,`,
					`DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,`,
					`0xFEBFFFFF,         // Range Maximum`,
					`QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,`,
					`Name (_PRT, Package (0x02)`,
					`0x0002FFFF,`,
					`0x13`,
				)
			}
			if name == "button" {
				want = append(want,
					`Device (PWRB)`, `EisaId ("PNP0C0C")`,
					`Device (GED)`, `Name (_HID, "ACPI0013"`,
					`0x00000009,`,
					`Method (_EVT, 1, NotSerialized)`,
					`Notify (\_SB.PWRB, 0x80)`,
				)
			}
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("disassembly lacks %q:\n%s", w, text)
				}
			}
			// Recompiling must give back the same AML (-on: keep the root prefix
			// of \_SB_ and \_S5_, which iasl would otherwise drop as redundant).
			rebuilt := filepath.Join(dir, "rebuilt")
			if out, err := exec.Command(iasl, "-on", "-p", rebuilt, filepath.Join(dir, "dsdt.dsl")).CombinedOutput(); err != nil {
				t.Fatalf("iasl recompile: %v\n%s", err, out)
			}
			aml, err := os.ReadFile(rebuilt + ".aml")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(aml[headerLen:], dsdt[headerLen:]) {
				t.Errorf("iasl recompiles the DSDT body differently:\n ours % x\niasl % x", dsdt[headerLen:], aml[headerLen:])
			}
		})
	}
}
