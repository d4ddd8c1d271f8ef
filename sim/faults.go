package sim

import (
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Faults makes a sim misbehave on purpose, to test how a gateway avoids failing pods. They
// apply to generation requests only (/v1/completions, /v1/chat/completions): /metrics,
// /health and /v1/models stay healthy, as on a pod whose engine fails while its server
// answers. The zero value injects nothing.
type Faults struct {
	// ErrorRate is the share of requests answered 500 at once.
	ErrorRate float64 `json:"error_rate,omitempty"`
	// ResetRate is the share of requests whose connection is reset (TCP RST) without a
	// response.
	ResetRate float64 `json:"reset_rate,omitempty"`
	// FirstByteDelay holds every request this long (wall time, not scaled) before the
	// engine sees it, so nothing of the response, headers included, is sent before.
	FirstByteDelay time.Duration `json:"first_byte_delay,omitempty"`
}

// Validate reports an unusable fault setting.
func (f Faults) Validate() error {
	switch {
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("fault error rate %v must be in [0,1]", f.ErrorRate)
	case f.ResetRate < 0 || f.ResetRate > 1:
		return fmt.Errorf("fault reset rate %v must be in [0,1]", f.ResetRate)
	case f.ErrorRate+f.ResetRate > 1:
		return fmt.Errorf("fault error rate + reset rate %v must be <= 1", f.ErrorRate+f.ResetRate)
	case f.FirstByteDelay < 0:
		return fmt.Errorf("fault first-byte delay %v is negative", f.FirstByteDelay)
	}
	return nil
}

// SetFaults changes the injected faults at run time (tests make a pod fail, then recover).
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	s.faults.Store(&f)
	return nil
}

// Faults returns the faults currently injected.
func (s *Server) Faults() Faults {
	if f := s.faults.Load(); f != nil {
		return *f
	}
	return Faults{}
}

// GenerationRequests counts the generation requests the sim received, including those a
// fault answered: how much traffic a gateway sent it.
func (s *Server) GenerationRequests() uint64 { return s.genReqs.Load() }

// injectFault applies the configured faults to one generation request; true means the
// request was answered (or its connection reset) and must not be served.
func (s *Server) injectFault(ctx *fasthttp.RequestCtx) bool {
	f := s.faults.Load()
	if f == nil || *f == (Faults{}) {
		return false
	}
	if f.FirstByteDelay > 0 {
		time.Sleep(f.FirstByteDelay)
	}
	if f.ErrorRate == 0 && f.ResetRate == 0 {
		return false
	}
	switch x := rand.Float64(); {
	case x < f.ErrorRate:
		s.writeError(ctx, &apiError{status: fasthttp.StatusInternalServerError, errType: "InternalServerError",
			message: "injected fault: internal error"})
		return true
	case x < f.ErrorRate+f.ResetRate:
		if tc, ok := ctx.Conn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST, not FIN
		}
		_ = ctx.Conn().Close()
		return true
	}
	return false
}
