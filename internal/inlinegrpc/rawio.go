//go:build linux

package inlinegrpc

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

// rawConnIO reads and writes a TCP connection through its RawConn.
type rawConnIO struct {
	rc syscall.RawConn
}

// newRawConnIO returns raw I/O for a *net.TCPConn, or nil for any other connection.
func newRawConnIO(nc net.Conn) io.ReadWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawConnIO{rc: rc}
}

func (r *rawConnIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait for the poller, then call again
			}
			n, errno = int(m), e
			return true
		}
	})
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

func (r *rawConnIO) Write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
			switch e {
			case 0:
				written += int(m)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // the socket buffer is full: wait until it drains
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, &net.OpError{Op: "write", Net: "tcp", Err: errno}
	}
	return written, nil
}
