// Package kvm is a thin, typed layer over the Linux KVM ioctl API for
// x86-64: the system fd (/dev/kvm), VM fds and vCPU fds, the shared kvm_run
// page with its sync-register area, and the binary statistics fd.
//
// It holds no policy: it never retries EINTR (a signal exit is information
// the vCPU loop wants to count), never logs, and never decides what a VM
// looks like. Every use of unsafe is in a *_unsafe.go file; ioctl numbers
// and capability constants live in constants_amd64.go.
package kvm
