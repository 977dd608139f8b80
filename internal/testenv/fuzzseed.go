package testenv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeSeeds = flag.Bool("write-fuzz-seeds", false,
	"write the seeds of the fuzz targets that run to testdata/fuzz/<target>/ (go's corpus format)")

// AddSeed adds data to f's seed corpus under name. The seeds are built
// in code, from the same helpers the unit tests use, so they follow the
// formats they stand for; `go test -run 'Fuzz.*' -write-fuzz-seeds`
// also writes them to testdata/fuzz/<target>/seed-<name>, the corpus
// that `go test -fuzz` and other tools read from the repository.
func AddSeed(f *testing.F, name string, data []byte) {
	f.Helper()
	f.Add(data)
	if !*writeSeeds {
		return
	}
	dir := filepath.Join("testdata", "fuzz", f.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
	if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
		f.Fatal(err)
	}
}
