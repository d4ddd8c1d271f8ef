//go:build linux

// Package rawio reads and writes plain TCP connections with raw system calls, so that
// busy-then-idle processes do not keep the Go runtime's monitor thread awake. It is used
// by the picker's gRPC transport and by the router's scrapes.
package rawio

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// Plain TCP connections are read and written with raw system calls.
//
// Why: every syscall.Read or syscall.Write tells the Go runtime it enters a system call,
// and when the runtime's monitor thread (sysmon) is asleep because the process was idle,
// that wakes it and resets it to polling every 20 µs for at least a millisecond. A picker
// serving a few thousand requests per second goes idle and wakes up between bursts of
// messages all the time, so sysmon never settles: profiled with perf, its sleeps and
// wake-ups were a fifth of the picker's CPU. Reads and writes on a non-blocking socket
// return at once, so they need no system-call bookkeeping (syscall.RawSyscall is for
// calls that cannot block); waiting for readiness still goes through the runtime's poller
// (syscall.RawConn), with the connection's deadlines.

// connIO reads and writes a TCP connection through its RawConn. One goroutine reads at a
// time and one writes at a time (the connection's reader; writers hold its lock), so each
// direction keeps its call's state in the struct: the callbacks are method values made
// once, and a call allocates nothing.
type connIO struct {
	rc syscall.RawConn

	readFn, writeFn func(fd uintptr) bool

	rbuf   []byte
	rn     int
	rerrno syscall.Errno

	wbuf     []byte
	wwritten int
	werrno   syscall.Errno
}

// New returns raw I/O for a *net.TCPConn, or nil for any other connection (TLS, pipes),
// which should then be read and written through its own methods. Deadlines set on the
// connection still apply: waiting goes through the runtime's poller.
func New(nc net.Conn) io.ReadWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &connIO{rc: rc}
	r.readFn, r.writeFn = r.readOnce, r.writeAll
	return r
}

func (r *connIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, errno := r.rn, r.rerrno
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: errno}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce is the RawConn callback of Read: false asks the poller to wait for data.
func (r *connIO) readOnce(fd uintptr) bool {
	for {
		m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rn, r.rerrno = int(m), e
		return true
	}
}

func (r *connIO) Write(p []byte) (int, error) {
	r.wbuf, r.wwritten, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	written, errno := r.wwritten, r.werrno
	r.wbuf = nil
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, &net.OpError{Op: "write", Net: "tcp", Err: errno}
	}
	return written, nil
}

// writeAll is the RawConn callback of Write: false asks the poller to wait until the
// socket buffer has room.
func (r *connIO) writeAll(fd uintptr) bool {
	for r.wwritten < len(r.wbuf) {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[r.wwritten])), uintptr(len(r.wbuf)-r.wwritten))
		switch e {
		case 0:
			r.wwritten += int(m)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			r.werrno = e
			return true
		}
	}
	return true
}
