package main

import (
	"strings"
	"testing"
)

// A stream with a pass, a skip, a failure and a package without tests
// comes out as go test's text: the failure's output, then the skips
// with their reasons, then the package results last.
func TestSummarize(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"m/a"}`,
		`{"Action":"run","Package":"m/a","Test":"TestOK"}`,
		`{"Action":"output","Package":"m/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"output","Package":"m/a","Test":"TestOK","Output":"    a_test.go:5: chatter\n"}`,
		`{"Action":"pass","Package":"m/a","Test":"TestOK"}`,
		`{"Action":"output","Package":"m/a","Test":"TestKVM","Output":"=== RUN   TestKVM\n"}`,
		`{"Action":"output","Package":"m/a","Test":"TestKVM","Output":"    a_test.go:9: no /dev/kvm on this machine\n"}`,
		`{"Action":"output","Package":"m/a","Test":"TestKVM","Output":"--- SKIP: TestKVM (0.00s)\n"}`,
		`{"Action":"skip","Package":"m/a","Test":"TestKVM"}`,
		`{"Action":"output","Package":"m/a","Test":"TestBad","Output":"=== RUN   TestBad\n"}`,
		`{"Action":"output","Package":"m/a","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}`,
		`{"Action":"output","Package":"m/a","Test":"TestBad","Output":"    a_test.go:12: broken\n"}`,
		`{"Action":"fail","Package":"m/a","Test":"TestBad"}`,
		`{"Action":"output","Package":"m/a","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"m/a","Output":"FAIL\tm/a\t0.01s\n"}`,
		`{"Action":"fail","Package":"m/a"}`,
		`{"Action":"output","Package":"m/b","Output":"?   \tm/b\t[no test files]\n"}`,
		`FAIL`,
	}, "\n") + "\n"
	var out strings.Builder
	if err := summarize(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	want := "--- FAIL: TestBad (0.00s)\n    a_test.go:12: broken\n" +
		"FAIL\n" + // a line that is not JSON passes through
		"1 tests skipped:\n  m/a TestKVM: a_test.go:9: no /dev/kvm on this machine\n" +
		"FAIL\tm/a\t0.01s\n?   \tm/b\t[no test files]\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
