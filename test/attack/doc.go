// Package attack holds the picker's gRPC transport attack suite (attack_test.go): hostile
// HTTP/2 peers, written with golang.org/x/net/http2's Framer, against both transports
// (internal/inlinegrpc and grpc-go), asserting bounded memory and work and that a
// legitimate request on another connection is still answered. `go test ./test/attack/`;
// ATTACK_TABLE=path writes the measured table (internal/inlinegrpc/README.md shows it).
package attack
