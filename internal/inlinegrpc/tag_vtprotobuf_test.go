//go:build vtprotobuf

package inlinegrpc

// builtWithVTProtobuf: this test binary has go-control-plane's vtprotobuf methods.
const builtWithVTProtobuf = true
