package main

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/vmm"
)

// terminal puts the host terminal in raw mode while the guest owns the
// console, so keys (Ctrl-C included) go to the guest, and restores it on
// every way out.
type terminal struct {
	fd    int
	saved *unix.Termios
	raw   bool
	once  sync.Once
}

func makeRaw(f *os.File) *terminal {
	t := &terminal{fd: int(f.Fd())}
	saved, err := unix.IoctlGetTermios(t.fd, unix.TCGETS)
	if err != nil {
		return t // not a terminal: nothing to change or restore
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if unix.IoctlSetTermios(t.fd, unix.TCSETS, &raw) == nil {
		t.saved, t.raw = saved, true
	}
	return t
}

func (t *terminal) restore() {
	t.once.Do(func() {
		if t.saved != nil {
			unix.IoctlSetTermios(t.fd, unix.TCSETS, t.saved)
		}
	})
}

// ctrlA starts an escape sequence as in QEMU: Ctrl-A x quits, Ctrl-A Ctrl-A
// sends one Ctrl-A to the guest.
const ctrlA = 0x01

// forwardInput copies host input to the guest console until EOF.
func forwardInput(f *os.File, vm *vmm.VM, raw bool) {
	buf := make([]byte, 256)
	escape := false
	for {
		n, err := f.Read(buf)
		if n > 0 {
			out := buf[:0]
			for _, c := range buf[:n] {
				switch {
				case escape && c == 'x':
					vm.Stop()
					return
				case escape:
					escape = false
					out = append(out, c)
				case raw && c == ctrlA:
					escape = true
				default:
					out = append(out, c)
				}
			}
			vm.Input(out)
		}
		if err != nil {
			return
		}
	}
}
