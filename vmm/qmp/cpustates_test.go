package qmp

import (
	"encoding/json"
	"testing"
)

// stateMachine is a Machine that can also read its vCPUs' current state.
type stateMachine struct {
	*fakeMachine
	states []CPU
}

func (m *stateMachine) CPUStates() []CPU { return m.states }

// query-cpus asks a CPUStateReader for the current state; query-cpus-fast
// never does (it must not interrupt the vCPUs).
func TestQueryCPUsUsesCurrentState(t *testing.T) {
	m := &stateMachine{fakeMachine: newFakeMachine(), states: []CPU{
		{Index: 0, ThreadID: 4242, PC: 0x1000, Halted: true},
		{Index: 1, ThreadID: 4243, PC: 0x2000, Halted: false},
	}}
	s := startServer(t, m)
	c := dial(t, s.Path())
	c.handshake()
	for _, tc := range []struct{ req, want string }{
		{`{"execute":"query-cpus"}`, `{"return":[
			{"arch":"x86","CPU":0,"current":true,"halted":true,"qom_path":"/machine/unattached/device[0]","thread_id":4242,"props":{"core-id":0,"thread-id":0,"socket-id":0},"pc":4096},
			{"arch":"x86","CPU":1,"current":false,"halted":false,"qom_path":"/machine/unattached/device[1]","thread_id":4243,"props":{"core-id":1,"thread-id":0,"socket-id":0},"pc":8192}]}`},
		{`{"execute":"query-cpus-fast"}`, `{"return":[
			{"cpu-index":0,"qom-path":"/machine/unattached/device[0]","thread-id":4242,"props":{"core-id":0,"thread-id":0,"socket-id":0},"target":"x86_64"},
			{"cpu-index":1,"qom-path":"/machine/unattached/device[1]","thread-id":4243,"props":{"core-id":1,"thread-id":0,"socket-id":0},"target":"x86_64"}]}`},
	} {
		if r, _ := c.cmd(tc.req); !jsonEqual(r, tc.want) {
			got, _ := json.Marshal(r)
			t.Errorf("%s:\n got %s\nwant %s", tc.req, got, tc.want)
		}
	}
}
