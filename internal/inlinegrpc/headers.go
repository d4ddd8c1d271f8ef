package inlinegrpc

import (
	"errors"
	"fmt"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The connection decodes header blocks itself rather than through the Framer's
// ReadMetaHeaders, which builds a fresh frame and field slice per block: one stream per
// request made those a quarter of the transport's allocations. Here the decoded fields go
// to a slice the connection reuses, and a stream copies its metadata into an array it
// carries (see Stream.fieldBuf).

// headerBlock is the HEADERS (+ CONTINUATION) block being decoded.
type headerBlock struct {
	streamID  uint32
	endStream bool
	fields    []hpack.HeaderField // reused from block to block
	size      uint32              // as SETTINGS_MAX_HEADER_LIST_SIZE counts it
	truncated bool                // over maxHeaderList: the fields are incomplete
	frames    int                 // CONTINUATION frames so far
	// selfDependent: the HEADERS frame made the stream depend on itself (RFC 7540 §5.3.1).
	selfDependent bool
}

// emitField is the HPACK decoder's callback.
func (c *conn) emitField(f hpack.HeaderField) {
	hb := &c.hb
	if hb.truncated {
		return
	}
	hb.size += f.Size()
	if hb.size > maxHeaderList {
		hb.truncated = true
		return
	}
	hb.fields = append(hb.fields, f)
}

// startHeaderBlock begins a block at a HEADERS frame.
func (c *conn) startHeaderBlock(f *http2.HeadersFrame) error {
	c.hb = headerBlock{streamID: f.StreamID, endStream: f.StreamEnded(), fields: c.hb.fields[:0],
		selfDependent: f.HasPriority() && f.Priority.StreamDep == f.StreamID}
	return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

// headerFragment decodes one fragment; the Framer has checked that CONTINUATION frames
// follow their HEADERS on the same stream.
func (c *conn) headerFragment(frag []byte, ended bool) error {
	// No more decoding than the list may still take, with room for HPACK's overhead: a
	// fragment larger than twice that (any fragment once the list overflowed) ends the
	// connection rather than being decoded and thrown away.
	remaining := 0
	if !c.hb.truncated {
		remaining = maxHeaderList - int(c.hb.size)
	}
	if len(frag) > 2*remaining {
		return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("header list over %d bytes and still growing", maxHeaderList)}
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connError{code: http2.ErrCodeCompression, msg: "HPACK: " + err.Error()}
	}
	if !ended {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return connError{code: http2.ErrCodeCompression, msg: "HPACK: " + err.Error()}
	}
	return c.handleHeaders()
}

// requestHeaders is a validated header block.
type requestHeaders struct {
	method, path string
	hasPseudo    bool
	complete     bool                // :method, :scheme and a non-empty :path, as a request needs (RFC 9113 §8.3.1)
	regular      []hpack.HeaderField // aliases the block's fields
}

var errMalformedHeaders = errors.New("malformed header block")

// parseHeaderBlock checks the block as HTTP/2 requires of a request (RFC 9113 §8.2-8.3):
// pseudo-headers first, once each and known; field names lower case tokens; values free
// of control characters; no connection-specific fields.
func parseHeaderBlock(fields []hpack.HeaderField) (requestHeaders, error) {
	var r requestHeaders
	var seen [4]bool // :method :path :scheme :authority
	regular := 0
	for i, f := range fields {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			if i != regular {
				return r, fmt.Errorf("%w: pseudo-header %s after a regular field", errMalformedHeaders, f.Name)
			}
			regular++
			k := -1
			switch f.Name {
			case ":method":
				k, r.method = 0, f.Value
			case ":path":
				k, r.path = 1, f.Value
			case ":scheme":
				k = 2
			case ":authority":
				k = 3
			}
			if k < 0 || seen[k] { //nolint:gosec // k is -1 (checked first) or 0..3, seen has 4
				return r, fmt.Errorf("%w: unknown or repeated pseudo-header %s", errMalformedHeaders, f.Name)
			}
			seen[k], r.hasPseudo = true, true //nolint:gosec // k in 0..3 here
			continue
		}
		if !validFieldName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) {
			return r, fmt.Errorf("%w: invalid field %q", errMalformedHeaders, f.Name)
		}
		switch f.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return r, fmt.Errorf("%w: connection-specific field %s", errMalformedHeaders, f.Name)
		case "te":
			if f.Value != "trailers" {
				return r, fmt.Errorf("%w: te: %q", errMalformedHeaders, f.Value)
			}
		}
	}
	r.regular = fields[regular:]
	r.complete = seen[0] && seen[1] && seen[2] && r.path != ""
	return r, nil
}

// validFieldName: an HTTP token in lower case, as HTTP/2 field names must be.
func validFieldName(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return httpguts.ValidHeaderFieldName(name)
}
