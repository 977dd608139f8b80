package virtio

// Device IDs (virtio 1.2, section 5).
const (
	IDNet     = 1
	IDBlock   = 2
	IDConsole = 3
	IDRNG     = 4
)

// Feature bits every virtio 1.x device shares (section 6).
const (
	FeatureVersion1       = 1 << 32
	FeatureRingEventIdx   = 1 << 29
	FeatureRingIndirect   = 1 << 28
	FeatureAccessPlatform = 1 << 33
)

// Memory is guest RAM as a device sees it: every access is checked.
// vmm.Memory implements it.
type Memory interface {
	// Slice returns n bytes at guest physical address gpa, or an error
	// when any of them lies outside RAM.
	Slice(gpa, n uint64) ([]byte, error)
}

// Interrupt raises a device's used-buffer or configuration-change
// interrupt; the transport decides how (MSI-X through an irqfd, or INTx).
type Interrupt interface {
	// Queue signals that queue has new used buffers.
	Queue(queue int) error
	// Config signals a configuration change.
	Config() error
}

// Device is a virtio device model, independent of its transport.
type Device interface {
	// Name is a short label for logs and exit statistics ("virtio-blk").
	Name() string
	// Type is the virtio device ID.
	Type() uint16
	// Features are the feature bits offered: the device-specific ones
	// plus the ring features its queues support (RingFeatures for
	// Queue); the transport adds FeatureVersion1.
	Features() uint64
	// QueueSizes gives the maximum size of each queue, in queue order.
	QueueSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific
	// configuration space; out-of-range offsets read as zero and are
	// ignored on write.
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device once the driver set DRIVER_OK, with the
	// negotiated features and the queues the driver enabled (nil for a
	// queue it left disabled).
	Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error
	// Notify processes queue after the driver made buffers available. It
	// may run on a vCPU thread or a device goroutine, one call per queue
	// at a time; a malformed queue is returned as an error and the
	// transport marks the device broken (DEVICE_NEEDS_RESET).
	Notify(queue int) error
	// Reset returns the device to its initial state (driver wrote 0 to
	// device status); it must stop using the queues.
	Reset()
}
