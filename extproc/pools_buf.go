package extproc

import (
	"sync"

	"github.com/infergw/infergw/extproc/openai"
)

// Buffers reused across requests: the body accumulation buffer of streamed bodies and the
// parsed request (whose Prompt buffer holds a copy of the prompt text). They live in
// sync.Pools, which the GC may empty, so they cost no memory when idle.

// maxPooledBody: larger buffers are left to the GC rather than pinned in the pool.
const maxPooledBody = 4 << 20

// bufferPools are a Server's pools (owned by the Server, not the package, so two servers
// in one process never share state).
type bufferPools struct {
	bodies sync.Pool // *[]byte
	parsed sync.Pool // *openai.Request
}

// getBodyBuf returns an empty buffer, sized for contentLength when the client announced it.
func (p *bufferPools) getBodyBuf(contentLength, limit int) *[]byte {
	bp, ok := p.bodies.Get().(*[]byte)
	if !ok {
		b := make([]byte, 0, 64<<10)
		bp = &b
	}
	if contentLength > cap(*bp) && contentLength <= limit {
		b := make([]byte, 0, contentLength)
		bp = &b
	}
	return bp
}

func (p *bufferPools) putBodyBuf(bp *[]byte) {
	if cap(*bp) > maxPooledBody {
		return
	}
	*bp = (*bp)[:0]
	p.bodies.Put(bp)
}

func (p *bufferPools) getParsed() *openai.Request {
	if r, ok := p.parsed.Get().(*openai.Request); ok {
		return r
	}
	return new(openai.Request)
}

func (p *bufferPools) putParsed(r *openai.Request) {
	if cap(r.Prompt) > maxPooledBody {
		r.Prompt = nil
	}
	p.parsed.Put(r)
}
