package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// KernelFormat is the container format of a kernel image file.
type KernelFormat int

const (
	UnknownKernel KernelFormat = iota
	ELF                        // uncompressed vmlinux: load its PT_LOAD segments
	BzImage                    // real-mode setup + compressed payload holding an ELF vmlinux
)

func (f KernelFormat) String() string {
	switch f {
	case ELF:
		return "ELF"
	case BzImage:
		return "bzImage"
	}
	return "unknown"
}

var (
	elfMagic    = []byte("\x7fELF")
	hdrSMagic   = []byte("HdrS")
	le          = binary.LittleEndian
	errNotLinux = errors.New("not a Linux kernel (no ELF or bzImage header)")
)

// DetectKernel tells a bzImage from an ELF vmlinux by their magic numbers.
// The bzImage test comes first: a bzImage never starts with an ELF magic, and
// its 0xAA55 + "HdrS" pair is what boot loaders trust.
func DetectKernel(img []byte) (KernelFormat, error) {
	if len(img) >= 0x206 && le.Uint16(img[0x1fe:]) == bootFlagMagic && bytes.Equal(img[0x202:0x206], hdrSMagic) {
		return BzImage, nil
	}
	if len(img) >= 4 && bytes.Equal(img[:4], elfMagic) {
		return ELF, nil
	}
	return UnknownKernel, errNotLinux
}
