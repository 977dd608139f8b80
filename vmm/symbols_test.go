package vmm

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vcpu"
)

// Booting Linux, the exits of the serial port and of PCI configuration
// space come from the kernel's 8250 driver and its PCI config accessors
// (type 1, and the early ones of arch/x86/pci/early.c):
// the top RIPs of those rows must be named so, from the vmlinux's own
// symbol table and, booting the bzImage, from the System.map beside it.
func TestExitRIPsNameGuestFunctions(t *testing.T) {
	for _, tc := range []struct {
		kernel, symbols string
	}{
		{"vmlinux", ""},           // the ELF's own symbol table
		{"bzImage", "System.map"}, // no symbols in a bzImage
	} {
		t.Run(tc.kernel, func(t *testing.T) {
			kernel := needGuest(t, tc.kernel)
			if !testenv.PVMHost() {
				// Off PVM hosts the boot tests boot Debian's kernel,
				// whose System.map is a stub (the symbols are in a
				// -dbg package of hundreds of MiB).
				t.Skip("the guest kernel of this host (Debian's) ships no symbol table")
			}
			symbols := ""
			if tc.symbols != "" {
				symbols = filepath.Join(filepath.Dir(kernel), tc.symbols)
			}
			vm, out, console := bootLinuxWith(t, tc.kernel, 1, "", func(c *Config) {
				c.ExitRIPs, c.GuestSymbols = true, symbols
			})
			if out.Err != nil || out.Reason != vcpu.PowerOff {
				t.Fatalf("guest ended %v (%v), want power-off; console:\n%s", out.Reason, out.Err, console)
			}
			tot := vm.Stats().Total()
			checkTopRIPs(t, tot, "IO:serial", regexp.MustCompile(`^(serial8250_|io_serial_|mem_serial_|serial_port_|early_serial_)\w*\+0x[0-9a-f]+$`))
			checkTopRIPs(t, tot, "IO:pci", regexp.MustCompile(`^(pci_conf1_|pci_direct_probe|pci_check_type1|pci_sanity_check|read_pci_config|write_pci_config)\w*\+0x[0-9a-f]+$`))
		})
	}
}

// checkTopRIPs asserts that the row's top call sites, those that make up
// most of its exits, are all named by want.
func checkTopRIPs(t *testing.T, tot exitstats.VCPUSnapshot, row string, want *regexp.Regexp) {
	t.Helper()
	var r *exitstats.Row
	for i := range tot.Rows {
		if tot.Rows[i].Name == row {
			r = &tot.Rows[i]
		}
	}
	if r == nil || len(r.TopRIPs) == 0 {
		t.Fatalf("no %s row with top RIPs in %+v", row, tot.Rows)
	}
	var named uint64
	var sites []string
	for _, rip := range r.TopRIPs {
		sites = append(sites, rip.Symbol)
		if want.MatchString(rip.Symbol) {
			named += rip.Count - rip.Overcount // lower bound
		}
	}
	t.Logf("%s (%d exits): %s", row, r.Count, strings.Join(sites, ", "))
	// The first three, those the table prints, must all be the driver's.
	for _, rip := range r.TopRIPs[:min(3, len(r.TopRIPs))] {
		if !want.MatchString(rip.Symbol) {
			t.Errorf("%s: top call site %#x named %q, want %v", row, rip.RIP, rip.Symbol, want)
		}
	}
	if named*10 < r.Count*9 {
		t.Errorf("%s: only %d of %d exits attributed to %v", row, named, r.Count, want)
	}
}

// Symbols that may not match the guest's addresses are refused, and so is
// a symbol file that is not one; a kernel without symbols is no error.
func TestGuestSymbolsConfig(t *testing.T) {
	c := Config{Kernel: "bzImage", CPUs: 1, MemSize: 1 << 20, ExitRIPs: true, GuestSymbols: "System.map",
		Boot: BootProtected, Cmdline: "console=ttyS0 quiet"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "nokaslr") {
		t.Errorf("protected boot with symbols and no nokaslr: %v, want an error asking for it", err)
	}
	c.Cmdline += " nokaslr"
	if err := c.Validate(); err != nil {
		t.Errorf("with nokaslr: %v", err)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.map")
	if err := os.WriteFile(bad, []byte("ffffffff81000000 T ok\nnot a symbol line at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Config{GuestSymbols: bad}).guestSymbols(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a bad System.map: %v, want an error naming line 2", err)
	}
	if _, err := (&Config{GuestSymbols: filepath.Join(dir, "missing")}).guestSymbols(); err == nil {
		t.Error("a missing symbol file was accepted")
	}
	notELF := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(notELF, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if tab, err := (&Config{Kernel: notELF}).guestSymbols(); tab != nil || err != nil {
		t.Errorf("a kernel that is no ELF: %v, %v; want no symbols and no error", tab, err)
	}
	if tab, err := (&Config{Raw: &RawGuest{}}).guestSymbols(); tab != nil || err != nil {
		t.Errorf("a raw guest: %v, %v; want no symbols and no error", tab, err)
	}
}
