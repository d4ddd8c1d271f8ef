package extproc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// envoyLikeClient is the benchmark's stand-in for Envoy's ext_proc client: a bare HTTP/2
// connection that writes each request's frames in the bursts Envoy 1.40 writes them
// (seen with strace on the picker's socket behind a real Envoy): the stream's HEADERS,
// the request headers message and the body together; later the response headers
// message and the response body as they come; and a RST_STREAM when the HTTP exchange
// ends (Envoy does not half-close ext_proc streams, it resets them). A gRPC library
// client would send these as separate writes, and each write can wake the picker once
// more than Envoy does: the benchmark would then measure the client's framing, not the
// picker.
type envoyLikeClient struct {
	conn net.Conn

	mu      sync.Mutex // guards everything below: writes and stream bookkeeping
	window  *sync.Cond // signalled when the connection send window grows
	bw      *bufio.Writer
	fr      *http2.Framer
	hbuf    bytes.Buffer
	enc     *hpack.Encoder
	nextID  uint32
	streams map[uint32]*rawStream
	sendWin int64 // connection-level send window
	peerWin int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window
	unacked int64 // DATA bytes received and not yet returned to the server in a WINDOW_UPDATE
	err     error // set when the reader stops

	settled chan struct{} // closed by the reader once the server's SETTINGS and window update are in
	kick    chan struct{} // asks the flusher to write out what the streams have framed
}

// rawStream collects one stream's gRPC messages from the reader goroutine.
type rawStream struct {
	msgs    chan []byte // one gRPC message payload each
	partial []byte
	ended   chan error // the server ended the stream (trailers or RST_STREAM)
	sendWin int64      // this stream's send window
}

// benchClientWindow is the client's receive window, per stream and for the connection:
// Envoy's default, 256 MiB. The connection's is topped up as answers are read.
const benchClientWindow = 256 << 20

func dialEnvoyLike(addr string) (*envoyLikeClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &envoyLikeClient{conn: conn, bw: bufio.NewWriterSize(conn, 64<<10), nextID: 1,
		streams: map[uint32]*rawStream{}, sendWin: 65535, peerWin: 65535, settled: make(chan struct{}), kick: make(chan struct{}, 1)}
	c.window = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(conn, 64<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.hbuf)
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		conn.Close()
		return nil, err
	}
	err = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: benchClientWindow})
	if err == nil {
		err = c.fr.WriteWindowUpdate(0, benchClientWindow-65535)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go c.read()
	go c.flush()
	select {
	case <-c.settled:
	case <-time.After(10 * time.Second):
		conn.Close()
		return nil, errors.New("no SETTINGS from the server")
	}
	return c, nil
}

func (c *envoyLikeClient) Close() error {
	err := c.conn.Close()
	close(c.kick)
	return err
}

// flush writes out framed bursts. Envoy's worker thread frames the messages of all its
// streams during one event-loop pass and writes them together; a flusher that runs when
// it is next scheduled does the same for the benchmark's concurrent streams (with one
// stream it is one write per burst, as with Envoy).
func (c *envoyLikeClient) flush() {
	for range c.kick {
		c.mu.Lock()
		if c.err == nil {
			if err := c.bw.Flush(); err != nil {
				c.err = err
			}
		}
		c.mu.Unlock()
	}
}

// written hands the framed bytes to the flusher. Called with mu held.
func (c *envoyLikeClient) written() {
	select {
	case c.kick <- struct{}{}:
	default: // a flush is already due
	}
}

// read handles every frame from the server until the connection ends.
func (c *envoyLikeClient) read() {
	var sawSettings, sawWindow, settled bool
	err := func() error {
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return err
			}
			c.mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					sawSettings = true
					if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
						for _, st := range c.streams {
							st.sendWin += int64(v) - c.peerWin
						}
						c.peerWin = int64(v)
					}
					err = c.fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					err = c.fr.WritePing(true, f.Data)
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					sawWindow = true
					c.sendWin += int64(f.Increment)
					c.window.Broadcast()
				} else if st := c.streams[f.StreamID]; st != nil {
					st.sendWin += int64(f.Increment)
					c.window.Broadcast()
				}
			case *http2.DataFrame:
				if st := c.streams[f.StreamID]; st != nil {
					err = st.deliver(f.Data())
				}
				// A stream takes far less than its window; the connection's is returned
				// once half of it is used, as Envoy's codec does.
				if c.unacked += int64(f.Length); err == nil && c.unacked >= benchClientWindow/2 {
					err = c.fr.WriteWindowUpdate(0, uint32(c.unacked))
					c.unacked = 0
				}
			case *http2.MetaHeadersFrame:
				if st := c.streams[f.StreamID]; st != nil && f.StreamEnded() {
					st.ended <- trailerStatus(f)
					delete(c.streams, f.StreamID)
				}
			case *http2.RSTStreamFrame:
				if st := c.streams[f.StreamID]; st != nil {
					st.ended <- fmt.Errorf("server reset the stream: %v", f.ErrCode)
					delete(c.streams, f.StreamID)
				}
			case *http2.GoAwayFrame:
				err = fmt.Errorf("server sent GOAWAY %v", f.ErrCode)
			}
			if err == nil {
				err = c.bw.Flush()
			}
			c.mu.Unlock()
			if err != nil {
				return err
			}
			if sawSettings && sawWindow && !settled {
				settled = true
				close(c.settled)
			}
		}
	}()
	c.mu.Lock()
	c.err = err
	for id, st := range c.streams {
		st.ended <- fmt.Errorf("connection: %w", err)
		delete(c.streams, id)
	}
	c.window.Broadcast()
	c.mu.Unlock()
}

