package extproc

import (
	"strings"
	"testing"
	"unsafe"
)

// TestPickHeadersArena: the first four values (the usual pick headers) are copied into
// the arena while they fit, others into their own slices; none has capacity reaching into
// the next, so nothing written to one can overwrite another.
func TestPickHeadersArena(t *testing.T) {
	var p pickHeaders
	p.init()
	want := map[string]string{}
	// 100+76+200 fit in the 384-byte arena, 30 does not, four 1-byte values do; a ninth
	// header has no slot.
	for i, n := range []int{100, 76, 200, 30, 1, 1, 1, 1, 1} {
		key := "h" + string(rune('a'+i))
		val := strings.Repeat(string(rune('A'+i)), n)
		p.set(key, val)
		want[key] = val
	}
	got := setHeaders(&p.mutation)
	if len(got) != len(want) {
		t.Fatalf("got %d headers, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %q, want %q", k, got[k], v)
		}
	}
	inArena := 0
	for _, o := range p.mutation.SetHeaders {
		raw := o.GetHeader().GetRawValue()
		start := uintptr(unsafe.Pointer(&raw[0])) - uintptr(unsafe.Pointer(&p.arena[0]))
		if start >= uintptr(len(p.arena)) {
			continue // its own allocation
		}
		inArena++
		if cap(raw) != len(raw) {
			t.Fatalf("value %q has spare capacity %d into the arena", raw, cap(raw)-len(raw))
		}
	}
	if inArena != 7 {
		t.Fatalf("%d values in the arena, want the 7 that fit", inArena)
	}
	if p.arenaUsed != 100+76+200+4 {
		t.Fatalf("arena used %d bytes, want the values that fit (380)", p.arenaUsed)
	}
}
