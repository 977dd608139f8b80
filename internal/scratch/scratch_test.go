package scratch

import "testing"

func TestMapUnmap(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 3<<20 + 5} {
		b, err := Map(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != n {
			t.Fatalf("Map(%d): %d bytes", n, len(b))
		}
		for i := 0; i < n; i += 4096 {
			if b[i] != 0 {
				t.Fatalf("Map(%d): byte %d is %d, want zero", n, i, b[i])
			}
			b[i] = 1
		}
		Unmap(b)
	}
	Unmap(nil)
}
