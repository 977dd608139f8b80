package devices

import (
	"bytes"
	"encoding/binary"
	"io"
	"log"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// pciFuzzBARs are the BARs of the function in slot 1: one of each kind,
// each with a device behind it, and BAR 2 left unimplemented.
var pciFuzzBARs = map[int]BAR{
	0: {Kind: BARMem64, Size: 0x4000, Regions: []BARRegion{{"mem64", 0, 0x1000, &recorder{}}, {"mem64.b", 0x2000, 0x2000, &recorder{}}}},
	3: {Kind: BARMem32, Size: 0x100, Prefetchable: true, Regions: []BARRegion{{"mem32", 0, 0x100, &recorder{}}}},
	4: {Kind: BARIO, Size: 0x20, Regions: []BARRegion{{"io", 0x10, 0x10, &recorder{}}}},
}

// pciFuzzOp encodes one access for FuzzPCIConfigPorts: op, then a le32
// value. op&3 is 0 to latch the value, 1 to read and 2 to write port
// 0xcf8+(op>>2&7) with (op>>5&3) selecting 1, 2, 4 or 8 bytes, 3 to latch
// a register of slot value&3 (function 0) at offset value>>8&0xfc.
func pciFuzzOp(op byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{op}, v)
}

func pciPortOp(kind byte, port uint64, size int) byte {
	sizes := map[int]byte{1: 0, 2: 1, 4: 2, 8: 3}
	return kind | byte(port-PCIConfigPort)<<2 | sizes[size]<<5
}

