package extproc

import (
	"testing"
	"time"
)

// TestStreamFirstByteHeader: a streaming pick carries Envoy's per-try timeout header (the
// default 10 s, or the option), a non-streaming one does not, and a negative option turns
// it off.
func TestStreamFirstByteHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    time.Duration
		body   string
		want   string
		header bool
	}{
		{"streaming, default", 0, `{"model":"base","prompt":"x","stream":true}`, "10000", true},
		{"streaming, option", 1500 * time.Millisecond, `{"model":"base","prompt":"x","stream":true}`, "1500", true},
		{"not streaming", 0, `{"model":"base","prompt":"x","stream":false}`, "", false},
		{"no stream member", 0, `{"model":"base","prompt":"x"}`, "", false},
		{"streaming, off", -1, `{"model":"base","prompt":"x","stream":true}`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{StreamFirstByteTimeout: tc.opt})
			st := h.stream("")
			send(t, st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/completions"), reqBody([]byte(tc.body), true))
			r := recv(t, st)
			h.checkDestination(r, r.GetRequestHeaders().GetResponse())
			got, ok := setHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation())[HeaderPerTryTimeout]
			if ok != tc.header || got != tc.want {
				t.Fatalf("%s = %q (set %v), want %q (set %v)", HeaderPerTryTimeout, got, ok, tc.want, tc.header)
			}
			st.CloseSend()
		})
	}
	if _, err := streamPerTryValue(time.Microsecond); err == nil {
		t.Error("a sub-millisecond timeout was accepted")
	}
}
