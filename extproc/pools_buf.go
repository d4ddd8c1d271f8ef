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

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// getBodyBuf returns an empty buffer, sized for contentLength when the client announced it.
func getBodyBuf(contentLength, limit int) *[]byte {
	bp := bodyBufs.Get().(*[]byte)
	if contentLength > cap(*bp) && contentLength <= limit {
		b := make([]byte, 0, contentLength)
		bp = &b
	}
	return bp
}

func putBodyBuf(bp *[]byte) {
	if cap(*bp) > maxPooledBody {
		return
	}
	*bp = (*bp)[:0]
	bodyBufs.Put(bp)
}

var parsedRequests = sync.Pool{New: func() any { return new(openai.Request) }}

func getParsed() *openai.Request { return parsedRequests.Get().(*openai.Request) }

func putParsed(r *openai.Request) {
	if cap(r.Prompt) > maxPooledBody {
		r.Prompt = nil
	}
	parsedRequests.Put(r)
}
