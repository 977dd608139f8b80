package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm"
)

// --blk-poll-us: the default polling bound of a disk queue, and the
// largest accepted (a poll that long holds a host CPU for 10 ms). 200 us
// catches a guest's next request at queue depth 1, where the poll's gain
// is (README, Storage); the poll yields when the host has no CPU to spare.
const (
	defaultBlockPollUS = 200
	maxBlockPollUS     = 10000
)

// diskFlags collects repeated --disk path[,option...] flags.
type diskFlags []vmm.DiskConfig

func (d *diskFlags) String() string {
	var s []string
	for _, c := range *d {
		v := strings.ReplaceAll(c.Path, ",", ",,")
		if c.ReadOnly {
			v += ",ro"
		}
		if c.Queues > 0 {
			v += fmt.Sprintf(",queues=%d", c.Queues)
		}
		if c.Direct {
			v += ",cache=none"
		}
		s = append(s, v)
	}
	return strings.Join(s, " ")
}

// Set parses one --disk value. The option list follows QEMU's -drive
// habit of commas, and its escape: ",," is a comma in the path.
func (d *diskFlags) Set(v string) error {
	path, opts := cutPath(v)
	if path == "" {
		return fmt.Errorf("want path[,ro][,queues=N][,cache=none|writeback]")
	}
	c := vmm.DiskConfig{Path: path}
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			key, val, _ := strings.Cut(o, "=")
			switch {
			case o == "ro":
				c.ReadOnly = true
			case o == "rw":
				c.ReadOnly = false
			case key == "queues":
				n, err := strconv.Atoi(val)
				if err != nil || n < 1 || n > virtio.BlockMaxQueues {
					return fmt.Errorf("queues=%q: want a number of request queues from 1 to %d", val, virtio.BlockMaxQueues)
				}
				c.Queues = n
			case key == "cache":
				// QEMU's names: none is O_DIRECT with flushes honoured,
				// writeback (the default) the host's page cache.
				switch val {
				case "none":
					c.Direct = true
				case "writeback":
					c.Direct = false
				default:
					return fmt.Errorf("cache=%q: want none (O_DIRECT) or writeback (the host's page cache)", val)
				}
			default:
				return fmt.Errorf("unknown disk option %q (want ro, rw, queues=N or cache=none|writeback)", o)
			}
		}
	}
	*d = append(*d, c)
	return nil
}

// cutPath splits a --disk value at its first single comma: the path
// before it, with each ",," in it a comma, as QEMU reads file=, and the
// options after it.
func cutPath(v string) (path, opts string) {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != ',' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == ',' {
			b.WriteByte(',')
			i++
			continue
		}
		return b.String(), v[i+1:]
	}
	return b.String(), ""
}
