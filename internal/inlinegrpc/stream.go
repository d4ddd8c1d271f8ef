package inlinegrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// ErrStreamDone is returned by sends on a stream that has finished or ended.
var ErrStreamDone = errors.New("inlinegrpc: stream is done")

// ErrSendQueueFull: a send would pass Options.MaxStreamSendQueueBytes or
// MaxConnSendQueueBytes; the stream is reset.
var ErrSendQueueFull = errors.New("inlinegrpc: send queue full")

// Stream is one gRPC call. Its methods without the Async suffix may only be called from the
// stream's handler callbacks (they run with the connection's lock held).
type Stream struct {
	c      *conn
	id     uint32
	method string
	fields []hpack.HeaderField // request metadata (no pseudo-headers)
	// fieldBuf backs fields for the usual handful of metadata entries.
	fieldBuf [8]hpack.HeaderField

	handler      StreamHandler
	headersSent  bool
	remoteClosed bool
	finishing    bool // Finish was called; trailers are sent or waiting for window
	closed       bool
	trailers     *trailers // status waiting behind pending data

	sendWindow  int64
	pending     []byte  // DATA bytes waiting for flow-control window
	linked      bool    // in the connection's queue of streams waiting for its window
	next, prev  *Stream // links of that queue
	recvAvail   int64
	recvUnacked int64
	partial     []byte // a request message split across DATA frames
	held        []byte // request bytes waiting for the answers queued before them (resume)
	endHeld     bool   // the client's END_STREAM came behind held bytes

	ctx    context.Context
	cancel context.CancelFunc
}

type trailers struct {
	code codes.Code
	msg  string
}

// Method is the full method name, "/package.Service/Method".
func (st *Stream) Method() string { return st.method }

// Header is the first value of a request metadata key (lower case), or "".
func (st *Stream) Header(key string) string {
	for _, f := range st.fields {
		if f.Name == key {
			return f.Value
		}
	}
	return ""
}

// RemoteAddr is the client's address.
func (st *Stream) RemoteAddr() net.Addr { return st.c.nc.RemoteAddr() }

// Context is cancelled when the stream ends. It is made on first use: handlers that never
// wait need none.
func (st *Stream) Context() context.Context {
	if st.ctx == nil {
		st.ctx, st.cancel = context.WithCancel(st.c.ctx)
		if st.closed {
			st.cancel()
		}
	}
	return st.ctx
}

// Send writes one response message. The bytes go out with the answers to the rest of the
// frames the connection has already read (one write per batch), or when the handler's
// goroutine next waits for input.
func (st *Stream) Send(m proto.Message) error {
	if st.closed || st.finishing {
		return ErrStreamDone
	}
	c := st.c
	if !st.headersSent {
		st.headersSent = true
		c.hbuf.Reset()
		c.encodeField(":status", "200")
		c.encodeField("content-type", "application/grpc")
		c.writeHeaderBlock(st.id, false)
	}
	buf, err := marshalMessage(c.scratch[:0], m)
	if err != nil {
		return err
	}
	size := len(buf) - 5
	buf[1], buf[2], buf[3], buf[4] = byte(size>>24), byte(size>>16), byte(size>>8), byte(size) //nolint:gosec // big-endian bytes of a message size bounded by MaxSendMsgBytes
	queued := c.writeData(st, buf)
	if cap(buf) <= keptScratchBytes {
		c.scratch = buf[:0]
	}
	if !queued {
		// The client grants no window for what it was sent already: reset rather than hold
		// an unbounded amount for it.
		err := fmt.Errorf("%w: more than %d bytes (stream) or %d (connection) waiting for the client's flow-control window",
			ErrSendQueueFull, c.opts.MaxStreamSendQueueBytes, c.opts.MaxConnSendQueueBytes)
		c.resetStream(st.id, http2.ErrCodeEnhanceYourCalm, err)
		return err
	}
	return c.writeErr
}

// Finish ends the call with a status (codes.OK for success). Later sends fail; a second
// Finish is ignored.
func (st *Stream) Finish(code codes.Code, msg string) {
	if st.closed || st.finishing {
		return
	}
	st.finishing = true
	st.c.releasePartial(st) // a refused message's bytes are not kept
	if len(st.pending) > 0 {
		st.trailers = &trailers{code: code, msg: msg}
		return
	}
	st.c.writeTrailers(st, code, msg)
}

// SendAsync is Send for goroutines other than the connection's: it takes the connection's
// lock and flushes.
func (st *Stream) SendAsync(m proto.Message) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrStreamDone
	}
	err := st.Send(m)
	c.flush()
	if err == nil {
		err = c.writeErr
	}
	return err
}

// FinishAsync is Finish for goroutines other than the connection's.
func (st *Stream) FinishAsync(code codes.Code, msg string) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	st.Finish(code, msg)
	c.flush()
	if c.goAwaySent && len(c.streams) == 0 {
		c.raw.Close() // the last stream of a draining connection
		return
	}
	c.setWriteErr(c.armIdle()) // the reading goroutine may be waiting without a deadline
}

// vtMarshaler is implemented by messages generated with vtprotobuf, go-control-plane's
// among them: they encode without reflection (proto's encoder allocates for every key of a
// map field, such as a Struct's).
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict([]byte) (int, error)
}

// marshalMessage appends the 5-byte message prefix (its length left to fill) and m.
func marshalMessage(buf []byte, m proto.Message) ([]byte, error) {
	buf = append(buf, 0, 0, 0, 0, 0)
	vt, ok := m.(vtMarshaler)
	if !ok {
		out, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
		if err != nil {
			return nil, fmt.Errorf("inlinegrpc: marshal %T: %w", m, err)
		}
		return out, nil
	}
	size, start := vt.SizeVT(), len(buf)
	buf = slices.Grow(buf, size)[:start+size]
	n, err := vt.MarshalToSizedBufferVTStrict(buf[start:])
	if err != nil {
		return nil, fmt.Errorf("inlinegrpc: marshal %T: %w", m, err)
	}
	if n != size {
		return nil, fmt.Errorf("inlinegrpc: marshal %T: wrote %d bytes, sized %d", m, n, size)
	}
	return buf, nil
}

// Do runs fn as a handler callback from another goroutine: with the connection's lock held,
// so that fn may use the stream's methods without the Async suffix and shares nothing with
// the callbacks unguarded; what fn sends is flushed after. It reports false, without
// running fn, when the stream or its connection has ended. A handler that answers a
// message later (the picker holding a request in its queue) answers through Do.
func (st *Stream) Do(fn func(st *Stream)) bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || st.closed {
		return false
	}
	fn(st)
	c.flush()
	if c.goAwaySent && len(c.streams) == 0 {
		c.raw.Close() // the last stream of a draining connection
		return true
	}
	c.setWriteErr(c.armIdle())
	return true
}
