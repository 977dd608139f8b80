package nbsys

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestReadWrite(t *testing.T) {
	a, b := socketpair(t)
	buf := make([]byte, 16)
	if _, err := Read(b, buf); err != unix.EAGAIN {
		t.Fatalf("read with nothing queued: %v, want EAGAIN (the same value, for ==)", err)
	}
	if n, err := Write(a, []byte("frame")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if n, err := Read(b, buf); n != 5 || err != nil || string(buf[:n]) != "frame" {
		t.Fatalf("read: %d %q, %v", n, buf[:n], err)
	}
	if _, err := Write(-1, buf); err != unix.EBADF {
		t.Fatalf("write to -1: %v, want EBADF", err)
	}
}

func TestVectors(t *testing.T) {
	a, b := socketpair(t)
	var scratch []unix.Iovec
	// Empty buffers are skipped: the kernel would take them, but the
	// iovec of an empty slice has no address to give it.
	n, err := Writev(a, [][]byte{[]byte("head-"), nil, {}, []byte("body")}, &scratch)
	if n != 9 || err != nil {
		t.Fatalf("writev: %d, %v", n, err)
	}
	for _, v := range scratch {
		if v.Base != nil {
			t.Fatal("scratch iovecs still point at the buffers after the call")
		}
	}
	first, second := make([]byte, 3), make([]byte, 10)
	n, err = Readv(b, [][]byte{first, second}, &scratch)
	if n != 9 || err != nil {
		t.Fatalf("readv: %d, %v", n, err)
	}
	if got := append(first, second[:6]...); !bytes.Equal(got, []byte("head-body")) {
		t.Fatalf("readv read %q", got)
	}
	if _, err := Readv(b, [][]byte{first}, &scratch); err != unix.EAGAIN {
		t.Fatalf("readv with nothing queued: %v, want EAGAIN", err)
	}
	if n, err := Writev(a, nil, &scratch); n != 0 || err != nil {
		t.Fatalf("writev of nothing: %d, %v", n, err)
	}
}
