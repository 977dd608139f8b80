package guestsym

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// sparseELF writes an ELF whose symbol table and string table claim
// symtabSize and strtabSize bytes, in a sparse file that really is that
// long, and returns its path.
func sparseELF(t *testing.T, symtabSize, strtabSize uint64) string {
	t.Helper()
	const dataOff = 4096
	le := binary.LittleEndian
	b := make([]byte, 64+3*64)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)  // EV_CURRENT
	le.PutUint64(b[40:], 64) // e_shoff
	le.PutUint16(b[52:], 64) // e_ehsize
	le.PutUint16(b[58:], 64) // e_shentsize
	le.PutUint16(b[60:], 3)  // e_shnum
	sh := func(i int, typ, link uint32, size, entsize uint64) {
		h := b[64+i*64:]
		le.PutUint32(h[4:], typ)
		le.PutUint64(h[24:], dataOff) // sh_offset
		le.PutUint64(h[32:], size)
		le.PutUint32(h[40:], link)
		le.PutUint64(h[56:], entsize)
	}
	sh(1, 2, 2, symtabSize, 24) // SHT_SYMTAB, names in section 2
	sh(2, 3, 0, strtabSize, 0)  // SHT_STRTAB
	p := filepath.Join(t.TempDir(), "vmlinux")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(dataOff + max(symtabSize, strtabSize))); err != nil {
		t.Fatal(err)
	}
	return p
}

// A symbol table or string table larger than govmm would keep is refused
// from its size, before anything of it is read into memory.
func TestLoadRefusesHugeSymbolTable(t *testing.T) {
	for _, tc := range []struct {
		name           string
		symtab, strtab uint64
		want           string
	}{
		{"symbols", (maxSymbols + 1) * 24, 16, "more than 4194304 symbols"},
		{"names", 24, maxStrings + 1, "symbol names of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := sparseELF(t, tc.symtab, tc.strtab)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Load(p)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("Load allocated %d MiB to refuse it", n>>20)
			}
		})
	}
}
