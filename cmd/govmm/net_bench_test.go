package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vmm"
)

// The network benchmark moves data between the host and a guest over a
// tap in a network namespace of its own (tap0, as TestNet's): iperf3
// TCP throughput both ways with 1 and 4 streams, iperf3 UDP with 64-byte
// datagrams (packets per second the receiver got), and request/response
// latency of 64-byte TCP messages. The guest boots the benchmark
// initramfs and runs the servers (guests/net-server: iperf3 -s and busybox
// nc -ll -e cat as an echo server, iperf3 and the virtio-net interrupts
// pinned to fixed vCPUs); the host runs the clients inside the namespace
// (iperf3, and a Go ping-pong client), one job after another in one boot
// per variant and round. Around each job the host reads KVM's exit
// counters (and govmm's user-space exits) over QMP, so every job's exits
// are its own, without the boot.
//
// Environment (defaults in brackets): NET_ROUNDS [3] rounds, each
// variant once per round in a rotated order; NET_SECONDS [10] each iperf3
// job's length; NET_RR [20000] round trips of the latency job;
// NET_JOBS and NET_ONLY, regular expressions, pick jobs and variants.
// Run it with -benchtime 1x, as make bench-net does: the rounds run
// inside one iteration.

// netJob is one client run from the host.
type netJob struct {
	name string
	unit string   // what the rate column counts: Gbit/s, kpps, us
	args []string // iperf3 client arguments after -c ADDR; nil for the latency job
}

var netJobs = []netJob{
	{"tcp-h2g-1", "Gbit/s", []string{}},
	{"tcp-h2g-4", "Gbit/s", []string{"-P", "4"}},
	{"tcp-g2h-1", "Gbit/s", []string{"-R"}},
	{"tcp-g2h-4", "Gbit/s", []string{"-R", "-P", "4"}},
	{"udp64-h2g", "kpps", []string{"-u", "-l", "64", "-b", "0"}},
	{"udp64-g2h", "kpps", []string{"-u", "-l", "64", "-b", "0", "-R"}},
	{"rr64", "us", nil},
}

// netVariant is one VMM configuration.
type netVariant struct {
	name string
	kind string   // "govmm" or "qemu"
	args []string // govmm run flags after --net, or QEMU's network arguments
	// multiQueue: the variant needs tap0 made with multi_queue (QEMU's
	// single-queue tap refuses one, and a multiqueue one a single-queue
	// attach).
	multiQueue bool
}

// netVariants lists the variants. A new datapath knob is one more line.
func netVariants() []netVariant {
	qemuNet := func(opts, devOpts string) []string {
		return []string{"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off" + opts,
			"-device", "virtio-net-pci,netdev=n0,mac=" + netGuestMAC + devOpts}
	}
	return []netVariant{
		// One queue pair, the default; and one per vCPU.
		{"govmm", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC}, false},
		{"govmm-mq", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC + ",queues=2"}, true},
		{"govmm-offload-off", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC + ",offload=off,queues=1"}, false},
		// Which transmit streams the device waits for (txwait: small
		// frames by default; all was the rule before, off never waits).
		{"govmm-txwait-all", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC + ",txwait=all"}, false},
		{"govmm-txwait-off", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC + ",txwait=off"}, false},
		// One Go processor for govmm's goroutines (--go-procs): fewer
		// threads woken beside the vCPUs.
		{"govmm-go-procs-1", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC, "--go-procs", "1"}, false},
		// Go's monitor thread allowed to sleep deeply (internal/keepawake).
		{"govmm-sysmon-asleep", "govmm", []string{"--net", "tap=tap0,mac=" + netGuestMAC, "--keep-sysmon-awake=false"}, false},
		// QEMU's user-space virtio-net (no vhost: these hosts have no
		// /dev/vhost-net), its default offloads; one queue pair (as
		// govmm's default), and two (as govmm-mq; vectors = 2*2+2).
		{"qemu", "qemu", qemuNet("", ""), false},
		{"qemu-mq", "qemu", qemuNet(",queues=2", ",mq=on,vectors=6"), true},
	}
}

