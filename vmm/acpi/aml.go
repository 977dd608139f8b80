package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A small AML encoder (ACPI 6.5 §20, "ACPI Machine Language
// Specification"): just the terms the DSDT here needs. Each function
// returns the encoded bytes of one term. Sizes are bounded by Config
// validation (a few KiB at most), far below the 2^28-byte PkgLength limit.

// AML opcodes and prefixes.
const (
	amlZeroOp       = 0x00
	amlOneOp        = 0x01
	amlNameOp       = 0x08
	amlBytePrefix   = 0x0a
	amlWordPrefix   = 0x0b
	amlDWordPrefix  = 0x0c
	amlStringPrefix = 0x0d
	amlQWordPrefix  = 0x0e
	amlScopeOp      = 0x10
	amlMethodOp     = 0x14
	amlBufferOp     = 0x11
	amlPackageOp    = 0x12
	amlExtOpPrefix  = 0x5b
	amlDeviceOp     = 0x82 // after amlExtOpPrefix
	amlNotifyOp     = 0x86
	amlRootChar     = '\\'
	amlDualNamePfx  = 0x2e
	amlMultiNamePfx = 0x2f
	amlNullName     = 0x00
)

// amlPkgLength encodes the PkgLength of a term whose body (after the
// PkgLength itself) is n bytes: the encoded value counts its own bytes.
func amlPkgLength(n int) []byte {
	// One byte holds up to 63; k extra bytes hold 4+8k bits.
	if n+1 <= 0x3f {
		return []byte{byte(n + 1)}
	}
	for extra := 1; extra <= 3; extra++ {
		total := n + 1 + extra
		if total < 1<<(4+8*extra) {
			b := make([]byte, 1+extra)
			b[0] = byte(extra<<6) | byte(total&0x0f)
			for i := 1; i <= extra; i++ {
				b[i] = byte(total >> (4 + 8*(i-1)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("acpi: AML package of %d bytes exceeds the PkgLength limit", n))
}

// amlNameString encodes a name path such as `\_S5_`, `_SB_.COM1` or
// `_HID`. Segments shorter than four characters are padded with '_', as
// iasl does.
func amlNameString(path string) []byte {
	var out []byte
	if strings.HasPrefix(path, `\`) {
		out = append(out, amlRootChar)
		path = path[1:]
	}
	if path == "" {
		return append(out, amlNullName)
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		out = append(out, amlDualNamePfx)
	default:
		out = append(out, amlMultiNamePfx, byte(len(segs)))
	}
	for _, s := range segs {
		out = append(out, amlNameSeg(s)...)
	}
	return out
}

func amlNameSeg(s string) []byte {
	if len(s) == 0 || len(s) > 4 {
		panic(fmt.Sprintf("acpi: bad AML name segment %q", s))
	}
	for i, c := range []byte(s) {
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			panic(fmt.Sprintf("acpi: bad AML name segment %q", s))
		}
	}
	return []byte(s + strings.Repeat("_", 4-len(s)))
}

// amlInteger encodes v in the shortest integer form.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// amlDWord encodes v as a DWordConst even when it would fit a shorter
// form, as iasl does for EISAID and _PRT addresses.
func amlDWord(v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, v)
}

func amlString(s string) []byte {
	out := append([]byte{amlStringPrefix}, s...)
	return append(out, 0)
}

// amlEISAID compresses a PNP ID such as "PNP0501" the way ASL's EISAID()
// does: three 5-bit letters, then four hex digits, as a little-endian
// DWORD whose bytes read 41 D0 05 01 for PNP0501.
func amlEISAID(id string) uint32 {
	if len(id) != 7 {
		panic(fmt.Sprintf("acpi: bad EISA ID %q", id))
	}
	c := func(i int) uint32 { return uint32(id[i]-'@') & 0x1f }
	var hex uint32
	for _, d := range id[3:] {
		var n uint32
		switch {
		case d >= '0' && d <= '9':
			n = uint32(d - '0')
		case d >= 'A' && d <= 'F':
			n = uint32(d-'A') + 10
		default:
			panic(fmt.Sprintf("acpi: bad EISA ID %q", id))
		}
		hex = hex<<4 | n
	}
	b := [4]byte{
		byte(c(0)<<2 | c(1)>>3),
		byte(c(1)<<5 | c(2)),
		byte(hex >> 8),
		byte(hex),
	}
	return binary.LittleEndian.Uint32(b[:])
}

func amlConcat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// amlName is Name(path, obj).
func amlName(path string, obj []byte) []byte {
	return amlConcat([]byte{amlNameOp}, amlNameString(path), obj)
}

// amlScope is Scope(path) { body }.
func amlScope(path string, body ...[]byte) []byte {
	inner := amlConcat(amlNameString(path), amlConcat(body...))
	return amlConcat([]byte{amlScopeOp}, amlPkgLength(len(inner)), inner)
}

// amlDevice is Device(path) { body }.
func amlDevice(path string, body ...[]byte) []byte {
	inner := amlConcat(amlNameString(path), amlConcat(body...))
	return amlConcat([]byte{amlExtOpPrefix, amlDeviceOp}, amlPkgLength(len(inner)), inner)
}

// amlMethod is Method(path, args, NotSerialized) { body }.
func amlMethod(path string, args int, body ...[]byte) []byte {
	if args < 0 || args > 7 {
		panic(fmt.Sprintf("acpi: AML method with %d arguments", args))
	}
	inner := amlConcat(amlNameString(path), []byte{byte(args)}, amlConcat(body...))
	return amlConcat([]byte{amlMethodOp}, amlPkgLength(len(inner)), inner)
}

// amlNotify is Notify(path, value).
func amlNotify(path string, value uint64) []byte {
	return amlConcat([]byte{amlNotifyOp}, amlNameString(path), amlInteger(value))
}

// amlPackage is Package() { elems }, at most 255 elements.
func amlPackage(elems ...[]byte) []byte {
	if len(elems) > 0xff {
		panic(fmt.Sprintf("acpi: AML package of %d elements", len(elems)))
	}
	inner := amlConcat([]byte{byte(len(elems))}, amlConcat(elems...))
	return amlConcat([]byte{amlPackageOp}, amlPkgLength(len(inner)), inner)
}

// amlBuffer is Buffer() { data }.
func amlBuffer(data []byte) []byte {
	inner := amlConcat(amlInteger(uint64(len(data))), data)
	return amlConcat([]byte{amlBufferOp}, amlPkgLength(len(inner)), inner)
}

// amlResourceTemplate is ResourceTemplate() { descs }: a buffer of
// resource descriptors closed by an End Tag whose checksum 0 means
// "treat as valid".
func amlResourceTemplate(descs ...[]byte) []byte {
	return amlBuffer(amlConcat(amlConcat(descs...), []byte{0x79, 0x00}))
}

// Resource descriptors (ACPI 6.5 §6.4).

// resIO is IO(Decode16, min, max, align, length): a small I/O port
// descriptor.
func resIO(min, max uint16, align, length uint8) []byte {
	b := []byte{0x47, 0x01} // tag 0x08, 7 bytes; 16-bit decode
	b = binary.LittleEndian.AppendUint16(b, min)
	b = binary.LittleEndian.AppendUint16(b, max)
	return append(b, align, length)
}

// resInterrupt is Interrupt(ResourceConsumer, Edge|Level,
// ActiveHigh|ActiveLow, Exclusive) { gsi }: an extended interrupt
// descriptor, which names a GSI directly (IRQNoFlags would name an ISA
// IRQ, which HW-reduced Linux does not map).
func resInterrupt(gsi uint32, level, activeLow bool) []byte {
	flags := byte(0x01) // consumer
	if !level {
		flags |= 0x02
	}
	if activeLow {
		flags |= 0x04
	}
	b := []byte{0x89, 6, 0, flags, 1} // length 6: flags, count, one DWORD
	return binary.LittleEndian.AppendUint32(b, gsi)
}

// Address space descriptor resource types and flags.
const (
	resTypeMemory = 0
	resTypeIO     = 1
	resTypeBus    = 2
	// General flags: producer, positive decode, min and max fixed.
	resGenProducerFixed = 0x0c
	resIOEntireRange    = 0x03 // type-specific: ISA and non-ISA ranges
	resMemReadWrite     = 0x01 // type-specific: read/write, non-cacheable
)

// resWordSpace is a Word Address Space Descriptor (WordIO, WordBusNumber).
func resWordSpace(typ, typeFlags byte, min, max uint16) []byte {
	b := []byte{0x88, 13, 0, typ, resGenProducerFixed, typeFlags}
	for _, v := range []uint16{0, min, max, 0, max - min + 1} { // granularity, min, max, translation, length
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// resDWordMemory is DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, NonCacheable, ReadWrite, 0, min, max, 0, len).
func resDWordMemory(min, max uint32) []byte {
	b := []byte{0x87, 23, 0, resTypeMemory, resGenProducerFixed, resMemReadWrite}
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// resQWordMemory is the 64-bit form of resDWordMemory.
func resQWordMemory(min, max uint64) []byte {
	b := []byte{0x8a, 43, 0, resTypeMemory, resGenProducerFixed, resMemReadWrite}
	for _, v := range []uint64{0, min, max, 0, max - min + 1} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
