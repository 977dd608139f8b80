package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/internal/scratch"
	"github.com/govmm/govmm/vmm/acpi"
	"github.com/govmm/govmm/vmm/boot"
	"github.com/govmm/govmm/vmm/kernelcache"
)

// zeroPageACPIRSDP is boot_params.acpi_rsdp_addr: with it the guest need
// not scan low memory for the RSDP.
const zeroPageACPIRSDP = 0x070

// defaultCmdlineMax is the command line limit of a kernel whose setup
// header does not say (a bare ELF): COMMAND_LINE_SIZE on x86-64.
const defaultCmdlineMax = 2048

// loadLinux loads the kernel (ELF, or a bzImage whose payload govmm
// unpacks itself) and initrd, writes the zero page, page tables, GDT and
// SMP tables, and points the boot CPU at the 64-bit entry. All of it goes in
// RAM below the PCI hole (v.mem.low, index == guest address): a kernel
// whose segments lie beyond it is refused, and the initrd is placed below
// it, where every boot protocol version can address it.
func (v *VM) loadLinux() error {
	for _, b := range []*bootFile{v.kernelFile, v.initrdFile} {
		if b != nil {
			if err := b.unchanged(); err != nil {
				return err
			}
		}
	}
	kf, ksize := v.kernelFile.f, v.kernelFile.stamp.Size
	head := make([]byte, min(ksize, 4096))
	if _, err := kf.ReadAt(head, 0); err != nil {
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
		if k, err = boot.LoadELFFrom(v.mem.low, kf, ksize); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
	} else {
		// A bzImage's size is checked before it is read: all of it
		// (protected mode) or more (its unpacked payload) must fit in
		// guest memory.
		if uint64(ksize) > v.mem.Size() {
			return fmt.Errorf("kernel %s: bzImage of %d bytes is larger than guest memory (%d bytes)", v.cfg.Kernel, ksize, v.mem.Size())
		}
		if k, mode, err = v.loadBzImage(kf, ksize, &params); err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
	}
	if b := v.initrdFile; b != nil {
		params.Initrd = io.NewSectionReader(b.f, 0, b.stamp.Size)
	}
	params.Cmdline = v.cfg.Cmdline
	params.MemSize = v.mem.Size()
	if _, err := boot.WriteBootParams(v.mem.low, k, &params); err != nil {
		return err
	}
	if mode == longMode {
		if err := boot.WriteGDT(v.mem.low); err != nil {
			return err
		}
		if err := boot.WritePageTables(v.mem.low, max(k.End, 1<<30)); err != nil {
			return err
		}
	}
	// ACPI describes the CPUs and gives the guest a clean power-off; the
	// MP table stays as the fallback for acpi=off.
	if err := boot.WriteMPTable(v.mem.low, v.cfg.CPUs); err != nil {
		return err
	}
	if _, err := acpi.Write(v.mem.low, acpi.DefaultRSDPAddr, acpi.DefaultTablesAddr, acpi.Config{
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
	binary.LittleEndian.PutUint64(v.mem.low[boot.ZeroPageAddr+zeroPageACPIRSDP:], acpi.DefaultRSDPAddr)
	return setupBootCPU(v.kcpus[0], k.Entry, mode, boot.ZeroPageAddr)
}

// loadBzImage loads a bzImage for the 64-bit entry (its payload unpacked
// by govmm, to at most guest memory's size, or read from the kernel cache)
// or, with BootProtected, for the 32-bit entry, and fills p from its setup
// header.
func (v *VM) loadBzImage(f *os.File, size int64, p *boot.Params) (*boot.Kernel, cpuMode, error) {
	// The image and its unpacked ELF (tens of MiB) live in mappings of
	// their own, unmapped once the kernel is loaded: in the Go heap they
	// grew it, and the GC metadata that came with it stayed as RSS for the
	// VM's lifetime (README, Memory).
	img, err := scratch.Map(int(size))
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	defer func() { scratch.Unmap(img) }()
	if _, err := f.ReadAt(img, 0); err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if v.cfg.Boot == BootProtected {
		hdr, err := boot.ParseSetupHeader(img)
		if err != nil {
			return nil, 0, err
		}
		hdr.Apply(p)
		k, err := v.loadProtected(img, hdr)
		return k, protectedMode, err
	}
	// The cache's key, the setup header and the unpacked kernel all come
	// from this one read of the file, so an entry is only ever the unpack
	// of the bytes it is named after. Hashed from one read and unpacked
	// from another, a bzImage written in place while govmm started got
	// the other kernel cached under its name, booted from then on without
	// a word (found by an audit).
	cache := v.cfg.KernelCache
	if cache != nil {
		if err := cache.Usable(); err != nil {
			log.Printf("kernel cache: %v: not used", err)
			cache = nil
		}
	}
	var key kernelcache.Key
	if cache != nil {
		if key, err = kernelcache.KeyOf(bytes.NewReader(img)); err != nil {
			return nil, 0, err
		}
		if k, ok := v.loadCachedELF(img, cache, key, p); ok {
			return k, longMode, nil
		}
	}
	var out []byte // the ELF's mapping
	defer func() { scratch.Unmap(out) }()
	elf, hdr, err := boot.UnpackBzImage(img, int(v.mem.Size()), func(n int) ([]byte, error) {
		var err error
		out, err = scratch.Map(n)
		return out, err
	})
	if err != nil {
		return nil, 0, err
	}
	// The image is not needed for the load: unmapped now, it is never
	// resident beside the ELF and the guest's new kernel pages.
	scratch.Unmap(img)
	img = nil
	hdr.Apply(p)
	k, err := boot.LoadELF(v.mem.low, elf)
	// Only the first load writes the cache: a reset runs confined by
	// seccomp, which allows no new files, and the entry is there by then.
	if err == nil && cache != nil && !v.boot.loaded {
		if err := cache.Put(key, elf); err != nil {
			log.Printf("kernel cache: %v", err)
		}
	}
	return k, longMode, err
}

// loadCachedELF loads the ELF cached for the bzImage img, if there is a
// usable one; ok is false on a miss. The setup header still comes from
// the bzImage.
func (v *VM) loadCachedELF(img []byte, cache *kernelcache.Cache, key kernelcache.Key, p *boot.Params) (k *boot.Kernel, ok bool) {
	e, err := cache.Get(key, int64(v.mem.Size()))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Printf("kernel cache: %v", err)
		}
		return nil, false
	}
	defer e.Close()
	hdr, err := boot.ParseSetupHeader(img)
	if err != nil {
		return nil, false
	}
	if k, err = boot.LoadELFFrom(v.mem.low, e, e.Size()); err != nil {
		log.Printf("kernel cache: %s: %v", v.cfg.Kernel, err)
		return nil, false
	}
	hdr.Apply(p)
	return k, true
}
