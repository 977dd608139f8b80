// Package tiny hand-assembles the small guests that exercise exit paths:
// loops of port I/O or MMIO, a CPUID probe, and a HLT at the end. Each is a
// few bytes of machine code, encoded here with the assembly beside it, so
// tests need no assembler and no guest kernel.
package tiny

import "encoding/binary"

// LoadAddr is where the VMM copies a tiny guest and enters it.
const LoadAddr = 0x1000

// PortLoop16 is a real-mode guest doing n one-byte OUTs to port, then HLT.
func PortLoop16(port uint8, n uint32) []byte {
	code := []byte{0x66, 0xb9} // mov ecx, n
	code = binary.LittleEndian.AppendUint32(code, n)
	return append(code,
		0xe6, port, // 1: out port, al
		0x66, 0x49, //    dec ecx
		0x75, 0xfa, //    jnz 1b
		0xf4, //    hlt
	)
}

// PortLoop64 is the same loop for a 64-bit guest.
func PortLoop64(port uint8, n uint32) []byte {
	code := []byte{0xb9} // mov ecx, n
	code = binary.LittleEndian.AppendUint32(code, n)
	return append(code,
		0xe6, port, // 1: out port, al
		0xff, 0xc9, //    dec ecx
		0x75, 0xfa, //    jnz 1b
		0xf4, //    hlt
	)
}

// MMIOLoop64 is a 64-bit guest doing n one-byte stores to addr (below
// 2 GiB, so it fits a sign-extended 32-bit displacement), then HLT.
func MMIOLoop64(addr uint32, n uint32) []byte {
	code := []byte{0xb9} // mov ecx, n
	code = binary.LittleEndian.AppendUint32(code, n)
	code = append(code, 0x88, 0x04, 0x25) // 1: mov [addr], al
	code = binary.LittleEndian.AppendUint32(code, addr)
	return append(code,
		0xff, 0xc9, //    dec ecx
		0x75, 0xf5, //    jnz 1b   (7+2+2 = 11 bytes back)
		0xf4, //    hlt
	)
}

// MMIOLoad16 is a real-mode guest that reads one byte at 16-bit address
// addr (DS = 0), writes it to port, then HLTs: it shows what an MMIO read
// of that address returned.
func MMIOLoad16(addr uint16, port uint8) []byte {
	code := []byte{0xa0} // mov al, [addr]
	code = binary.LittleEndian.AppendUint16(code, addr)
	return append(code,
		0xe6, port, // out port, al
		0xf4, // hlt
	)
}

// CPUID64 is a 64-bit guest that runs CPUID leaf and writes EAX, EBX, ECX
// and EDX as 32-bit OUTs to port, then HLTs.
func CPUID64(leaf uint32, port uint8) []byte {
	code := []byte{0xb8} // mov eax, leaf
	code = binary.LittleEndian.AppendUint32(code, leaf)
	return append(code,
		0x31, 0xc9, // xor ecx, ecx
		0x0f, 0xa2, // cpuid
		0xe7, port, // out port, eax
		0x89, 0xd8, // mov eax, ebx
		0xe7, port, // out port, eax
		0x89, 0xc8, // mov eax, ecx
		0xe7, port, // out port, eax
		0x89, 0xd0, // mov eax, edx
		0xe7, port, // out port, eax
		0xf4, // hlt
	)
}

// Spin16 is a real-mode guest that loops for ever without an exit; its
// RIP is always in [LoadAddr, LoadAddr+len(Spin16())).
func Spin16() []byte {
	return []byte{
		0x40,       // 1: inc ax
		0xeb, 0xfd, //    jmp 1b
	}
}

// HaltLoop16 is a real-mode guest that halts with interrupts off, for
// ever: with an in-kernel irqchip it waits in KVM (KVM_MP_STATE_HALTED)
// at RIP HaltedAt; without one each HLT exits to the VMM.
func HaltLoop16() []byte {
	return []byte{
		0xfa,       //    cli
		0xf4,       // 1: hlt
		0xeb, 0xfd, //    jmp 1b
	}
}

// HaltedAt is the RIP of a vCPU halted in HaltLoop16: just past its HLT.
const HaltedAt = LoadAddr + 2

// WaitPort16 is a real-mode guest that reads a byte from port until it is
// not zero, then spins for ever at SpinAt without exiting. Its RIP tells
// which of the two loops it is in: below SpinAt, or at it.
func WaitPort16(port uint8) []byte {
	return []byte{
		0xe4, port, // 1: in al, port
		0x84, 0xc0, //    test al, al
		0x74, 0xfa, //    jz 1b
		0xeb, 0xfe, // 2: jmp 2b   (SpinAt)
	}
}

// SpinAt is the RIP of WaitPort16's final loop.
const SpinAt = LoadAddr + 6

// IOSites16 is a real-mode guest whose port I/O comes from three known
// instructions: outs one-byte OUTs to port at OutImmAt, then pairs rounds
// of an IN from port at InAt and an OUT to it through DX at OutDXAt,
// then HLT. Exit attribution tests count its exits per RIP.
func IOSites16(port uint8, outs, pairs uint32) []byte {
	code := []byte{0x66, 0xb9} // mov ecx, outs
	code = binary.LittleEndian.AppendUint32(code, outs)
	code = append(code,
		0xe6, port, // 1: out port, al     (OutImmAt)
		0x66, 0x49, //    dec ecx
		0x75, 0xfa, //    jnz 1b
		0x66, 0xb9, //    mov ecx, pairs
	)
	code = binary.LittleEndian.AppendUint32(code, pairs)
	return append(code,
		0xba, port, 0x00, //    mov dx, port
		0xe4, port, // 2: in al, port       (InAt)
		0xee,       //    out dx, al        (OutDXAt)
		0x66, 0x49, //    dec ecx
		0x75, 0xf9, //    jnz 2b
		0xf4, //    hlt
	)
}

// The addresses of IOSites16's I/O instructions and their lengths.
const (
	OutImmAt  = LoadAddr + 6  // out port, al: 2 bytes
	InAt      = LoadAddr + 21 // in al, port: 2 bytes
	OutDXAt   = LoadAddr + 23 // out dx, al: 1 byte
	OutImmLen = 2
	OutDXLen  = 1
)
