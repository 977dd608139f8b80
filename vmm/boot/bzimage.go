package boot

import (
	"bytes"
	"fmt"
)

// Setup header offsets inside a bzImage (and inside the zero page, which
// embeds the same struct setup_header at the same offset). See the kernel's
// Documentation/arch/x86/boot.rst.
const (
	offSetupSects     = 0x1f1
	offBootFlag       = 0x1fe
	offJump           = 0x200
	offHeader         = 0x202
	offVersion        = 0x206
	offTypeOfLoader   = 0x210
	offLoadFlags      = 0x211
	offRamdiskImage   = 0x218
	offRamdiskSize    = 0x21c
	offCmdLinePtr     = 0x228
	offInitrdAddrMax  = 0x22c
	offKernelAlign    = 0x230
	offRelocatable    = 0x234
	offMinAlignment   = 0x235
	offXLoadFlags     = 0x236
	offCmdlineSize    = 0x238
	offHardwareSubarc = 0x23c
	offPayloadOffset  = 0x248
	offPayloadLength  = 0x24c
	offSetupData      = 0x250
	offPrefAddress    = 0x258
	offInitSize       = 0x260
	offHandover       = 0x264
	setupHeaderEnd    = 0x290 // where struct boot_params continues after setup_header

	bootFlagMagic = 0xaa55
	hdrSValue     = 0x53726448 // "HdrS" read as a little-endian uint32
)

// Boot protocol flags and limits.
const (
	LoadedHigh  = 0x01 // loadflags: protected-mode code loaded at 0x100000
	XLFKernel64 = 0x01 // xloadflags: the kernel has the 64-bit entry at 0x200

	MinVersion        = 0x0206 // oldest protocol with cmdline_size; earlier images are 16/32-bit era
	payloadVersion    = 0x0208 // payload_offset/length first appear here
	xloadflagsVersion = 0x020c

	defaultInitrdAddrMax = 0x37ffffff // protocol < 2.03 (or a zero field)
	defaultCmdlineSize   = 255        // protocol < 2.06 (or a zero field), without the NUL
	sectorSize           = 512
)

// SetupHeader holds the fields of a bzImage setup header that a loader of
// the 64-bit entry needs, already checked against the image. Fields an older
// protocol version lacks carry the boot protocol's documented defaults.
type SetupHeader struct {
	SetupSects        uint8  // as stored: 0 means 4
	Version           uint16 // boot protocol version, e.g. 0x020f
	LoadFlags         uint8  // LOADED_HIGH etc., as the kernel built it
	KernelAlignment   uint32 // physical alignment a relocatable kernel needs
	RelocatableKernel bool
	MinAlignment      uint8  // log2 of the minimum alignment (2.10+)
	XLoadFlags        uint16 // XLF_* (2.12+)
	CmdlineSize       uint32 // longest command line without its NUL
	InitrdAddrMax     uint32 // highest address the initrd's last byte may have
	PayloadOffset     uint32 // payload start, relative to the protected-mode code
	PayloadLength     uint32 // compressed payload plus Linux's 4-byte size trailer
	InitSize          uint32 // memory the kernel needs from its load address to run
	PrefAddress       uint64 // preferred load address of a relocatable kernel
	HandoverOffset    uint32 // EFI handover entry, unused here

	// SetupSize is the size of the boot sector plus real-mode setup, where the
	// protected-mode kernel (and its payload) begins in the file.
	SetupSize int
	// Raw is a copy of setup_header as the image holds it, from 0x1f1 to the
	// end the jump at 0x200 announces: the kernel reads its own fields back
	// from the zero page, so Params.Header takes these bytes.
	Raw []byte
}

