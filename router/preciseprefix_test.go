package router

import (
	"fmt"
	"slices"
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
	// ends records each watcher's PrefillEnded calls ("host first-token|failed").
	ends []string
}

// fakeWatch is the fake source's PrefillWatcher for one Sent.
type fakeWatch struct {
	f    *fakeSource
	host string
}

func (w *fakeWatch) PrefillEnded(firstToken bool) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	v := "failed"
	if firstToken {
		v = "first-token"
	}
	w.f.ends = append(w.f.ends, w.host+" "+v)
}

func (f *fakeSource) MatchPrefix(_ *Request, _ bool, hosts []string, hit, total []int, exact []PrefixExactness) any {
	for i, h := range hosts {
		if v, ok := f.table[h]; ok {
			hit[i], total[i], exact[i] = v.hit, v.total, v.exact
		}
	}
	return f
}

func (f *fakeSource) Sent(handle any, host string, hit, total int) PrefillWatcher {
	if handle != f {
		panic("Sent got another handle than MatchPrefix returned")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, fmt.Sprintf("%s %d/%d", host, hit, total))
	return &fakeWatch{f: f, host: host}
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

// TestPrefillWatcherEnds: the Decision tells the source's watcher once how the request
// ended at the primary: a first byte from it is a first token; an error status, no
// response, an answer from another endpoint (the proxy retried) or the end of the request
// without a byte (cancelled) is a failure, told at once.
func TestPrefillWatcherEnds(t *testing.T) {
	const primary = "10.0.0.2"
	cases := []struct {
		name string
		run  func(d *Decision)
		want string
	}{
		{"first byte", func(d *Decision) { d.ResponseHeaders(200, primary+":8000"); d.FirstByte() }, "first-token"},
		{"first byte, headers unreported", func(d *Decision) { d.FirstByte() }, "first-token"},
		{"5xx", func(d *Decision) { d.ResponseHeaders(503, ""); d.FirstByte() }, "failed"},
		{"4xx", func(d *Decision) { d.ResponseHeaders(400, ""); d.FirstByte() }, "failed"},
		{"retried on another endpoint", func(d *Decision) { d.ResponseHeaders(200, "10.0.0.1:8000"); d.FirstByte() }, "failed"},
		{"no response", func(d *Decision) { d.NoResponse() }, "failed"},
		{"cancelled after headers", func(d *Decision) { d.ResponseHeaders(200, primary+":8000") }, "failed"},
		{"cancelled before headers", func(*Decision) {}, "failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := &fakeSource{table: map[string]struct {
				hit, total int
				exact      PrefixExactness
			}{"10.0.0.1": {0, 10, PrefixExact}, primary: {5, 10, PrefixExact}}}
			r, _ := newTestRouter(t, func(cfg *Config) {
				cfg.Scheduler = preciseOnly()
				cfg.Plugins = registryWith(t, src)
			})
			installPool(r, "ns/p", []*endpoint{
				staticEndpoint("10.0.0.1:8000", metricsState{}), staticEndpoint(primary+":8000", metricsState{})})
			d := mustPick(t, r, &Request{Pool: "ns/p", Model: "m", Prompt: []byte("p"), Body: []byte("{}"), Stream: true})
			if d.Endpoints[0] != primary+":8000" {
				t.Fatalf("picked %v", d.Endpoints)
			}
			c.run(d)
			d.Done()
			d.FirstByte() // reports after the end change nothing
			d.Done()
			if want := []string{primary + " " + c.want}; !slices.Equal(src.ends, want) {
				t.Fatalf("ends %q, want %q", src.ends, want)
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
