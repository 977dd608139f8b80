package main

import (
	"fmt"
	"strings"

	"github.com/govmm/govmm/vmm"
)

// diskFlags collects repeated --disk path[,ro] flags.
type diskFlags []vmm.DiskConfig

func (d *diskFlags) String() string {
	var s []string
	for _, c := range *d {
		if c.ReadOnly {
			s = append(s, c.Path+",ro")
		} else {
			s = append(s, c.Path)
		}
	}
	return strings.Join(s, " ")
}

// Set parses one --disk value. The option list follows QEMU's -drive
// habit of commas; a path with a comma in it cannot be given.
func (d *diskFlags) Set(v string) error {
	path, opts, _ := strings.Cut(v, ",")
	if path == "" {
		return fmt.Errorf("want path[,ro]")
	}
	c := vmm.DiskConfig{Path: path}
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "ro":
				c.ReadOnly = true
			case "rw":
				c.ReadOnly = false
			default:
				return fmt.Errorf("unknown disk option %q (want ro or rw)", o)
			}
		}
	}
	*d = append(*d, c)
	return nil
}
