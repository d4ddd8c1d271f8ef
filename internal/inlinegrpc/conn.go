package inlinegrpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/infergw/infergw/internal/rawio"
)

const (
	initialWindow  = 65535 // HTTP/2's window before any SETTINGS or WINDOW_UPDATE
	defaultFrame   = 16384 // HTTP/2's SETTINGS_MAX_FRAME_SIZE until the peer says more
	frameHeaderLen = 9
	maxHeaderList  = 1 << 20
	ioBufferBytes  = 64 << 10
	// keptScratchBytes: message buffers above this are dropped after use rather than kept
	// for the connection's lifetime.
	keptScratchBytes = 256 << 10
	// initialMessageBuffer is the most allocated up front for a message split across frames.
	initialMessageBuffer = 64 << 10
	// maxFreeBuffers bounds the message buffers a connection keeps for reuse.
	maxFreeBuffers = 4
)

// connError is an HTTP/2 connection error: GOAWAY with code, then close.
type connError struct {
	code http2.ErrCode
	msg  string
}

func (e connError) Error() string { return fmt.Sprintf("http2 connection error %v: %s", e.code, e.msg) }

// streamResetError is what a handler's Close gets when the client reset the stream.
type streamResetError struct{ code http2.ErrCode }

func (e streamResetError) Error() string { return fmt.Sprintf("stream reset by client: %v", e.code) }

// errConnDone: the connection ended gracefully (GOAWAY and no stream left).
var errConnDone = errors.New("connection done")

// conn is one HTTP/2 connection. Its goroutine (serve) reads frames and runs handlers with
// mu held; SendAsync/FinishAsync from other goroutines take mu too. mu guards every field
// below it and every write.
type conn struct {
	srv  *Server
	opts *Options
	nc   net.Conn
	raw  net.Conn // nc without TLS: closing it never waits to send a close_notify
	br   *bufio.Reader
	bw   *bufio.Writer
	fr   *http2.Framer
	ctx  context.Context
	stop context.CancelFunc

	mu          sync.Mutex
	henc        *hpack.Encoder
	hdec        *hpack.Decoder // used by the reading goroutine only, like hb
	hb          headerBlock
	hbuf        bytes.Buffer
	streams     map[uint32]*Stream
	maxClientID uint32 // highest stream ID the client has opened
	goAwaySent  bool   // draining: no new streams
	peerGoAway  bool
	closed      bool
	writeErr    error

	sendWindow        int64 // connection-level credit the client gave us
	peerInitialWindow int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE for our streams
	peerMaxFrame      int
	recvAvail         int64    // connection-level credit we gave the client, not yet used
	recvUnacked       int64    // bytes consumed and not yet returned with WINDOW_UPDATE
	scratch           []byte   // encodes one outgoing message
	freeBuffers       [][]byte // message buffers to reuse

	// Bounds on what a peer can make the connection hold (Options and limits.go).
	queued       int     // answer bytes waiting for flow-control window, all streams
	heldBytes    int     // request bytes waiting behind them (Stream.held), all streams
	partialBytes int     // capacity of the buffers of unfinished request messages
	blockedHead  *Stream // streams waiting for connection window (limits.go)
	blockedTail  *Stream
	pings        rateLimit
	settings     rateLimit
	resets       rateLimit
	headerResets int  // oversized header lists answered with RST_STREAM
	sentData     bool // DATA written since the client's last PING
	resetIDs     [recentResets]uint32
	resetNext    int
	idleArmed    bool        // the read deadline is the idle timeout
	draining     bool        // the first GOAWAY of a graceful shutdown is sent
	drainTimer   *time.Timer // ends the first phase if the PING is not answered
}

