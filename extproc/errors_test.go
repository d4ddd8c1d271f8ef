package extproc

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateForEcho(t *testing.T) {
	short := strings.Repeat("a", maxEchoBytes)
	if got := truncateForEcho(short); got != short {
		t.Fatalf("a name at the limit was cut: %d bytes", len(got))
	}
	long := strings.Repeat("a", 100<<10)
	if got := truncateForEcho(long); got != strings.Repeat("a", maxEchoBytes)+"…" {
		t.Fatalf("100 KB name cut to %d bytes", len(got))
	}
	// A multi-byte rune across the limit is dropped whole, never split.
	mixed := strings.Repeat("a", maxEchoBytes-1) + "é" + strings.Repeat("b", 10)
	got := truncateForEcho(mixed)
	if !utf8.ValidString(got) || got != strings.Repeat("a", maxEchoBytes-1)+"…" {
		t.Fatalf("cut %q", got)
	}
}
