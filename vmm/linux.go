package vmm

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/vmm/acpi"
	"github.com/govmm/govmm/vmm/boot"
)

// zeroPageACPIRSDP is boot_params.acpi_rsdp_addr: with it the guest need
// not scan low memory for the RSDP.
const zeroPageACPIRSDP = 0x070

// defaultCmdlineMax is the command line limit of a kernel whose setup
// header does not say (a bare ELF): COMMAND_LINE_SIZE on x86-64.
const defaultCmdlineMax = 2048

// loadLinux loads the kernel (ELF, or a bzImage whose payload govmm
// unpacks itself) and initrd, writes the zero page, page tables, GDT and
// SMP tables, and points the boot CPU at the 64-bit entry.
func (v *VM) loadLinux() error {
	img, err := os.ReadFile(v.cfg.Kernel)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	format, err := boot.DetectKernel(img)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
	}
	params := boot.Params{CmdlineMax: defaultCmdlineMax}
	var k *boot.Kernel
	mode := longMode
	switch {
	case format == boot.BzImage && v.cfg.Boot == BootProtected:
		hdr, err := boot.ParseSetupHeader(img)
		if err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
		hdr.Apply(&params)
		if k, err = v.loadProtected(img, hdr); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
		mode = protectedMode
	case format == boot.BzImage:
		elf, hdr, err := boot.UnpackBzImage(img, int(v.mem.Size()))
		if err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
		hdr.Apply(&params)
		if k, err = boot.LoadELF(v.mem.b, elf); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
	default:
		if k, err = boot.LoadELF(v.mem.b, img); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
	}
	if v.cfg.Initrd != "" {
		if params.Initrd, err = os.ReadFile(v.cfg.Initrd); err != nil {
			return fmt.Errorf("read initrd: %w", err)
		}
	}
	params.Cmdline = v.cfg.Cmdline
	params.MemSize = v.mem.Size()
	if _, err := boot.WriteBootParams(v.mem.b, k, &params); err != nil {
		return err
	}
	if mode == longMode {
		if err := boot.WriteGDT(v.mem.b); err != nil {
			return err
		}
		if err := boot.WritePageTables(v.mem.b, max(k.End, 1<<30)); err != nil {
			return err
		}
	}
	// ACPI describes the CPUs and gives the guest a clean power-off; the
	// MP table stays as the fallback for acpi=off.
	if err := boot.WriteMPTable(v.mem.b, v.cfg.CPUs); err != nil {
		return err
	}
	if _, err := acpi.Write(v.mem.b, acpi.DefaultRSDPAddr, acpi.DefaultTablesAddr, acpi.Config{
		CPUs:             v.cfg.CPUs,
		IOAPICID:         uint8(v.cfg.CPUs),
		SleepControlPort: acpiPMPort + devices.ACPIPMSleepControl,
		SleepStatusPort:  acpiPMPort + devices.ACPIPMSleepStatus,
		ResetPort:        acpiPMPort + devices.ACPIPMReset,
		Serial:           []acpi.SerialPort{{Port: com1Port, GSI: com1IRQ}},
		PCI:              v.acpiPCI(), // pci.go
		PowerButton:      &acpi.PowerButton{GSI: powerButtonGSI},
	}); err != nil {
		return fmt.Errorf("ACPI tables: %w", err)
	}
	binary.LittleEndian.PutUint64(v.mem.b[boot.ZeroPageAddr+zeroPageACPIRSDP:], acpi.DefaultRSDPAddr)
	if format == boot.BzImage {
		// The image and its unpacked ELF (tens of MiB) are garbage now:
		// hand the pages back rather than carry them as RSS for the
		// VM's lifetime.
		debug.FreeOSMemory()
	}
	return setupBootCPU(v.kcpus[0], k.Entry, mode, boot.ZeroPageAddr)
}
