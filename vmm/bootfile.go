package vmm

import (
	"fmt"
	"os"

	"github.com/govmm/govmm/internal/regfile"
)

// bootFile is the kernel or the initrd, opened once when the VM is built
// and read from that open file at boot and at every reset. A file renamed
// over or deleted since (a rebuilt kernel moved into place) still gives a
// reset the image the VM started with, as QEMU, which keeps it in memory,
// does; and a reset opens nothing by path, which Landlock would refuse
// for a file that is not the one it was granted. A file written in place
// since is refused at the reset: booting it would start something other
// than what the user started, or a mix of both, with nothing said (an
// audit saw a new initrd boot silently, and a truncated one panic the
// guest in a loop).
type bootFile struct {
	what, path string
	f          *os.File
	stamp      regfile.Stamp // at open: stamp.Size is the file's size
}

// openBootFile opens path, a regular file, for what ("kernel", "initrd").
func openBootFile(what, path string) (*bootFile, error) {
	f, _, err := regfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	stamp, err := regfile.StampOf(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return &bootFile{what: what, path: path, f: f, stamp: stamp}, nil
}

// unchanged checks that the file has not been written since it was
// opened.
func (b *bootFile) unchanged() error {
	now, err := regfile.StampOf(b.f)
	if err != nil {
		return fmt.Errorf("%s %s: %w", b.what, b.path, err)
	}
	if !now.Same(b.stamp) {
		return fmt.Errorf("%s %s was written to since the VM started: a reset would boot something else than the VM started with (replace the file by renaming a new one over it, which keeps the old for resets; start govmm again to boot the new one)", b.what, b.path)
	}
	return nil
}

func (b *bootFile) close() error {
	if b == nil {
		return nil
	}
	return b.f.Close()
}
