package vmm

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"512", 512 << 20, true},
		{"512M", 512 << 20, true},
		{"1G", 1 << 30, true},
		{"64k", 64 << 10, true},
		{"4096B", 4096, true},
		{"1T", 1 << 40, true},
		{"0", 0, true},
		{"", 0, false},
		{"M", 0, false},
		{"lots", 0, false},
		{"1X", 0, false},
		{"-1G", 0, false},
		{"99999999999999999999G", 0, false},
		{"9000000000G", 0, false},
	} {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
		// A number past 2^64 is a number: "too large", not the form.
		if strings.HasPrefix(c.in, "9999999999") && (err == nil || !strings.Contains(err.Error(), "too large")) {
			t.Errorf("ParseSize(%q): %v, want too large", c.in, err)
		}
		// "lots" said "unknown suffix 's'", and a bad number left T out.
		if err != nil && !strings.Contains(err.Error(), "too large") && !strings.Contains(err.Error(), "optional B, K, M, G or T suffix") && c.in != "" {
			t.Errorf("ParseSize(%q): %v, want the accepted form named", c.in, err)
		}
	}
}

// A size KVM cannot map is rounded up by the command line and refused by
// Validate, never handed to KVM_SET_USER_MEMORY_REGION.
func TestMemSizePages(t *testing.T) {
	for _, c := range []struct{ in, want uint64 }{
		{1 << 20, 1 << 20},
		{1<<20 + 1, 1<<20 + 4096},
		{33333 << 10, 33336 << 10},
		{MaxMemSize, MaxMemSize},
		{MaxMemSize + 1, MaxMemSize + 1},
	} {
		if got := RoundMemSize(c.in); got != c.want {
			t.Errorf("RoundMemSize(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	cfg := Config{Kernel: "k", CPUs: 1, MemSize: 1<<20 + 1}
	if err := cfg.Validate(); err == nil {
		t.Errorf("Validate accepted --mem of %d bytes", cfg.MemSize)
	}
	cfg.MemSize = RoundMemSize(cfg.MemSize)
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate(%d bytes): %v", cfg.MemSize, err)
	}
}
