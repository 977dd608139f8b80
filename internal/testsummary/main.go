// Command testsummary turns `go test -json` into go test's own text and
// says at the end which tests skipped and why: `make test` pipes the suite
// through it, so a test that quietly skipped (no /dev/kvm, a tool not
// installed) is visible, not mistaken for a pass.
//
// The output of a failed test is printed as soon as it fails, that of a
// passed or skipped test is dropped (as go test does without -v), and the
// package result lines ("ok", "FAIL", "?") come last, after the list of
// skips, so the closing lines are still go test's own. It exits 0: the
// exit status is go test's (make runs the pipe with pipefail).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// event is the part of a test2json event this reads.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// skip is one skipped test and the lines it logged.
type skip struct {
	pkg, test string
	reason    []string
}

func main() {
	if err := summarize(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
}

func summarize(in io.Reader, out io.Writer) error {
	var (
		logs    = map[[2]string][]string{} // output of each running test
		skips   []skip
		results []string // package result lines, printed last
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(out, "%s\n", line) // not an event: pass it on
			continue
		}
		key := [2]string{e.Package, e.Test}
		switch {
		case e.Action == "build-output":
			fmt.Fprint(out, e.Output)
		case e.Action == "output" && e.Test != "":
			logs[key] = append(logs[key], e.Output)
		case e.Action == "output":
			if isResult(e.Output) {
				results = append(results, e.Output)
			} else if e.Output != "PASS\n" && e.Output != "FAIL\n" && !strings.HasPrefix(e.Output, "=== ") {
				fmt.Fprint(out, e.Output) // a package's own output (a panic, a log line)
			}
		case e.Action == "fail" && e.Test != "":
			for _, l := range logs[key] {
				if !strings.HasPrefix(l, "=== ") {
					fmt.Fprint(out, l)
				}
			}
			delete(logs, key)
		case e.Action == "skip" && e.Test != "":
			s := skip{pkg: e.Package, test: e.Test}
			for _, l := range logs[key] {
				if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- SKIP") {
					s.reason = append(s.reason, t)
				}
			}
			skips = append(skips, s)
			delete(logs, key)
		case e.Action == "pass" || e.Action == "skip":
			delete(logs, key)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	printSkips(out, skips)
	for _, r := range results {
		fmt.Fprint(out, r)
	}
	return nil
}

// isResult reports whether a package-level line is go test's verdict on
// the package.
func isResult(s string) bool {
	return strings.HasPrefix(s, "ok  \t") || strings.HasPrefix(s, "FAIL\t") || strings.HasPrefix(s, "?   \t")
}

func printSkips(out io.Writer, skips []skip) {
	if len(skips) == 0 {
		fmt.Fprintln(out, "no test skipped")
		return
	}
	fmt.Fprintf(out, "%d tests skipped:\n", len(skips))
	for _, s := range skips {
		reason := "(no reason given)"
		if len(s.reason) > 0 {
			reason = s.reason[len(s.reason)-1] // the Skip message comes last
		}
		fmt.Fprintf(out, "  %s %s: %s\n", strings.TrimPrefix(s.pkg, "github.com/govmm/govmm/"), s.test, reason)
	}
}
