package extproc

import (
	"fmt"
	"testing"
)

func TestDestCacheReusesAndStaysBounded(t *testing.T) {
	var c destCache
	a := c.get("10.0.0.1:8000")
	if c.get("10.0.0.1:8000") != a {
		t.Fatal("second lookup built a new message")
	}
	got := a.GetFields()[NamespaceLB].GetStructValue().GetFields()[KeyDestination].GetStringValue()
	if got != "10.0.0.1:8000" {
		t.Fatalf("metadata holds %q", got)
	}
	for i := 0; i < maxCachedDestinations+10; i++ {
		dest := fmt.Sprintf("10.1.%d.%d:8000", i/256, i%256)
		md := c.get(dest)
		if v := md.GetFields()[NamespaceLB].GetStructValue().GetFields()[KeyDestination].GetStringValue(); v != dest {
			t.Fatalf("entry %d holds %q, want %q", i, v, dest)
		}
		if len(c.m) > maxCachedDestinations {
			t.Fatalf("cache grew to %d entries", len(c.m))
		}
	}
}
