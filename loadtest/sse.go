package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

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
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
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
