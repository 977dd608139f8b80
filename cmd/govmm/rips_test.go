package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vmm"
)

// serialDriver names the 8250 driver's functions, where a guest's
// console output exits.
var serialDriver = regexp.MustCompile(`^(serial8250_|io_serial_|mem_serial_)\w*\+0x[0-9a-f]+$`)

// A guest printing all the time: the serial row's top call sites are the
// 8250 driver's, named from the vmlinux's symbols, in QMP's
// query-exit-stats, in govmm stat's live view, in the table printed at
// the end and in --exit-stats-json.
func TestExitRIPsEverywhere(t *testing.T) {
	if !testenv.PVMHost() {
		t.Skip("the guest kernel of this host (Debian's) ships no symbol table")
	}
	saved := filepath.Join(t.TempDir(), "table.json")
	vm := startQMP(t, "govmm.run=yes", "--exit-stats-json", saved)

	var table vmm.ExitTable
	if err := runQMP(vm.mon, "query-exit-stats", nil, &table); err != nil {
		t.Fatal(err)
	}
	checkSerialSites(t, "query-exit-stats", table.User)

	live, err := exec.Command(govmmBin, "stat", "--qmp", "unix:"+vm.sock, "--once", "--interval", "300ms").CombinedOutput()
	if err != nil {
		t.Fatalf("govmm stat --once: %v\n%s", err, live)
	}
	if sites := sitesUnder(string(live), "IO:serial"); len(sites) == 0 || !serialDriver.MatchString(sites[0]) {
		t.Errorf("govmm stat: call sites under IO:serial %q, want the 8250 driver's:\n%s", sites, live)
	}

	if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm.cmd, vm.stderr)
	if sites := sitesUnder(vm.stderr.String(), "IO:serial"); len(sites) == 0 || !serialDriver.MatchString(sites[0]) {
		t.Errorf("exit table: call sites under IO:serial %q, want the 8250 driver's:\n%s", sites, vm.stderr.String())
	}
	b, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		User struct {
			VCPUs []struct {
				Rows []struct {
					Name    string           `json:"name"`
					TopRIPs []map[string]any `json:"top_rips"`
				} `json:"rows"`
			} `json:"vcpus"`
		} `json:"user"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range raw.User.VCPUs {
		for _, r := range v.Rows {
			if r.Name != "IO:serial" || len(r.TopRIPs) == 0 {
				continue
			}
			found = true
			top := r.TopRIPs[0]
			rip, _ := top["rip"].(string)
			sym, _ := top["symbol"].(string)
			if _, ok := top["count"].(float64); !ok || !strings.HasPrefix(rip, "0xffffffff8") || !serialDriver.MatchString(sym) {
				t.Errorf("--exit-stats-json: top RIP of IO:serial %v, want rip, symbol and count", top)
			}
		}
	}
	if !found {
		t.Errorf("--exit-stats-json has no top_rips under IO:serial:\n%s", b)
	}
}

func checkSerialSites(t *testing.T, where string, s exitstats.Snapshot) {
	t.Helper()
	for _, r := range s.Total().Rows {
		if r.Name == "IO:serial" {
			if len(r.TopRIPs) == 0 || !serialDriver.MatchString(r.TopRIPs[0].Symbol) {
				t.Errorf("%s: IO:serial top RIPs %+v, want the 8250 driver's", where, r.TopRIPs)
			}
			return
		}
	}
	t.Errorf("%s: no IO:serial row", where)
}

// sitesUnder returns the call sites printed under the first line that
// starts with row: the indented lines that follow, each "share site".
func sitesUnder(out, row string) []string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if f := strings.Fields(l); len(f) == 0 || f[0] != row {
			continue
		}
		var sites []string
		for _, s := range lines[i+1:] {
			f := strings.Fields(s)
			if !strings.HasPrefix(s, "  ") || len(f) != 2 || !strings.HasSuffix(f[0], "%") {
				break
			}
			sites = append(sites, f[1])
		}
		return sites
	}
	return nil
}

// The live view's call sites are those of the interval: exits counted
// before it do not count, and a share is marked as a bound where the
// counts are.
func TestLiveSites(t *testing.T) {
	prev := []exitstats.RIPCount{
		{RIP: 0x10, Symbol: "old_hot+0x0", Count: 1000},
		{RIP: 0x20, Symbol: "io_serial_out+0x11", Count: 10},
	}
	cur := []exitstats.RIPCount{
		{RIP: 0x10, Symbol: "old_hot+0x0", Count: 1001},
		{RIP: 0x20, Symbol: "io_serial_out+0x11", Count: 70},
		{RIP: 0x30, Count: 30, Overcount: 5},
	}
	got := liveSites(prev, cur, 100)
	want := []liveSite{
		{where: "io_serial_out+0x11", share: 0.6, exact: true},
		{where: "0x30", share: 0.3, exact: false},
		{where: "old_hot+0x0", share: 0.01, exact: true},
	}
	if len(got) != len(want) {
		t.Fatalf("sites %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].where != want[i].where || got[i].exact != want[i].exact || got[i].share < want[i].share-1e-9 || got[i].share > want[i].share+1e-9 {
			t.Errorf("site %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	a := sample{at: time.Unix(100, 0)}
	b := sample{at: time.Unix(101, 0)}
	a.table.User.VCPUs = []exitstats.VCPUSnapshot{{Rows: []exitstats.Row{{Name: "IO:serial", Stats: exitstats.Stats{Count: 10, Sum: 1000}, TopRIPs: prev}}}}
	b.table.User.VCPUs = []exitstats.VCPUSnapshot{{Rows: []exitstats.Row{{Name: "IO:serial", Stats: exitstats.Stats{Count: 110, Sum: 2000}, TopRIPs: cur}}}}
	var out strings.Builder
	if err := writeLive(&out, "test", a, b); err != nil {
		t.Fatal(err)
	}
	if sites := sitesUnder(out.String(), "IO:serial"); strings.Join(sites, " ") != "io_serial_out+0x11 0x30 old_hot+0x0" {
		t.Errorf("sites under IO:serial %q:\n%s", sites, out.String())
	}
	if !strings.Contains(out.String(), "<=30.0%  0x30") {
		t.Errorf("the inexact share is not marked:\n%s", out.String())
	}
}
