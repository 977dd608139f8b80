package kvm

import (
	"math"
	"testing"
)

func TestStatScale(t *testing.T) {
	tests := []struct {
		d    StatDesc
		want float64
	}{
		{StatDesc{}, 1},
		{StatDesc{Exponent: -9}, 1e-9},
		{StatDesc{Exponent: 3}, 1e3},
		{StatDesc{Pow2: true, Exponent: 10}, 1024},
		{StatDesc{Pow2: true, Exponent: -1}, 0.5},
	}
	for _, tt := range tests {
		if got := tt.d.Scale(); math.Abs(got-tt.want) > 1e-12*tt.want {
			t.Errorf("Scale(%+v) = %g, want %g", tt.d, got, tt.want)
		}
	}
}

// Bucket bounds follow the kernel's KVM_STATS_{LOG,LINEAR}_HIST_UPDATE.
func TestStatBucketUpperBound(t *testing.T) {
	logHist := StatDesc{Type: StatLogHist, Size: 32}
	linHist := StatDesc{Type: StatLinearHist, Size: 4, BucketSize: 10}
	tests := []struct {
		name  string
		d     StatDesc
		i     int
		bound uint64
		ok    bool
	}{
		{"log 0 holds 0", logHist, 0, 0, true},
		{"log 1 holds 1", logHist, 1, 1, true},
		{"log 2 holds 2..3", logHist, 2, 3, true},
		{"log 10 holds 512..1023", logHist, 10, 1023, true},
		{"log last is open", logHist, 31, 0, false},
		{"log past the end", logHist, 32, 0, false},
		{"log 64 would overflow", StatDesc{Type: StatLogHist, Size: 100}, 64, 0, false},
		{"linear 0 holds 0..9", linHist, 0, 9, true},
		{"linear 2 holds 20..29", linHist, 2, 29, true},
		{"linear last is open", linHist, 3, 0, false},
		{"linear without bucket size", StatDesc{Type: StatLinearHist, Size: 4}, 0, 0, false},
		{"not a histogram", StatDesc{Type: StatCumulative, Size: 1}, 0, 0, false},
		{"negative", logHist, -1, 0, false},
	}
	for _, tt := range tests {
		bound, ok := tt.d.BucketUpperBound(tt.i)
		if bound != tt.bound || ok != tt.ok {
			t.Errorf("%s: BucketUpperBound(%d) = %d, %v; want %d, %v", tt.name, tt.i, bound, ok, tt.bound, tt.ok)
		}
	}
}

func TestStatNames(t *testing.T) {
	if s := StatLogHist.String(); s != "log-hist" {
		t.Errorf("StatLogHist = %q", s)
	}
	if s := StatType(9).String(); s != "StatType(9)" {
		t.Errorf("StatType(9) = %q", s)
	}
	if s := UnitSeconds.String(); s != "seconds" {
		t.Errorf("UnitSeconds = %q", s)
	}
}
