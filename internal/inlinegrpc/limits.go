package inlinegrpc

import (
	"time"
)

// Per-connection policies against a peer that sends what costs the server without asking
// for anything (RFC 9113 §10.5): each is a bound a client reaches only by abuse.
const (
	// A header block may hold at most maxHeaderList decoded bytes. The connection ends when
	// a fragment is more than twice what may still be decoded (the rule x/net's Framer
	// keeps since CVE-2023-45288: a CONTINUATION after the list overflowed ends it), when
	// a block spans more than maxBlockFrames frames, or after maxHeaderListResets
	// oversized lists (each one only resets its stream, and costs a megabyte of decoding).
	maxBlockFrames      = 256
	maxHeaderListResets = 8
	// Token buckets: a burst, then a steady rate. Envoy sends a PING per keepalive
	// interval (seconds; gRPC clients' bandwidth probes come after DATA and are not
	// counted) and SETTINGS once. It resets every ext_proc stream after its answers
	// (those resets are not counted) and resets unanswered ones when an HTTP request is
	// cancelled early, at a rate far below the limit.
	pingBurst, pingPerSecond         = 10, 1
	settingsBurst, settingsPerSecond = 100, 10
	resetBurst, resetPerSecond       = 1000, 200
	// recentResets is how many streams reset by this server are remembered: frames on
	// them are ignored, as RFC 9113 §5.1 asks, while frames on other closed streams are
	// errors.
	recentResets = 128
	// drainPingTimeout bounds the wait for the PING that ends a graceful shutdown's first
	// phase.
	drainPingTimeout = time.Second
)

// drainPing is the payload of the PING sent with the first GOAWAY of a graceful shutdown.
var drainPing = [8]byte{'i', 'g', 'w', 'd', 'r', 'a', 'i', 'n'}

// rateLimit is a token bucket: burst frames at once, refilled at perSecond.
type rateLimit struct {
	tokens float64
	last   time.Time
}

func (r *rateLimit) allow(now time.Time, burst, perSecond float64) bool {
	if r.last.IsZero() {
		r.tokens = burst
	} else {
		r.tokens = min(burst, r.tokens+now.Sub(r.last).Seconds()*perSecond)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// The connection's queue of streams that have answer bytes and stream window but wait for
// connection window, in the order they blocked. Intrusive links: joining, leaving (a stream
// that closes leaves at once) and taking the head cost O(1), so a connection WINDOW_UPDATE
// costs in proportion to the streams it unblocks, not to the streams waiting.

func (c *conn) link(st *Stream) {
	if st.linked {
		return
	}
	st.linked, st.next, st.prev = true, nil, c.blockedTail
	if c.blockedTail != nil {
		c.blockedTail.next = st
	} else {
		c.blockedHead = st
	}
	c.blockedTail = st
}

func (c *conn) unlink(st *Stream) {
	if !st.linked {
		return
	}
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		c.blockedHead = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	} else {
		c.blockedTail = st.prev
	}
	st.linked, st.next, st.prev = false, nil, nil
}

// noteReset remembers a stream this server reset.
func (c *conn) noteReset(id uint32) {
	c.resetIDs[c.resetNext%recentResets] = id
	c.resetNext++
}

// wasReset: the server reset stream id recently.
func (c *conn) wasReset(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}