// FuzzPCIConfigPorts drives configuration mechanism #1 with arbitrary
// port accesses and checks what a guest may rely on: the latch reads
// back as written (low bits clear), accesses that reach no function or
// no register read all ones, read-only bytes (identity, unimplemented
// registers, capability bodies outside their write masks) never change,
// BARs keep their type bits and size alignment, reads have no side
// effects, and the bus holds exactly the regions of the BARs that decode.
func FuzzPCIConfigPorts(f *testing.F) {
	latch := func(slot, reg int) []byte { return pciFuzzOp(3, uint32(slot)|uint32(reg)<<8) }
	data := func(kind byte, reg, size int, v uint32) []byte {
		return pciFuzzOp(pciPortOp(kind, PCIConfigPort+4+uint64(reg&3), size), v)
	}
	for name, s := range map[string][]byte{
		// What Linux does to size and place BAR 0, then enable decoding.
		"size-bar": bytes.Join([][]byte{
			latch(1, PCIBAR0), data(2, PCIBAR0, 4, 0xffffffff), data(1, PCIBAR0, 4, 0),
			data(2, PCIBAR0, 4, 0xc0000000), latch(1, PCIBAR0+4), data(2, PCIBAR0+4, 4, 1),
			latch(1, PCICommand), data(2, PCICommand, 2, PCICommandMemory|PCICommandIO),
			latch(1, 0x20), data(2, 0x20, 4, 0xc000), latch(1, 0x1c), data(2, 0x1c, 4, 0xe0000000),
		}, nil),
		"scan": bytes.Join([][]byte{
			latch(0, 0), data(1, 0, 4, 0), latch(1, 0), data(1, 0, 4, 0), latch(2, 0), data(1, 0, 4, 0),
			pciFuzzOp(0, 0x80010100), data(1, 0, 4, 0), pciFuzzOp(0, 0x80000800), data(1, 0, 2, 0),
			pciFuzzOp(0, 0x80000100), data(1, 0, 4, 0), pciFuzzOp(0, 0x00000800), data(1, 0, 4, 0),
		}, nil),
		"capabilities": bytes.Join([][]byte{
			latch(1, PCICapabilityList), data(1, PCICapabilityList, 1, 0), latch(1, 0x40), data(1, 0x40, 4, 0),
			data(2, 0x42, 2, 0xffff), data(1, 0x43, 1, 0), latch(1, 0x44), data(2, 0x44, 4, 0xffffffff),
		}, nil),
		"odd-sizes": bytes.Join([][]byte{
			pciFuzzOp(pciPortOp(1, PCIConfigPort, 2), 0), pciFuzzOp(pciPortOp(2, PCIConfigPort+1, 1), 0xff),
			pciFuzzOp(pciPortOp(1, PCIConfigPort+6, 4), 0), pciFuzzOp(pciPortOp(2, PCIConfigPort+4, 8), 0),
		}, nil),
	} {
		testenv.AddSeed(f, name, s)
	}
	// Hostile accesses log (unclaimed ports, BARs that do not fit):
	// thousands of lines per second while fuzzing.
	logTo := log.Writer()
	log.SetOutput(io.Discard)
	f.Cleanup(func() { log.SetOutput(logTo) })

	f.Fuzz(func(t *testing.T, in []byte) {
		ioBus, mmio := NewBus("io"), NewBus("mmio")
		h := NewPCIHostBridge(mmio, ioBus)
		if _, err := ioBus.Register("pci", PCIConfigPort, PCIConfigPortSize, h); err != nil {
			t.Fatal(err)
		}
		fn := NewPCIConfig(PCIHeader{VendorID: 0x1af4, DeviceID: 0x1042, Revision: 1, Class: 0x018000,
			SubsystemVendorID: 0x1af4, SubsystemID: 0x1100})
		for i, b := range pciFuzzBARs {
			if err := fn.AddBAR(i, b); err != nil {
				t.Fatal(err)
			}
		}
		// A vendor capability with a partly writable body, then MSI-X's
		// shape: the write masks are the function's to choose.
		fn.AddCapability(PCICapVendor, []byte{8, 0, 0xaa, 0xbb, 0xcc, 0xdd}, []byte{0, 0, 0xff, 0x0f, 0, 0})
		fn.AddCapability(PCICapMSIX, make([]byte, 10), []byte{0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0})
		if _, err := h.AddDevice(fn); err != nil {
			t.Fatal(err)
		}
		funcs := []*PCIConfig{h.Function(0).ConfigSpace(), fn}
		initial := make([][]byte, len(funcs))
		for i, c := range funcs {
			initial[i] = c.Bytes(0, PCIConfigSize)
		}

		var model uint32 // the latch as the guest set it
		for ; len(in) >= 5; in = in[5:] {
			op, v := in[0], binary.LittleEndian.Uint32(in[1:])
			port := uint64(op >> 2 & 7)
			b := binary.LittleEndian.AppendUint64(nil, uint64(v)|uint64(v)<<32)[:1<<(op>>5&3)]
			switch op & 3 {
			case 0, 3:
				if op&3 == 3 {
					v = pciEnable | (v&3)<<11 | v>>8&0xfc
				}
				ioBus.Dispatch(PCIConfigPort, binary.LittleEndian.AppendUint32(nil, v), true)
				model = v &^ 3
			case 1:
				ioBus.Dispatch(PCIConfigPort+port, b, false)
				again := make([]byte, len(b))
				ioBus.Dispatch(PCIConfigPort+port, again, false)
				if !bytes.Equal(b, again) {
					t.Fatalf("port %#x read %x, then %x", PCIConfigPort+port, b, again)
				}
				checkPortRead(t, h, model, port, b)
			case 2:
				ioBus.Dispatch(PCIConfigPort+port, b, true)
				if port == 0 && len(b) == 4 {
					model = v &^ 3
				}
			}
			for i, c := range funcs {
				checkConfigSpace(t, c, initial[i])
			}
			checkBARsOnBus(t, fn, mmio, ioBus)
		}
	})
}

// checkPortRead checks a read of port 0xcf8+port against the latch model.
// It and the checks below run after every access: they leave out
// t.Helper, which costs a stack walk, and their messages say where.
func checkPortRead(t *testing.T, h *PCIHostBridge, latch uint32, port uint64, b []byte) {
	want := bytes.Repeat([]byte{0xff}, len(b))
	switch {
	case port == 0 && len(b) == 4:
		want = binary.LittleEndian.AppendUint32(nil, latch)
	case port >= 4 && port-4+uint64(len(b)) <= 4:
		dev, fn := int(latch>>11&0x1f), latch>>8&7
		if latch&pciEnable != 0 && latch>>16&0xff == 0 && fn == 0 && h.Function(dev) != nil {
			want = h.Function(dev).ConfigSpace().Bytes(int(latch&0xfc+uint32(port-4)), len(b))
		}
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("read of %d bytes at port %#x with latch %#x: %x, want %x", len(b), PCIConfigPort+port, latch, b, want)
	}
}