// ParseSetupHeader reads and checks a bzImage's setup header.
func ParseSetupHeader(img []byte) (*SetupHeader, error) {
	if len(img) < offVersion+2 {
		return nil, fmt.Errorf("bzImage: %d bytes is too short for a setup header", len(img))
	}
	if le.Uint16(img[offBootFlag:]) != bootFlagMagic || !bytes.Equal(img[offHeader:offHeader+4], hdrSMagic) {
		return nil, fmt.Errorf("bzImage: no boot flag 0xAA55 and \"HdrS\" magic")
	}
	h := &SetupHeader{SetupSects: img[offSetupSects], Version: le.Uint16(img[offVersion:])}
	if h.Version < MinVersion {
		return nil, fmt.Errorf("bzImage: boot protocol %#x is older than the oldest supported %#x", h.Version, MinVersion)
	}
	sects := int(h.SetupSects)
	if sects == 0 {
		sects = 4 // the protocol's rule for ancient images
	}
	h.SetupSize = (sects + 1) * sectorSize
	if h.SetupSize > len(img) {
		return nil, fmt.Errorf("bzImage: truncated: setup of %d bytes, file of %d", h.SetupSize, len(img))
	}
	// From here the whole header area (< 0x290 <= SetupSize) is in bounds.
	end := offHeader + int(img[offJump+1])
	if img[offJump] != 0xeb || end < offVersion+2 {
		return nil, fmt.Errorf("bzImage: setup header jump %#x %#x does not skip the header", img[offJump], img[offJump+1])
	}
	end = min(end, setupHeaderEnd)
	h.Raw = bytes.Clone(img[offSetupSects:end])

	h.LoadFlags = img[offLoadFlags]
	h.InitrdAddrMax = le.Uint32(img[offInitrdAddrMax:])
	h.KernelAlignment = le.Uint32(img[offKernelAlign:])
	h.RelocatableKernel = img[offRelocatable] != 0
	h.CmdlineSize = le.Uint32(img[offCmdlineSize:])
	if h.Version >= payloadVersion {
		h.PayloadOffset = le.Uint32(img[offPayloadOffset:])
		h.PayloadLength = le.Uint32(img[offPayloadLength:])
	}
	if h.Version >= 0x020a {
		h.MinAlignment = img[offMinAlignment]
		h.PrefAddress = le.Uint64(img[offPrefAddress:])
		h.InitSize = le.Uint32(img[offInitSize:])
	}
	if h.Version >= 0x020b {
		h.HandoverOffset = le.Uint32(img[offHandover:])
	}
	if h.Version >= xloadflagsVersion {
		h.XLoadFlags = le.Uint16(img[offXLoadFlags:])
	}
	if h.InitrdAddrMax == 0 {
		h.InitrdAddrMax = defaultInitrdAddrMax
	}
	if h.CmdlineSize == 0 {
		h.CmdlineSize = defaultCmdlineSize
	}
	return h, nil
}

// CompressedPayload returns the compressed payload slice of img,
// bounds-checked: a bzImage cut short fails here, whoever decompresses it.
func (h *SetupHeader) CompressedPayload(img []byte) ([]byte, error) {
	if h.Version < payloadVersion {
		return nil, fmt.Errorf("bzImage: boot protocol %#x has no payload fields (needs %#x)", h.Version, payloadVersion)
	}
	if h.PayloadLength == 0 {
		return nil, fmt.Errorf("bzImage: payload_length is 0")
	}
	start := uint64(h.SetupSize) + uint64(h.PayloadOffset)
	end := start + uint64(h.PayloadLength)
	if end > uint64(len(img)) {
		return nil, fmt.Errorf("bzImage: payload %#x..%#x lies beyond the end of the %d-byte file", start, end, len(img))
	}
	return img[start:end], nil
}

// Payload returns a bzImage's compressed payload (a sub-slice of img) and
// the ELF vmlinux it decompresses to, at most limit bytes (see
// DecompressLimit for limit <= 0).
func Payload(img []byte, limit int) (compressed, elf []byte, err error) {
	h, err := ParseSetupHeader(img)
	if err != nil {
		return nil, nil, err
	}
	return h.unpack(img, limit, nil)
}

// UnpackBzImage checks a bzImage and returns the ELF vmlinux inside it,
// decompressed to at most limit bytes into memory from alloc (the Go heap
// if nil), and its setup header. A VMM boots that ELF through the 64-bit
// entry instead of running the real-mode setup and the in-guest
// decompressor, which on an emulating host take minutes.
func UnpackBzImage(img []byte, limit int, alloc OutputAlloc) (elf []byte, hdr *SetupHeader, err error) {
	h, err := ParseSetupHeader(img)
	if err != nil {
		return nil, nil, err
	}
	_, elf, err = h.unpack(img, limit, alloc)
	if err != nil {
		return nil, nil, err
	}
	return elf, h, nil
}

func (h *SetupHeader) unpack(img []byte, limit int, alloc OutputAlloc) (compressed, elf []byte, err error) {
	if h.Version >= xloadflagsVersion && h.XLoadFlags&XLFKernel64 == 0 {
		return nil, nil, fmt.Errorf("bzImage: not a 64-bit kernel (XLF_KERNEL_64 clear in xloadflags %#x)", h.XLoadFlags)
	}
	compressed, err = h.CompressedPayload(img)
	if err != nil {
		return nil, nil, err
	}
	elf, err = decompress(compressed, limit, alloc)
	if err != nil {
		return nil, nil, fmt.Errorf("bzImage payload: %w", err)
	}
	if len(elf) < 4 || !bytes.Equal(elf[:4], elfMagic) {
		return nil, nil, fmt.Errorf("bzImage payload: decompressed data is not an ELF vmlinux")
	}
	return compressed, elf, nil
}

// Apply fills the kernel-dependent fields of p from the header: the
// command-line limit, the initrd ceiling and the header bytes the zero page
// must carry.
func (h *SetupHeader) Apply(p *Params) {
	p.CmdlineMax = int(h.CmdlineSize) + 1
	p.InitrdAddrMax = uint64(h.InitrdAddrMax)
	p.Header = h.Raw
}
