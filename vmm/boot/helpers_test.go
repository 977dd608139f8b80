package boot

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

// The shared guest kernel, found as the other packages' tests find it:
// ../shared/guest beside the repository.
const (
	realBzImage = "../../../shared/guest/bzImage"
	realVmlinux = "../../../shared/guest/vmlinux"
)

// initrdOf wraps b as Params.Initrd.
func initrdOf(b []byte) *io.SectionReader {
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))
}

// initrdSize is r's size, 0 for none.
func initrdSize(r *io.SectionReader) uint64 {
	if r == nil {
		return 0
	}
	return uint64(r.Size())
}

// readReal returns a real guest file or skips the test.
func readReal(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("real kernel image not available (%v): skipping", err)
	}
	return b
}

type testSeg struct {
	paddr, vaddr uint64
	data         []byte
	memsz        uint64 // 0: len(data)
}

// makeELF builds a minimal x86-64 ELF executable with one PT_LOAD per seg.
func makeELF(entry uint64, segs ...testSeg) []byte {
	phoff := uint64(elfHeaderSize)
	off := phoff + uint64(len(segs))*elfPhdrSize
	b := make([]byte, off)
	copy(b, elfMagic)
	b[4], b[5], b[6] = elfClass64, elfData2LSB, 1
	binary.LittleEndian.PutUint16(b[16:], elfTypeExec)
	binary.LittleEndian.PutUint16(b[18:], elfMachineX86)
	binary.LittleEndian.PutUint32(b[20:], 1)
	binary.LittleEndian.PutUint64(b[24:], entry)
	binary.LittleEndian.PutUint64(b[32:], phoff)
	binary.LittleEndian.PutUint16(b[52:], elfHeaderSize)
	binary.LittleEndian.PutUint16(b[54:], elfPhdrSize)
	binary.LittleEndian.PutUint16(b[56:], uint16(len(segs)))
	for i, s := range segs {
		ph := b[phoff+uint64(i)*elfPhdrSize:]
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		binary.LittleEndian.PutUint32(ph, elfPTLoad)
		binary.LittleEndian.PutUint32(ph[4:], 7)
		binary.LittleEndian.PutUint64(ph[8:], uint64(len(b)))
		binary.LittleEndian.PutUint64(ph[16:], s.vaddr)
		binary.LittleEndian.PutUint64(ph[24:], s.paddr)
		binary.LittleEndian.PutUint64(ph[32:], uint64(len(s.data)))
		binary.LittleEndian.PutUint64(ph[40:], memsz)
		b = append(b, s.data...)
	}
	return b
}

// tinyKernel is a small ELF shaped like vmlinux: linked at
// __START_KERNEL_map, loaded at 2 MiB, with a bss tail.
func tinyKernel() []byte {
	return makeELF(kernelVirtBase+0x200010,
		testSeg{paddr: 0x200000, vaddr: kernelVirtBase + 0x200000, data: codeLike(4096, 1), memsz: 8192})
}

// codeLike returns n bytes that look like x86 code to a compressor and to
// the BCJ filter: runs of repeats and CALL/JMP rel32 instructions.
func codeLike(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, 0, n+8)
	for len(b) < n {
		switch r.IntN(4) {
		case 0: // call rel32 to a nearby target
			b = append(b, 0xe8)
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(r.IntN(1<<16)-1<<15)))
		case 1:
			b = append(b, 0xe9, byte(r.IntN(256)), byte(r.IntN(256)), 0xff, 0xff)
		case 2:
			b = append(b, bytes.Repeat([]byte{0x90}, r.IntN(8))...)
		default:
			b = append(b, byte(r.IntN(256)), 0x89, 0xe5, 0x48)
		}
	}
	return b[:n]
}

// withTrailer appends Linux's 4-byte uncompressed-size trailer.
func withTrailer(compressed []byte, rawLen int) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(compressed), uint32(rawLen))
}

// makeBzImage wraps a payload (trailer included) in a minimal bzImage:
// boot sector plus one setup sector, then the payload at offset 0x40 of the
// protected-mode part, as payload_offset says.
func makeBzImage(payload []byte) []byte {
	const setupSects, pmOff = 1, 0x40
	setup := (setupSects + 1) * sectorSize
	b := make([]byte, setup+pmOff, setup+pmOff+len(payload))
	b[offSetupSects] = setupSects
	binary.LittleEndian.PutUint16(b[offBootFlag:], bootFlagMagic)
	b[offJump], b[offJump+1] = 0xeb, 0x6a
	copy(b[offHeader:], hdrSMagic)
	binary.LittleEndian.PutUint16(b[offVersion:], 0x020f)
	b[offLoadFlags] = LoadedHigh
	binary.LittleEndian.PutUint32(b[offInitrdAddrMax:], 0x7fffffff)
	binary.LittleEndian.PutUint32(b[offKernelAlign:], 0x200000)
	b[offMinAlignment] = 21
	binary.LittleEndian.PutUint16(b[offXLoadFlags:], XLFKernel64)
	binary.LittleEndian.PutUint32(b[offCmdlineSize:], 2047)
	binary.LittleEndian.PutUint32(b[offPayloadOffset:], pmOff)
	binary.LittleEndian.PutUint32(b[offPayloadLength:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(b[offPrefAddress:], 0x1000000)
	binary.LittleEndian.PutUint32(b[offInitSize:], 0x100000)
	return append(b, payload...)
}
