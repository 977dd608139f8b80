package vmm

import (
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/govmm/govmm/guestsym"
	"github.com/govmm/govmm/internal/regfile"
	"github.com/govmm/govmm/vmm/boot"
)

// symbolTable names guest RIPs: a guestsym.Table, or a guestsym.Later
// that reads one at its first lookup.
type symbolTable interface {
	Name(addr uint64) string
	Close() error
}

// guestSymbols opens the symbol table that names the guest RIPs of the
// exit table: Config.GuestSymbols (a System.map or an ELF vmlinux), read
// now so that a bad file is refused at start, or else the symbol table
// of an ELF kernel, checked now and read at the first RIP it names,
// mostly once the guest's RAM has been given back (guestsym.Later: the
// table is half a MiB for the shared kernel). A bzImage carries none,
// nor does a stripped vmlinux: RIPs are then shown as bare addresses,
// and the table is nil. The table keeps its file open, to read names
// from (Close closes it).
func (c *Config) guestSymbols() (symbolTable, error) {
	if c.GuestSymbols != "" {
		t, err := guestsym.Load(c.GuestSymbols)
		if err != nil {
			return nil, fmt.Errorf("guest symbols: %w", err)
		}
		return t, nil
	}
	if c.Raw != nil {
		return nil, nil
	}
	f, size, err := regfile.Open(c.Kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	head := make([]byte, min(size, 4096))
	if _, err := io.ReadFull(f, head); err != nil {
		f.Close()
		return nil, fmt.Errorf("read kernel %s: %w", c.Kernel, err)
	}
	if format, err := boot.DetectKernel(head); err != nil || format != boot.ELF {
		f.Close()
		return nil, nil // loading the kernel says what is wrong with it
	}
	t, err := guestsym.OpenELFLater(f, func(err error) { // takes f
		log.Printf("guest symbols of kernel %s: %v; RIPs are shown as addresses", c.Kernel, err)
	})
	if errors.Is(err, guestsym.ErrNoSymbols) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", c.Kernel, err)
	}
	return t, nil
}

// checkSymbolsMatch refuses a symbol table that the guest's addresses
// may not match. Only a bzImage's own decompressor randomizes the
// kernel's base (KASLR): the default boot skips it and enters the
// unpacked ELF, but BootProtected runs it.
func (c *Config) checkSymbolsMatch() error {
	if c.GuestSymbols == "" || !c.ExitRIPs || c.Boot != BootProtected {
		return nil
	}
	for _, w := range strings.Fields(c.Cmdline) {
		if w == "nokaslr" {
			return nil
		}
	}
	return fmt.Errorf("--guest-symbols with --boot protected: the bzImage's decompressor may move the kernel (KASLR) away from its symbols; add nokaslr to --append")
}
