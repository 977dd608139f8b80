package devices

// InputRoom tells the writer of host input that a console device turned
// away (its buffer was full) when the guest has made room, so that input
// waits for the guest instead of being dropped. The device calls
// TurnedAway and MadeRoom under its own lock; the writer waits on Room.
type InputRoom struct {
	waiting bool
	ch      chan struct{}
}

// NewInputRoom returns an InputRoom with nobody waiting.
func NewInputRoom() InputRoom { return InputRoom{ch: make(chan struct{}, 1)} }

// TurnedAway notes that Input took fewer bytes than it was given.
func (r *InputRoom) TurnedAway() { r.waiting = true }

// MadeRoom hands a waiting writer its token. The device calls it once
// enough is free to be worth a wake-up (not per byte read).
func (r *InputRoom) MadeRoom() {
	if !r.waiting {
		return
	}
	r.waiting = false
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// Room returns the channel that gets a token once there is room. A token
// can be stale: Input says what fits.
func (r *InputRoom) Room() <-chan struct{} { return r.ch }
