package vmm

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/govmm/govmm/virtio"
	"golang.org/x/sys/unix"
)

// NetConfig is one virtio-net interface, bridged to a host tap.
type NetConfig struct {
	// Tap is the host interface name. An existing tap is attached to (the
	// usual case: made beforehand by `ip tuntap add` and addressed or
	// bridged by the host's setup); a missing one is created, which needs
	// CAP_NET_ADMIN, and is deleted again when the VM closes.
	Tap string
	// MAC is the guest's address; nil picks a random locally
	// administered one.
	MAC net.HardwareAddr
	// NoOffload offers the guest no checksum or segmentation offloads
	// and no mergeable receive buffers: every frame then crosses at the
	// MTU with its checksum computed by the sender (the datapath before
	// offloads, kept for comparison and for hosts whose taps refuse
	// TUNSETOFFLOAD).
	NoOffload bool
	// Queues is the number of queue pairs (VIRTIO_NET_F_MQ when more
	// than one), each served by its own goroutine on its own queue of a
	// multiqueue tap; 0 means one, the default: with 2 vCPUs two pairs
	// moved less TCP than one (README, Network datapath), as in QEMU.
	Queues int
	// TxWait says which streams of frames from the guest the device
	// waits for before it serves their notification (virtio.NetTxWait:
	// small frames by default).
	TxWait virtio.NetTxWait
}

// validate checks what can be checked before the tap is opened.
func (c NetConfig) validate() error {
	if c.Tap == "" {
		return errors.New("virtio-net: no tap name")
	}
	if c.Queues < 0 || c.Queues > virtio.NetMaxQueuePairs {
		return fmt.Errorf("virtio-net %s: %d queue pairs, want 1 to %d, or 0 for the default (one)", c.Tap, c.Queues, virtio.NetMaxQueuePairs)
	}
	if !c.TxWait.Valid() {
		return fmt.Errorf("virtio-net %s: unknown txwait mode %v", c.Tap, c.TxWait)
	}
	if len(c.Tap) >= unix.IFNAMSIZ {
		return fmt.Errorf("virtio-net: tap name %q longer than %d bytes", c.Tap, unix.IFNAMSIZ-1)
	}
	// The kernel's dev_valid_name: the tap would fail with EINVAL, which
	// reads as a clash with an existing interface.
	if c.Tap == "." || c.Tap == ".." || strings.ContainsAny(c.Tap, "/: \t\n\v\f\r") {
		return fmt.Errorf("virtio-net: %q is not a valid interface name (no '/', ':' or white space, not . or ..)", c.Tap)
	}
	if c.MAC == nil {
		return nil
	}
	if len(c.MAC) != 6 {
		return fmt.Errorf("virtio-net %s: MAC %s is not a 6-byte Ethernet address", c.Tap, c.MAC)
	}
	if c.MAC[0]&1 != 0 || [6]byte(c.MAC) == [6]byte{} {
		// The guest would take it, and no frame would ever reach it.
		return fmt.Errorf("virtio-net %s: MAC %s is not a unicast address", c.Tap, c.MAC)
	}
	return nil
}

// addNets puts one virtio-net device per configured tap on the PCI bus.
func (v *VM) addNets() error {
	for _, c := range v.cfg.Nets {
		taps, err := virtio.OpenTapQueues(c.Tap, max(c.Queues, 1))
		switch {
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			return fmt.Errorf("virtio-net: %w (needs root, CAP_NET_ADMIN, or a tap made by `ip tuntap add ... user USER` for this user)", err)
		case errors.Is(err, unix.EINVAL) && c.Queues > 1:
			return fmt.Errorf("virtio-net: %w (an interface of that name exists and is not a tap, or is a single-queue tap and queues=%d asks for more)", err, c.Queues)
		case errors.Is(err, unix.EINVAL):
			return fmt.Errorf("virtio-net: %w (an interface of that name exists and is not a tap)", err)
		case err != nil:
			return fmt.Errorf("virtio-net: %w", err)
		}
		nt := make([]virtio.NetTap, len(taps))
		for i, t := range taps {
			nt[i] = t
		}
		n, err := virtio.NewNet(nt, c.MAC, !c.NoOffload)
		if err != nil {
			for _, t := range taps {
				t.Close()
			}
			return err
		}
		n.SetTxWait(c.TxWait)
		if err := v.addVirtio(n, 0); err != nil {
			return err
		}
		p := v.pci
		p.nets = append(p.nets, pciNet{name: p.transports[len(p.transports)-1].Name(), tap: c.Tap, net: n})
	}
	return nil
}
