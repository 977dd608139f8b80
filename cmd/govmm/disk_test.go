package main

import (
	"reflect"
	"testing"
)

func TestDiskFlags(t *testing.T) {
	var d diskFlags
	for _, v := range []string{"a.img", "b.img,ro", "c.img,ro,rw"} {
		if err := d.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := diskFlags{{Path: "a.img"}, {Path: "b.img", ReadOnly: true}, {Path: "c.img"}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("disks %+v, want %+v", d, want)
	}
	if got := d.String(); got != "a.img b.img,ro c.img" {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{"", ",ro", "x.img,rx"} {
		if err := (&diskFlags{}).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
