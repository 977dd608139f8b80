package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// goQEMUMonitor reproduces what github.com/digitalocean/go-qemu's
// qmp.SocketMonitor does on the wire (qmp/socket.go), which we cannot
// import here: the greeting and the qmp_capabilities reply are read with a
// buffering json.Decoder, then a bufio.Scanner on the raw connection reads
// everything else, so anything the decoder buffered past the reply is lost;
// commands are written as json.Marshal output, without a newline; replies
// and events are told apart by the "event" key.
type goQEMUMonitor struct {
	c            net.Conn
	Version      goQEMUVersion
	Capabilities []string
	mu           sync.Mutex
	stream       chan goQEMUStreamResponse
	events       chan goQEMUEvent
}

type goQEMUVersion struct {
	Package string `json:"package"`
	QEMU    struct {
		Major int `json:"major"`
		Micro int `json:"micro"`
		Minor int `json:"minor"`
	} `json:"qemu"`
}

type goQEMUEvent struct {
	Event     string         `json:"event"`
	Data      map[string]any `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type goQEMUStreamResponse struct {
	buf []byte
	err error
}

// goQEMUResponse is go-qemu's qmp.response: note ID is a string.
type goQEMUResponse struct {
	ID     string `json:"id"`
	Return any    `json:"return,omitempty"`
	Error  struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error,omitempty"`
}

func (mon *goQEMUMonitor) Connect() error {
	enc := json.NewEncoder(mon.c)
	dec := json.NewDecoder(bufio.NewReader(mon.c))
	var ban struct {
		QMP struct {
			Capabilities []string      `json:"capabilities"`
			Version      goQEMUVersion `json:"version"`
		} `json:"QMP"`
	}
	if err := dec.Decode(&ban); err != nil {
		return err
	}
	mon.Version = ban.QMP.Version
	mon.Capabilities = ban.QMP.Capabilities
	if err := enc.Encode(map[string]any{"execute": "qmp_capabilities"}); err != nil {
		return err
	}
	var r goQEMUResponse
	if err := dec.Decode(&r); err != nil {
		return err
	}
	if r.Error.Desc != "" {
		return errors.New(r.Error.Desc)
	}
	mon.events = make(chan goQEMUEvent)
	mon.stream = make(chan goQEMUStreamResponse)
	go mon.listen()
	return nil
}

func (mon *goQEMUMonitor) listen() {
	defer close(mon.events)
	defer close(mon.stream)
	scanner := bufio.NewScanner(mon.c)
	for scanner.Scan() {
		var e goQEMUEvent
		b := append([]byte(nil), scanner.Bytes()...)
		if err := json.Unmarshal(b, &e); err != nil {
			continue
		}
		if e.Event == "" {
			mon.stream <- goQEMUStreamResponse{buf: b}
			continue
		}
		mon.events <- e
	}
	if err := scanner.Err(); err != nil {
		mon.stream <- goQEMUStreamResponse{err: err}
	}
}

func (mon *goQEMUMonitor) Run(cmd []byte) ([]byte, error) {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	if _, err := mon.c.Write(cmd); err != nil {
		return nil, err
	}
	res, ok := <-mon.stream
	if !ok {
		return nil, errors.New("monitor closed")
	}
	if res.err != nil {
		return nil, res.err
	}
	var r goQEMUResponse
	if err := json.Unmarshal(res.buf, &r); err != nil {
		return nil, err
	}
	if r.Error.Desc != "" {
		return nil, errors.New(r.Error.Desc)
	}
	return res.buf, nil
}

// run is go-qemu's Domain.Run: {"execute": ...} with arguments omitted.
func (mon *goQEMUMonitor) run(execute string) ([]byte, error) {
	b, _ := json.Marshal(struct {
		Execute string `json:"execute"`
		Args    any    `json:"arguments,omitempty"`
	}{Execute: execute})
	return mon.Run(b)
}

// rawRun is go-qemu's generated raw.Monitor: always "arguments": {}.
func (mon *goQEMUMonitor) rawRun(execute string, ret any) error {
	b, _ := json.Marshal(map[string]any{"execute": execute, "arguments": struct{}{}})
	bs, err := mon.Run(b)
	if err != nil {
		return err
	}
	var res struct {
		Res json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(bs, &res); err != nil {
		return err
	}
	return json.Unmarshal(res.Res, ret)
}

// goQEMURunState is raw.RunState's UnmarshalJSON: names outside QEMU's
// enum are errors.
type goQEMURunState string

func (s *goQEMURunState) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v {
	case "debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate", "prelaunch",
		"finish-migrate", "restore-vm", "running", "save-vm", "shutdown", "suspended", "watchdog",
		"guest-panicked", "colo":
		*s = goQEMURunState(v)
		return nil
	}
	return fmt.Errorf("unknown enum value %q for RunState", v)
}

