package validation

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// Limits of the InferenceModelRewrite CRD (see the markers in api/v1alpha2).
const (
	MaxRewriteRules   = 16
	MaxRewriteMatches = 16
	MaxRewriteTargets = 16
	maxModelNameLen   = 253
	MaxTargetWeight   = 1000000
)

// Rewrite checks an InferenceModelRewrite: metadata, poolRef, 1–16 rules, each with at most
// 16 matches (type Exact, a model value of 1–253 characters) and 1–16 targets (a model of
// 1–253 characters, weights 1–1,000,000 set on all targets of the rule or on none).
func Rewrite(r *infv1alpha2.InferenceModelRewrite) Errors {
	var es Errors
	if r == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&r.ObjectMeta, &es)
	spec := field.NewPath("spec")
	validatePoolRef(spec.Child("poolRef"), r.Spec.PoolRef, &es)
	rules := spec.Child("rules")
	switch {
	case len(r.Spec.Rules) == 0:
		es.add(rules.String(), "must have at least 1 rule")
	case len(r.Spec.Rules) > MaxRewriteRules:
		es.add(rules.String(), "must have at most %d rules, has %d", MaxRewriteRules, len(r.Spec.Rules))
	}
	for i, rule := range r.Spec.Rules {
		validateRewriteRule(rules.Index(i), rule, &es)
	}
	return es
}

func validateRewriteRule(path *field.Path, rule infv1alpha2.InferenceModelRewriteRule, es *Errors) {
	matches := path.Child("matches")
	if len(rule.Matches) > MaxRewriteMatches {
		es.add(matches.String(), "must have at most %d matches, has %d", MaxRewriteMatches, len(rule.Matches))
	}
	for i, m := range rule.Matches {
		mp := matches.Index(i).Child("model")
		if m.Model.Type != nil && *m.Model.Type != infv1alpha2.MatchExact {
			es.add(mp.Child("type").String(), "unsupported value %q: must be %q", *m.Model.Type, infv1alpha2.MatchExact)
		}
		validateModelName(mp.Child("value"), m.Model.Value, es)
	}

	targets := path.Child("targets")
	switch {
	case len(rule.Targets) == 0:
		es.add(targets.String(), "must have at least 1 target")
	case len(rule.Targets) > MaxRewriteTargets:
		es.add(targets.String(), "must have at most %d targets, has %d", MaxRewriteTargets, len(rule.Targets))
	}
	weighted := 0
	for i, t := range rule.Targets {
		tp := targets.Index(i)
		validateModelName(tp.Child("modelRewrite"), t.ModelRewrite, es)
		if t.Weight == nil {
			continue
		}
		weighted++
		if *t.Weight < 1 || *t.Weight > MaxTargetWeight {
			es.add(tp.Child("weight").String(), "weight %d out of range 1-%d", *t.Weight, MaxTargetWeight)
		}
	}
	// CEL: weights must be set on all targets or on none.
	if weighted != 0 && weighted != len(rule.Targets) {
		es.add(targets.String(), "weights must be set on all targets or on none (%d of %d have one)", weighted, len(rule.Targets))
	}
}

func validateModelName(path *field.Path, name string, es *Errors) {
	switch {
	case name == "":
		es.add(path.String(), "required")
	case len(name) > maxModelNameLen:
		es.add(path.String(), "must be at most %d characters, has %d", maxModelNameLen, len(name))
	}
}
