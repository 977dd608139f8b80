package vmm

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// Knobs are the settings that trade host CPU for guest wake-up latency,
// for IPC-heavy guests whose cost is halts and IPIs. The zero value
// leaves KVM's defaults alone.
type Knobs struct {
	// HaltPollNs, when set, is the per-VM halt-polling window
	// (KVM_CAP_HALT_POLL): a halted vCPU spins this long for a wake-up
	// before it sleeps. Nil keeps the kvm module's halt_poll_ns.
	HaltPollNs *uint64
	// HLTPassthrough lets the guest execute HLT and PAUSE without exiting
	// (KVM_CAP_X86_DISABLE_EXITS): wake-ups cost no exit, but an idle
	// vCPU burns its host CPU.
	HLTPassthrough bool
	// PVHaltPoll advertises KVM_FEATURE_POLL_CONTROL with the REALTIME
	// hint, so the guest's cpuidle-haltpoll driver polls before it halts
	// (and turns host-side polling off through MSR_KVM_POLL_CONTROL).
	PVHaltPoll bool
	// CPUAffinity pins vCPU i to host CPU CPUAffinity[i % len].
	CPUAffinity []int
}

// validate checks the knobs against this host before a VM exists.
func (k Knobs) validate(sys *kvm.System) error {
	if k.HaltPollNs != nil && sys.CheckExtension(kvm.CapHaltPoll) == 0 {
		return fmt.Errorf("--halt-poll-ns: this host's KVM lacks KVM_CAP_HALT_POLL")
	}
	if k.HLTPassthrough {
		want := kvm.DisableExitsHLT | kvm.DisableExitsPause
		if got := sys.CheckExtension(kvm.CapX86DisableExits); got&want != want {
			return fmt.Errorf("--hlt-passthrough: this host's KVM can disable exits %#x, not HLT|PAUSE (%#x)", got, want)
		}
	}
	if len(k.CPUAffinity) > 0 {
		// The CPUs this process may run on, by ID: under taskset or a
		// cpuset they need not be 0..NumCPU-1.
		var allowed unix.CPUSet
		if err := unix.SchedGetaffinity(0, &allowed); err != nil {
			return fmt.Errorf("--cpu-affinity: read this process's CPU set: %w", err)
		}
		for _, c := range k.CPUAffinity {
			if c < 0 || c >= len(allowed)*64 || !allowed.IsSet(c) {
				return fmt.Errorf("--cpu-affinity: host CPU %d is not one this process may run on (%s)", c, cpuList(&allowed))
			}
		}
	}
	return nil
}

// cpuList prints a CPU set as its IDs: "0,1,4".
func cpuList(set *unix.CPUSet) string {
	var ids []string
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			ids = append(ids, strconv.Itoa(c))
		}
	}
	return strings.Join(ids, ",")
}

// applyVM sets the per-VM knobs; KVM only accepts disabling exits before
// any vCPU exists, so this runs right after KVM_CREATE_VM.
func (k Knobs) applyVM(vm *kvm.VM) error {
	if k.HLTPassthrough {
		if err := vm.EnableCap(kvm.CapX86DisableExits, kvm.DisableExitsHLT|kvm.DisableExitsPause); err != nil {
			return fmt.Errorf("--hlt-passthrough refused by KVM: %w", err)
		}
	}
	if k.HaltPollNs != nil {
		if err := vm.EnableCap(kvm.CapHaltPoll, *k.HaltPollNs); err != nil {
			return fmt.Errorf("--halt-poll-ns %d refused by KVM: %w", *k.HaltPollNs, err)
		}
	}
	return nil
}

// hostCPUs returns where vCPU id may run: nil for anywhere.
func (k Knobs) hostCPUs(id int) []int {
	if len(k.CPUAffinity) == 0 {
		return nil
	}
	return []int{k.CPUAffinity[id%len(k.CPUAffinity)]}
}
