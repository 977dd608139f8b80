package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// writeJSON's temporary file cannot be planted: a symlink at FILE.tmp
// (root would have written through it) is left alone, and so is the
// file it points to.
func TestWriteJSONIgnoresPlantedTemp(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "stats.json")
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(path, map[string]int{"exits": 42}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the symlink's target now holds %q", b)
	}
	var got map[string]int
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &got) != nil || got["exits"] != 42 {
		t.Errorf("%s holds %q (%v)", path, b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: mode %v (%v), want 0644", path, fi.Mode(), err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"stats.json", "stats.json.tmp"}) {
		t.Errorf("directory holds %q, want the table and the planted link only", names)
	}
}

// A failed rename (FILE is a directory) leaves no temporary file behind.
func TestWriteJSONCleansUpOnFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	if err := os.MkdirAll(filepath.Join(path, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(path, map[string]int{"exits": 42}); err == nil {
		t.Fatal("writeJSON over a directory: no error")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"stats.json"}) {
		t.Errorf("directory holds %q after the failure, want only the directory that was there", names)
	}
}

// A FIFO (or /dev/stdout) is written as a stream, not replaced by a file.
func TestWriteJSONToFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := os.ReadFile(path)
		got <- b
	}()
	if err := writeJSON(path, map[string]int{"exits": 42}); err != nil {
		t.Fatal(err)
	}
	// Checked first: had the FIFO been replaced, the reader could wait
	// on it for ever.
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the FIFO was replaced: %v, %v", fi.Mode(), err)
	}
	if b := <-got; string(b) != "{\n  \"exits\": 42\n}\n" {
		t.Errorf("reader got %q", b)
	}
}
