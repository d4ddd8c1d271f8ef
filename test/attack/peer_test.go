package attack

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// peer is a hostile HTTP/2 client: raw frames through the Framer, with a reader goroutine
// that keeps the windows the server grants and counts what it answers. It never grants
// the server window unless told to.
type peer struct {
	t    testing.TB
	nc   net.Conn
	wmu  sync.Mutex // writes
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu        sync.Mutex
	cond      *sync.Cond
	connWin   int64
	initWin   int64
	streamWin map[uint32]int64
	closed    bool
	goAway    *http2.ErrCode

	pingAcks  atomic.Int64
	resets    atomic.Int64
	dataBytes atomic.Int64
	headers   atomic.Int64
	done      chan struct{}
}

// dialPeer connects, sends the preface and settings, and starts the reader.
func dialPeer(t testing.TB, addr string, settings ...http2.Setting) *peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, nc: nc, connWin: 65535, initWin: 65535, streamWin: map[uint32]int64{}, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.fr = http2.NewFramer(nc, nc)
	p.fr.SetMaxReadFrameSize(1 << 24)
	p.henc = hpack.NewEncoder(&p.hbuf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := p.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	go p.read()
	t.Cleanup(p.close)
	return p
}

func (p *peer) close() {
	p.nc.Close()
	<-p.done
}

func (p *peer) read() {
	defer close(p.done)
	defer func() {
		p.mu.Lock()
		p.closed = true
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			p.mu.Lock()
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				for id := range p.streamWin {
					p.streamWin[id] += int64(v) - p.initWin
				}
				p.initWin = int64(v)
			}
			p.cond.Broadcast()
			p.mu.Unlock()
			p.wmu.Lock()
			_ = p.fr.WriteSettingsAck()
			p.wmu.Unlock()
		case *http2.WindowUpdateFrame:
			p.mu.Lock()
			if f.StreamID == 0 {
				p.connWin += int64(f.Increment)
			} else if _, ok := p.streamWin[f.StreamID]; ok {
				p.streamWin[f.StreamID] += int64(f.Increment)
			}
			p.cond.Broadcast()
			p.mu.Unlock()
		case *http2.PingFrame:
			if f.IsAck() {
				p.pingAcks.Add(1)
			}
		case *http2.RSTStreamFrame:
			p.resets.Add(1)
		case *http2.DataFrame:
			p.dataBytes.Add(int64(len(f.Data())))
		case *http2.HeadersFrame:
			p.headers.Add(1)
		case *http2.GoAwayFrame:
			p.mu.Lock()
			code := f.ErrCode
			p.goAway = &code
			p.mu.Unlock()
		}
	}
}

// isClosed: the server closed the connection.
func (p *peer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// waitClosed waits (bounded) for the server to close the connection.
func (p *peer) waitClosed(within time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(within):
		return false
	}
}

// write runs one framer write; errors mean the server has gone, which attacks expect.
func (p *peer) write(fn func(fr *http2.Framer) error) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return fn(p.fr)
}

// open starts a Process call on stream id.
func (p *peer) open(id uint32) error {
	p.mu.Lock()
	p.streamWin[id] = p.initWin
	p.mu.Unlock()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", extprocv3.ExternalProcessor_Process_FullMethodName},
		{":authority", "picker"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = p.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndHeaders: true})
}

// send writes b on stream id as DATA within the windows the server grants, waiting for
// window at most stall; false when the server stopped granting or closed.
func (p *peer) send(id uint32, b []byte, stall time.Duration) bool {
	for len(b) > 0 {
		p.mu.Lock()
		deadline := time.Now().Add(stall)
		for !p.closed && (p.connWin <= 0 || p.streamWin[id] <= 0) && time.Now().Before(deadline) {
			timer := time.AfterFunc(10*time.Millisecond, p.cond.Broadcast)
			p.cond.Wait()
			timer.Stop()
		}
		n := int(min(int64(len(b)), 16384, p.connWin, p.streamWin[id]))
		if p.closed || n <= 0 {
			p.mu.Unlock()
			return false
		}
		p.connWin -= int64(n)
		p.streamWin[id] -= int64(n)
		p.mu.Unlock()
		if err := p.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, b[:n]) }); err != nil {
			return false
		}
		b = b[n:]
	}
	return true
}

// grpcMessage is m with gRPC's 5-byte prefix.
func grpcMessage(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0, byte(len(b) >> 24), byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
}
