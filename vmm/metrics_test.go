package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vcpu"
)

// metricsExits is how many port-I/O exits the metrics tests' guest makes.
const metricsExits = 2000

// newVM is New, failing the test on an error.
func newVM(tb testing.TB, cfg Config) *VM {
	tb.Helper()
	vm, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return vm
}

// ranPortLoop boots a real-mode guest doing n port-I/O exits to the test
// device, then HLT, and returns the VM after Run: still open, so its
// metrics can be scraped. t's cleanup closes it.
func ranPortLoop(t *testing.T, n uint32) *VM {
	t.Helper()
	needKVM(t)
	vm := newVM(t, Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, n), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	t.Cleanup(func() { vm.Close() })
	dev := &counter{}
	if _, err := vm.IOBus.Register("test", testPort, 1, dev); err != nil {
		t.Fatal(err)
	}
	if out := vm.Run(); out.Err != nil || out.Reason != vcpu.Halted {
		t.Fatalf("guest ended %v, %v; want halted", out.Reason, out.Err)
	}
	if dev.n.Load() != uint64(n) {
		t.Fatalf("device saw %d exits, want %d", dev.n.Load(), n)
	}
	return vm
}

// serveMetrics starts vm's metrics endpoint for the test and returns the
// URL of /metrics.
func serveMetrics(t *testing.T, vm *VM) string {
	t.Helper()
	addr, closeMetrics, err := vm.ServeMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := closeMetrics(); err != nil {
			t.Errorf("close metrics: %v", err)
		}
	})
	return "http://" + addr.String() + "/metrics"
}

func scrape(t *testing.T, metricsURL string) []byte {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", metricsURL, resp.Status, body)
	}
	return body
}

// sampleValue returns the value of the series of family name whose labels
// include want, from a text exposition.
func sampleValue(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mf, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func parseExposition(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

func TestMetricsEndpoint(t *testing.T) {
	vm := ranPortLoop(t, metricsExits)
	metricsURL := serveMetrics(t, vm)
	families := parseExposition(t, scrape(t, metricsURL))

	ioTest := map[string]string{"vcpu": "0", "reason": "IO:test"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"govmm_exits_total", ioTest, metricsExits},
		{"govmm_exit_handling_seconds", ioTest, metricsExits}, // its count
		{"govmm_exits_total", map[string]string{"reason": "HLT"}, 1},
		{"govmm_vcpus", nil, 1},
		{"govmm_memory_bytes", nil, 2 << 20},
		{"govmm_vm_state", map[string]string{"state": "stopped"}, 1},
		{"govmm_vm_state", map[string]string{"state": "running"}, 0},
	} {
		got, ok := sampleValue(t, families, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if g, ok := sampleValue(t, families, "govmm_guest_seconds_total", map[string]string{"vcpu": "0"}); !ok || g <= 0 {
		t.Errorf("govmm_guest_seconds_total = %v (present %v)", g, ok)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := families[name]; !ok {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}
	// The kernel counted at least every exit user space saw (PVM emulates
	// a real-mode OUT in the kernel first, so it may count more).
	if k, ok := sampleValue(t, families, "govmm_kvm_exits_total", map[string]string{"vcpu": "0"}); ok {
		if k < metricsExits {
			t.Errorf("govmm_kvm_exits_total = %v, below the %d exits user space handled", k, metricsExits)
		}
	} else if vm.kvm.CheckExtension(kvm.CapBinaryStatsFD) != 0 {
		t.Error("stats fd available but no govmm_kvm_exits_total")
	}
}

func TestMetricsCloseStopsServer(t *testing.T) {
	vm := ranPortLoop(t, 10)
	addr, closeMetrics, err := vm.ServeMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scrape(t, "http://"+addr.String()+"/metrics")
	if err := closeMetrics(); err != nil {
		t.Fatal(err)
	}
	if err := closeMetrics(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if resp, err := http.Get("http://" + addr.String() + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("server still answers after close")
	}
}

// The metrics of a VM that is still running reflect its state.
func TestMetricsWhileRunning(t *testing.T) {
	needKVM(t)
	vm := newVM(t, Config{
		// ecx = 0: the loop wraps and runs for 2^32 iterations.
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, 0), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	defer vm.Close()
	dev := &counter{}
	if _, err := vm.IOBus.Register("test", testPort, 1, dev); err != nil {
		t.Fatal(err)
	}
	metricsURL := serveMetrics(t, vm)
	state := func() string {
		families := parseExposition(t, scrape(t, metricsURL))
		for _, s := range metricsStates {
			if v, _ := sampleValue(t, families, "govmm_vm_state", map[string]string{"state": s}); v == 1 {
				return s
			}
		}
		return "none"
	}
	if s := state(); s != "created" {
		t.Errorf("state before Run = %s", s)
	}
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	waitFor(t, "exits", func() bool { return dev.n.Load() > 100 })
	if s := state(); s != "running" {
		t.Errorf("state while running = %s", s)
	}
	vm.Pause()
	if s := state(); s != "paused" {
		t.Errorf("state while paused = %s", s)
	}
	vm.Resume()
	vm.Stop()
	<-done
	if s := state(); s != "stopped" {
		t.Errorf("state after Stop = %s", s)
	}
}

// promtool is Prometheus's own checker: what it says about a real scrape
// is what a Prometheus operator would see.
func TestMetricsPromtoolCheck(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	vm := ranPortLoop(t, metricsExits)
	body := scrape(t, serveMetrics(t, vm))
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// freeLoopbackPort returns a TCP port nothing listens on right now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs a Prometheus server on loopback that scrapes target
// every second, and returns its base URL. The server is killed when the
// test ends.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus; CI installs it from .ci/apt-packages.txt)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: govmm
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	return "http://" + listen
}

// queryScalar runs an instant query and returns the value of its single
// sample, or ok false while Prometheus has none (not scraped yet).
func queryScalar(ctx context.Context, promURL, query string) (value string, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, promURL+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return "", false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false, nil // not up yet
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric model.Metric `json:"metric"`
				Value  [2]any       `json:"value"` // [time, "value"]
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", false, nil // Prometheus still starting
	}
	if r.Status != "success" {
		return "", false, fmt.Errorf("query %s: %s", query, r.Error)
	}
	if len(r.Data.Result) != 1 {
		return "", false, nil
	}
	v, _ := r.Data.Result[0].Value[1].(string)
	return v, true, nil
}

// A real Prometheus server scrapes the endpoint and its query API returns
// exactly the number of exits the guest made.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus not installed (Debian package prometheus; CI installs it from .ci/apt-packages.txt)")
	}
	vm := ranPortLoop(t, metricsExits)
	metricsURL := serveMetrics(t, vm)
	target := strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics")
	promURL := startPrometheus(t, target)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := fmt.Sprint(metricsExits)
	queries := []string{
		`govmm_exits_total{reason="IO:test"}`,
		`govmm_exit_handling_seconds_count{reason="IO:test"}`,
		`sum(govmm_exit_handling_seconds_bucket{reason="IO:test",le="+Inf"})`,
	}
	for _, q := range queries {
		var last string
		for {
			v, ok, err := queryScalar(ctx, promURL, q)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				last = v
				if v == want {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: last value %q, want %s (Prometheus gave up or never scraped %s)", q, last, want, target)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The scrape itself was healthy: Prometheus saw the target up.
	if v, ok, err := queryScalar(ctx, promURL, `up{job="govmm"}`); err != nil || !ok || v != "1" {
		t.Errorf("up = %q (%v, %v)", v, ok, err)
	}
}
