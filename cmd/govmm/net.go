package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm"
)

// netFlags collects repeated --net tap=NAME[,mac=MAC][,offload=off][,queues=N][,txwait=MODE] flags.
type netFlags []vmm.NetConfig

func (n *netFlags) String() string {
	var s []string
	for _, c := range *n {
		v := "tap=" + c.Tap
		if c.MAC != nil {
			v += ",mac=" + c.MAC.String()
		}
		if c.NoOffload {
			v += ",offload=off"
		}
		if c.Queues > 0 {
			v += fmt.Sprintf(",queues=%d", c.Queues)
		}
		if c.TxWait != virtio.NetTxWaitSmall {
			v += ",txwait=" + c.TxWait.String()
		}
		s = append(s, v)
	}
	return strings.Join(s, " ")
}

// Set parses one --net value: key=value pairs separated by commas, as
// in QEMU's -netdev/-device options.
func (n *netFlags) Set(v string) error {
	var c vmm.NetConfig
	for _, o := range strings.Split(v, ",") {
		key, val, ok := strings.Cut(o, "=")
		switch {
		case !ok:
			return fmt.Errorf("option %q: want key=value (tap=NAME[,mac=MAC][,offload=off][,queues=N][,txwait=MODE])", o)
		case key == "tap":
			if val == "" {
				return fmt.Errorf("tap=: empty interface name")
			}
			c.Tap = val
		case key == "mac":
			mac, err := net.ParseMAC(val)
			if err != nil || len(mac) != 6 {
				return fmt.Errorf("mac=%s: not an Ethernet address like 52:54:00:12:34:56", val)
			}
			c.MAC = mac
		case key == "offload":
			switch val {
			case "on":
				c.NoOffload = false
			case "off":
				c.NoOffload = true
			default:
				return fmt.Errorf("offload=%s: want on or off", val)
			}
		case key == "queues":
			q, err := strconv.Atoi(val)
			if err != nil || q < 1 || q > virtio.NetMaxQueuePairs {
				return fmt.Errorf("queues=%s: want a number of queue pairs from 1 to %d", val, virtio.NetMaxQueuePairs)
			}
			c.Queues = q
		case key == "txwait":
			w, err := virtio.ParseNetTxWait(val)
			if err != nil {
				return err
			}
			c.TxWait = w
		default:
			return fmt.Errorf("unknown net option %q (want tap, mac, offload, queues or txwait)", key)
		}
	}
	if c.Tap == "" {
		return fmt.Errorf("missing tap=NAME")
	}
	*n = append(*n, c)
	return nil
}
