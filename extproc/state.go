package extproc

import (
	"math/rand/v2"

	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// routingState is the immutable per-snapshot view the request path reads through an
// atomic.Pointer: which pools exist, objectives' priorities and model rewrites per pool.
type routingState struct {
	version uint64
	// pools are the pool keys (namespace/name) in snapshot order.
	pools []string
	// objectives: pool key → objective name → priority.
	objectives map[string]map[string]int
	// rewrites: pool key → rules in order (rewrites by name, rules in order).
	rewrites map[string][]rewriteRule
	// baseModels: adapter → base model, configured on pools (AnnotationBaseModels).
	baseModels map[string]string
}

// rewriteRule is one InferenceModelRewrite rule, ready for matching.
type rewriteRule struct {
	models  []string // empty = matches every model
	targets []rewriteTarget
	total   int
}

type rewriteTarget struct {
	model  string
	weight int
}

// priority returns the priority of an objective in a pool; unknown objectives get 0.
func (s *routingState) priority(pool, objective string) int {
	if objective == "" {
		return 0
	}
	return s.objectives[pool][objective]
}

// rewriteModel applies the first matching rule of the pool; ok is false when no rule matched.
func (s *routingState) rewriteModel(pool, model string) (target string, ok bool) {
	for i := range s.rewrites[pool] {
		r := &s.rewrites[pool][i]
		if !r.matches(model) {
			continue
		}
		return r.pick(), true
	}
	return "", false
}

func (r *rewriteRule) matches(model string) bool {
	if len(r.models) == 0 {
		return true
	}
	for _, m := range r.models {
		if m == model {
			return true
		}
	}
	return false
}

func (r *rewriteRule) pick() string {
	if len(r.targets) == 1 || r.total <= 0 {
		return r.targets[0].model
	}
	n := rand.IntN(r.total)
	for _, t := range r.targets {
		if n < t.weight {
			return t.model
		}
		n -= t.weight
	}
	return r.targets[len(r.targets)-1].model
}

// compileRules turns one InferenceModelRewrite into rules. Weights unset on every target
// mean equal shares.
func compileRules(mr *infv1alpha2.InferenceModelRewrite) []rewriteRule {
	var out []rewriteRule
	for _, rule := range mr.Spec.Rules {
		if len(rule.Targets) == 0 {
			continue
		}
		rr := rewriteRule{}
		for _, m := range rule.Matches {
			rr.models = append(rr.models, m.Model.Value)
		}
		for _, t := range rule.Targets {
			w := 1
			if t.Weight != nil {
				w = int(*t.Weight)
			}
			if w < 0 {
				w = 0
			}
			rr.targets = append(rr.targets, rewriteTarget{model: t.ModelRewrite, weight: w})
			rr.total += w
		}
		out = append(out, rr)
	}
	return out
}
