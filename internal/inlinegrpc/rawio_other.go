//go:build !linux

package inlinegrpc

import (
	"io"
	"net"
)

// newRawConnIO: raw socket I/O is implemented (and measured) on Linux only; elsewhere the
// connection's own Read and Write are used.
func newRawConnIO(net.Conn) io.ReadWriter { return nil }
