package vmm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/guests/tiny"
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
func timeScrapedGuest(b *testing.B, scrape bool) (nsPerExit float64, scrapes int) {
	vm := newVM(b, Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, scrapeOverheadExits), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	defer vm.Close()
	if _, err := vm.IOBus.Register("test", testPort, 1, devices.NewDiscard(0)); err != nil {
		b.Fatal(err)
	}
	// stop ends the scraper between scrapes: cancelling one mid-way would
	// only make the server log an error.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	scrapeErrs := make(chan error, 1)
	if scrape {
		addr, closeMetrics, err := vm.ServeMetrics("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
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
		b.Fatalf("guest ended %v, %v", out.Reason, out.Err)
	}
	select {
	case err := <-scrapeErrs:
		b.Fatalf("scrape: %v", err)
	default:
	}
	return float64(elapsed.Nanoseconds()) / scrapeOverheadExits, scrapes
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
// every 100 ms, interleaved round by round so that host load hits both
// alike. It reports the median time per exit of each and the median of
// the per-round ratios (scraped / unscraped; 1.00 means no cost).
func BenchmarkScrapeOverhead(b *testing.B) {
	needKVM(b)
	var quiet, scraped, ratios []float64
	scrapes := 0
	for i := 0; i < b.N; i++ {
		// Alternate which runs first, so neither always gets a warm or
		// a cold start.
		var q, s float64
		var n int
		if i%2 == 0 {
			q, _ = timeScrapedGuest(b, false)
			s, n = timeScrapedGuest(b, true)
		} else {
			s, n = timeScrapedGuest(b, true)
			q, _ = timeScrapedGuest(b, false)
		}
		quiet, scraped, ratios = append(quiet, q), append(scraped, s), append(ratios, s/q)
		scrapes += n
	}
	b.ReportMetric(median(quiet), "unscraped-ns/exit")
	b.ReportMetric(median(scraped), "scraped-ns/exit")
	b.ReportMetric(median(ratios), "scraped/unscraped")
	b.ReportMetric(float64(scrapes)/float64(b.N), "scrapes/round")
	b.Logf("%d rounds of %d exits: unscraped %.0f ns/exit, scraped every %v %.0f ns/exit, ratio %.3f, %.1f scrapes per run",
		b.N, scrapeOverheadExits, median(quiet), scrapeInterval, median(scraped), median(ratios), float64(scrapes)/float64(b.N))
}
