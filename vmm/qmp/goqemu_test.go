package qmp

import (
	"testing"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qemu"
	goqmp "github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// TestGoQEMUClient drives the server with go-qemu itself (SocketMonitor,
// qemu.Domain and the generated qmp/raw.Monitor), against a fake machine.
// The end-to-end test against a real VM, with QEMU side by side, is in
// cmd/govmm; this one pins what go-qemu needs of the protocol layer.
func TestGoQEMUClient(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	mon, err := goqmp.NewSocketMonitor("unix", s.Path(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if v := mon.Version; v.Package != "govmm" || v.String() != "7.2.0" {
		t.Errorf("greeting version %+v", v)
	}
	if len(mon.Capabilities) != 1 || mon.Capabilities[0] != "oob" {
		t.Errorf("capabilities %v", mon.Capabilities)
	}
	d, err := goqemu.NewDomain(mon, "fake")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rm := raw.NewMonitor(mon)

	// Events: go-qemu's channels are unbuffered, so collect concurrently;
	// the channel closes when the connection does.
	evs, done, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan goqmp.Event, 8)
	go func() {
		for e := range evs {
			got <- e
		}
	}()

	if st, err := d.Status(); err != nil || st != goqemu.StatusPreLaunch {
		t.Errorf("Status: %v, %v", st, err)
	}
	if st, err := rm.QueryStatus(); err != nil || st.Running || st.Status != raw.RunStatePrelaunch {
		t.Errorf("raw QueryStatus: %+v, %v", st, err)
	}
	cpus, err := d.CPUs()
	if err != nil || len(cpus) != 2 || uint64(int64(cpus[0].PC)) != kernelRIP || !cpus[0].Current ||
		cpus[1].CPU != 1 || !cpus[1].Halted || cpus[1].PC != 0xfff0 {
		t.Errorf("CPUs: %+v, %v", cpus, err)
	}
	rawCPUs, err := rm.QueryCpus()
	if err != nil || len(rawCPUs) != 2 {
		t.Fatalf("raw QueryCpus: %+v, %v", rawCPUs, err)
	}
	if x86, ok := rawCPUs[0].(raw.CPUInfoX86); !ok || x86.Pc != int64(ripVar) || x86.ThreadID != 4242 || x86.QomPath == "" {
		t.Errorf("raw QueryCpus[0]: %#v", rawCPUs[0])
	}
	if v, err := d.Version(); err != nil || v != "7.2.0" {
		t.Errorf("Version: %q, %v", v, err)
	}
	if p, err := d.PackageVersion(); err != nil || p != "govmm" {
		t.Errorf("PackageVersion: %q, %v", p, err)
	}
	for _, name := range []string{"query-status", "query-cpus", "query-block", "query-blockstats", "query-pci", "system_powerdown", "system_reset", "query-exit-stats"} {
		if ok, err := d.Supported(name); err != nil || !ok {
			t.Errorf("Supported(%s): %v, %v", name, ok, err)
		}
	}
	if _, err := d.BlockDevices(); err != nil {
		t.Errorf("BlockDevices: %v", err)
	}
	if _, err := d.BlockStats(); err != nil {
		t.Errorf("BlockStats: %v", err)
	}
	if _, err := d.PCIDevices(); err != nil {
		t.Errorf("PCIDevices: %v", err)
	}
	if kvm, err := rm.QueryKVM(); err != nil || !kvm.Enabled || !kvm.Present {
		t.Errorf("raw QueryKVM: %+v, %v", kvm, err)
	}
	if mem, err := rm.QueryMemorySizeSummary(); err != nil || mem.BaseMemory != 512<<20 || mem.PluggedMemory == nil || *mem.PluggedMemory != 0 {
		t.Errorf("raw QueryMemorySizeSummary: %+v, %v", mem, err)
	}
	// An unknown command is an error, as from QEMU.
	if _, err := d.Run(goqmp.Command{Execute: "screendump"}); err == nil || err.Error() != "The command screendump has not been found" {
		t.Errorf("unknown command: %v", err)
	}

	if err := d.SystemPowerdown(); err != nil {
		t.Fatal(err)
	}
	if err := d.SystemReset(); err != nil {
		t.Fatal(err)
	}
	s.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
	for _, want := range []string{"POWERDOWN", "RESET", "SHUTDOWN"} {
		select {
		case e := <-got:
			if e.Event != want || e.Timestamp.Seconds == 0 {
				t.Errorf("event %+v, want %s", e, want)
			}
			if want == "SHUTDOWN" && (e.Data["guest"] != true || e.Data["reason"] != "guest-shutdown") {
				t.Errorf("SHUTDOWN data %v", e.Data)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
	close(done)
}

// go-qemu's Connect swallows anything its decoder buffered after the
// capabilities reply, so nothing may ride along with it: events start
// strictly after it, in their own writes.
func TestNothingRidesWithCapabilitiesReply(t *testing.T) {
	s := startServer(t, newFakeMachine())
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a VMM busy emitting events the whole time
		for {
			select {
			case <-stop:
				return
			default:
				s.Emit("TICK", nil)
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	for i := 0; i < 20; i++ {
		c := dial(t, s.Path())
		g := c.read()
		if g["QMP"] == nil {
			t.Fatalf("first message %v", g)
		}
		c.send(`{"execute":"qmp_capabilities"}`)
		if r := c.read(); !jsonEqual(r, `{"return":{}}`) {
			t.Fatalf("capabilities reply preceded by %v", r)
		}
		c.conn.Close()
	}
}
