// Package sandbox confines the govmm process once a VM is set up and
// before its vCPUs run: a seccomp allow-list of the system calls govmm
// makes from then on, installed on every thread, with any other call
// reported by name and the process ended.
package sandbox
