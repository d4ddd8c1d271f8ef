package extproc

import (
	"fmt"
	"net"
	"sync"
)

// ListenWhenReady returns a listener that does not listen until the picker is ready (the
// first snapshot applied, so every pool it names is known). Until then a proxy connecting
// to addr is refused, which Envoy treats as a picker failure: a FailOpen pool is served by
// Envoy's own load balancing and a FailClose pool answers its JSON 503, instead of the
// picker answering "unknown pool" for requests it cannot route yet (seen for ~60–90 ms
// after every restart). The first Accept waits for readiness, then listens; an error of
// that listen is returned by Accept (and so by Serve).
func (s *Server) ListenWhenReady(network, addr string) net.Listener {
	return &readyListener{ready: s.readyCh, network: network, addr: addr, closed: make(chan struct{})}
}

type readyListener struct {
	ready         <-chan struct{}
	network, addr string
	closed        chan struct{}

	mu        sync.Mutex
	lis       net.Listener
	err       error
	closeDone bool
}

func (l *readyListener) Accept() (net.Conn, error) {
	select {
	case <-l.ready:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	lis, err := l.listener()
	if err != nil {
		return nil, err
	}
	return lis.Accept()
}

// listener listens on the first call after readiness and returns the same listener after.
func (l *readyListener) listener() (net.Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeDone {
		return nil, net.ErrClosed
	}
	if l.lis == nil && l.err == nil {
		l.lis, l.err = net.Listen(l.network, l.addr)
		if l.err != nil {
			l.err = fmt.Errorf("listen %s: %w", l.addr, l.err)
		}
	}
	return l.lis, l.err
}

func (l *readyListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeDone {
		return nil
	}
	l.closeDone = true
	close(l.closed)
	if l.lis != nil {
		return l.lis.Close()
	}
	return nil
}

// Addr is the bound address once listening, else the configured one.
func (l *readyListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lis != nil {
		return l.lis.Addr()
	}
	if a, err := net.ResolveTCPAddr(l.network, l.addr); err == nil {
		return a
	}
	return &net.TCPAddr{}
}
