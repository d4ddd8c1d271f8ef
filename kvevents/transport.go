package kvevents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
)

// The zmq4 library reads a ZMTP frame by allocating the size its header declares (up to
// 2^63 bytes) and a message's frames without a count limit: a peer that can connect could
// make the picker allocate without bound. zmq4 has no ZMQ_MAXMSGSIZE option, but it has
// pluggable transports, so every socket of this package uses "tcp" through boundedTCP,
// whose connections parse the ZMTP framing as it streams by and fail a connection at the
// first frame header over MaxFrameBytes or the first message over MaxFramesPerMessage
// frames, before zmq4 sees it. Listeners also cap concurrent connections.
const (
	// MaxFrameBytes bounds one ZMTP frame (one message part): a vLLM batch is one engine
	// step's events, at most max_num_batched_tokens new tokens (a few thousand) at ~3 bytes
	// each plus hashes: tens of kilobytes.
	MaxFrameBytes = 4 << 20
	// MaxFramesPerMessage bounds the parts of a message (vLLM sends 3).
	MaxFramesPerMessage = 4
	// MaxConnsPerListener bounds the publishers connected to a bound subscriber at once
	// (one per pod and data-parallel rank). zmq4 holds at most one message per connection
	// plus a shared queue of 10, so a subscriber holds at most (1024+10) x 4 x 4 MiB of
	// received frames however its peers behave (16 GiB in theory; kilobytes in practice).
	MaxConnsPerListener = 1024

	// zmtpGreetingBytes is the size of the ZMTP 3 greeting that precedes the frames.
	zmtpGreetingBytes = 64

	transportName = "infergw-tcp"
)

// registerOnce registers boundedTCP with zmq4. zmq4's transport table is the library's
// process-wide registry; the transport itself holds no state.
var registerOnce = sync.OnceValue(func() error {
	return zmq4.RegisterTransport(transportName, boundedTCP{})
})

// zmqEndpoint maps a user's "tcp://host:port" to the bounded transport.
func zmqEndpoint(ep string) (string, error) {
	const scheme = "tcp://"
	if len(ep) <= len(scheme) || ep[:len(scheme)] != scheme {
		return "", fmt.Errorf("kvevents: endpoint %q: only tcp://HOST:PORT is supported", ep)
	}
	if err := registerOnce(); err != nil {
		return "", fmt.Errorf("kvevents: %w", err)
	}
	return transportName + "://" + ep[len(scheme):], nil
}

type boundedTCP struct{}

var _ transport.Transport = boundedTCP{}

func (boundedTCP) Dial(ctx context.Context, d transport.Dialer, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &frameLimitConn{Conn: c}, nil
}

func (boundedTCP) Listen(_ context.Context, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &limitListener{Listener: l, max: MaxConnsPerListener}, nil
}

func (boundedTCP) Addr(ep string) (string, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return "", err
	}
	if port == "*" || port == "" {
		port = "0"
	}
	if host == "*" || host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, port), nil
}

// limitListener closes connections accepted beyond max open ones.
type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.Close()
			continue
		}
		return &frameLimitConn{Conn: c, onClose: func() { l.open.Add(-1) }}, nil
	}
}

// errFrameTooLarge and errTooManyFrames end a connection whose peer broke the bounds.
var (
	errFrameTooLarge = errors.New("kvevents: ZMTP frame over the size limit")
	errTooManyFrames = errors.New("kvevents: ZMTP message with too many frames")
)

// frameLimitConn checks the ZMTP framing of what it reads: greeting, then frames of a
// flags byte (MORE 0x01, LONG 0x02, COMMAND 0x04), a 1- or 8-byte big-endian size and the
// body. It reads nothing ahead: it only inspects what its reader asked for.
type frameLimitConn struct {
	net.Conn
	onClose   func()
	closeOnce sync.Once

	greetLeft int // greeting bytes still to pass
	hdr       [9]byte
	hdrLen    int    // header bytes collected
	hdrNeed   int    // header length once the flags byte is known (0: unknown)
	bodyLeft  uint64 // body bytes of the current frame still to pass
	parts     int    // frames of the current message so far
	started   bool
	err       error
}

func (c *frameLimitConn) Close() error {
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return c.Conn.Close()
}

func (c *frameLimitConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if !c.started {
		c.started, c.greetLeft = true, zmtpGreetingBytes
	}
	n, err := c.Conn.Read(p)
	if cerr := c.inspect(p[:n]); cerr != nil {
		c.err = cerr
		_ = c.Conn.Close()
		return 0, cerr
	}
	return n, err
}

// inspect advances the framing state over b.
func (c *frameLimitConn) inspect(b []byte) error {
	for len(b) > 0 {
		switch {
		case c.greetLeft > 0:
			k := min(c.greetLeft, len(b))
			c.greetLeft -= k
			b = b[k:]
		case c.bodyLeft > 0:
			k := uint64(len(b))
			if k > c.bodyLeft {
				k = c.bodyLeft
			}
			c.bodyLeft -= k
			b = b[k:]
		default:
			c.hdr[c.hdrLen] = b[0]
			c.hdrLen++
			b = b[1:]
			if c.hdrLen == 1 {
				c.hdrNeed = 2
				if c.hdr[0]&0x02 != 0 {
					c.hdrNeed = 9
				}
			}
			if c.hdrLen < c.hdrNeed {
				continue
			}
			var size uint64
			if c.hdrNeed == 9 {
				size = binary.BigEndian.Uint64(c.hdr[1:9])
			} else {
				size = uint64(c.hdr[1])
			}
			if size > MaxFrameBytes {
				return fmt.Errorf("%w: %d bytes (limit %d)", errFrameTooLarge, size, MaxFrameBytes)
			}
			if c.hdr[0]&0x04 == 0 { // message frame (commands are single frames)
				c.parts++
				if c.parts > MaxFramesPerMessage {
					return fmt.Errorf("%w (limit %d)", errTooManyFrames, MaxFramesPerMessage)
				}
				if c.hdr[0]&0x01 == 0 {
					c.parts = 0 // last frame of the message
				}
			}
			c.bodyLeft = size
			c.hdrLen, c.hdrNeed = 0, 0
		}
	}
	return nil
}
