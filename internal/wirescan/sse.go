package wirescan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Server-sent events (WHATWG): lines of `field: value`, comments starting with ':', events
// dispatched at a blank line. SSEReader reads them from a stream (the load tester's client);
// EventEnd and ForEachData find them in bytes already in hand (the picker, which passes a
// response through chunk by chunk). Both read a line's field with parseField.

// SSEEvent is one server-sent event. Data is only valid until the next call to Next.
type SSEEvent struct {
	// Event is the value of the last `event:` field ("" for the default "message").
	Event []byte
	// Data is the `data:` fields of the event joined with '\n'.
	Data []byte
}

// ErrSSELineTooLong is returned when one SSE line exceeds SSEReader's line limit.
var ErrSSELineTooLong = errors.New("sse: line too long")

// SSEReader splits a text/event-stream body into events (WHATWG server-sent events:
// fields `data`, `event`, comments starting with ':' and blank-line dispatch). Comment-only
// blocks, such as keep-alives, produce no event. It reuses its buffers, so reading a stream
// allocates nothing per event once warm.
type SSEReader struct {
	r       *bufio.Reader
	maxLine int
	line    []byte
	data    []byte
	event   []byte
	hasData bool
}

// NewSSEReader reads events from r. maxLine bounds one line (0 means 1 MiB) so that a
// broken server cannot make the client buffer without limit.
func NewSSEReader(r io.Reader, maxLine int) *SSEReader {
	if maxLine <= 0 {
		maxLine = 1 << 20
	}
	return &SSEReader{r: bufio.NewReaderSize(r, 4096), maxLine: maxLine}
}

// Reset reuses the reader for a new stream.
func (s *SSEReader) Reset(r io.Reader) {
	s.r.Reset(r)
	s.data, s.event, s.hasData = s.data[:0], s.event[:0], false
}

// Next returns the next event, or io.EOF at the end of the stream. An event that is not
// terminated by a blank line before EOF is still returned (servers often omit the last one).
func (s *SSEReader) Next() (SSEEvent, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && s.hasData {
				return s.dispatch(), nil
			}
			return SSEEvent{}, err
		}
		if len(line) == 0 {
			if s.hasData {
				return s.dispatch(), nil
			}
			s.event = s.event[:0]
			continue
		}
		if line[0] == ':' {
			continue // comment / keep-alive
		}
		fs, fe, vs, ve := parseField(line)
		field, value := line[fs:fe], line[vs:ve]
		switch string(field) {
		case "data":
			if s.hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			s.hasData = true
		case "event":
			s.event = append(s.event[:0], value...)
		}
		// id, retry and unknown fields do not matter to a load tester.
	}
}

func (s *SSEReader) dispatch() SSEEvent {
	ev := SSEEvent{Event: s.event, Data: s.data}
	// The slices stay valid until the next call because they are only truncated there.
	s.hasData = false
	s.data = s.data[:0]
	s.event = s.event[:0]
	return ev
}

// readLine returns one line without its terminator (\n, \r\n or \r\n split across reads).
func (s *SSEReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(s.line)+len(chunk) > s.maxLine+2 {
			return nil, fmt.Errorf("%w (over %d bytes)", ErrSSELineTooLong, s.maxLine)
		}
		switch {
		case err == nil:
			if len(s.line) == 0 {
				return trimEOL(chunk), nil
			}
			s.line = append(s.line, chunk...)
			return trimEOL(s.line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			s.line = append(s.line, chunk...)
		case errors.Is(err, io.EOF):
			s.line = append(s.line, chunk...)
			if len(s.line) == 0 {
				return nil, io.EOF
			}
			return trimEOL(s.line), nil
		default:
			return nil, fmt.Errorf("sse: read: %w", err)
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// parseField splits one line (no terminator) into its field name and value, as offsets
// into line: `field: value` loses the one space after the colon; a line without a colon is
// a field with an empty value.
func parseField(line []byte) (fieldStart, fieldEnd, valueStart, valueEnd int) {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return 0, len(line), len(line), len(line)
	}
	vs := i + 1
	if vs < len(line) && line[vs] == ' ' {
		vs++
	}
	return 0, i, vs, len(line)
}

// EventEnd returns the length of the first complete event in b (through the blank line
// that ends it: "\n\n" or "\n\r\n"), or -1 when b holds no complete event yet.
func EventEnd(b []byte) int {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j + 1
		if k < len(b) && b[k] == '\n' {
			return k + 1
		}
		if k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n' {
			return k + 2
		}
		i = k
	}
	return -1
}

// ForEachData calls fn with the offsets in ev of each `data` field's value, in order.
// ev is one event (or any run of lines); a "\r" before a line's "\n" is not data.
func ForEachData(ev []byte, fn func(start, end int)) {
	for i := 0; i < len(ev); {
		lineEnd, next := len(ev), len(ev)
		if j := bytes.IndexByte(ev[i:], '\n'); j >= 0 {
			lineEnd, next = i+j, i+j+1
		}
		line := trimEOL(ev[i:lineEnd])
		if len(line) > 0 && line[0] != ':' {
			fs, fe, vs, ve := parseField(line)
			if string(line[fs:fe]) == "data" {
				fn(i+vs, i+ve)
			}
		}
		i = next
	}
}
