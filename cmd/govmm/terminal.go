package main

import (
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/vmm"
)

// terminal puts the host terminal in raw mode while the guest owns the
// console, so keys (Ctrl-C included) go to the guest, and restores it on
// every way out.
type terminal struct {
	fd  int
	raw bool // the terminal was put in raw mode

	mu       sync.Mutex // guards the two below and the terminal's mode
	saved    *unix.Termios
	rawState unix.Termios
	restored bool
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
		t.saved, t.rawState, t.raw = saved, raw, true
		t.keepRawAfterStop()
	}
	return t
}

// keepRawAfterStop puts the terminal back in raw mode when govmm
// continues after a stop, as QEMU's stdio backend does on SIGCONT: the
// shell that took the terminal back meanwhile (SIGSTOP, then fg) leaves
// it as the shell wants it, and keys were then echoed, held until a
// newline, and Ctrl-C killed govmm instead of reaching the guest.
func (t *terminal) keepRawAfterStop() {
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	go func() {
		for range cont {
			t.mu.Lock()
			if !t.restored {
				unix.IoctlSetTermios(t.fd, unix.TCSETS, &t.rawState)
			}
			t.mu.Unlock()
		}
	}()
}

func (t *terminal) restore() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.restored {
		return
	}
	t.restored = true
	if t.saved != nil {
		unix.IoctlSetTermios(t.fd, unix.TCSETS, t.saved)
	}
}

// ctrlA starts an escape sequence as in QEMU: Ctrl-A x quits, Ctrl-A Ctrl-A
// sends one Ctrl-A to the guest.
const ctrlA = 0x01

// inputBacklog is how many reads of terminal input (up to inputChunk
// bytes each) may wait for a guest that does not read its console.
const (
	inputBacklog = 256
	inputChunk   = 256
)

// forwardInput copies host input to the guest console until EOF, at the
// pace the guest reads it. Input from a pipe or a file waits for the
// guest and is never lost. A terminal is read on regardless, so that
// Ctrl-A x quits a guest that stopped reading: up to inputBacklog reads
// wait, and keys beyond are dropped and counted in dropped.
func forwardInput(f *os.File, vm *vmm.VM, raw bool, dropped *atomic.Uint64) {
	pending := make(chan []byte, inputBacklog)
	defer close(pending)
	go func() {
		for p := range pending {
			if vm.Input(p) < len(p) {
				break // the VM ended
			}
		}
		for range pending { // so that a blocked send returns
		}
	}()
	buf := make([]byte, inputChunk)
	escape := false
	for {
		n, err := f.Read(buf)
		var out []byte
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
		if len(out) > 0 {
			if !raw {
				pending <- out
			} else {
				select {
				case pending <- out:
				default:
					dropped.Add(uint64(len(out)))
				}
			}
		}
		if err != nil {
			return
		}
	}
}
