package extproc

import (
	"sync"

	"google.golang.org/protobuf/types/known/structpb"
)

// maxCachedDestinations bounds destCache; when full it is emptied and refills with the
// destinations in use, so endpoints that went away do not pin memory.
const maxCachedDestinations = 4096

// destCache keeps the envoy.lb dynamic metadata message per destination value. The
// message is two maps and four structs; the same few destination strings (primary plus
// fallbacks of one pool) repeat across requests, so building it once saves most of the
// per-request allocations of the answer. Cached messages are never modified after they
// are built; gRPC only reads them when it marshals (protobuf-go allows concurrent
// marshalling of one message).
type destCache struct {
	mu sync.RWMutex
	m  map[string]*structpb.Struct
}

func (c *destCache) get(dest string) *structpb.Struct {
	c.mu.RLock()
	md, ok := c.m[dest]
	c.mu.RUnlock()
	if ok {
		return md
	}
	md = destinationMetadata(dest)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedDestinations {
		c.m = make(map[string]*structpb.Struct)
	}
	c.m[dest] = md
	c.mu.Unlock()
	return md
}

// destinationMetadata returns the (shared, read-only) envoy.lb metadata for dest.
func (s *Server) destinationMetadata(dest string) *structpb.Struct { return s.destMD.get(dest) }
