//go:build linux

package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair is a connected pair of real TCP connections on loopback.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestConnIO: raw reads and writes move bytes like the connection's own, wait for data
// and for buffer space through the poller, honour deadlines and report end of stream.
func TestConnIO(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if New(a) != nil {
		t.Fatal("raw I/O offered for a connection that is not TCP")
	}
	client, server := tcpPair(t)
	rio := New(server)
	if rio == nil {
		t.Fatal("no raw I/O for a TCP connection")
	}

	// A read waits (EAGAIN, then the poller) until data comes.
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = client.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := rio.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	// A write larger than the socket buffers completes once the peer drains it.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(io.LimitReader(client, int64(len(big))))
		got <- data
	}()
	if n, err := rio.Write(big); err != nil || n != len(big) {
		t.Fatalf("wrote %d of %d: %v", n, len(big), err)
	}
	if data := <-got; !bytes.Equal(data, big) {
		t.Fatalf("peer read %d bytes, not what was written", len(data))
	}

	// The connection's deadline bounds a read that waits.
	if err := server.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := rio.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// The peer closing is end of stream.
	client.Close()
	if n, err := rio.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v; want io.EOF", n, err)
	}

	// Writing to a peer that reset the connection is an error (EPIPE or ECONNRESET; the
	// runtime ignores SIGPIPE on sockets), not a crash.
	c2, s2 := tcpPair(t)
	if err := c2.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c2.Close() // RST
	rio2 := New(s2)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = rio2.Write([]byte("after the reset"))
		time.Sleep(time.Millisecond)
	}
	if werr == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
}