func newConn(s *Server, nc net.Conn) *conn {
	raw := nc
	if s.opts.TLS != nil {
		nc = tls.Server(nc, s.opts.TLS)
	}
	ctx, stop := context.WithCancel(context.Background())
	// Reads and writes go through raw system calls on plain TCP (internal/rawio), through
	// the net.Conn otherwise (TLS).
	var rd io.Reader = nc
	var wr io.Writer = nc
	if rio := rawio.New(nc); rio != nil {
		rd, wr = rio, rio
	}
	c := &conn{
		srv: s, opts: &s.opts, nc: nc, raw: raw, ctx: ctx, stop: stop,
		br:                bufio.NewReaderSize(rd, ioBufferBytes),
		streams:           map[uint32]*Stream{},
		sendWindow:        initialWindow,
		peerInitialWindow: initialWindow,
		peerMaxFrame:      defaultFrame,
		recvAvail:         int64(s.opts.ConnWindow),
	}
	c.bw = bufio.NewWriterSize(deadlineWriter{nc: nc, w: wr, timeout: s.opts.WriteTimeout}, ioBufferBytes)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	// We never raise SETTINGS_MAX_FRAME_SIZE, so a larger frame is an error (and must not
	// make the codec buffer up to 16 MiB).
	c.fr.SetMaxReadFrameSize(defaultFrame)
	c.hdec = hpack.NewDecoder(4096, c.emitField)
	c.hdec.SetMaxStringLength(maxHeaderList)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// deadlineWriter bounds every write, so a client that stops reading cannot hold the
// connection's goroutine (and its lock) forever.
type deadlineWriter struct {
	nc      net.Conn  // where the deadline is set
	w       io.Writer // nc, or raw I/O on it
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.nc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

func (c *conn) serve() {
	defer c.srv.forget(c)
	err := c.run() // never nil: it says why the connection ended
	if !errors.Is(err, errConnDone) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.srv.log.Debug("grpc connection ended", "remote", c.nc.RemoteAddr().String(), "error", err)
	}
	c.mu.Lock()
	c.closed = true
	if c.drainTimer != nil {
		c.drainTimer.Stop()
	}
	for _, st := range c.streams {
		c.closeStream(st, fmt.Errorf("connection closed: %w", orEOF(err)))
	}
	c.mu.Unlock()
	c.stop()
	if errors.Is(err, errConnDone) && c.peerGoAway && !c.goAwaySent {
		c.lingerClose()
	}
	c.nc.Close()
}

// lingerClose: the client sent GOAWAY and no stream is left, so the server closes; frames
// the client sent meanwhile (a PING) must not turn the close into a TCP reset that loses
// what was written. Half-close, then read and drop what comes for a moment (bounded in
// time and bytes) before the full close.
func (c *conn) lingerClose() {
	tc, ok := c.raw.(*net.TCPConn)
	if !ok {
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if c.nc != c.raw {
		_ = c.nc.(*tls.Conn).CloseWrite() // close_notify
	}
	if tc.CloseWrite() != nil || tc.SetReadDeadline(time.Now().Add(time.Second)) != nil {
		return
	}
	_, _ = io.CopyN(io.Discard, tc, 1<<20)
}

// orEOF is what streams still open see when the connection ends: a graceful end reads as
// the end of input.
func orEOF(err error) error {
	if errors.Is(err, errConnDone) {
		return io.EOF
	}
	return err
}

func (c *conn) run() error {
	if err := c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.HandshakeContext(c.ctx); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
			return fmt.Errorf("client negotiated %q, not h2", p)
		}
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil {
		return fmt.Errorf("read client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return errors.New("not an HTTP/2 client (bad preface)")
	}
	if err := c.nc.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	c.mu.Lock()
	c.writeErr = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.opts.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.opts.StreamWindow)}, //nolint:gosec // StreamWindow is validated in (0, 2^31)
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	if extra := c.opts.ConnWindow - initialWindow; extra > 0 && c.writeErr == nil {
		c.writeErr = c.fr.WriteWindowUpdate(0, uint32(extra))
	}
	c.flush()
	err := c.writeErr
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		c.mu.Lock()
		if c.mustFlushBeforeRead() {
			c.flush()
		}
		err := c.writeErr
		if err == nil {
			err = c.armIdle()
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		f, err := c.fr.ReadFrame()
		c.mu.Lock()
		if err != nil && c.idleArmed && errors.Is(err, os.ErrDeadlineExceeded) {
			err = connError{code: http2.ErrCodeNo, msg: fmt.Sprintf("no stream for %s: idle connection closed", c.opts.IdleTimeout)}
		} else if err != nil {
			err = c.readError(err)
		} else {
			err = c.handleFrame(f)
		}
		if err == nil {
			err = c.writeErr
		}
		if err == nil && (c.goAwaySent || c.peerGoAway) && len(c.streams) == 0 {
			err = errConnDone
		}
		if err != nil {
			var ce connError
			if errors.As(err, &ce) {
				_ = c.fr.WriteGoAway(c.maxClientID, ce.code, []byte(ce.msg))
			}
			c.flush()
			c.mu.Unlock()
			return err
		}
		c.mu.Unlock()
	}
}

