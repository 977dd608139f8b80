package devices

import (
	"bytes"
	"slices"
	"testing"
)

func TestDebugPort(t *testing.T) {
	tests := []struct {
		name string
		off  uint64
		data []byte
		want []uint32
	}{
		{"byte", 0, []byte{0x31}, []uint32{0x31}},
		{"word", 0, []byte{0x34, 0x12}, []uint32{0x1234}},
		{"dword", 0, []byte{0x78, 0x56, 0x34, 0x12}, []uint32{0x12345678}},
		{"odd size", 0, []byte{1, 2, 3}, nil},
		{"quad", 0, make([]byte, 8), nil},
		{"empty", 0, nil, nil},
		{"offset", 1, []byte{1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint32
			d := NewDebugPort(func(v uint32) { got = append(got, v) })
			d.Write(tt.off, tt.data)
			if !slices.Equal(got, tt.want) {
				t.Errorf("reported %#x, want %#x", got, tt.want)
			}
		})
	}
	NewDebugPort(nil).Write(0, []byte{1}) // must not panic
	d := NewDebugPort(nil)
	for _, size := range []int{1, 2, 4} {
		data := bytes.Repeat([]byte{0xee}, size)
		d.Read(0, data)
		if !bytes.Equal(data, make([]byte, size)) {
			t.Errorf("read size %d = % x, want zeros", size, data)
		}
	}
}

func TestDiscard(t *testing.T) {
	for _, v := range []byte{0x00, 0xff} {
		d := NewDiscard(v)
		d.Write(0, []byte{1, 2, 3, 4})
		data := make([]byte, 4)
		d.Read(3, data)
		if !bytes.Equal(data, bytes.Repeat([]byte{v}, 4)) {
			t.Errorf("NewDiscard(%#x) read % x", v, data)
		}
	}
}
