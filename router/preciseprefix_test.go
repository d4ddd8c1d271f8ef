package router

import (
	"fmt"
	"sync"
	"testing"
)

// fakeSource answers the precise scorer from a fixed table: the router's side of the
// contract is tested here, the real source (kvroute over real events) in its package.
type fakeSource struct {
	mu    sync.Mutex
	table map[string]struct {
		hit, total int
		exact      PrefixExactness
	}
	sent []string
}

func (f *fakeSource) MatchPrefix(_ *Request, _ bool, hosts []string, hit, total []int, exact []PrefixExactness) any {
	for i, h := range hosts {
		if v, ok := f.table[h]; ok {
			hit[i], total[i], exact[i] = v.hit, v.total, v.exact
		}
	}
	return f
}

func (f *fakeSource) Sent(handle any, host string, hit, total int) {
	if handle != f {
		panic("Sent got another handle than MatchPrefix returned")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, fmt.Sprintf("%s %d/%d", host, hit, total))
}

func preciseOnly() SchedulerConfig {
	c := DefaultSchedulerConfig()
	c.Scorers = []PluginSpec{{Type: TypePrecisePrefixScorer, Name: ScorerPrecisePrefix, Weight: 1}}
	return c
}

func registryWith(t testing.TB, src PrefixSource) *Registry {
	reg := NewRegistry()
	if err := reg.Register(PrecisePrefixType(src)); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestPrecisePrefixScorer(t *testing.T) {
	type row = struct {
		hit, total int
		exact      PrefixExactness
	}
	prompt := []byte(stringsRepeat("You are a helpful assistant. ", 100))
	cases := []struct {
		name  string
		table map[string]row
		want  string // primary after a first request went (approximately) to 10.0.0.1
	}{
		{"exact events beat the guess", map[string]row{
			"10.0.0.1": {0, 10, PrefixExact}, "10.0.0.2": {10, 10, PrefixExact}, "10.0.0.3": {0, 10, PrefixExact},
		}, "10.0.0.2:8000"},
		{"exact absence beats the guess", map[string]row{
			"10.0.0.1": {0, 10, PrefixExact}, "10.0.0.2": {3, 10, PrefixExact},
		}, "10.0.0.2:8000"},
		{"no events: the approximate scorer decides", map[string]row{}, "10.0.0.1:8000"},
		{"a lower bound below the guess keeps the guess", map[string]row{
			"10.0.0.1": {1, 10, PrefixAtLeast}, "10.0.0.2": {5, 10, PrefixAtLeast},
		}, "10.0.0.1:8000"},
		{"a lower bound above the guess wins", map[string]row{
			"10.0.0.1": {0, 10, PrefixExact}, "10.0.0.3": {9, 10, PrefixAtLeast},
		}, "10.0.0.3:8000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := &fakeSource{table: map[string]row{}}
			r, _ := newTestRouter(t, func(cfg *Config) {
				cfg.Scheduler = preciseOnly()
				cfg.Plugins = registryWith(t, src)
			})
			var eps []*endpoint
			for i := 1; i <= 3; i++ {
				eps = append(eps, staticEndpoint(fmt.Sprintf("10.0.0.%d:8000", i), metricsState{}))
			}
			installPool(r, "ns/p", eps)
			// Teach the approximate LRU that 10.0.0.1 has the prompt.
			eps[0].prefix.add(hashPrefixBlocks(nil, "m", prompt, int(eps[0].prefixSpan.Load())))
			src.table = c.table
			d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: prompt, Body: []byte("{}")})
			d.Done()
			if d.Endpoints[0] != c.want {
				t.Fatalf("picked %s, want %s (scores %+v)", d.Endpoints[0], c.want, d.Scores)
			}
			if len(c.table) > 0 {
				v, ok := c.table[hostOf(c.want)]
				if ok && (len(src.sent) != 1 || src.sent[0] != fmt.Sprintf("%s %d/%d", hostOf(c.want), v.hit, v.total)) {
					t.Fatalf("Sent calls %v", src.sent)
				}
			}
		})
	}
}

func TestPrecisePrefixParsesAndValidates(t *testing.T) {
	if _, err := NewRegistry().ParseSchedulerConfig([]byte("scorers:\n- name: precise-prefix\n")); err == nil {
		t.Fatal("precise-prefix accepted without being registered")
	}
	plugins := registryWith(t, nil)
	cfg, err := plugins.ParseSchedulerConfig([]byte("scorers:\n- name: precise-prefix\n  weight: 3\n- name: queue\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scorers[0].Type != TypePrecisePrefixScorer || cfg.Scorers[0].Weight != 3 {
		t.Fatalf("%+v", cfg.Scorers)
	}
	// GIE's format names it by type.
	if _, err := plugins.ParseSchedulerConfig([]byte(`apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-scorer
  parameters: {maxPrefixBlocksToMatch: 64}
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
    weight: 2
  - pluginRef: max-score-picker
`)); err != nil {
		t.Fatalf("GIE format: %v", err)
	}
	pc, err := PolicyConfig("precise")
	if err != nil || plugins.Validate(pc) != nil {
		t.Fatalf("precise policy: %v %v", err, plugins.Validate(pc))
	}
	// Without a source the scorer is the approximate one: a pick still works.
	r, _ := newTestRouter(t, func(c *Config) { c.Scheduler, c.Plugins = cfg, plugins })
	installPool(r, "ns/p", []*endpoint{staticEndpoint("10.0.0.1:8000", metricsState{})})
	d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: []byte(stringsRepeat("x", 200))})
	d.Done()
}

func TestHostOf(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1:8000": "10.0.0.1", "[fd00::1]:8000": "fd00::1", "host": "host"} {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}