// checkConfigSpace checks c against its initial contents: outside the
// BAR registers only bits of the write mask may differ; a BAR register
// keeps its type bits, is aligned to its size, and reads 0 if the BAR
// is not implemented.
func checkConfigSpace(t *testing.T, c *PCIConfig, initial []byte) {
	// The registers themselves rather than ReadConfig's copy, and eight
	// at a time: this runs after every access, and fuzzing instruments
	// every loop iteration (checkPortRead reads through ReadConfig).
	c.mu.Lock()
	now := c.b
	wmask := c.wmask
	bars := c.bars
	c.mu.Unlock()
	le := binary.LittleEndian
	for o := 0; o < PCIConfigSize; o += 8 { // the BAR registers are whole words
		if o >= PCIBAR0 && o < PCIBAR0+4*PCINumBARs {
			continue
		}
		if (le.Uint64(now[o:])^le.Uint64(initial[o:]))&^le.Uint64(wmask[o:]) == 0 {
			continue
		}
		for r := o; r < o+8; r++ {
			if (now[r]^initial[r])&^wmask[r] != 0 {
				t.Fatalf("read-only bits of register %#x changed: %#x, was %#x", r, now[r], initial[r])
			}
		}
	}
	for i, st := range bars {
		v := le.Uint32(now[PCIBAR0+4*i:])
		var typ, low uint32 // the type bits, and the bits that must be zero
		switch {
		case st.upper:
			low = uint32((bars[i-1].cfg.Size - 1) >> 32)
		case st.cfg.Kind == BARMem32 || st.cfg.Kind == BARMem64:
			if typ, low = 0, uint32(st.cfg.Size-1)&^0xf; st.cfg.Kind == BARMem64 {
				typ = 4
			}
			if st.cfg.Prefetchable {
				typ |= 8
			}
			low |= 0xf &^ typ
		case st.cfg.Kind == BARIO:
			typ, low = 1, uint32(st.cfg.Size-1)&^1
		default:
			low = 0xffffffff
		}
		if v&typ != typ || v&low != 0 {
			t.Fatalf("BAR %d reads %#x (type bits %#x, zero bits %#x)", i, v, typ, low)
		}
	}
}

// checkBARsOnBus checks that the buses hold exactly the regions of the
// BARs that decode, at the BAR's address, besides the config ports.
func checkBARsOnBus(t *testing.T, c *PCIConfig, mmio, io *Bus) {
	want := map[*Bus]int{mmio: 0, io: 1}
	cmd := binary.LittleEndian.Uint16(c.Bytes(PCICommand, 2))
	for i, bar := range pciFuzzBARs {
		base, mapped := c.BARAddress(i)
		if !mapped {
			continue
		}
		bus, enable := mmio, uint16(PCICommandMemory)
		if bar.Kind == BARIO {
			bus, enable = io, PCICommandIO
		}
		if cmd&enable == 0 || base == 0 || base%bar.Size != 0 {
			t.Fatalf("BAR %d decodes at %#x with command %#x", i, base, cmd)
		}
		for _, reg := range bar.Regions {
			if r := bus.Find(base + reg.Offset); r == nil || r.Base != base+reg.Offset || r.Size != reg.Size || r.Dev != reg.Dev {
				t.Fatalf("BAR %d at %#x: region %s not on the bus", i, base, reg.Name)
			}
		}
		want[bus] += len(bar.Regions)
	}
	for bus, n := range want {
		if got := len(bus.Ranges()); got != n {
			t.Fatalf("%s bus has %d ranges, want %d", bus.Name(), got, n)
		}
	}
}
