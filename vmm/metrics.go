package vmm

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm/metricsserver"
)

// metricsStates are the states of the govmm_vm_state gauge: "created"
// until Run starts a vCPU, "paused" while Pause holds every vCPU, and
// "stopped" once the VM has ended.
var metricsStates = []string{"created", "running", "paused", "stopped"}

// metricsState returns the VM's state for the gauge: Status, with
// "created" until a vCPU thread has started. It never waits for a vCPU.
func (v *VM) metricsState() string {
	switch v.Status() {
	case "shutdown":
		return "stopped"
	case "paused", "prelaunch", "guest-panicked", "io-error":
		return "paused"
	}
	for _, c := range v.vcpus {
		if c.ThreadID() != 0 {
			return "running"
		}
	}
	return "created"
}

// errNoStatsFD means the kernel cannot report its own statistics.
var errNoStatsFD = errors.New("this kernel has no KVM_CAP_BINARY_STATS_FD")

// openKernelStats opens the binary stats fds of the VM and of every vCPU.
// Each fd holds a reference to the VM in the kernel, so it stays readable
// after Close; the caller closes it.
func (v *VM) openKernelStats() (*exitstats.KernelStats, error) {
	if v.kvm.CheckExtension(kvm.CapBinaryStatsFD) == 0 {
		return nil, errNoStatsFD
	}
	vmStats, err := v.kvm.StatsFD()
	if err != nil {
		return nil, err
	}
	files := make([]*kvm.StatsFile, 0, len(v.kcpus))
	for _, k := range v.kcpus {
		f, err := k.StatsFD()
		if err != nil {
			exitstats.NewKernelStats(vmStats, files).Close()
			return nil, fmt.Errorf("vCPU %d: %w", k.ID, err)
		}
		files = append(files, f)
	}
	return exitstats.NewKernelStats(vmStats, files), nil
}

// WriteKernelTable prints KVM's own counters for this VM, the in-kernel
// half of the exit table (exitstats.WriteKernelTable). Where the kernel has
// no stats fd it prints one line saying so.
func (v *VM) WriteKernelTable(w io.Writer) error {
	ks, err := v.openKernelStats()
	if err != nil && !errors.Is(err, errNoStatsFD) {
		return err
	}
	defer ks.Close()
	return exitstats.WriteKernelTable(w, ks)
}

// ServeMetrics serves Prometheus metrics on /metrics at addr (host:port;
// port 0 picks a free one): the exit statistics, KVM's binary stats of
// the VM and each vCPU, VM gauges, and the Go runtime and process
// collectors. It returns the address it listens on and a function that
// stops the server and closes the stats fds; call it before or after
// Close, but call it. The stats fds are opened here, not in New, so a VM
// nobody scrapes holds none. Where the kernel has no stats fd, that is
// logged once and the rest is served.
func (v *VM) ServeMetrics(addr string) (net.Addr, func() error, error) {
	ks, err := v.openKernelStats()
	if err != nil {
		log.Printf("metrics: in-kernel KVM statistics left out: %v", err)
		ks = nil
	}
	reg := prometheus.NewRegistry()
	vmCollector := exitstats.NewCollector(exitstats.CollectorConfig{
		Registry: v.stats,
		Kernel:   ks,
		VMInfo:   v.metricsInfo,
	})
	cs := []prometheus.Collector{
		vmCollector,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		warningsCollector{v.guestLog},
	}
	if v.pci != nil && len(v.pci.disks) > 0 {
		cs = append(cs, blockCollector{disks: v.pci.disks})
	}
	if v.pci != nil && len(v.pci.nets) > 0 {
		cs = append(cs, netCollector{nets: v.pci.nets})
	}
	if v.pci != nil && v.cfg.ExitStats {
		// Its own copy of the list: Close empties the VM's while a
		// scrape may run.
		ts := append([]*virtio.Transport(nil), v.pci.transports...)
		cs = append(cs, newVirtioCollector(func() []VirtioQueueStats { return virtioQueues(ts) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			ks.Close()
			return nil, nil, fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		ks.Close()
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	// A scraper is untrusted: connections are capped, or 5,000 idle
	// keep-alive connections cost 100 MiB and 5,000 fds (at the fd limit,
	// QMP could take no client to stop govmm). Within the cap, idle ones
	// would still hold every slot, so each connection serves one request;
	// a scraper polls every few seconds at most, so reconnecting costs it
	// nothing to speak of. Clients that send their request a byte at a
	// time give their slots to newcomers; a crowd of scrapes must not
	// pile up (metricsserver.Options). A failed stats fd read drops the
	// KVM metrics of that scrape, not the exit statistics beside them.
	srv := metricsserver.Serve(ln, reg, metricsserver.Options{})
	var once sync.Once
	var closeErr error
	closeMetrics := func() error {
		once.Do(func() { closeErr = errors.Join(srv.Close(), ks.Close()) })
		return closeErr
	}
	return ln.Addr(), closeMetrics, nil
}

// metricsInfo feeds the VM gauges.
func (v *VM) metricsInfo() exitstats.VMInfo {
	return exitstats.VMInfo{
		VCPUs:       v.cfg.CPUs,
		MemoryBytes: v.mem.Size(),
		State:       v.metricsState(),
		States:      metricsStates,
		Resets:      v.Resets(),
	}
}