// armIdle sets the read deadline to the idle timeout while the connection has no stream,
// and clears it when one opens. Only transitions cost a call. Called with mu held.
func (c *conn) armIdle() error {
	if c.opts.IdleTimeout <= 0 {
		return nil
	}
	idle := len(c.streams) == 0
	if idle == c.idleArmed {
		return nil
	}
	c.idleArmed = idle
	var deadline time.Time
	if idle {
		deadline = time.Now().Add(c.opts.IdleTimeout)
	}
	return c.nc.SetReadDeadline(deadline)
}

// mustFlushBeforeRead: the next frame is not wholly buffered, so reading it may block;
// everything written so far must reach the client first. While frames are buffered the
// answers accumulate, and one write carries the answers to a whole batch. Called with mu
// held (bw is shared with SendAsync); br belongs to the reading goroutine alone.
func (c *conn) mustFlushBeforeRead() bool {
	if c.bw.Buffered() == 0 {
		return false
	}
	n := c.br.Buffered()
	if n < frameHeaderLen {
		return true
	}
	h, _ := c.br.Peek(frameHeaderLen)
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	return n < frameHeaderLen+length
}

// flush writes out what is buffered; errors are kept in writeErr.
func (c *conn) flush() {
	if c.writeErr != nil || c.bw.Buffered() == 0 {
		return
	}
	c.writeErr = c.bw.Flush()
}

// readError turns a frame-reading error into nil (a stream error, answered with
// RST_STREAM) or the error that ends the connection.
func (c *conn) readError(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		if se.StreamID > c.maxClientID && se.StreamID%2 == 1 {
			c.maxClientID = se.StreamID // a malformed HEADERS still opened (and closes) its ID
		}
		c.resetStream(se.StreamID, se.Code, fmt.Errorf("stream error: %w", err))
		return nil
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		// The codec gives details for some errors only (not for a bad PING, SETTINGS,
		// WINDOW_UPDATE, RST_STREAM or GOAWAY frame).
		msg := err.Error()
		if d := c.fr.ErrorDetail(); d != nil {
			msg = d.Error()
		}
		return connError{code: http2.ErrCode(ce), msg: msg}
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return connError{code: http2.ErrCodeFrameSize, msg: "frame larger than SETTINGS_MAX_FRAME_SIZE"}
	}
	return err
}

func (c *conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.HeadersFrame:
		return c.startHeaderBlock(f)
	case *http2.ContinuationFrame:
		if c.hb.frames++; c.hb.frames > maxBlockFrames {
			return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("header block in more than %d frames", maxBlockFrames)}
		}
		return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.WindowUpdateFrame:
		return c.handleWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			if f.Data == drainPing {
				c.finishDrain(false)
			}
			return nil
		}
		// A PING after the server sent DATA is free, as grpc-go's enforcement has it: gRPC
		// clients measure bandwidth with PINGs while data flows (BDP probes).
		if c.sentData {
			c.sentData = false
		} else if !c.pings.allow(time.Now(), pingBurst, pingPerSecond) {
			return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("too many PINGs (more than %d at once or %d a second)", pingBurst, pingPerSecond)}
		}
		c.setWriteErr(c.fr.WritePing(true, f.Data))
	case *http2.RSTStreamFrame:
		// Envoy resets every ext_proc stream once it has its answers: only resets of open
		// streams the server has not answered yet (Rapid Reset) count against the limit;
		// one on a closed stream costs nothing.
		st := c.streams[f.StreamID]
		if st != nil && !st.headersSent && !c.resets.allow(time.Now(), resetBurst, resetPerSecond) {
			return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("too many RST_STREAMs of unanswered streams (more than %d at once or %d a second)", resetBurst, resetPerSecond)}
		}
		if st != nil {
			c.closeStream(st, streamResetError{code: f.ErrCode})
		} else if f.StreamID > c.maxClientID {
			return connError{code: http2.ErrCodeProtocol, msg: "RST_STREAM on an idle stream"}
		}
	case *http2.GoAwayFrame:
		c.peerGoAway = true
	case *http2.PushPromiseFrame:
		return connError{code: http2.ErrCodeProtocol, msg: "PUSH_PROMISE from a client"}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol, errors.New("stream depends on itself")) // RFC 7540 §5.3.1
		}
	}
	// PRIORITY and unknown frame types are ignored, as HTTP/2 requires.
	return nil
}

