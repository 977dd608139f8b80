package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/govmm/govmm/exitstats"
)

// statCommand implements `govmm stat`.
func statCommand(args []string) error {
	fs := flag.NewFlagSet("govmm stat", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	diff := fs.Bool("diff", false, "compare two tables saved with --exit-stats-json: govmm stat --diff A.json B.json")
	qmpAddr := fs.String("qmp", "", "live view of the govmm serving QMP at `unix:PATH`")
	once := fs.Bool("once", false, "with --qmp: print one snapshot (rates over one interval) and exit")
	interval := fs.Duration("interval", time.Second, "with --qmp: refresh interval (a Go duration: 500ms, 2s; at least 10ms)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println("usage: govmm stat --qmp unix:PATH [--once] [--interval 1s]\n       govmm stat --diff A.json B.json")
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return nil
		}
		return err
	}
	if *qmpAddr != "" {
		path, ok := strings.CutPrefix(*qmpAddr, "unix:")
		if !ok || path == "" {
			return fmt.Errorf("stat --qmp %q: want unix:PATH", *qmpAddr)
		}
		if *interval < 10*time.Millisecond {
			return fmt.Errorf("stat --interval %v: too short", *interval)
		}
		return liveView(os.Stdout, path, *interval, *once)
	}
	if !*diff {
		return fmt.Errorf("stat: nothing to do (try --qmp unix:PATH or --diff A.json B.json)")
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("stat --diff: want two saved tables, got %d arguments", fs.NArg())
	}
	a, err := readTable(fs.Arg(0))
	if err != nil {
		return err
	}
	b, err := readTable(fs.Arg(1))
	if err != nil {
		return err
	}
	fmt.Printf("A: %s\nB: %s\n\n", fs.Arg(0), fs.Arg(1))
	return exitstats.WriteDiff(os.Stdout, a, b)
}

// maxSavedTable bounds what readTable reads: a saved table of 254 vCPUs
// with every row in use is a few MiB, so a larger file is not one, and
// reading it whole could exhaust memory.
const maxSavedTable = 64 << 20

// readTable reads the user-space half of a table saved with
// --exit-stats-json.
func readTable(path string) (exitstats.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return exitstats.Snapshot{}, err
	}
	defer f.Close()
	tooLarge := fmt.Errorf("%s: larger than %d MiB: not a table saved by govmm run --exit-stats-json", path, maxSavedTable>>20)
	// A file's size refuses it unread; the limit on the read covers a
	// pipe, and a file that grows meanwhile.
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > maxSavedTable {
		return exitstats.Snapshot{}, tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSavedTable+1))
	if err != nil {
		return exitstats.Snapshot{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxSavedTable {
		return exitstats.Snapshot{}, tooLarge
	}
	var saved struct {
		User json.RawMessage `json:"user"`
	}
	if err := json.Unmarshal(b, &saved); err != nil || saved.User == nil {
		return exitstats.Snapshot{}, fmt.Errorf("%s: not a table saved by govmm run --exit-stats-json", path)
	}
	s, err := exitstats.ReadJSON(bytes.NewReader(saved.User))
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.VCPUs) == 0 { // "user": null or {}
		return s, fmt.Errorf("%s: no user-space exit table (saved with --exit-stats=false?): nothing to compare", path)
	}
	return s, nil
}
