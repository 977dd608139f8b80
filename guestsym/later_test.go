package guestsym

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// openLater opens path with OpenELFLater, collecting its warnings.
func openLater(t *testing.T, path string) (*Later, *[]error, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var warned []error
	l, err := OpenELFLater(f, func(err error) { warned = append(warned, err) })
	return l, &warned, err
}

// A Later reads nothing of the symbols until a name is asked for, then
// names what Load's table names.
func TestLaterNamesAsLoad(t *testing.T) {
	p := filepath.Join(sharedGuest, "vmlinux")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no shared guest kernel beside the repository: %v", err)
	}
	l, warned, err := openLater(t, p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.t != nil {
		t.Fatal("the symbols were read at open")
	}
	now, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	for i := 0; i < now.Len(); i += 97 {
		a := now.addrs[i] + 1
		if got, want := l.Name(a), now.Name(a); got != want {
			t.Fatalf("%#x: %q, want %q", a, got, want)
		}
	}
	if l.Name(now.addrs[0]+1) == "" || len(*warned) != 0 {
		t.Fatalf("names nothing, warned %v", *warned)
	}
}

// A kernel written in place between open and the first lookup names
// nothing, says why once, and never panics; a stripped one is refused at
// open, as Load refuses it.
func TestLaterFileChanged(t *testing.T) {
	src := filepath.Join(sharedGuest, "vmlinux")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("no shared guest kernel beside the repository: %v", err)
	}
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	l, warned, err := openLater(t, p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(p, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := l.Name(0xffffffff81000001); got != "" {
			t.Fatalf("after a write in place: %q, want nothing", got)
		}
	}
	if len(*warned) != 1 || !strings.Contains((*warned)[0].Error(), errChanged.Error()) {
		t.Fatalf("warned %v, want once that the file changed", *warned)
	}

	hdr := make([]byte, 64) // an ELF header with no sections (TestLoadStrippedELF)
	copy(hdr, "\x7fELF\x02\x01\x01")
	hdr[16], hdr[18], hdr[20], hdr[52] = 2, 62, 1, 64
	if err := os.WriteFile(p, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLater(t, p); err != ErrNoSymbols {
		t.Fatalf("stripped: %v, want %v", err, ErrNoSymbols)
	}
	if err := os.WriteFile(p, []byte("not an ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLater(t, p); err == nil {
		t.Fatal("a file that is no ELF was taken")
	}
}