func (c *conn) setWriteErr(err error) {
	if err != nil && c.writeErr == nil {
		c.writeErr = err
	}
}

func (c *conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if !c.settings.allow(time.Now(), settingsBurst, settingsPerSecond) {
		return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("too many SETTINGS (more than %d at once or %d a second)", settingsBurst, settingsPerSecond)}
	}
	var delta int64
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta += int64(s.Val) - c.peerInitialWindow // one frame may change it twice
			c.peerInitialWindow = int64(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connError{code: http2.ErrCode(ce), msg: "invalid SETTINGS value"}
		}
		return connError{code: http2.ErrCodeProtocol, msg: err.Error()}
	}
	if delta != 0 {
		for _, st := range c.streams {
			st.sendWindow += delta
			if st.sendWindow > maxWindow {
				return connError{code: http2.ErrCodeFlowControl, msg: "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window"}
			}
		}
	}
	c.setWriteErr(c.fr.WriteSettingsAck())
	if delta > 0 {
		for _, st := range c.streams {
			if len(st.pending) > 0 {
				c.pump(st)
				c.resume(st)
			}
		}
	}
	return nil
}

func (c *conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return connError{code: http2.ErrCodeFlowControl, msg: "connection window above 2^31-1"}
		}
		// Only the streams the window reaches are visited: each one either sends all it
		// holds and leaves the queue, or spends the window and stops the walk.
		for c.sendWindow > 0 && c.blockedHead != nil && c.writeErr == nil {
			st := c.blockedHead
			c.pump(st)
			if c.blockedHead == st {
				break
			}
			c.resume(st)
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxClientID {
			return connError{code: http2.ErrCodeProtocol, msg: "WINDOW_UPDATE on an idle stream"}
		}
		return nil // a stream that just ended
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > maxWindow {
		c.resetStream(st.id, http2.ErrCodeFlowControl, errors.New("stream window above 2^31-1"))
		return nil
	}
	if len(st.pending) > 0 {
		c.pump(st)
		c.resume(st)
	}
	return nil
}

