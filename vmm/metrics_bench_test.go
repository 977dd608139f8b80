package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vcpu"
)

// scrapeOverheadExits is the guest's loop count: about a second of exits
// here, so a 100 ms scraper hits each run about ten times.
const scrapeOverheadExits = 100000

// scrapeInterval is far shorter than any real scrape interval (15 s is
// usual): it magnifies whatever a scrape costs the guest.
const scrapeInterval = 100 * time.Millisecond

// timeScrapedGuest runs the port-I/O guest with statistics on and returns
// the mean wall time of one exit. With scrape set it serves metrics and a
// goroutine scrapes /metrics every scrapeInterval while the guest runs; it
// also returns how many scrapes completed.
func timeScrapedGuest(b *testing.B, scrape bool) (nsPerExit float64, scrapes int, err error) {
	vm := newVM(b, Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, scrapeOverheadExits), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	defer vm.Close()
	if _, err := vm.IOBus.Register("test", testPort, 1, devices.NewDiscard(0)); err != nil {
		return 0, 0, err
	}
	// stop ends the scraper between scrapes: cancelling one mid-way would
	// only make the server log an error.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	scrapeErrs := make(chan error, 1)
	if scrape {
		addr, closeMetrics, err := vm.ServeMetrics("127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		defer closeMetrics()
		metricsURL := "http://" + addr.String() + "/metrics"
		wg.Go(func() {
			tick := time.NewTicker(scrapeInterval)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if err := scrapeOnce(metricsURL); err != nil {
					scrapeErrs <- err
					return
				}
				scrapes++
			}
		})
	}
	start := time.Now()
	out := vm.Run()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if out.Err != nil || out.Reason != vcpu.Halted {
		return 0, 0, fmt.Errorf("guest ended %v, %v", out.Reason, out.Err)
	}
	select {
	case err := <-scrapeErrs:
		return 0, 0, fmt.Errorf("scrape: %w", err)
	default:
	}
	return float64(elapsed.Nanoseconds()) / scrapeOverheadExits, scrapes, nil
}

func scrapeOnce(metricsURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// BenchmarkScrapeOverhead measures what Prometheus scraping costs a busy
// guest: the port-I/O guest runs without metrics and with /metrics scraped
// every 100 ms. SCRAPE_ROUNDS rounds (default 15) run inside one benchmark
// iteration (run it with -benchtime 1x), the two variants in a rotated
// order (testenv.Order) so that host load hits both alike. It prints the
// median time per exit of each and the median of the per-round ratios
// (scraped / unscraped; 1.00 means no cost), each with its min-max and n,
// and the failed runs.
func BenchmarkScrapeOverhead(b *testing.B) {
	needKVM(b)
	rounds := testenv.Rounds(b, "SCRAPE_ROUNDS", 15) * b.N
	names := []string{"unscraped", "scraped"}
	// samples[v][r] is variant v's ns per exit in round r, NaN if it failed.
	samples := [2][]float64{make([]float64, rounds), make([]float64, rounds)}
	scrapes := 0
	failed := testenv.RunRounds(b, rounds, 2, func(v int) string { return names[v] }, func(r, v int) error {
		ns, n, err := timeScrapedGuest(b, v == 1)
		if err != nil {
			ns = math.NaN()
		}
		samples[v][r], scrapes = ns, scrapes+n
		return err
	})
	var ratios []float64
	var sums [2]testenv.Summary
	for v := range samples {
		var ns []float64
		for r, x := range samples[v] {
			if math.IsNaN(x) {
				continue
			}
			ns = append(ns, x)
			if q := samples[0][r]; v == 1 && !math.IsNaN(q) {
				ratios = append(ratios, x/q)
			}
		}
		sums[v] = testenv.Summarize(ns, failed[v])
		b.ReportMetric(sums[v].Median, names[v]+"-ns/exit")
	}
	ratio := testenv.Summarize(ratios, 0)
	b.ReportMetric(ratio.Median, "scraped/unscraped")
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Printf("\nscrape overhead, %d rounds of %d exits, scraped every %v (%d scrapes in all); median (min-max, n):\n"+
		"unscraped ns/exit %s\nscraped ns/exit   %s\nscraped/unscraped %s\n",
		rounds, scrapeOverheadExits, scrapeInterval, scrapes,
		sums[0].Format("%.0f"), sums[1].Format("%.0f"), ratio.Format("%.3f"))
}
