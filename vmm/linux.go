package vmm

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"

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
	kf, ksize, err := openBootFile(v.cfg.Kernel)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer kf.Close()
	head := make([]byte, min(ksize, 4096))
	if _, err := io.ReadFull(kf, head); err != nil {
		return fmt.Errorf("read kernel %s: %w", v.cfg.Kernel, err)
	}
	format, err := boot.DetectKernel(head)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
	}
	params := boot.Params{CmdlineMax: defaultCmdlineMax}
	var k *boot.Kernel
	mode := longMode
	if format == boot.ELF {
		// Read segment by segment into guest memory: a vmlinux with
		// debug info can be larger than the guest.
		if k, err = boot.LoadELFFrom(v.mem.b, kf, ksize); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
	} else {
		// A bzImage is read whole, and all of it (protected mode) or
		// more (its unpacked payload) must fit in guest memory: a
		// larger file is refused before it is read.
		if uint64(ksize) > v.mem.Size() {
			return fmt.Errorf("kernel %s: bzImage of %d bytes is larger than guest memory (%d bytes)", v.cfg.Kernel, ksize, v.mem.Size())
		}
		img := make([]byte, ksize)
		if _, err := kf.ReadAt(img, 0); err != nil {
			return fmt.Errorf("read kernel %s: %w", v.cfg.Kernel, err)
		}
		if k, mode, err = v.loadBzImage(img, &params); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
		// The image and its unpacked ELF (tens of MiB) are garbage
		// now: hand the pages back rather than carry them as RSS for
		// the VM's lifetime.
		debug.FreeOSMemory()
	}
	if v.cfg.Initrd != "" {
		f, size, err := openBootFile(v.cfg.Initrd)
		if err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
		defer f.Close()
		params.Initrd = io.NewSectionReader(f, 0, size)
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
	return setupBootCPU(v.kcpus[0], k.Entry, mode, boot.ZeroPageAddr)
}

// loadBzImage loads a bzImage for the 64-bit entry (its payload unpacked
// by govmm, to at most guest memory's size) or, with BootProtected, for the
// 32-bit entry, and fills p from its setup header.
func (v *VM) loadBzImage(img []byte, p *boot.Params) (*boot.Kernel, cpuMode, error) {
	if v.cfg.Boot == BootProtected {
		hdr, err := boot.ParseSetupHeader(img)
		if err != nil {
			return nil, 0, err
		}
		hdr.Apply(p)
		k, err := v.loadProtected(img, hdr)
		return k, protectedMode, err
	}
	elf, hdr, err := boot.UnpackBzImage(img, int(v.mem.Size()))
	if err != nil {
		return nil, 0, err
	}
	hdr.Apply(p)
	k, err := boot.LoadELF(v.mem.b, elf)
	return k, longMode, err
}

// openBootFile opens a kernel or initrd, which must be a regular file, and
// returns its size. Nothing is read: sizes are checked against guest
// memory first. O_NONBLOCK keeps a FIFO from blocking the open until it is
// refused; it changes nothing for a regular file.
func openBootFile(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", path)
	}
	return f, st.Size(), nil
}