// handleHeaders acts on a complete header block: a new stream, or the client's trailers.
func (c *conn) handleHeaders() error {
	hb := &c.hb
	id := hb.streamID
	req, perr := parseHeaderBlock(hb.fields)
	if st := c.streams[id]; st != nil {
		// Trailers from the client: only valid as the end of its side.
		switch {
		case st.remoteClosed:
			c.resetStream(id, http2.ErrCodeStreamClosed, errors.New("client HEADERS after its END_STREAM"))
		case !hb.endStream:
			c.resetStream(id, http2.ErrCodeProtocol, errors.New("client HEADERS without END_STREAM on an open stream"))
		case perr != nil || req.hasPseudo:
			c.resetStream(id, http2.ErrCodeProtocol, fmt.Errorf("client trailers: %w", orPseudo(perr)))
		default:
			c.remoteEnd(st)
		}
		return nil
	}
	if id%2 == 0 {
		return connError{code: http2.ErrCodeProtocol, msg: "client opened an even stream ID"}
	}
	if id <= c.maxClientID {
		if c.wasReset(id) {
			return nil // frames in flight when the server reset the stream
		}
		// A stream that is closed, or an ID below one already used (RFC 9113 §5.1.1).
		return connError{code: http2.ErrCodeProtocol, msg: fmt.Sprintf("HEADERS on closed stream %d", id)}
	}
	c.maxClientID = id
	if c.goAwaySent || len(c.streams) >= int(c.opts.MaxConcurrentStreams) {
		c.writeRST(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if hb.truncated {
		// Header list over SETTINGS_MAX_HEADER_LIST_SIZE: the stream is refused; a client
		// that keeps sending them loses the connection.
		if c.headerResets++; c.headerResets > maxHeaderListResets {
			return connError{code: http2.ErrCodeEnhanceYourCalm, msg: fmt.Sprintf("more than %d header lists over %d bytes", maxHeaderListResets, maxHeaderList)}
		}
		c.writeRST(id, http2.ErrCodeEnhanceYourCalm)
		return nil
	}
	if perr != nil || !req.complete || hb.selfDependent {
		c.writeRST(id, http2.ErrCodeProtocol) // malformed request: a stream error (§8.1.1)
		return nil
	}
	if req.method != "POST" {
		c.writePlainStatus(id, "405", hb.endStream)
		return nil
	}
	st := &Stream{c: c, id: id, method: req.path, sendWindow: c.peerInitialWindow, recvAvail: int64(c.opts.StreamWindow)}
	st.fields = append(st.fieldBuf[:0], req.regular...)
	if !isGRPCContentType(st.Header("content-type")) {
		c.writePlainStatus(id, "415", hb.endStream)
		return nil
	}
	c.streams[id] = st
	newStream := c.opts.Methods[st.method]
	if newStream == nil {
		st.Finish(codes.Unimplemented, "unknown method "+st.method)
		return nil
	}
	st.handler = newStream(st)
	if !st.closed && hb.endStream {
		c.remoteEnd(st)
	}
	return nil
}

func orPseudo(err error) error {
	if err != nil {
		return err
	}
	return errors.New("pseudo-header in trailers")
}

// isGRPCContentType accepts application/grpc, application/grpc+proto and
// application/grpc;params, as the gRPC HTTP/2 protocol spec allows.
func isGRPCContentType(ct string) bool {
	const base = "application/grpc"
	if len(ct) < len(base) || ct[:len(base)] != base {
		return false
	}
	return len(ct) == len(base) || ct[len(base)] == '+' || ct[len(base)] == ';'
}

func (c *conn) handleData(f *http2.DataFrame) error {
	n := int64(f.Length) // padding counts against flow control too
	c.recvAvail -= n
	if c.recvAvail < 0 {
		return connError{code: http2.ErrCodeFlowControl, msg: "DATA beyond the connection window"}
	}
	c.recvUnacked += n
	c.returnConnWindow()
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxClientID {
			return connError{code: http2.ErrCodeProtocol, msg: "DATA on an idle stream"}
		}
		if !c.wasReset(f.StreamID) {
			// Not in flight from before a reset: the client sends on a stream it closed.
			c.writeRST(f.StreamID, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if st.remoteClosed {
		c.resetStream(st.id, http2.ErrCodeStreamClosed, errors.New("DATA after the client's END_STREAM"))
		return nil
	}
	st.recvAvail -= n
	if st.recvAvail < 0 {
		c.resetStream(st.id, http2.ErrCodeFlowControl, errors.New("DATA beyond the stream window"))
		return nil
	}
	st.recvUnacked += n
	if !f.StreamEnded() {
		c.returnStreamWindow(st)
	}
	c.consume(st, f.Data())
	if !st.closed && f.StreamEnded() {
		c.remoteEnd(st)
	}
	return nil
}

// Receive windows are returned (WINDOW_UPDATE) once half of one is consumed, except while
// answers wait for the client's window: a stream with queued answer bytes gets no stream
// window back, and the connection none while it holds backpressureBytes or more of answers
// and held request bytes together (held bytes have used their stream's window, but many
// streams would otherwise each hold a window's worth). A client
// that feeds requests but takes no answers is then held to the windows it was given,
// instead of making the server queue answers up to the reset bound; pump returns the
// windows when the queue drains.
const backpressureBytes = 256 << 10

func (c *conn) returnConnWindow() {
	if c.recvUnacked >= int64(c.opts.ConnWindow)/2 && c.queued+c.heldBytes < backpressureBytes {
		c.setWriteErr(c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))) //nolint:gosec // at most the connection window, < 2^31
		c.recvAvail += c.recvUnacked
		c.recvUnacked = 0
	}
}

func (c *conn) returnStreamWindow(st *Stream) {
	if st.recvUnacked >= int64(c.opts.StreamWindow)/2 && len(st.pending) == 0 && len(st.held) == 0 && !st.remoteClosed && !st.closed {
		c.setWriteErr(c.fr.WriteWindowUpdate(st.id, uint32(st.recvUnacked))) //nolint:gosec // at most the stream window, < 2^31
		st.recvAvail += st.recvUnacked
		st.recvUnacked = 0
	}
}

// resume hands st's held request bytes to its handler once its answers have gone out. Called
// by the reading goroutine after a WINDOW_UPDATE or SETTINGS let st send, never from
// inside a handler (pump runs there too, which is why pump does not resume).
func (c *conn) resume(st *Stream) {
	if len(st.pending) > 0 || st.closed {
		return
	}
	if len(st.held) > 0 {
		held := st.held
		st.held = nil
		c.heldBytes -= len(held)
		c.consume(st, held)
		c.returnConnWindow()
	}
	if len(st.held) == 0 && st.endHeld && !st.closed {
		st.endHeld = false
		c.halfClose(st)
	}
	c.returnStreamWindow(st)
}

// consume splits DATA bytes into gRPC messages (1 flag byte, 4 length bytes, payload). A
// message wholly inside one frame goes to the handler without a copy; one split across
// frames is gathered in the stream's buffer first.
func (c *conn) consume(st *Stream, data []byte) {
	// Once finished (possibly with its status still waiting for window), a stream takes no
	// more messages: the bytes may be the rest of a message it refused.
	for len(data) > 0 && !st.closed && !st.finishing {
		if len(st.pending) > 0 {
			// Backpressure: answers to earlier messages wait for the client's window, so
			// the rest waits unread (its window is withheld; see returnStreamWindow) and
			// is handled when they have gone out (resume), as a blocked grpc-go handler
			// would leave it in its receive buffer.
			st.held = append(st.held, data...)
			c.heldBytes += len(data)
			return
		}
		if len(st.partial) == 0 && len(data) >= 5 {
			size, ok := c.messageSize(st, data)
			if !ok {
				return
			}
			if len(data)-5 >= size {
				st.handler.Message(st, data[5:5+size])
				data = data[5+size:]
				continue
			}
		}
		if len(st.partial) < 5 {
			if !c.reservePartial(st, 5, 5) {
				return
			}
			take := min(5-len(st.partial), len(data))
			st.partial = append(st.partial, data[:take]...)
			data = data[take:]
			if len(st.partial) < 5 {
				return
			}
			if _, ok := c.messageSize(st, st.partial); !ok {
				return
			}
		}
		size := 5 + int(uint32(st.partial[1])<<24|uint32(st.partial[2])<<16|uint32(st.partial[3])<<8|uint32(st.partial[4]))
		take := min(size-len(st.partial), len(data))
		if !c.reservePartial(st, len(st.partial)+take, size) {
			return
		}
		st.partial = append(st.partial, data[:take]...) // within capacity: no append growth
		data = data[take:]
		if len(st.partial) == size {
			msg := st.partial
			st.partial = nil
			c.partialBytes -= cap(msg)
			st.handler.Message(st, msg[5:])
			c.recycleBuffer(msg)
		}
	}
}

// reservePartial makes room in st's message buffer for need bytes of a message of size
// bytes (prefix included). It grows the buffer in doubling steps up to the declared size
// and no further (room for what a client has sent, not for what it announced, and never
// append's over-allocation), within the connection's budget for unfinished messages; over
// it, the stream ends with RESOURCE_EXHAUSTED.
func (c *conn) reservePartial(st *Stream, need, size int) bool {
	old := st.partial
	if cap(old) >= need {
		return true
	}
	want := max(need, min(size, max(2*cap(old), initialMessageBuffer)))
	if c.partialBytes-cap(old)+want > c.opts.MaxConnPartialBytes {
		st.Finish(codes.ResourceExhausted, fmt.Sprintf("connection holds %d bytes of unfinished messages; %d more would pass the limit of %d", c.partialBytes, want-cap(old), c.opts.MaxConnPartialBytes))
		return false
	}
	grown := append(c.takeBuffer(want), old...)
	c.releasePartial(st)
	st.partial = grown
	c.partialBytes += cap(grown)
	return true
}

// releasePartial drops st's unfinished message.
func (c *conn) releasePartial(st *Stream) {
	if st.partial == nil {
		return
	}
	c.partialBytes -= cap(st.partial)
	c.recycleBuffer(st.partial)
	st.partial = nil
}

// takeBuffer returns an empty buffer with room for at least n bytes, reusing one that a
// finished message gave back: one request's split messages then cost no allocation.
func (c *conn) takeBuffer(n int) []byte {
	for i := len(c.freeBuffers) - 1; i >= 0; i-- {
		if b := c.freeBuffers[i]; cap(b) >= n {
			c.freeBuffers = append(c.freeBuffers[:i], c.freeBuffers[i+1:]...)
			return b
		}
	}
	return make([]byte, 0, max(n, 512))
}

// recycleBuffer keeps a few buffers of moderate size for takeBuffer.
func (c *conn) recycleBuffer(b []byte) {
	if b == nil || cap(b) > keptScratchBytes || len(c.freeBuffers) >= maxFreeBuffers {
		return
	}
	c.freeBuffers = append(c.freeBuffers, b[:0])
}

// messageSize reads a message prefix; on a prefix it refuses, it finishes the stream.
func (c *conn) messageSize(st *Stream, prefix []byte) (int, bool) {
	switch prefix[0] {
	case 0:
	case 1:
		st.Finish(codes.Unimplemented, "compressed messages are not supported; send them uncompressed")
		return 0, false
	default:
		st.Finish(codes.Internal, fmt.Sprintf("invalid message flag %#x", prefix[0]))
		return 0, false
	}
	size := uint32(prefix[1])<<24 | uint32(prefix[2])<<16 | uint32(prefix[3])<<8 | uint32(prefix[4])
	if uint64(size) > uint64(c.opts.MaxRecvMsgBytes) { //nolint:gosec // MaxRecvMsgBytes is validated positive
		st.Finish(codes.ResourceExhausted, fmt.Sprintf("received message of %d bytes, more than the %d allowed", size, c.opts.MaxRecvMsgBytes))
		return 0, false
	}
	return int(size), true
}

// remoteEnd: the client ended its side of st.
func (c *conn) remoteEnd(st *Stream) {
	st.remoteClosed = true
	if len(st.held) > 0 {
		st.endHeld = true // after the held messages (resume)
		return
	}
	c.halfClose(st)
}

func (c *conn) halfClose(st *Stream) {
	if len(st.partial) > 0 {
		st.Finish(codes.Internal, "stream ended inside a message")
		return
	}
	st.handler.HalfClose(st)
}

// closeStream forgets st and tells its handler, once.
func (c *conn) closeStream(st *Stream, err error) {
	if st.closed {
		return
	}
	st.closed = true
	// Out of every per-connection structure at once: the map, the blocked queue and the
	// byte counts.
	c.queued -= len(st.pending)
	st.pending = nil
	c.heldBytes -= len(st.held)
	st.held = nil
	st.trailers = nil
	c.unlink(st)
	c.releasePartial(st)
	delete(c.streams, st.id)
	if st.cancel != nil {
		st.cancel()
	}
	if st.handler != nil {
		st.handler.Close(err)
	}
}

// resetStream sends RST_STREAM and closes the stream if it is open.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.writeRST(id, code)
	if st := c.streams[id]; st != nil {
		c.closeStream(st, err)
	}
}

func (c *conn) writeRST(id uint32, code http2.ErrCode) {
	if id != 0 {
		c.noteReset(id)
		c.setWriteErr(c.fr.WriteRSTStream(id, code))
	}
}

// writePlainStatus answers a request that is not gRPC with a bare HTTP status.
func (c *conn) writePlainStatus(id uint32, status string, remoteClosed bool) {
	c.hbuf.Reset()
	c.encodeField(":status", status)
	c.writeHeaderBlock(id, true)
	if !remoteClosed {
		c.writeRST(id, http2.ErrCodeNo)
	}
}

func (c *conn) encodeField(name, value string) {
	c.setWriteErr(c.henc.WriteField(hpack.HeaderField{Name: name, Value: value}))
}

// writeHeaderBlock writes hbuf as HEADERS plus CONTINUATION frames of the peer's frame size.
func (c *conn) writeHeaderBlock(id uint32, endStream bool) {
	block := c.hbuf.Bytes()
	first := block[:min(len(block), c.peerMaxFrame)]
	rest := block[len(first):]
	c.setWriteErr(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0}))
	for len(rest) > 0 {
		part := rest[:min(len(rest), c.peerMaxFrame)]
		rest = rest[len(part):]
		c.setWriteErr(c.fr.WriteContinuation(id, len(rest) == 0, part))
	}
}

