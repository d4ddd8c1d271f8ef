package extproc

import (
	"fmt"
	"strconv"
	"time"

	"github.com/infergw/infergw/contract"
)

// HeaderPerTryTimeout is Envoy's per-request per-try timeout header. The router reads it
// after the picker's header mutation; like a route's per_try_timeout it stops counting once
// the response to the client has started, so it bounds the wait for the first byte only.
const HeaderPerTryTimeout = contract.HeaderPerTryTimeout

// DefaultStreamFirstByteTimeout bounds each try of a streaming request ("stream": true)
// until its first response byte. A model server answers a streaming request's headers at
// once, even while the request waits in its queue, so a try with no byte after this long
// is a hung server: Envoy resets it and retries on the next endpoint of the pick.
// Non-streaming requests get nothing: their first byte comes when generation ends.
const DefaultStreamFirstByteTimeout = 10 * time.Second

// streamPerTryValue is the header value for Options.StreamFirstByteTimeout: "" when off.
func streamPerTryValue(d time.Duration) (string, error) {
	switch {
	case d < 0:
		return "", nil
	case d > 0 && d < time.Millisecond:
		return "", fmt.Errorf("extproc: stream first-byte timeout %s is under a millisecond", d)
	}
	if d == 0 {
		d = DefaultStreamFirstByteTimeout
	}
	return strconv.FormatInt(d.Milliseconds(), 10), nil
}
