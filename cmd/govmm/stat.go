package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/govmm/govmm/exitstats"
)

// statCommand implements `govmm stat`.
func statCommand(args []string) error {
	fs := flag.NewFlagSet("govmm stat", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	diff := fs.Bool("diff", false, "compare two tables saved with --exit-stats-json: govmm stat --diff A.json B.json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println("usage: govmm stat --diff A.json B.json")
			return nil
		}
		return err
	}
	if !*diff {
		return fmt.Errorf("stat: nothing to do (try --diff A.json B.json)")
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

func readTable(path string) (exitstats.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return exitstats.Snapshot{}, err
	}
	defer f.Close()
	s, err := exitstats.ReadJSON(f)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