// writeData writes p to st as far as both flow-control windows allow and queues the rest.
// It reports false, queueing nothing, when the rest would pass the stream's or the
// connection's bound on queued bytes while some are queued already (with none queued, one
// message of any size may wait).
func (c *conn) writeData(st *Stream, p []byte) bool {
	if len(st.pending) == 0 {
		p = p[c.writeAllowed(st, p):]
		if len(p) == 0 {
			return true
		}
	}
	if (len(st.pending) > 0 && len(st.pending)+len(p) > c.opts.MaxStreamSendQueueBytes) ||
		(c.queued > 0 && c.queued+len(p) > c.opts.MaxConnSendQueueBytes) {
		return false
	}
	st.pending = append(st.pending, p...)
	c.queued += len(p)
	c.pump(st)
	return true
}

func (c *conn) writeAllowed(st *Stream, p []byte) int {
	sent := 0
	for sent < len(p) && c.writeErr == nil {
		n := int(min(int64(len(p)-sent), int64(c.peerMaxFrame), st.sendWindow, c.sendWindow))
		if n <= 0 {
			break
		}
		c.setWriteErr(c.fr.WriteData(st.id, false, p[sent:sent+n]))
		c.sentData = true
		st.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		sent += n
	}
	return sent
}

// pump sends what st holds as far as the windows allow, then files it: waiting for
// connection window (in the blocked queue), waiting for its own window (a WINDOW_UPDATE on
// it or SETTINGS will pump it again), or done (and its trailers go out if they waited).
func (c *conn) pump(st *Stream) {
	sent := c.writeAllowed(st, st.pending)
	st.pending = st.pending[sent:]
	c.queued -= sent
	if sent > 0 {
		c.returnConnWindow()
	}
	switch {
	case len(st.pending) == 0:
		st.pending = nil
		c.unlink(st)
		c.returnStreamWindow(st)
		if st.trailers != nil {
			t := st.trailers
			st.trailers = nil
			c.writeTrailers(st, t.code, t.msg)
		}
	case st.sendWindow > 0 && c.writeErr == nil:
		c.link(st) // the connection's window is spent
	default:
		c.unlink(st)
	}
}

