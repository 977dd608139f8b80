package vmm

import "testing"

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
	}
}
