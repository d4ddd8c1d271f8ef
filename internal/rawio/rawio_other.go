//go:build !linux

// Package rawio: see rawio_linux.go.
package rawio

import (
	"io"
	"net"
)

// New: raw socket I/O is implemented (and measured) on Linux only; elsewhere the
// connection's own Read and Write are used.
func New(net.Conn) io.ReadWriter { return nil }