// writeTrailers ends st with its status and closes it.
func (c *conn) writeTrailers(st *Stream, code codes.Code, msg string) {
	c.hbuf.Reset()
	if !st.headersSent {
		// Trailers-only response: the status rides on the only HEADERS frame.
		c.encodeField(":status", "200")
		c.encodeField("content-type", "application/grpc")
		st.headersSent = true
	}
	c.encodeField("grpc-status", codeString(code))
	if msg != "" {
		c.encodeField("grpc-message", percentEncode(msg))
	}
	c.writeHeaderBlock(st.id, true)
	if !st.remoteClosed {
		// The client may still be sending; tell it to stop (as grpc-go's server does).
		c.writeRST(st.id, http2.ErrCodeNo)
	}
	c.closeStream(st, nil)
}

// drain starts a graceful shutdown of the connection in two phases (RFC 9113 §6.8): a
// GOAWAY with the largest stream ID and a PING; when the PING's answer comes back (or
// after drainPingTimeout), every stream the client opened before it has arrived, and a
// second GOAWAY names the last one. Streams opened after it are refused; the connection
// closes when no stream is left.
func (c *conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.draining {
		return
	}
	c.draining = true
	c.setWriteErr(c.fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil))
	c.setWriteErr(c.fr.WritePing(false, drainPing))
	c.flush()
	if c.writeErr != nil {
		c.raw.Close() // wakes the reading goroutine, which ends the connection
		return
	}
	c.drainTimer = time.AfterFunc(drainPingTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.finishDrain(true)
	})
}

// finishDrain is a graceful shutdown's second phase. async: called from outside the
// connection's goroutine, which must be woken when nothing is left to wait for. Called
// with mu held.
func (c *conn) finishDrain(async bool) {
	if c.closed || !c.draining || c.goAwaySent {
		return
	}
	c.goAwaySent = true
	c.setWriteErr(c.fr.WriteGoAway(c.maxClientID, http2.ErrCodeNo, nil))
	c.flush()
	if async && (len(c.streams) == 0 || c.writeErr != nil) {
		c.raw.Close() // wakes the reading goroutine, which ends the connection
	}
}

func codeString(code codes.Code) string {
	if code < 10 {
		return string(rune('0' + code))
	}
	return fmt.Sprint(uint32(code))
}

// percentEncode encodes grpc-message as the gRPC protocol asks: bytes outside printable
// ASCII, and '%', as %XX.
func percentEncode(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b > 0x7e || b == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x20 || b > 0x7e || b == '%' {
			out = append(out, '%', hex[b>>4], hex[b&15])
			continue
		}
		out = append(out, b)
	}
	return string(out)
}