// makeTap (re)makes tap0 in ns, with or without multi_queue.
func makeTap(ns string, multiQueue bool) error {
	exec.Command("ip", "-n", ns, "link", "del", "tap0").Run()
	add := []string{"-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"}
	if multiQueue {
		add = append(add, "multi_queue")
	}
	for _, args := range [][]string{add, {"-n", ns, "addr", "add", netHostAddr + "/24", "dev", "tap0"}, {"-n", ns, "link", "set", "tap0", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// netResult is one job's outcome in one boot.
type netResult struct {
	rate   float64            // Gbit/s, kpps, or p50 latency in us
	p99    float64            // latency job only, us
	units  float64            // what the exits are per: GiB moved, or 1000 packets/round trips
	counts map[string]float64 // exit counters over the job
}

// Counter keys of netResult.counts.
const (
	netKVMExits = "exits"      // every KVM exit
	netKVMUser  = "kvm:user"   // KVM's mmio_exits+io_exits: exits to the VMM (PVM leaves io_exits at 0)
	netKVMHalts = "halt_exits" // KVM's
	netUser     = "user"       // govmm's table: exits it handled

	netCPUvCPUs     = "cpu:vcpus"      // host CPU s of the vCPU threads
	netCPUOther     = "cpu:other"      // of the VMM's other threads
	netTapToGuest   = "tap:to-guest"   // frames tap0 sent to the guest
	netTapFromGuest = "tap:from-guest" // and received from it
)

// netEchoPort is the guest's echo server.
const netEchoPort = 7

// netSnapshot reads the exit counters of a VM over QMP, the host CPU
// time of its process (pid) and of its vCPU threads, and the frames tap0
// in ns has passed each way.
func netSnapshot(mon *qmp.SocketMonitor, kind string, pid int, ns string) (map[string]float64, error) {
	c, err := snapshotCounters(mon, kind)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	if err := netHostCounters(out, mon, pid, ns); err != nil {
		return nil, err
	}
	for name, n := range c {
		if strings.HasPrefix(name, kvmStatPrefix) {
			out[name] = n
		}
	}
	if n, ok := c["exits"]; ok {
		out[netKVMExits] = n
	}
	if n, ok := c["halt_exits"]; ok {
		out[netKVMHalts] = n
	}
	if _, ok := c["mmio_exits"]; ok {
		out[netKVMUser] = c["mmio_exits"] + c["io_exits"]
	}
	if kind == "govmm" {
		var t vmm.ExitTable
		if err := runQMP(mon, "query-exit-stats", nil, &t); err != nil {
			return nil, err
		}
		out[netUser] = float64(t.User.Total().Exits().Count)
	}
	return out, nil
}

// netHostCounters adds what the host sees of a VM to out, the same way for
// every VMM: CPU seconds (utime+stime, guest time included) of the whole
// process and of the vCPU threads query-cpus-fast names, and tap0's
// packet counters (a GSO frame counts once: frames per GiB say how large
// the frames were).
func netHostCounters(out map[string]float64, mon *qmp.SocketMonitor, pid int, ns string) error {
	all, err := procCPU(pid)
	if err != nil {
		return err
	}
	var cpus []struct {
		ThreadID int `json:"thread-id"`
	}
	if err := runQMP(mon, "query-cpus-fast", nil, &cpus); err != nil {
		return err
	}
	var vcpus float64
	for _, c := range cpus {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, c.ThreadID))
		if err != nil {
			return err
		}
		t, err := parseProcCPU(string(b))
		if err != nil {
			return err
		}
		vcpus += t
	}
	out[netCPUvCPUs], out[netCPUOther] = vcpus, all-vcpus
	js, err := exec.Command("ip", "-n", ns, "-j", "-s", "link", "show", "tap0").Output()
	if err != nil {
		return fmt.Errorf("ip link show tap0: %v", err)
	}
	var links []struct {
		Stats struct {
			RX, TX struct{ Packets float64 }
		} `json:"stats64"`
	}
	if err := json.Unmarshal(js, &links); err != nil || len(links) != 1 {
		return fmt.Errorf("ip link show tap0: %v in %.200q", err, js)
	}
	// The tap's transmit is the host's side sending to the guest.
	out[netTapToGuest], out[netTapFromGuest] = links[0].Stats.TX.Packets, links[0].Stats.RX.Packets
	return nil
}

// iperf3Result is the part of iperf3's JSON report the benchmark reads.
type iperf3Result struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Seconds     float64 `json:"seconds"`
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			Bytes       float64 `json:"bytes"`
		} `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

// runIperf3 runs one iperf3 client job from inside ns against the guest.
// A server not yet listening (it daemonizes as the guest boots) gets a
// few more tries.
func runIperf3(ns string, j netJob, seconds int) (netResult, error) {
	args := append([]string{"netns", "exec", ns, "iperf3", "-c", netGuestAddr, "-J", "-t", strconv.Itoa(seconds), "--connect-timeout", "3000"}, j.args...)
	var out []byte
	var err error
	for try := 0; try < 5; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+60*time.Second)
		out, err = exec.CommandContext(ctx, "ip", args...).Output()
		cancel()
		if err == nil || !strings.Contains(string(out), "unable to connect") {
			break
		}
		time.Sleep(time.Second)
	}
	var r iperf3Result
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return netResult{}, fmt.Errorf("iperf3 %s: %v (%v)\n%s", strings.Join(j.args, " "), err, jerr, lastLines(string(out), 5))
	}
	if r.Error != "" || err != nil {
		return netResult{}, fmt.Errorf("iperf3 %s: %v %s", strings.Join(j.args, " "), err, r.Error)
	}
	if slices.Contains(j.args, "-u") {
		s := r.End.Sum
		if s.Seconds <= 0 {
			return netResult{}, fmt.Errorf("iperf3 %s: no UDP summary", strings.Join(j.args, " "))
		}
		got := s.Packets - s.LostPackets
		return netResult{rate: got / s.Seconds / 1000, units: got / 1000}, nil
	}
	s := r.End.SumReceived
	return netResult{rate: s.BitsPerSecond / 1e9, units: s.Bytes / (1 << 30)}, nil
}

// dialIn opens a TCP connection from inside network namespace ns.
func dialIn(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// runRR times n round trips of a 64-byte message through the guest's
// echo server and returns the p50 and p99 in microseconds.
func runRR(ns string, n int) (netResult, error) {
	c, err := dialIn(ns, net.JoinHostPort(netGuestAddr, strconv.Itoa(netEchoPort)), 10*time.Second)
	if err != nil {
		return netResult{}, fmt.Errorf("echo server: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Duration(n)*10*time.Millisecond + time.Minute))
	msg, back := make([]byte, 64), make([]byte, 64)
	const warmup = 100
	lat := make([]float64, 0, n)
	for i := range n + warmup {
		msg[0] = byte(i)
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return netResult{}, fmt.Errorf("echo round trip %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			return netResult{}, fmt.Errorf("echo round trip %d: %w", i, err)
		}
		d := time.Since(t0)
		if back[0] != msg[0] {
			return netResult{}, fmt.Errorf("echo round trip %d: got message %d back", i, back[0])
		}
		if i >= warmup {
			lat = append(lat, float64(d.Nanoseconds())/1e3)
		}
	}
	slices.Sort(lat)
	return netResult{rate: lat[len(lat)/2], p99: lat[len(lat)*99/100], units: float64(n) / 1000}, nil
}

// waitEcho waits until the guest's echo server accepts a connection: the
// guest is up and its network configured.
func waitEcho(ctx context.Context, ns string) error {
	for {
		c, err := dialIn(ns, net.JoinHostPort(netGuestAddr, strconv.Itoa(netEchoPort)), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest's echo server never answered: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runNetVM boots one VM (args; its console on stdout), runs every job
// against it with the exit counters read around each, and quits it.
func runNetVM(args []string, kind, sock, ns string, jobs []netJob, seconds, rr int) (map[string]netResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+time.Duration(len(jobs))*(time.Duration(seconds)*time.Second+time.Minute))
	defer cancel()
	os.Remove(sock)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = 10 * time.Second
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	fail := func(err error) (map[string]netResult, error) {
		cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("%s: %v\n%s", kind, err, lastLines(out.String(), 10))
	}
	if err := waitEcho(ctx, ns); err != nil {
		return fail(err)
	}
	mon, err := dialQMP(sock, 5*time.Second)
	if err != nil {
		return fail(err)
	}
	defer mon.Disconnect()
	results := map[string]netResult{}
	for _, j := range jobs {
		before, err := netSnapshot(mon, kind, cmd.Process.Pid, ns)
		if err != nil {
			return fail(err)
		}
		var r netResult
		if j.args == nil {
			r, err = runRR(ns, rr)
		} else {
			r, err = runIperf3(ns, j, seconds)
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", j.name, err))
		}
		after, err := netSnapshot(mon, kind, cmd.Process.Pid, ns)
		if err != nil {
			return fail(err)
		}
		r.counts = map[string]float64{}
		for k, n := range after {
			if b, ok := before[k]; ok {
				r.counts[k] = n - b
			}
		}
		results[j.name] = r
	}
	runQMP(mon, "quit", nil, nil)
	if err := <-done; err != nil && !strings.Contains(err.Error(), "signal") {
		return nil, fmt.Errorf("%s: %v\n%s", kind, err, lastLines(out.String(), 10))
	}
	return results, nil
}

// BenchmarkNet compares virtio-net datapaths: govmm with its offloads
// and one queue pair, with a pair per vCPU, with offload=off (the
// datapath before offloads), and QEMU's user-space virtio-net-pci with
// one queue pair and with as many as govmm, on the same tap (made
// multi_queue for the multiqueue variants), kernel and initramfs. It
// reports the median rate (min-max, n, failed runs) of each job and
// variant, the ratio to QEMU, and per GiB moved (TCP) or per 1000
// packets or round trips (UDP, latency) the exits KVM counted, those it
// sent to the VMM, its halts, and govmm's own table's exits; then every
// KVM vCPU statistic that moved, per the same units.
func BenchmarkNet(b *testing.B) {
	bench := testenv.BenchInitramfs("../..")
	kernel := benchKernel(b, bench)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("no iperf3 on the host (apt-get install iperf3)")
	}
	ns := netNamespace(b)
	rounds := testenv.Rounds(b, "NET_ROUNDS", 3) * b.N
	seconds := int(benchEnvInt(b, "NET_SECONDS", 10))
	rr := int(benchEnvInt(b, "NET_RR", 20000))
	if seconds < 1 || rr < 100 {
		b.Fatal("NET_SECONDS must be at least 1 and NET_RR at least 100")
	}
	jobs := envPick(b, "NET_JOBS", netJobs, func(j netJob) string { return j.name })
	qemu, qemuErr := exec.LookPath("qemu-system-x86_64")
	variants := envPick(b, "NET_ONLY", withoutQEMU(netVariants(), func(v netVariant) string { return v.kind }, qemuErr),
		func(v netVariant) string { return v.name })
	sock := filepath.Join(b.TempDir(), "qmp.sock")
	// net-server starts iperf3 as a daemon and execs the echo server.
	cmdline := fmt.Sprintf("console=ttyS0 panic=-1 quiet govmm.ip=%s/24 govmm.run=net-server,%d", netGuestAddr, netEchoPort)
	vmArgs := func(v netVariant) []string {
		args := []string{"ip", "netns", "exec", ns}
		if v.kind == "govmm" {
			args = append(args, govmmBin, "run", "--kernel", kernel, "--initrd", bench, "--smp", "2", "--mem", "1G",
				"--qmp", "unix:"+sock, "--append", cmdline+" reboot=k")
			return append(args, v.args...)
		}
		args = append(args, qemu, "-M", "pc", "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", "2", "-m", "1024", "-kernel", kernel, "-initrd", bench,
			"-append", cmdline+" reboot=t", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-qmp", "unix:"+sock+",server=on,wait=off")
		return append(args, v.args...)
	}

	type key struct{ job, variant string }
	results := map[key][]netResult{}
	failures := map[key]int{}
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(i int) string { return variants[i].name }, func(_, i int) error {
		v := variants[i]
		if err := makeTap(ns, v.multiQueue); err != nil {
			return err
		}
		rs, err := runNetVM(vmArgs(v), v.kind, sock, ns, jobs, seconds, rr)
		for _, j := range jobs {
			if r, ok := rs[j.name]; ok {
				results[key{j.name, v.name}] = append(results[key{j.name, v.name}], r)
			}
		}
		return err
	})
	b.StopTimer()
	for i, n := range failed {
		for _, j := range jobs {
			failures[key{j.name, variants[i].name}] = n
		}
	}

	summary := func(k key, f func(netResult) float64) testenv.Summary {
		var xs []float64
		for _, r := range results[k] {
			xs = append(xs, f(r))
		}
		return testenv.Summarize(xs, failures[k])
	}
	perUnit := func(k key, counter string) (float64, bool) {
		var xs []float64
		for _, r := range results[k] {
			n, ok := r.counts[counter]
			if !ok || r.units <= 0 {
				return 0, false
			}
			xs = append(xs, n/r.units)
		}
		return testenv.Median(xs), len(xs) > 0
	}

	var rep strings.Builder
	fmt.Fprintf(&rep, "\nvirtio-net between the host and the guest over a tap in a network namespace; --smp 2, 1 GiB; %d rounds, %.0f s (%s)\n",
		rounds, time.Since(start).Seconds(), time.Now().Format("2006-01-02"))
	fmt.Fprintf(&rep, "iperf3 -t %d (TCP: receiver's Gbit/s; UDP -l 64 -b 0: kpps the receiver got); rr64: %d round trips of 64 bytes (TCP, p50 and p99 us)", seconds, rr)
	if f := strings.Fields(string(loadBefore)); len(f) > 0 {
		fmt.Fprintf(&rep, "; host load average %s at the start", f[0])
	}
	fmt.Fprintf(&rep, "\nmedian (min-max, n, failed runs) of rounds, variants rotated per round; /qemu: ratio of medians to qemu in the same job, with as many queue pairs (qemu-mq for the multiqueue variants; for rr64, of latencies: < 1 is faster)\n")
	fmt.Fprintf(&rep, "exits per GiB (tcp) or per 1000 packets / round trips (udp, rr), median of rounds: kvm = all KVM exits; kvm-user = KVM's mmio_exits+io_exits; halt = KVM halt_exits; user = exits govmm's table counted\n\n")
	fmt.Fprintf(&rep, "host CPU per GiB (tcp) or per 1000 packets / round trips, median of rounds, ms: vcpus = the vCPU threads (guest time included), other = the VMM's other threads;\n")
	fmt.Fprintf(&rep, "frames tap0 passed per the same unit: to the guest, from the guest (a GSO frame counts once)\n\n")
	fmt.Fprintf(&rep, "%-10s %-18s %-7s %-28s %6s %10s %9s %9s %9s %9s %9s %9s %9s %9s\n", "job", "variant", "unit", "median", "/qemu", "p99 us", "kvm", "kvm-user", "halt", "user",
		"vcpus ms", "other ms", "to-guest", "from-gst")
	for _, j := range jobs {
		qemuMed := func(v netVariant) float64 {
			ref := "qemu"
			if v.multiQueue {
				ref = "qemu-mq"
			}
			return summary(key{j.name, ref}, func(r netResult) float64 { return r.rate }).Median
		}
		for _, v := range variants {
			k := key{j.name, v.name}
			s := summary(k, func(r netResult) float64 { return r.rate })
			verb := "%.2f"
			if j.unit == "us" {
				verb = "%.0f"
			}
			fmt.Fprintf(&rep, "%-10s %-18s %-7s %-28s %6s", j.name, v.name, j.unit, s.Format(verb), ratioOf(s.Median, qemuMed(v)))
			if j.unit == "us" {
				fmt.Fprintf(&rep, " %10.0f", summary(k, func(r netResult) float64 { return r.p99 }).Median)
			} else {
				fmt.Fprintf(&rep, " %10s", "")
			}
			for _, c := range []string{netKVMExits, netKVMUser, netKVMHalts, netUser, netCPUvCPUs, netCPUOther, netTapToGuest, netTapFromGuest} {
				if x, ok := perUnit(k, c); ok {
					if strings.HasPrefix(c, "cpu:") {
						x *= 1000
					}
					fmt.Fprintf(&rep, " %9.0f", x)
				} else {
					fmt.Fprintf(&rep, " %9s", "-")
				}
			}
			fmt.Fprintln(&rep)
			if s.N > 0 {
				b.ReportMetric(s.Median, j.name+"-"+v.name+"-"+strings.ReplaceAll(j.unit, "/", "p"))
			}
		}
	}
	if qemuErr != nil {
		fmt.Fprintf(&rep, "(no QEMU rows: %v)\n", qemuErr)
	}
	fmt.Fprintf(&rep, "\nEvery KVM vCPU statistic that moved, per GiB (tcp) or per 1000 packets / round trips (udp, rr), median of rounds,\n")
	fmt.Fprintf(&rep, "summed over vCPUs; at least 1, largest first; _ns and _time statistics are ns per unit:\n\n")
	for _, j := range jobs {
		for _, v := range variants {
			k := key{j.name, v.name}
			names := map[string]bool{}
			for _, r := range results[k] {
				for name := range r.counts {
					names[name] = true
				}
			}
			fmt.Fprintf(&rep, "%-10s %-18s%s\n", j.name, v.name, movedKVMStats(names, 1, "%.0f", func(name string) (float64, bool) { return perUnit(k, name) }))
		}
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}