func trailerStatus(f *http2.MetaHeadersFrame) error {
	if s := f.PseudoValue("status"); s != "" && s != "200" {
		return fmt.Errorf("HTTP status %s", s)
	}
	if s := headerValue(f, "grpc-status"); s != "0" {
		return fmt.Errorf("grpc-status %q: %s", s, headerValue(f, "grpc-message"))
	}
	return nil
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// deliver splits DATA bytes into gRPC messages.
func (st *rawStream) deliver(data []byte) error {
	st.partial = append(st.partial, data...)
	for len(st.partial) >= 5 {
		if st.partial[0] != 0 {
			return errors.New("compressed gRPC message")
		}
		n := int(binary.BigEndian.Uint32(st.partial[1:5]))
		if len(st.partial) < 5+n {
			break
		}
		msg := bytes.Clone(st.partial[5 : 5+n])
		st.partial = st.partial[5+n:]
		select {
		case st.msgs <- msg:
		default:
			return errors.New("client fell behind: more than 64 answers queued on one stream")
		}
	}
	return nil
}

// open starts a stream and writes its HEADERS with the given first messages in one burst.
func (c *envoyLikeClient) open(first ...proto.Message) (*rawStream, uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, 0, c.err
	}
	id := c.nextID
	c.nextID += 2
	st := &rawStream{msgs: make(chan []byte, 64), ended: make(chan error, 1)}
	c.streams[id] = st
	c.hbuf.Reset()
	for _, kv := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "picker"},
		{":path", "/" + extprocv3.ExternalProcessor_ServiceDesc.ServiceName + "/Process"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]}); err != nil {
			return nil, 0, err
		}
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return nil, 0, err
	}
	st.sendWin = c.peerWin // the server's SETTINGS were read before the first stream
	if err := c.writeMessages(id, st, first...); err != nil {
		return nil, 0, err
	}
	c.written()
	return st, id, nil
}

// send writes messages on a stream in one burst.
func (c *envoyLikeClient) send(id uint32, st *rawStream, msgs ...proto.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if err := c.writeMessages(id, st, msgs...); err != nil {
		return err
	}
	c.written()
	return nil
}

// writeMessages frames messages as DATA of at most 16 KiB (the default frame size), within
// the flow-control windows. Called with mu held.
func (c *envoyLikeClient) writeMessages(id uint32, st *rawStream, msgs ...proto.Message) error {
	for _, m := range msgs {
		body, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		buf := make([]byte, 5+len(body))
		binary.BigEndian.PutUint32(buf[1:5], uint32(len(body)))
		copy(buf[5:], body)
		for len(buf) > 0 {
			n := min(len(buf), 16<<10)
			for (c.sendWin < int64(n) || st.sendWin < int64(n)) && c.err == nil {
				// Flush what is written so far, then wait for the server's WINDOW_UPDATE (of
				// the connection or of this stream).
				if err := c.bw.Flush(); err != nil {
					return err
				}
				c.window.Wait()
			}
			if c.err != nil {
				return c.err
			}
			if err := c.fr.WriteData(id, false, buf[:n]); err != nil {
				return err
			}
			c.sendWin -= int64(n)
			st.sendWin -= int64(n)
			buf = buf[n:]
		}
	}
	return nil
}

// reset ends a stream the way Envoy ends its ext_proc streams.
func (c *envoyLikeClient) reset(id uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, id)
	if c.err != nil {
		return c.err
	}
	if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		return err
	}
	c.written()
	return nil
}

// recv waits for the stream's next answer.
func (st *rawStream) recv(timeout time.Duration) (*extprocv3.ProcessingResponse, error) {
	select {
	case m := <-st.msgs:
		r := &extprocv3.ProcessingResponse{}
		if err := proto.Unmarshal(m, r); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		return r, nil
	case err := <-st.ended:
		if err == nil {
			err = io.EOF
		}
		return nil, fmt.Errorf("stream ended before the answer: %w", err)
	case <-time.After(timeout):
		return nil, errors.New("no answer in time")
	}
}
