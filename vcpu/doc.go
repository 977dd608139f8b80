// Package vcpu runs one virtual CPU: a goroutine locked to its OS thread
// that loops on KVM_RUN, decodes each exit from the shared kvm_run page,
// dispatches port I/O and MMIO to the device buses, and charges the time
// of every exit (and of the guest run before it) to exitstats.
//
// Other goroutines steer a running vCPU only through Pause, Resume, Stop
// and State, which post a request and use kvm_run.immediate_exit plus a
// signal to the vCPU's thread, so a request can never be lost between two
// KVM_RUN calls, and a parked vCPU wakes for a stop.
package vcpu
