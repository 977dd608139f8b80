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
	// ",," is a comma in the path, as in QEMU's file=, and String gives
	// it back so.
	var c diskFlags
	for _, v := range []string{"a,,b.img", "a,,,,b.img,ro", "a,,b.img,,"} {
		if err := c.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if want := (diskFlags{{Path: "a,b.img"}, {Path: "a,,b.img", ReadOnly: true}, {Path: "a,b.img,"}}); !reflect.DeepEqual(c, want) {
		t.Errorf("disks %+v, want %+v", c, want)
	}
	if got := c.String(); got != "a,,b.img a,,,,b.img,ro a,,b.img,," {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{"", ",ro", "a,,,b.img", "x.img,rx", "x.img,queues=0", "x.img,queues=65", "x.img,queues=", "x.img,queues=two", "x.img,cache=", "x.img,cache=unsafe", "x.img,cache"} {
		if err := (&diskFlags{}).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
