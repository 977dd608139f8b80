package boot

import (
	"os"
	"testing"
)

// debianVmlinuz is Debian's stock kernel, fetched by `make -C guests debian`
// (the default kernel on hosts that are not PVM hosts).
const debianVmlinuz = "../../guests/out/debian/vmlinuz"

// TestDebianKernelUnpacks checks that the loader takes a distribution
// kernel, not only the shared test kernel: Debian's vmlinuz (an
// xz-compressed, signed bzImage) must unpack and load into 512 MiB. It cannot
// be boot-tested on a PVM host, where a stock kernel runs only emulated.
func TestDebianKernelUnpacks(t *testing.T) {
	img, err := os.ReadFile(debianVmlinuz)
	if err != nil {
		t.Skipf("Debian kernel not built (%v): run make -C guests debian", err)
	}
	if f, err := DetectKernel(img); f != BzImage || err != nil {
		t.Fatalf("DetectKernel = %v, %v; want bzImage", f, err)
	}
	const memSize = 512 << 20
	elf, h, err := UnpackBzImage(img, memSize, nil)
	if err != nil {
		t.Fatalf("UnpackBzImage: %v", err)
	}
	t.Logf("setup header: version %#x, payload %d bytes, init_size %#x; ELF %d bytes",
		h.Version, h.PayloadLength, h.InitSize, len(elf))
	k, err := LoadELF(make([]byte, memSize), elf)
	if err != nil {
		t.Fatalf("LoadELF: %v", err)
	}
	t.Logf("kernel: entry %#x, loaded %#x..%#x", k.Entry, k.Start, k.End)
	if k.Entry < k.Start || k.Entry >= k.End {
		t.Errorf("entry %#x outside the loaded range %#x..%#x", k.Entry, k.Start, k.End)
	}
}
