package main

import (
	"reflect"
	"testing"
)

func TestDiskFlags(t *testing.T) {
	var d diskFlags
	for _, v := range []string{"a.img", "b.img,ro", "c.img,ro,rw", "d.img,queues=4,ro", "e.img,cache=none", "f.img,cache=none,cache=writeback"} {
		if err := d.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := diskFlags{{Path: "a.img"}, {Path: "b.img", ReadOnly: true}, {Path: "c.img"}, {Path: "d.img", ReadOnly: true, Queues: 4}, {Path: "e.img", Direct: true}, {Path: "f.img"}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("disks %+v, want %+v", d, want)
	}
	if got := d.String(); got != "a.img b.img,ro c.img d.img,ro,queues=4 e.img,cache=none f.img" {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{"", ",ro", "x.img,rx", "x.img,queues=0", "x.img,queues=65", "x.img,queues=", "x.img,queues=two", "x.img,cache=", "x.img,cache=unsafe", "x.img,cache"} {
		if err := (&diskFlags{}).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
