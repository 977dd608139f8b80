package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// call is one command being executed.
type call struct {
	s    *Server
	c    *client
	args map[string]json.RawMessage
	// afterReply, if set, runs once the reply is queued (quit).
	afterReply func()
}

type command struct {
	name   string
	params []string // the arguments it accepts; anything else is rejected as QEMU does
	run    func(*call) (any, *qmpError)
	// acts: it changes or ends the machine, so it is not run once the
	// machine has ended (Server.Ended); queries still are.
	acts bool
}

// commands is what we implement, in the order query-commands lists it.
// Read-only after init, which it needs because query-commands reads it
// (a variable initializer would be an initialization cycle).
var commands []command

func init() {
	commands = []command{
		{name: "qmp_capabilities", params: []string{"enable"}, run: (*call).capabilities},
		{name: "query-commands", run: (*call).queryCommands},
		{name: "query-version", run: (*call).queryVersion},
		{name: "query-status", run: (*call).queryStatus},
		{name: "query-kvm", run: (*call).queryKVM},
		{name: "query-memory-size-summary", run: (*call).queryMemorySizeSummary},
		{name: "query-cpus-fast", run: (*call).queryCPUsFast},
		{name: "query-cpus", run: (*call).queryCPUs},
		{name: "query-block", run: (*call).queryBlock},
		{name: "query-blockstats", params: []string{"query-nodes"}, run: (*call).queryBlockstats},
		{name: "query-pci", run: (*call).queryPCI},
		{name: "query-exit-stats", run: (*call).queryExitStats},
		{name: "x-govmm-dump-exit-trace", params: []string{"filename"}, run: (*call).dumpExitTrace},
		{name: "stop", run: (*call).stop, acts: true},
		{name: "cont", run: (*call).cont, acts: true},
		{name: "system_powerdown", run: (*call).systemPowerdown, acts: true},
		{name: "system_reset", run: (*call).systemReset, acts: true},
		{name: "quit", run: (*call).quit, acts: true},
	}
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// reply queues a command's reply. A reply that cannot be marshaled becomes
// a GenericError rather than a dropped answer, which would leave the
// client waiting.
func (c *client) reply(id json.RawMessage, ret any, qerr *qmpError) {
	r := response{ID: id}
	if qerr != nil {
		r.Error = qerr
	} else {
		r.Return = ret
	}
	b, err := encode(r)
	if err != nil {
		b, _ = encode(response{ID: id, Error: genericError("cannot encode reply: %v", err)})
	}
	c.send(b)
}

// dispatch executes one request and answers it, following QEMU 7.2's
// monitor_qmp_dispatch and qmp_dispatch step by step.
func (s *Server) dispatch(c *client, msg []byte) {
	if s.ended.Load() {
		return // checked again under cmdMu: this only saves the parse
	}
	req, qerr := parseRequest(msg, c.oob)
	if qerr != nil {
		c.reply(req.id, nil, qerr)
		return
	}
	c.mu.Lock()
	negotiated := c.negotiated
	c.mu.Unlock()

	// Before negotiation only qmp_capabilities exists; QEMU then rewrites
	// the CommandNotFound message into a hint. After it, qmp_capabilities
	// no longer exists, with its own message.
	var cmd *command
	switch {
	case !negotiated && req.command != "qmp_capabilities":
		c.reply(req.id, nil, &qmpError{classCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"})
		return
	case negotiated && req.command == "qmp_capabilities":
		c.reply(req.id, nil, &qmpError{classCommandNotFound, "Capabilities negotiation is already complete, command ignored"})
		return
	default:
		cmd = findCommand(req.command)
	}
	if cmd == nil {
		c.reply(req.id, nil, &qmpError{classCommandNotFound, fmt.Sprintf("The command %s has not been found", req.command)})
		return
	}
	if req.oob {
		// None of our commands may jump the queue.
		c.reply(req.id, nil, genericError("The command %s does not support OOB", req.command))
		return
	}
	for _, k := range sortedKeys(req.args) {
		if !slices.Contains(cmd.params, k) {
			c.reply(req.id, nil, genericError("Parameter '%s' is unexpected", k))
			return
		}
	}

	cl := &call{s: s, c: c, args: req.args}
	s.cmdMu.Lock()
	if s.ended.Load() || cmd.acts && s.gone.Load() {
		// The machine ended while this command waited (or, for one
		// that acts on it, before): it is not run and gets no answer
		// (the connection closes with the server), as QEMU has exited.
		s.cmdMu.Unlock()
		return
	}
	ret, qerr := cmd.run(cl)
	s.cmdMu.Unlock()

	c.reply(req.id, ret, qerr)
	if cmd.name == "qmp_capabilities" && qerr == nil {
		// Only now may events flow: they must follow the reply, and never
		// share its write (go-qemu reads the reply with a buffering
		// decoder and would swallow whatever came with it).
		c.mu.Lock()
		c.negotiated = true
		c.mu.Unlock()
	}
	if cl.afterReply != nil {
		cl.afterReply()
	}
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var empty = struct{}{}

func (cl *call) capabilities() (any, *qmpError) {
	raw, ok := cl.args["enable"]
	if !ok {
		return empty, nil
	}
	var caps []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &caps) != nil {
		return nil, genericError("Invalid parameter type for 'enable', expected: array")
	}
	oob := false
	for i, c := range caps {
		var s string
		if c[0] != '"' || json.Unmarshal(c, &s) != nil {
			return nil, genericError("Invalid parameter type for 'enable[%d]', expected: string", i)
		}
		if s != "oob" {
			return nil, genericError("Parameter 'enable[%d]' does not accept value '%s'", i, s)
		}
		oob = true
	}
	cl.c.oob = oob
	return empty, nil
}

type commandInfo struct {
	Name string `json:"name"`
}

func (cl *call) queryCommands() (any, *qmpError) {
	out := make([]commandInfo, len(commands))
	for i, c := range commands {
		out[i] = commandInfo{c.name}
	}
	return out, nil
}

func (cl *call) queryVersion() (any, *qmpError) { return ourVersion, nil }

// statusInfo is QEMU 7.2's StatusInfo. singlestep is gone from QEMU 8.1
// on, but 7.2 clients (go-qemu's StatusInfo) still expect it.
type statusInfo struct {
	Status     string `json:"status"`
	Singlestep bool   `json:"singlestep"`
	Running    bool   `json:"running"`
}

func (cl *call) queryStatus() (any, *qmpError) {
	st := cl.s.m.Status()
	name := st.Status
	if name == "" {
		name = "paused"
		if st.Running {
			name = "running"
		}
	}
	return statusInfo{Status: name, Running: st.Running}, nil
}

type kvmInfo struct {
	Enabled bool `json:"enabled"`
	Present bool `json:"present"`
}

// queryKVM: present means "this VMM can use KVM", which govmm always can;
// enabled is whether this VM does.
func (cl *call) queryKVM() (any, *qmpError) {
	return kvmInfo{Enabled: cl.s.m.KVMEnabled(), Present: true}, nil
}

// memoryInfo is query-memory-size-summary's reply. Nothing is ever
// plugged (no DIMMs), which QEMU's pc machine then reports as 0.
type memoryInfo struct {
	BaseMemory    uint64 `json:"base-memory"`
	PluggedMemory uint64 `json:"plugged-memory"`
}

func (cl *call) queryMemorySizeSummary() (any, *qmpError) {
	return memoryInfo{BaseMemory: cl.s.m.MemorySize()}, nil
}

type cpuProps struct {
	CoreID   int `json:"core-id"`
	ThreadID int `json:"thread-id"`
	SocketID int `json:"socket-id"`
}

// propsOf places vCPUs as cores of one socket, one thread each, which is
// how QEMU 7.2 lays out "-smp N" and how govmm describes them to the guest.
func propsOf(cpu CPU) cpuProps { return cpuProps{CoreID: cpu.Index} }

// qomPath follows QEMU's naming so clients that parse it keep working.
func qomPath(cpu CPU) string { return fmt.Sprintf("/machine/unattached/device[%d]", cpu.Index) }

type cpuInfoFast struct {
	CPUIndex int      `json:"cpu-index"`
	QOMPath  string   `json:"qom-path"`
	ThreadID int      `json:"thread-id"`
	Props    cpuProps `json:"props"`
	Target   string   `json:"target"`
}

func (cl *call) queryCPUsFast() (any, *qmpError) {
	cpus := cl.s.m.CPUs()
	out := make([]cpuInfoFast, len(cpus))
	for i, cpu := range cpus {
		out[i] = cpuInfoFast{CPUIndex: cpu.Index, QOMPath: qomPath(cpu), ThreadID: cpu.ThreadID, Props: propsOf(cpu), Target: "x86_64"}
	}
	return out, nil
}

// cpuInfo is the x86 branch of the CpuInfo union that query-cpus returned
// until QEMU 6.2 removed it; go-qemu's Domain.CPUs still calls it.
type cpuInfo struct {
	Arch     string   `json:"arch"`
	CPU      int      `json:"CPU"`
	Current  bool     `json:"current"`
	Halted   bool     `json:"halted"`
	QOMPath  string   `json:"qom_path"`
	ThreadID int      `json:"thread_id"`
	Props    cpuProps `json:"props"`
	PC       int64    `json:"pc"` // QAPI int is signed: a kernel RIP goes out negative
}

func (cl *call) queryCPUs() (any, *qmpError) {
	var cpus []CPU
	if r, ok := cl.s.m.(CPUStateReader); ok {
		cpus = r.CPUStates()
	} else {
		cpus = cl.s.m.CPUs()
	}
	out := make([]cpuInfo, len(cpus))
	for i, cpu := range cpus {
		out[i] = cpuInfo{
			Arch:     "x86",
			CPU:      cpu.Index,
			Current:  i == 0, // the monitor's current CPU defaults to the first
			Halted:   cpu.Halted,
			QOMPath:  qomPath(cpu),
			ThreadID: cpu.ThreadID,
			Props:    propsOf(cpu),
			PC:       int64(cpu.PC),
		}
	}
	return out, nil
}

// queryExitStats is ours: the exit table as JSON. It is marshaled here so
// that a table that cannot be marshaled is an error reply, not a lost one.
func (cl *call) queryExitStats() (any, *qmpError) {
	v := cl.s.m.ExitStats()
	if v == nil {
		return empty, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, genericError("query-exit-stats: %v", err)
	}
	return json.RawMessage(b), nil
}

// dumpExitTrace is ours, named as QEMU names a vendor's unstable command
// (x- prefix): it writes the exit timeline recorded so far to filename,
// a running VM's as well as a stopped one's.
func (cl *call) dumpExitTrace() (any, *qmpError) {
	raw, ok := cl.args["filename"]
	if !ok {
		return nil, genericError("Parameter 'filename' is missing")
	}
	var filename string
	if raw[0] != '"' || json.Unmarshal(raw, &filename) != nil {
		return nil, genericError("Invalid parameter type for 'filename', expected: string")
	}
	d, ok := cl.s.m.(ExitTraceDumper)
	if !ok {
		return nil, genericError("this machine records no exit trace")
	}
	w, err := d.DumpExitTrace(filename)
	if err != nil {
		return nil, genericError("%v", err)
	}
	return w, nil
}

// The state-changing commands emit their events before returning, so the
// events precede the reply, which is the order QEMU 7.2 produces.

// stop: QEMU emits STOP only when the VM was running.
func (cl *call) stop() (any, *qmpError) {
	if err := cl.s.m.Stop(func() { cl.s.Emit("STOP", nil) }); err != nil {
		return nil, genericError("%v", err)
	}
	return empty, nil
}

// cont: QEMU emits RESUME only when the VM was not already running.
func (cl *call) cont() (any, *qmpError) {
	if err := cl.s.m.Cont(func() { cl.s.Emit("RESUME", nil) }); err != nil {
		return nil, genericError("%v", err)
	}
	return empty, nil
}

// systemPowerdown: QEMU emits POWERDOWN whatever the run state, even on a
// -S machine that has never run, and before the button reaches the guest,
// so POWERDOWN always precedes the SHUTDOWN of the guest's power-off.
func (cl *call) systemPowerdown() (any, *qmpError) {
	cl.s.Emit("POWERDOWN", nil)
	if err := cl.s.m.Powerdown(); err != nil {
		return nil, genericError("%v", err)
	}
	return empty, nil
}

// shutdownData is the data of RESET and SHUTDOWN events (QEMU's
// ShutdownCause names).
type shutdownData struct {
	Guest  bool   `json:"guest"`
	Reason string `json:"reason"`
}

// systemReset: RESET once the machine has been reset; nothing when the
// reset ends it instead (QEMU's -no-reboot), whose SHUTDOWN is the VMM's.
func (cl *call) systemReset() (any, *qmpError) {
	switch err := cl.s.m.Reset(); {
	case errors.Is(err, ErrResetEndsMachine):
		cl.end(ReasonReset)
	case errors.Is(err, ErrResetJoined):
	case err != nil:
		return nil, genericError("%v", err)
	default:
		cl.s.Emit("RESET", shutdownData{Guest: false, Reason: "host-qmp-system-reset"})
	}
	return empty, nil
}

// quit: QEMU 7.2 sends SHUTDOWN, then the reply, then goes away.
func (cl *call) quit() (any, *qmpError) {
	cl.end(ReasonQuit)
	return empty, nil
}

// end ends the machine for the command being run, as QEMU's main loop
// does after it: SHUTDOWN for reason, then the command's reply, and no
// command after it (Server.ended). The machine is ended at once, on a
// goroutine of its own once the reply is queued, so that Quit may tear
// down this server (Close, which lets the reply drain, and waits for
// Serve) without deadlocking against the connection goroutine that
// called it. cmdMu is held.
func (cl *call) end(reason string) {
	s := cl.s
	if e, ok := s.m.(Ender); ok {
		e.End(reason)
	}
	s.ended.Store(true)
	s.Emit("SHUTDOWN", shutdownData{Guest: false, Reason: reason})
	cl.afterReply = func() { go s.m.Quit(reason) }
}

// Ended tells every client, with SHUTDOWN (guest and reason as QEMU's
// ShutdownCause), that the machine ended on its own (the guest powered
// off or panicked, a signal), and runs no command that acts on the
// machine after it: a quit that came next got a second SHUTDOWN, and a
// system_powerdown a POWERDOWN after the SHUTDOWN (found by an audit).
// Queries are still answered until the server closes (the exit table of
// an ended VM). It waits for the command in progress, so that command's
// events come first; nothing a command calls may wait for Ended. Once a
// command has ended the machine (quit), Ended does nothing: that
// SHUTDOWN went out.
func (s *Server) Ended(guest bool, reason string) {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	if s.ended.Load() || s.gone.Swap(true) {
		return
	}
	s.Emit("SHUTDOWN", shutdownData{Guest: guest, Reason: reason})
}

// queryBlock answers in QEMU 7.2's BlockInfo shape, with the fields
// go-qemu's BlockDevice reads. Every disk is a raw image: its format
// node and the device are one thing, named like the device.
func (c *call) queryBlock() (any, *qmpError) {
	out := []map[string]any{}
	bl, ok := c.s.m.(BlockLister)
	if !ok {
		return out, nil
	}
	for _, b := range bl.Blocks() {
		ioStatus := "ok"
		if b.NoSpace {
			ioStatus = "nospace"
		}
		out = append(out, map[string]any{
			"device": b.Device, "qdev": b.Qdev, "locked": false, "removable": false,
			"type": "unknown", "io-status": ioStatus,
			"inserted": map[string]any{
				"file": b.File, "ro": b.ReadOnly, "drv": "raw",
				"backing_file_depth": 0, "encrypted": false,
				"detect_zeroes": "off", "cache": map[string]any{"writeback": true, "direct": b.Direct, "no-flush": false},
				"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0,
				"write_threshold": 0, "node-name": b.Device,
				"image": map[string]any{
					"filename": b.File, "format": "raw", "virtual-size": b.Size,
					"actual-size": b.ActualSize, "dirty-flag": false,
				},
			},
		})
	}
	return out, nil
}

// blockDeviceStats is QEMU 7.2's BlockDeviceStats. govmm neither merges
// requests nor implements discard, so those counters stay 0; failed and
// invalid requests are not part of the latency sums (account_* false).
// idle_time_ns, optional in QEMU, is left out.
type blockDeviceStats struct {
	RdBytes                uint64     `json:"rd_bytes"`
	WrBytes                uint64     `json:"wr_bytes"`
	UnmapBytes             uint64     `json:"unmap_bytes"`
	RdOperations           uint64     `json:"rd_operations"`
	WrOperations           uint64     `json:"wr_operations"`
	FlushOperations        uint64     `json:"flush_operations"`
	UnmapOperations        uint64     `json:"unmap_operations"`
	RdTotalTimeNs          uint64     `json:"rd_total_time_ns"`
	WrTotalTimeNs          uint64     `json:"wr_total_time_ns"`
	FlushTotalTimeNs       uint64     `json:"flush_total_time_ns"`
	UnmapTotalTimeNs       uint64     `json:"unmap_total_time_ns"`
	WrHighestOffset        uint64     `json:"wr_highest_offset"`
	RdMerged               uint64     `json:"rd_merged"`
	WrMerged               uint64     `json:"wr_merged"`
	UnmapMerged            uint64     `json:"unmap_merged"`
	FailedRdOperations     uint64     `json:"failed_rd_operations"`
	FailedWrOperations     uint64     `json:"failed_wr_operations"`
	FailedFlushOperations  uint64     `json:"failed_flush_operations"`
	FailedUnmapOperations  uint64     `json:"failed_unmap_operations"`
	InvalidRdOperations    uint64     `json:"invalid_rd_operations"`
	InvalidWrOperations    uint64     `json:"invalid_wr_operations"`
	InvalidFlushOperations uint64     `json:"invalid_flush_operations"`
	InvalidUnmapOperations uint64     `json:"invalid_unmap_operations"`
	AccountInvalid         bool       `json:"account_invalid"`
	AccountFailed          bool       `json:"account_failed"`
	TimedStats             []struct{} `json:"timed_stats"`
}

// blockStats is QEMU 7.2's BlockStats for a device. QEMU adds "parent",
// the image file's own node; a govmm disk has only the one node.
type blockStats struct {
	Device   string           `json:"device,omitempty"`
	Qdev     string           `json:"qdev,omitempty"`
	NodeName string           `json:"node-name"`
	Stats    blockDeviceStats `json:"stats"`
}

// queryBlockstats: with query-nodes, QEMU lists nodes instead of devices
// (no device or qdev); a govmm disk is one node named like its device.
func (c *call) queryBlockstats() (any, *qmpError) {
	nodes := false
	if raw, ok := c.args["query-nodes"]; ok {
		// Not json.Unmarshal: it takes null for false, QEMU does not.
		switch string(bytes.TrimSpace(raw)) {
		case "true":
			nodes = true
		case "false":
		default:
			return nil, genericError("Invalid parameter type for 'query-nodes', expected: boolean")
		}
	}
	out := []blockStats{}
	bl, ok := c.s.m.(BlockLister)
	if !ok {
		return out, nil
	}
	for _, b := range bl.Blocks() {
		st := b.Stats
		e := blockStats{NodeName: b.Device, Stats: blockDeviceStats{
			RdBytes: st.ReadBytes, WrBytes: st.WriteBytes, UnmapBytes: st.UnmapBytes,
			RdOperations: st.ReadOps, WrOperations: st.WriteOps, FlushOperations: st.FlushOps, UnmapOperations: st.UnmapOps,
			RdTotalTimeNs: st.ReadTimeNs, WrTotalTimeNs: st.WriteTimeNs, FlushTotalTimeNs: st.FlushTimeNs, UnmapTotalTimeNs: st.UnmapTimeNs,
			WrHighestOffset:    st.WriteHighestOffset,
			FailedRdOperations: st.FailedReadOps, FailedWrOperations: st.FailedWriteOps, FailedFlushOperations: st.FailedFlushOps,
			FailedUnmapOperations: st.FailedUnmapOps,
			InvalidRdOperations:   st.InvalidReadOps, InvalidWrOperations: st.InvalidWriteOps, InvalidUnmapOperations: st.InvalidUnmapOps,
			TimedStats: []struct{}{},
		}}
		if !nodes {
			e.Device, e.Qdev = b.Device, b.Qdev
		}
		out = append(out, e)
	}
	return out, nil
}

// pciRegion is QEMU 7.2's PciMemoryRegion; mem_type_64 and prefetch are
// sent for memory BARs only.
type pciRegion struct {
	BAR      int    `json:"bar"`
	Type     string `json:"type"`
	Address  int64  `json:"address"`
	Size     uint64 `json:"size"`
	Prefetch *bool  `json:"prefetch,omitempty"`
	Mem64    *bool  `json:"mem_type_64,omitempty"`
}

// queryPCI answers in QEMU 7.2's PciInfo shape: one bus, its functions.
func (c *call) queryPCI() (any, *qmpError) {
	pl, ok := c.s.m.(PCILister)
	if !ok {
		return []struct{}{}, nil
	}
	devs := []map[string]any{}
	for _, f := range pl.PCIFunctions() {
		class := map[string]any{"class": f.Class}
		if desc := pciClassDesc(f.Class); desc != "" {
			class["desc"] = desc
		}
		regions := []pciRegion{}
		for _, r := range f.Regions {
			pr := pciRegion{BAR: r.BAR, Type: "io", Address: r.Address, Size: r.Size}
			if !r.IO {
				pr.Type, pr.Prefetch, pr.Mem64 = "memory", &r.Prefetchable, &r.Mem64
			}
			regions = append(regions, pr)
		}
		d := map[string]any{
			"bus": 0, "slot": f.Slot, "function": f.Function,
			"class_info": class,
			"id": map[string]any{
				"vendor": f.Vendor, "device": f.Device,
				"subsystem-vendor": f.SubsystemVendor, "subsystem": f.Subsystem,
			},
			"irq_pin": f.IRQPin, "regions": regions, "qdev_id": f.Name,
		}
		if f.IRQPin != 0 {
			d["irq"] = f.IRQLine // QEMU reports the line only for a function with a pin
		}
		devs = append(devs, d)
	}
	return []map[string]any{{"bus": 0, "devices": devs}}, nil
}
