package router_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/infergw/infergw/router"
)

// A plugin package as another engineer would write one: a scorer with typed parameters
// and a filter, registered through an exported function into a registry value.

type labelParams struct {
	Label string  `json:"label" doc:"pod label to look for"`
	Bonus float64 `json:"bonus" doc:"score of a candidate with the label"`
}

func (p labelParams) Validate() error {
	if p.Label == "" {
		return errors.New("label must be set")
	}
	if p.Bonus < 0 || p.Bonus > 1 {
		return fmt.Errorf("bonus %v must be in [0, 1]", p.Bonus)
	}
	return nil
}

type labelScorer struct{ p labelParams }

func (s labelScorer) Score(pc *router.PickContext, out []float64) {
	for i := range out {
		out[i] = 0
		if _, ok := pc.Endpoint(i).Labels[s.p.Label]; ok {
			out[i] = s.p.Bonus
		}
	}
}

type dropAllFilter struct{}

func (dropAllFilter) Filter(pc *router.PickContext) { pc.Keep(func(int) bool { return false }) }

func registerLabelPlugins(reg *router.Registry) error {
	return reg.Register(
		router.NewScorerType(router.PluginInfo{Type: "label-scorer", ShortName: "label", DefaultWeight: 5, Doc: "Prefers a label."},
			labelParams{Bonus: 1}, func(p labelParams) (router.Scorer, error) { return labelScorer{p}, nil }),
		router.NewFilterType(router.PluginInfo{Type: "drop-all-filter", Doc: "Drops every candidate."},
			router.NoParams{}, func(router.NoParams) (router.Filter, error) { return dropAllFilter{}, nil }),
	)
}

func TestPluginFromAnotherPackage(t *testing.T) {
	reg := router.NewRegistry()
	if err := registerLabelPlugins(reg); err != nil {
		t.Fatal(err)
	}
	if err := registerLabelPlugins(reg); err == nil || !strings.Contains(err.Error(), `"label-scorer" is taken`) {
		t.Fatalf("second registration: %v", err)
	}
	if router.NewRegistry().Register() != nil {
		t.Fatal("empty Register failed")
	}
	if _, ok := router.NewRegistry().Lookup("label-scorer"); ok {
		t.Fatal("a registration leaked into another registry")
	}

	// Both formats reach it; its parameters are decoded strictly and validated.
	native, err := reg.ParseSchedulerConfig([]byte("filters: []\nscorers: [{name: label, params: {label: fast}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if native.Scorers[0].Weight != 5 {
		t.Fatalf("default weight not applied: %+v", native.Scorers[0])
	}
	if _, err := reg.ParseSchedulerConfig([]byte(`apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: label-scorer, name: fastest, parameters: {label: fast, bonus: 0.5}}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: fastest, weight: 2}]}
`)); err != nil {
		t.Fatal(err)
	}
	for doc, want := range map[string]string{
		"scorers: [{name: label}]":                               "scorers[0]: plugin label (label-scorer): parameters: label must be set",
		"scorers: [{name: label, params: {label: x, bonus: 2}}]": "bonus 2 must be in [0, 1]",
		"scorers: [{name: label, params: {lable: x}}]":           `plugin label (label-scorer): parameters: unknown field "lable"`,
		"scorers: [{name: label, params: {Label: x}}]":           `unknown field "Label"`,
		"filters: [{name: drop-all-filter, params: {x: 1}}]":     `plugin drop-all-filter (drop-all-filter): parameters: unknown field "x"`,
	} {
		if _, err := reg.ParseSchedulerConfig([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", doc, err, want)
		}
	}

	// And it schedules: the labelled endpoint wins every pick (no metrics were scraped from
	// these unreachable addresses, so every other signal is flat).
	cfg := router.DefaultConfig()
	cfg.Plugins, cfg.Scheduler, cfg.Fallbacks = reg, native, 0
	r, err := router.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetPool("ns/p", []router.EndpointSpec{
		{Name: "a", Address: "127.0.0.1:1"},
		{Name: "b", Address: "127.0.0.2:1", Labels: map[string]string{"fast": "yes"}},
		{Name: "c", Address: "127.0.0.3:1"},
	})
	for range 20 {
		d, err := r.Pick(&router.Request{Pool: "ns/p", Model: "m"})
		if err != nil {
			t.Fatal(err)
		}
		if d.Endpoints[0] != "127.0.0.2:1" || d.Scores[0].Name != "label" || d.Scores[0].Score != 1 {
			t.Fatalf("picked %v scores %+v, want the labelled endpoint", d.Endpoints, d.Scores)
		}
		d.Done()
	}

	// A plugin filter that leaves nothing is a 503, not a panic.
	drop, err := reg.ParseSchedulerConfig([]byte("filters: [{name: drop-all-filter}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Scheduler = drop
	r2, err := router.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	r2.SetPool("ns/p", []router.EndpointSpec{{Name: "a", Address: "127.0.0.1:1"}})
	if _, err := r2.Pick(&router.Request{Pool: "ns/p", Model: "m"}); !errors.Is(err, router.ErrNoReadyEndpoint) {
		t.Fatalf("filter left nothing: %v, want ErrNoReadyEndpoint", err)
	}

	// The built-in registry refuses the plugin by name.
	cfg.Plugins = nil
	cfg.Scheduler = native
	if _, err := router.New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), `"label-scorer"`) {
		t.Fatalf("New without the plugin's registration: %v", err)
	}
}

func TestRegisterRefusesBadTypes(t *testing.T) {
	reg := router.NewRegistry()
	for name, pt := range map[string]router.PluginType{
		"empty type":      router.NewScorerType(router.PluginInfo{}, router.NoParams{}, func(router.NoParams) (router.Scorer, error) { return nil, nil }),
		"taken alias":     router.NewScorerType(router.PluginInfo{Type: "x-scorer", Aliases: []string{"queue-scorer"}}, router.NoParams{}, func(router.NoParams) (router.Scorer, error) { return nil, nil }),
		"taken short":     router.NewScorerType(router.PluginInfo{Type: "y-scorer", ShortName: "queue"}, router.NoParams{}, func(router.NoParams) (router.Scorer, error) { return nil, nil }),
		"no kind":         router.NewPluginType(router.PluginInfo{Type: "z"}, router.NoParams{}, func(router.NoParams) (any, error) { return 1, nil }),
		"zero value":      {PluginInfo: router.PluginInfo{Type: "w", Kind: router.KindScorer}},
		"negative weight": router.NewScorerType(router.PluginInfo{Type: "v", DefaultWeight: -1}, router.NoParams{}, func(router.NoParams) (router.Scorer, error) { return nil, nil }),
	} {
		if err := reg.Register(pt); err == nil {
			t.Errorf("%s: registered", name)
		}
	}
	// A short name is per kind: a filter and a scorer may share one.
	if err := reg.Register(router.NewFilterType(router.PluginInfo{Type: "queue-filter", ShortName: "queue"}, router.NoParams{},
		func(router.NoParams) (router.Filter, error) { return dropAllFilter{}, nil })); err != nil {
		t.Fatal(err)
	}
	// A factory that returns nothing is an error when the config is built, not a panic.
	if err := reg.Register(router.NewScorerType(router.PluginInfo{Type: "nil-scorer"}, router.NoParams{},
		func(router.NoParams) (router.Scorer, error) { return nil, nil })); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.ParseSchedulerConfig([]byte("scorers: [{name: nil-scorer, weight: 1}]")); err == nil {
		t.Fatal("a factory returning nil was accepted")
	}
}
