package router

import (
	"fmt"
	"math/bits"
	"time"
)

// OutlierConfig is the picker's outlier ejection: endpoints whose responses fail are kept
// out of picks for a backoff period that grows while the failures continue.
type OutlierConfig struct {
	// Disabled turns ejection off (outcomes are still counted).
	Disabled bool
	// Window is how many recent outcomes per endpoint the failure ratio is computed over
	// (at most 64).
	Window int
	// MinRequests is how many outcomes the window must hold before FailureRatio applies.
	MinRequests int
	// FailureRatio ejects an endpoint when failures / outcomes in the window reach it.
	FailureRatio float64
	// ConsecutiveFailures ejects an endpoint after this many failures in a row, whatever
	// the window says.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length; each further ejection without a passed
	// probation in between doubles it, up to MaxEjection.
	BaseEjection time.Duration
	MaxEjection  time.Duration
	// MaxEjectedPercent caps the share of a pool's endpoints ejected at once (at least one
	// endpoint of a pool of two or more may always be ejected).
	MaxEjectedPercent int
	// ProbationSuccesses is how many successes in a row a readmitted endpoint needs before
	// its backoff shrinks again; a failure during probation ejects it at once.
	ProbationSuccesses int
	// FirstByteTimeout: a response whose first byte comes later than this after the pick is
	// a failure, and an endpoint with requests waiting for a first byte that has produced
	// no first byte for this long is ejected at the next pick (0 = no first-byte timeout).
	FirstByteTimeout time.Duration
}

// Defaults of OutlierConfig.
const (
	DefaultOutlierWindow        = 20
	DefaultOutlierMinRequests   = 5
	DefaultOutlierFailureRatio  = 0.3
	DefaultConsecutiveFailures  = 3
	DefaultBaseEjection         = time.Second
	DefaultMaxEjection          = 30 * time.Second
	DefaultMaxEjectedPercent    = 50
	DefaultProbationSuccesses   = 3
	DefaultFirstByteTimeout     = 30 * time.Second
	maxOutlierWindow            = 64
	outlierReasonFailures       = "failures"
	outlierReasonFirstByteStall = "first_byte_timeout"
)

// DefaultOutlierConfig returns the documented defaults.
func DefaultOutlierConfig() OutlierConfig {
	return OutlierConfig{
		Window: DefaultOutlierWindow, MinRequests: DefaultOutlierMinRequests,
		FailureRatio: DefaultOutlierFailureRatio, ConsecutiveFailures: DefaultConsecutiveFailures,
		BaseEjection: DefaultBaseEjection, MaxEjection: DefaultMaxEjection,
		MaxEjectedPercent: DefaultMaxEjectedPercent, ProbationSuccesses: DefaultProbationSuccesses,
		FirstByteTimeout: DefaultFirstByteTimeout,
	}
}

func (c OutlierConfig) isZero() bool { return c == OutlierConfig{} }

func (c OutlierConfig) validate() error {
	switch {
	case c.Window < 1 || c.Window > maxOutlierWindow:
		return fmt.Errorf("outlier window %d must be in [1,%d]", c.Window, maxOutlierWindow)
	case c.MinRequests < 1 || c.MinRequests > c.Window:
		return fmt.Errorf("outlier min requests %d must be in [1,window %d]", c.MinRequests, c.Window)
	case !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		return fmt.Errorf("outlier failure ratio %v must be in (0,1]", c.FailureRatio)
	case c.ConsecutiveFailures < 1:
		return fmt.Errorf("outlier consecutive failures %d must be >= 1", c.ConsecutiveFailures)
	case c.BaseEjection <= 0 || c.MaxEjection < c.BaseEjection:
		return fmt.Errorf("outlier ejection %v..%v: base must be > 0 and max >= base", c.BaseEjection, c.MaxEjection)
	case c.MaxEjectedPercent < 0 || c.MaxEjectedPercent > 100:
		return fmt.Errorf("outlier max ejected percent %d must be in [0,100]", c.MaxEjectedPercent)
	case c.ProbationSuccesses < 1:
		return fmt.Errorf("outlier probation successes %d must be >= 1", c.ProbationSuccesses)
	case c.FirstByteTimeout < 0:
		return fmt.Errorf("outlier first-byte timeout %v is negative", c.FirstByteTimeout)
	}
	return nil
}

// maxEjected is how many of n endpoints may be ejected at once.
func (c *OutlierConfig) maxEjected(n int) int {
	if n < 2 {
		return 0 // ejecting the only endpoint would only move its failures to "no endpoint"
	}
	return max(1, n*c.MaxEjectedPercent/100)
}

// outlierPhase is where an endpoint is in the ejection state machine.
type outlierPhase uint8

const (
	phaseHealthy   outlierPhase = iota
	phaseEjected                // out of picks until its backoff ends
	phaseProbation              // readmitted; one failure ejects it again
)

func (p outlierPhase) String() string {
	switch p {
	case phaseEjected:
		return "ejected"
	case phaseProbation:
		return "probation"
	default:
		return "healthy"
	}
}

// outlierMachine is one endpoint's ejection state machine, free of clocks and locks (the
// caller holds the endpoint's lock and applies the verdicts): record outcomes, learn
// whether to eject and for how long.
type outlierMachine struct {
	cfg         *OutlierConfig
	phase       outlierPhase
	ring        uint64 // last outcomes, bit set = failure; newest in bit 0
	count       int    // outcomes in ring (<= Window)
	consecutive int    // failures in a row
	level       int    // ejections without a passed probation in between
	probationOK int    // successes in a row since readmission
}

// record adds one outcome and reports whether the endpoint should now be ejected. Outcomes
// of an ejected endpoint (responses to requests sent before the ejection) are ignored.
func (m *outlierMachine) record(failed bool) (eject bool) {
	if m.phase == phaseEjected {
		return false
	}
	mask := uint64(1)<<m.cfg.Window - 1
	if m.cfg.Window == maxOutlierWindow {
		mask = ^uint64(0)
	}
	m.ring <<= 1
	if failed {
		m.ring |= 1
		m.consecutive++
	} else {
		m.consecutive = 0
	}
	m.ring &= mask
	m.count = min(m.count+1, m.cfg.Window)
	if m.phase == phaseProbation {
		if failed {
			return true
		}
		m.probationOK++
		if m.probationOK >= m.cfg.ProbationSuccesses {
			m.phase = phaseHealthy
			m.level = max(m.level-1, 0)
		}
		return false
	}
	if !failed {
		return false
	}
	if m.consecutive >= m.cfg.ConsecutiveFailures {
		return true
	}
	return m.count >= m.cfg.MinRequests &&
		float64(bits.OnesCount64(m.ring)) >= m.cfg.FailureRatio*float64(m.count)
}

// eject enters the ejected phase and returns the backoff: BaseEjection doubled for every
// ejection since the last passed probation, capped at MaxEjection.
func (m *outlierMachine) eject() time.Duration {
	m.phase = phaseEjected
	m.level++
	d := m.cfg.BaseEjection
	for i := 1; i < m.level && d < m.cfg.MaxEjection; i++ {
		d *= 2
	}
	return min(d, m.cfg.MaxEjection)
}

// readmit ends an ejection: the endpoint is on probation with a fresh window.
func (m *outlierMachine) readmit() {
	m.phase = phaseProbation
	m.ring, m.count, m.consecutive, m.probationOK = 0, 0, 0, 0
}