func TestGoQEMUClient(t *testing.T) {
	m := newFakeMachine()
	s := startServer(t, m)
	conn, err := net.DialTimeout("unix", s.Path(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mon := &goQEMUMonitor{c: conn}
	if err := mon.Connect(); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if v := mon.Version; v.Package != "govmm" || fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro) != "7.2.0" {
		t.Errorf("greeting version %+v", v)
	}
	if len(mon.Capabilities) != 1 || mon.Capabilities[0] != "oob" {
		t.Errorf("capabilities %v", mon.Capabilities)
	}

	// Domain.Status, through raw.Monitor.QueryStatus.
	var st struct {
		Running    bool           `json:"running"`
		Singlestep bool           `json:"singlestep"`
		Status     goQEMURunState `json:"status"`
	}
	if err := mon.rawRun("query-status", &st); err != nil || st.Status != "prelaunch" || st.Running {
		t.Errorf("query-status: %+v, %v", st, err)
	}

	// Domain.CPUs: query-cpus into go-qemu's qemu.CPU, where pc is an int.
	b, err := mon.run("query-cpus")
	if err != nil {
		t.Fatalf("query-cpus: %v", err)
	}
	var cpus struct {
		Return []struct {
			CPU     int  `json:"cpu"`
			Current bool `json:"current"`
			Halted  bool `json:"halted"`
			PC      int  `json:"pc"`
		} `json:"return"`
	}
	if err := json.Unmarshal(b, &cpus); err != nil {
		t.Fatalf("query-cpus into qemu.CPU: %v", err)
	}
	if len(cpus.Return) != 2 || cpus.Return[0].PC != int(int64(ripVar)) || uint64(cpus.Return[0].PC) != kernelRIP ||
		!cpus.Return[0].Current || cpus.Return[1].CPU != 1 || !cpus.Return[1].Halted || cpus.Return[1].PC != 0xfff0 {
		t.Errorf("query-cpus: %+v", cpus.Return)
	}
	// raw.Monitor.QueryCpus picks the union branch by "arch" and reads int64s.
	var rawCPUs []json.RawMessage
	if err := mon.rawRun("query-cpus", &rawCPUs); err != nil {
		t.Fatal(err)
	}
	var x86 struct {
		Arch     string `json:"arch"`
		CPU      int64  `json:"CPU"`
		QomPath  string `json:"qom_path"`
		ThreadID int64  `json:"thread_id"`
		Pc       int64  `json:"pc"`
	}
	if err := json.Unmarshal(rawCPUs[0], &x86); err != nil || x86.Arch != "x86" || x86.Pc != int64(ripVar) || x86.ThreadID != 4242 || x86.QomPath == "" {
		t.Errorf("raw query-cpus: %+v, %v", x86, err)
	}

	// Domain.Version and PackageVersion.
	b, err = mon.run("query-version")
	if err != nil {
		t.Fatal(err)
	}
	var ver struct {
		ID     string        `json:"id"`
		Return goQEMUVersion `json:"return"`
	}
	if err := json.Unmarshal(b, &ver); err != nil || ver.Return.QEMU.Major != 7 || ver.Return.QEMU.Minor != 2 || ver.Return.Package != "govmm" {
		t.Errorf("query-version: %+v, %v", ver, err)
	}

	// Domain.Commands and Supported.
	var cmds []struct {
		Name string `json:"name"`
	}
	if err := mon.rawRun("query-commands", &cmds); err != nil {
		t.Fatal(err)
	}
	supported := map[string]bool{}
	for _, c := range cmds {
		supported[c.Name] = true
	}
	for _, name := range []string{"query-status", "query-cpus", "query-block", "query-pci", "system_powerdown", "system_reset", "query-exit-stats"} {
		if !supported[name] {
			t.Errorf("query-commands lacks %s", name)
		}
	}

	// Domain.BlockDevices and PCIDevices.
	for _, cmd := range []string{"query-block", "query-pci"} {
		b, err := mon.run(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		var r struct {
			Return []struct {
				Bus     int   `json:"bus"`
				Devices []any `json:"devices"`
			} `json:"return"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Return == nil {
			t.Errorf("%s: %s, %v", cmd, b, err)
		}
	}

	var kvm struct {
		Enabled bool `json:"enabled"`
		Present bool `json:"present"`
	}
	if err := mon.rawRun("query-kvm", &kvm); err != nil || !kvm.Enabled || !kvm.Present {
		t.Errorf("query-kvm: %+v, %v", kvm, err)
	}

	// An unknown command is an error, as from QEMU.
	if _, err := mon.run("screendump"); err == nil || err.Error() != "The command screendump has not been found" {
		t.Errorf("unknown command: %v", err)
	}

	// Events: Domain.SystemPowerdown / SystemReset, and one the VMM emits
	// for the guest. The events channel is unbuffered, as in go-qemu:
	// collect concurrently.
	got := make(chan goQEMUEvent, 8)
	go func() {
		for e := range mon.events {
			got <- e
		}
	}()
	if _, err := mon.run("system_powerdown"); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.run("system_reset"); err != nil {
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
