package router

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// libraryParse is the Prometheus text parser's answer, the reference the memo is held to.
func libraryParse(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

func sameFamilies(a, b map[string]*dto.MetricFamily) bool {
	if len(a) != len(b) {
		return false
	}
	for name, fa := range a {
		if fb, ok := b[name]; !ok || !proto.Equal(fa, fb) {
			return false
		}
	}
	return true
}

// memoFrom builds a memo the way a scrape does: from a text the parser accepted.
func memoFrom(t testing.TB, text string) *expositionMemo {
	t.Helper()
	fams, err := libraryParse(text)
	if err != nil {
		t.Fatalf("library parse: %v", err)
	}
	var m expositionMemo
	m.build([]byte(text), fams)
	return &m
}

// simKept is the part of the simulator's exposition a vLLM scrape keeps.
func simKept(t testing.TB) string {
	t.Helper()
	return string(keepFamilies(nil, []byte(readTestdata(t, "vllm-sim.txt")), engineVLLM.families()))
}

func TestExpositionMemoReusesWhenOnlyValuesChange(t *testing.T) {
	for _, file := range []string{"vllm-sim.txt", "vllm-0.32-cpu-lora-running.txt", "vllm.txt"} {
		kept := string(keepFamilies(nil, []byte(readTestdata(t, file)), engineVLLM.families()))
		m := memoFrom(t, kept)
		if !m.valid {
			t.Fatalf("%s: no memo from the kept lines:\n%s", file, kept)
		}
		// Every gauge's value changes, as between two scrapes of a busy server.
		var b strings.Builder
		for _, line := range strings.SplitAfter(kept, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				b.WriteString(line)
				continue
			}
			i := strings.LastIndexAny(line, " \t")
			b.WriteString(line[:i+1] + "0.25e1\n")
		}
		next := b.String()
		got, ok := m.reuse([]byte(next))
		if !ok {
			t.Fatalf("%s: values changed only, memo not reused:\n%s", file, next)
		}
		want, err := libraryParse(next)
		if err != nil {
			t.Fatal(err)
		}
		if !sameFamilies(got, want) {
			t.Fatalf("%s: memo %v, library %v", file, got, want)
		}
		for name, mf := range got {
			for _, s := range mf.GetMetric() {
				if v := *sampleValuePtr(mf.GetType(), s); v != 2.5 {
					t.Fatalf("%s: %s = %v after reuse, want 2.5", file, name, v)
				}
			}
		}
	}
}

func TestExpositionMemoRefusesStructuralChanges(t *testing.T) {
	kept := simKept(t)
	lines := strings.SplitAfter(kept, "\n")
	lastSample := -1
	for i, l := range lines {
		if l != "" && !strings.HasPrefix(l, "#") {
			lastSample = i
		}
	}
	if lastSample < 0 {
		t.Fatal("no sample line in the simulator's kept exposition")
	}
	edit := func(f func([]string) []string) string {
		return strings.Join(f(append([]string(nil), lines...)), "")
	}
	for name, text := range map[string]string{
		"a label value": strings.Replace(kept, `block_size="16"`, `block_size="32"`, 1),
		"a TYPE line":   strings.Replace(kept, "# TYPE vllm:num_requests_running gauge", "# TYPE vllm:num_requests_running counter", 1),
		"a line less":   edit(func(l []string) []string { return append(l[:lastSample], l[lastSample+1:]...) }),
		"a line more":   kept + `vllm:num_requests_running{engine="1",model_name="m"} 3` + "\n",
		"a timestamp": edit(func(l []string) []string {
			l[lastSample] = strings.TrimSuffix(l[lastSample], "\n") + " 1700000000000\n"
			return l
		}),
		"a hex float": edit(func(l []string) []string {
			l[lastSample] = l[lastSample][:strings.LastIndex(l[lastSample], " ")+1] + "0x1p3\n"
			return l
		}),
		"not a number": edit(func(l []string) []string {
			l[lastSample] = l[lastSample][:strings.LastIndex(l[lastSample], " ")+1] + "busy\n"
			return l
		}),
		"no value": edit(func(l []string) []string {
			l[lastSample] = l[lastSample][:strings.LastIndex(l[lastSample], " ")+1] + "\n"
			return l
		}),
		"empty": "",
		// The parser refuses a last line without its newline (found by FuzzExpositionMemo).
		"no final newline": strings.TrimSuffix(kept, "\n"),
	} {
		m := memoFrom(t, kept)
		if _, ok := m.reuse([]byte(text)); ok {
			t.Errorf("%s: memo reused for a text the parser must read", name)
		}
	}
}

