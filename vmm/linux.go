package vmm

import (
	"fmt"
	"os"

	"github.com/govmm/govmm/vmm/boot"
)

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
	elf, params := img, boot.Params{CmdlineMax: defaultCmdlineMax}
	if format == boot.BzImage {
		var hdr *boot.SetupHeader
		elf, hdr, err = boot.UnpackBzImage(img, int(v.mem.Size()))
		if err != nil {
			return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
		}
		params.Header = hdr.Raw
		params.CmdlineMax = int(hdr.CmdlineSize)
		params.InitrdAddrMax = uint64(hdr.InitrdAddrMax)
	}
	k, err := boot.LoadELF(v.mem.b, elf)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", v.cfg.Kernel, err)
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
	if err := boot.WriteGDT(v.mem.b); err != nil {
		return err
	}
	if err := boot.WritePageTables(v.mem.b, max(k.End, 1<<30)); err != nil {
		return err
	}
	if err := boot.WriteMPTable(v.mem.b, v.cfg.CPUs); err != nil {
		return err
	}
	return setupBootCPU(v.kcpus[0], k.Entry, true, boot.ZeroPageAddr)
}
