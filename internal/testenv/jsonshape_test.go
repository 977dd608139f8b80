package testenv

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestShapeDiff(t *testing.T) {
	decode := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return JSONShape(v)
	}
	want := decode(`{"a":1,"b":[{"x":"s"},{"y":true}],"c":{"d":null},"e":[]}`)
	got := decode(`{"a":"1","b":[{"x":"t","y":false,"z":1}],"c":{},"e":[3],"f":2}`)
	diff := ShapeDiff(want, got)
	wantDiff := []string{".a: string, want number", "extra .b[].z", "extra .f", "missing .c.d"}
	if !slices.Equal(diff, wantDiff) {
		t.Errorf("ShapeDiff = %q, want %q", diff, wantDiff)
	}
	if d := ShapeDiff(want, want); len(d) != 0 {
		t.Errorf("a shape differs from itself: %q", d)
	}
	if s := JSONShape([]any{1.0, "x"}); s.([]any)[0] != "number|string" {
		t.Errorf("mixed list shape %v", s)
	}
}
