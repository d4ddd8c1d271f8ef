//go:build !vtprotobuf

package inlinegrpc

// builtWithVTProtobuf: this test binary lacks go-control-plane's vtprotobuf methods.
const builtWithVTProtobuf = false
