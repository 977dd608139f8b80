// Package exitstats keeps per-vCPU, per-exit-reason latency statistics:
// count, min, max, sum and sum of squares of the time user space spends
// handling each kind of VM exit, plus the time spent in the guest, each with
// a log-linear histogram (100 ns x 2^i, each split in 16) that gives
// percentiles and the Prometheus buckets. It prints them in the
// layout of the PowerPC KVM exit-timing tables or as JSON, reads KVM's own
// counters from the binary stats fds (KernelStats) to show beside them, and
// exports both to Prometheus (Collector). Histogram is the same idea for
// other recorders, in raw units (ns or bytes) with power-of-two bounds:
// virtio's request telemetry keeps its latencies and sizes in it.
//
// Recording happens on the vCPU thread after every exit, so it must cost next
// to nothing and never block: a vCPU that waits on a lock held by a reader
// would show the reader's cost as exit latency. Each VCPU therefore has a
// single writer and a sequence lock: readers copy the counters and retry if
// the writer was mid-update, and the writer never waits for anyone.
package exitstats
