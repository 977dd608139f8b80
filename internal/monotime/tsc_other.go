//go:build !amd64

package monotime

// Elsewhere Now stays the runtime's clock.
func rdtsc() uint64    { return 0 }
func tscTrusted() bool { return false }
