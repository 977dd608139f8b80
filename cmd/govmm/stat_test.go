package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A file given to `govmm stat --diff` is user input: one far larger than
// any saved table is refused without being read whole.
func TestReadTableRefusesHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: 4 GiB of zeros cost no disk.
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = readTable(path)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Fatalf("readTable(4 GiB file) = %v, want a size error", err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 256<<20 {
		t.Errorf("reading a 4 GiB file allocated %d MiB", grown>>20)
	}
}

// A file whose "user" table is null or empty (saved with
// --exit-stats=false) has nothing to compare: it was read as a table with
// no rows (an audit).
func TestReadTableRefusesEmptyTable(t *testing.T) {
	for _, in := range []string{`{"user":null}`, `{"user":{}}`, `{"user":{"vcpus":[]}}`} {
		path := filepath.Join(t.TempDir(), "t.json")
		if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readTable(path); err == nil || !strings.Contains(err.Error(), "no user-space exit table") {
			t.Errorf("readTable(%s) = %v, want it refused", in, err)
		}
	}
}