func TestExpositionMemoOnlyForOneLineSamples(t *testing.T) {
	for name, text := range map[string]string{
		"histogram": "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
		"summary":   "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n",
		"timestamp": "# TYPE g gauge\ng 1 1700000000000\n",
	} {
		if m := memoFrom(t, text); m.valid {
			t.Errorf("%s: memo made of a text with multi-line or timestamped samples", name)
		}
	}
	m := memoFrom(t, "# TYPE g gauge\ng{a=\"x y\"} 1\ng{a=\"z\"} NaN\nuntyped_one 7\n")
	if !m.valid {
		t.Fatal("no memo for plain gauge and untyped samples")
	}
	got, ok := m.reuse([]byte("# TYPE g gauge\ng{a=\"x y\"} +Inf\ng{a=\"z\"} -3\nuntyped_one 8\n"))
	want, err := libraryParse("# TYPE g gauge\ng{a=\"x y\"} +Inf\ng{a=\"z\"} -3\nuntyped_one 8\n")
	if !ok || err != nil || !sameFamilies(got, want) {
		t.Fatalf("reuse ok=%v: %v, library (err %v) %v", ok, got, err, want)
	}
}

// TestParseKeptFallsBackToTheParser: the scrape's parse step reads changed values through
// the memo, and an exposition that breaks fails the scrape and drops the memo instead of
// being answered from it.
func TestParseKeptFallsBackToTheParser(t *testing.T) {
	kept := simKept(t)
	var bufs scrapeBuffers
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parse := func(text string) (map[string]*dto.MetricFamily, error) {
		bufs.kept.Reset()
		bufs.kept.WriteString(text)
		return bufs.parseKept(&parser)
	}
	if _, err := parse(kept); err != nil || !bufs.memo.valid {
		t.Fatalf("first parse: %v (memo valid %v)", err, bufs.memo.valid)
	}
	busy := strings.Replace(kept, `vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0`,
		`vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 42`, 1)
	if busy == kept {
		t.Fatal("the simulator's exposition has no idle num_requests_waiting line to change")
	}
	fams, err := parse(busy)
	if err != nil {
		t.Fatal(err)
	}
	var m metricsState
	if !extractMetrics(engineVLLM, fams, &m) || m.waiting != 42 {
		t.Fatalf("waiting = %v after the memo's parse, want 42", m.waiting)
	}
	if _, err := parse(strings.Replace(kept, "# TYPE vllm:num_requests_waiting gauge", "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{", 1)); err == nil {
		t.Fatal("a broken exposition parsed")
	}
	if bufs.memo.valid {
		t.Fatal("memo kept after a failed parse")
	}
	if fams, err := parse(kept); err != nil || !extractMetrics(engineVLLM, fams, &m) || m.waiting != 0 {
		t.Fatalf("parse after the failure: %v, waiting %v", err, m.waiting)
	}
}

// FuzzExpositionMemo holds the memo to the Prometheus parser: for any text a the parser
// accepts and any text b, when the memo built from a reuses itself for b, the parser must
// accept b and give the same families.
func FuzzExpositionMemo(f *testing.F) {
	kept := simKept(f)
	f.Add(kept, strings.ReplaceAll(kept, " 0\n", " 7\n"))
	f.Add("# TYPE g gauge\ng{a=\"b\"} 1\n", "# TYPE g gauge\ng{a=\"b\"} 2e3\n")
	f.Add("g 1\n", "g 1 2\n")
	f.Add("g{a=\"}\"} 1\n", "g{a=\"}\"} Inf\n")
	f.Add("g 1\ng 2\n", "g 1\ng NaN\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		famsA, err := libraryParse(a)
		if err != nil {
			return
		}
		var m expositionMemo
		m.build([]byte(a), famsA)
		got, ok := m.reuse([]byte(b))
		if !ok {
			return
		}
		want, err := libraryParse(b)
		if err != nil {
			t.Fatalf("memo reused for %q, which the parser refuses: %v", b, err)
		}
		if !sameFamilies(got, want) {
			t.Fatalf("memo for %q gives %v, the parser %v", b, got, want)
		}
	})
}
