package guestsym

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// sharedGuest is the shared test kernel's directory, beside the repository.
var sharedGuest = filepath.Join("..", "..", "shared", "guest")

const sampleMap = `0000000000000000 D __per_cpu_start
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff81034c9e t io_serial_in
ffffffff81034ca6 t io_serial_out
ffffffff81034cb0 W weak_fn

ffffffff81600000 D some_data
ffffffffc0001000 t mod_fn	[virtio_blk]
`

func TestReadSystemMap(t *testing.T) {
	tab, err := ReadSystemMap(strings.NewReader(sampleMap), int64(len(sampleMap)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr uint64
		want string
	}{
		{0x1000, ""},
		{0xffffffff81000000, "startup_64+0x0"},
		{0xffffffff81034ca0, "io_serial_in+0x2"},
		{0xffffffff81034ca6 + 5, "io_serial_out+0x5"},
		{0xffffffff81034cb2, "weak_fn+0x2"},
		{0xffffffff81600010, "weak_fn+0x5cb360"}, // data symbols are not kept
		{0xffffffffc0001004, "mod_fn+0x4"},
	} {
		if got := tab.Name(tc.addr); got != tc.want {
			t.Errorf("Name(%#x) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// A bad line is refused with its number and what is wrong with it.
func TestReadSystemMapErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "no code symbols"},
		{"data only", "ffffffff81600000 D x\n", "no code symbols"},
		{"two fields", "ffffffff81000000 T\n", "line 1: 2 fields"},
		{"five fields", "1 T a b c\n", "line 1: 5 fields"},
		{"bad address", "1 T a\nxyz T b\n", `line 2: address "xyz"`},
		{"address too large", "1ffffffffffffffff T a\n", "not a 64-bit hexadecimal"},
		{"long type", "1 Tt a\n", `type "Tt"`},
		{"control character", "1 T a\x01b\n", "control character at byte 1"},
		{"long name", "1 T " + strings.Repeat("n", maxName+1) + "\n", "longer than 512"},
		{"long line", "1 T a" + strings.Repeat(" ", maxLine) + "\n", "line 1: longer than 1024 bytes"},
		{"unbracketed fourth field", "1 t a mod\n", "4 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSystemMap(strings.NewReader(tc.in), int64(len(tc.in)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReadSystemMapTooLarge(t *testing.T) {
	line := []byte("ffffffff81000000 T startup_64\n")
	big := bytes.Repeat(line, MaxMapSize/len(line)+1)
	_, err := ReadSystemMap(bytes.NewReader(big), int64(len(big)))
	if err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("error %v, want larger than 64 MiB", err)
	}
}

// The shared kernel's System.map and its vmlinux's ELF symbol table name
// every function the same.
func TestSharedKernelSymbols(t *testing.T) {
	mapPath, elfPath := filepath.Join(sharedGuest, "System.map"), filepath.Join(sharedGuest, "vmlinux")
	for _, p := range []string{mapPath, elfPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no shared guest kernel beside the repository: %v", err)
		}
	}
	fromMap, err := Load(mapPath)
	if err != nil {
		t.Fatal(err)
	}
	fromELF, err := Load(elfPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(mapPath)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(string(b), "\n") {
		e, code, err := parseLine([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if !code {
			continue
		}
		// A few bytes into each function, where an exit's RIP would be.
		a := e.addr + 1
		if m, el := fromMap.Name(a), fromELF.Name(a); m != el {
			t.Errorf("%#x: System.map says %s, ELF says %s", a, m, el)
		}
		checked++
	}
	if checked < 1000 {
		t.Errorf("only %d code symbols checked", checked)
	}
	for _, name := range []string{"io_serial_in", "io_serial_out", "pci_conf1_read", "pci_conf1_write"} {
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[2] == name {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is not in the shared System.map", name)
		}
	}
}

func TestLoadStrippedELF(t *testing.T) {
	// An ELF header with no sections at all: nothing to name.
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	hdr[16], hdr[18], hdr[20] = 2, 62, 1 // ET_EXEC, EM_X86_64, EV_CURRENT
	hdr[52] = 64                         // e_ehsize
	p := filepath.Join(t.TempDir(), "stripped")
	if err := os.WriteFile(p, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), ErrNoSymbols.Error()) {
		t.Errorf("error %v, want %v", err, ErrNoSymbols)
	}
}

func FuzzReadSystemMap(f *testing.F) {
	testenv.AddSeed(f, "sample", []byte(sampleMap))
	testenv.AddSeed(f, "kallsyms", []byte("ffffffffc0001000 t mod_fn\t[virtio_blk]\n"))
	testenv.AddSeed(f, "bad", []byte("zz T a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ReadSystemMap(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if tab != nil {
				t.Fatal("a table and an error")
			}
			return
		}
		// Every address a line names resolves to a symbol at or below it.
		for _, line := range bytes.Split(data, []byte("\n")) {
			e, code, err := parseLine(line)
			if err != nil || !code {
				continue
			}
			s, ok := tab.Lookup(e.addr)
			if !ok || s.Offset != 0 {
				t.Fatalf("%#x: %v %v, want a symbol starting there", e.addr, s, ok)
			}
		}
		for i := 1; i < len(tab.addrs); i++ {
			if tab.addrs[i-1] >= tab.addrs[i] {
				t.Fatalf("addresses out of order at %d", i)
			}
		}
	})
}

// Names are read from the file at each lookup: a file renamed over or
// removed since the load still names (the table holds the old file open),
// one written in place names nothing (its offsets are another file's),
// and a closed table names nothing; none of it panics.
func TestNamesFollowTheLoadedFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "System.map")
	if err := os.WriteFile(p, []byte(sampleMap), 0o644); err != nil {
		t.Fatal(err)
	}
	tab, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	const at, want = 0xffffffff81034ca0, "io_serial_in+0x2"
	if got := tab.Name(at); got != want {
		t.Fatalf("Name = %q, want %q", got, want)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("ffffffff81034c9e t renamed_fn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, p); err != nil {
		t.Fatal(err)
	}
	if got := tab.Name(at); got != want {
		t.Errorf("after a rename over the file: Name = %q, want %q", got, want)
	}
	tab.Close()
	if got := tab.Name(at); got != "" {
		t.Errorf("after Close: Name = %q, want none", got)
	}

	tab, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	if got := tab.Name(at); got != "renamed_fn+0x2" {
		t.Fatalf("Name = %q, want renamed_fn+0x2", got)
	}
	if err := os.WriteFile(p, []byte("ffffffff81034c9e t xx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := tab.Name(at); got != "" {
		t.Errorf("after the file was written in place: Name = %q, want none", got)
	}
}

// Loading the shared kernel's symbols allocates little: the table keeps
// 12 bytes a symbol (13 while it is built) and reads names from the
// file. Reading the ELF's symbols allocated 2.8 MiB (and 10 MB before
// that), most of it garbage left in the heap; its System.map 11 MiB.
func TestLoadAllocatesLittle(t *testing.T) {
	for _, name := range []string{"vmlinux", "System.map"} {
		p := filepath.Join(sharedGuest, name)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no shared guest kernel beside the repository: %v", err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tab, err := Load(p)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		tab.Close()
		if n, most := after.TotalAlloc-before.TotalAlloc, uint64(tab.Len())*13+256<<10; n > most {
			t.Errorf("%s: %d symbols, %d KiB allocated, want at most %d", name, tab.Len(), n>>10, most>>10)
		}
	}
}
