package loadtest

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseMooncake(t *testing.T) {
	// Out of order on purpose: replay follows the timestamps, equal ones keep file order.
	in := `{"timestamp": 1500, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]}
{"timestamp": 1000, "input_length": 600, "output_length": 3, "hash_ids": [1, 3]}

{"timestamp": 1500, "input_length": 10, "output_length": 0, "hash_ids": [9]}
`
	got, err := parseMooncake(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []traceEntry{
		{at: 0, input: 600, output: 3, hashIDs: []uint64{1, 3}},
		{at: 500 * time.Millisecond, input: 700, output: 5, hashIDs: []uint64{1, 2}},
		{at: 500 * time.Millisecond, input: 10, output: 0, hashIDs: []uint64{9}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.at != w.at || g.input != w.input || g.output != w.output || !equalIDs(g.hashIDs, w.hashIDs) {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}

	for name, tc := range map[string]struct{ in, want string }{
		"bad json":          {`{"timestamp": 1, "input_length": 2,` + "\n", "line 1"},
		"missing length":    {`{"timestamp": 1, "input_length": 2}`, "line 1: want timestamp, input_length and output_length"},
		"negative time":     {`{"timestamp": -1, "input_length": 2, "output_length": 1}`, "timestamp"},
		"zero input":        {`{"timestamp": 1, "input_length": 0, "output_length": 1}`, "lengths"},
		"huge output":       {`{"timestamp": 1, "input_length": 1, "output_length": 1000001}`, "lengths"},
		"too many hash_ids": {`{"timestamp": 1, "input_length": 513, "output_length": 1, "hash_ids": [1,2,3]}`, "3 hash_ids for 513 input tokens"},
		"nan-like":          {`{"timestamp": 1e400, "input_length": 1, "output_length": 1}`, "line 1"},
		"empty":             {"\n\n", "no request"},
		"second line":       {`{"timestamp": 1, "input_length": 1, "output_length": 1}` + "\n" + `[]`, "line 2"},
		"line too long":     {`{"timestamp": 1, "input_length": 1, "output_length": 1, "x": "` + strings.Repeat("a", maxTraceLineBytes) + `"}`, "longer than"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseMooncake(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseAzureTrace(t *testing.T) {
	in := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:15:46.6805900,374,44\n" +
		"2023-11-16 18:15:50.9951690,396,109\n" +
		"2023-11-16 18:15:46.7805900,879,0\n"
	got, err := parseAzureTrace(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].at != 0 || got[0].input != 374 || got[0].output != 44 ||
		got[1].at != 100*time.Millisecond || got[1].input != 879 ||
		got[2].at != 4314579*time.Microsecond || got[2].output != 109 {
		t.Errorf("entries %+v", got)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"no columns": {"a,b\n1,2\n", "want TIMESTAMP, ContextTokens and GeneratedTokens"},
		"bad time":   {"TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n", "row 2: TIMESTAMP"},
		"bad count":  {"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,x,1\n", "row 2: ContextTokens"},
		"empty":      {"TIMESTAMP,ContextTokens,GeneratedTokens\n", "no request"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseAzureTrace(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestTracePromptsSharePrefixesByHashID: requests with the same leading hash ids share
// exactly those blocks' words (512 per id) and nothing after; lengths follow the trace.
func TestTracePromptsSharePrefixesByHashID(t *testing.T) {
	p := writeFile(t, "t.jsonl", `{"timestamp": 0, "input_length": 1200, "output_length": 7, "hash_ids": [5, 6, 7]}
{"timestamp": 1, "input_length": 1100, "output_length": 9, "hash_ids": [5, 6, 8]}
{"timestamp": 2, "input_length": 300, "output_length": 1, "hash_ids": [6]}
{"timestamp": 3, "input_length": 40, "output_length": 2}
`)
	g, err := newGenerator(WorkloadConfig{Kind: "trace", TraceFile: p}, []WeightedModel{{Name: "m", Weight: 1}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var words [][]string
	for i := 0; i < 4; i++ {
		r := g.Next()
		words = append(words, strings.Fields(r.Messages[0].Content))
	}
	for i, want := range []int{1200, 1100, 300, 40} {
		if len(words[i]) != want {
			t.Errorf("request %d: %d words, want %d", i, len(words[i]), want)
		}
	}
	if common := commonPrefix(words[0], words[1]); common < 1024 || common > 1030 {
		// Two shared blocks (1024 words); the next block differs (a chance match of a few
		// words from the 300-word vocabulary is possible, a long one is not).
		t.Errorf("requests 0 and 1 share %d leading words, want the 1024 of hash ids [5, 6]", common)
	}
	// Block 6 at position 0 is the same text as block 6 at position 1.
	if strings.Join(words[2], " ") != strings.Join(words[0][512:812], " ") {
		t.Error("hash id 6 alone does not start with the words hash id 6 stands for in request 0")
	}
	if commonPrefix(words[0], words[3]) > 5 {
		t.Error("a request without hash ids shares a prefix with another")
	}
}

func commonPrefix(a, b []string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestTraceReplayTiming replays a known trace at 2x speed against a real server: every
// request starts on its scheduled instant (its timestamp halved), the output lengths are
// the trace's, and the run ends with the trace.
func TestTraceReplayTiming(t *testing.T) {
	ts := startTimingServer(t, "known")
	stamps := []float64{0, 40, 40, 100, 250, 260, 600, 610, 900}
	var b strings.Builder
	for i, ms := range stamps {
		b.WriteString(`{"timestamp": ` + ftoa(1000+ms) + `, "input_length": ` + itoa(20+i) + `, "output_length": ` + itoa(3+i) + "}\n")
	}
	p := writeFile(t, "trace.jsonl", b.String())
	var log bytes.Buffer
	cfg := testConfig(ts.url)
	cfg.Workload = WorkloadConfig{Kind: "trace", TraceFile: p, TimeScale: 2}
	cfg.RequestLog = &log
	s, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Schedule.Started != int64(len(stamps)) || s.Failed != 0 || s.Setup.Mode != "open" {
		t.Fatalf("started %d failed %d mode %s, want %d, 0, open", s.Schedule.Started, s.Failed, s.Setup.Mode, len(stamps))
	}
	// The schedule spans the trace: the last arrival (450 ms at 2x) ends it.
	if math.Abs(s.ScheduleS-0.45) > 0.05 {
		t.Errorf("schedule %.3fs, want about 0.45s", s.ScheduleS)
	}
	results := readNDJSON(t, log.Bytes())
	if len(results) != len(stamps) {
		t.Fatalf("%d results", len(results))
	}
	var offs []float64
	for _, r := range results {
		offs = append(offs, r.StartMs-r.LagMs)
	}
	for i, want := range stamps {
		found := false
		for j, off := range offs {
			if math.Abs(off-want/2) < 0.001 {
				offs = append(offs[:j], offs[j+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no request scheduled at %.1f ms (trace entry %d)", want/2, i)
		}
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
func itoa(i int) string     { return strconv.Itoa(i) }

func TestTraceDroppedArrivalKeepsAlignment(t *testing.T) {
	p := writeFile(t, "t.jsonl", `{"timestamp": 0, "input_length": 1, "output_length": 1}
{"timestamp": 1, "input_length": 2, "output_length": 2}
{"timestamp": 2, "input_length": 3, "output_length": 3}
`)
	g, err := newGenerator(WorkloadConfig{Kind: "trace", TraceFile: p}, []WeightedModel{{Name: "m", Weight: 1}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r := g.Next(); r.MaxTokens != 1 {
		t.Fatalf("first request max_tokens %d", r.MaxTokens)
	}
	g.skipArrival() // the second arrival was dropped
	if r := g.Next(); r.MaxTokens != 3 || r.InputTokens != 3 {
		t.Errorf("after a dropped arrival: max_tokens %d input %d, want the third entry's 3 and 3", r.MaxTokens, r.InputTokens)
	}
}

func TestTraceConfigErrors(t *testing.T) {
	p := writeFile(t, "t.jsonl", `{"timestamp": 0, "input_length": 1, "output_length": 1}`+"\n")
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"rate":           {func(c *Config) { c.Rate = 5 }, "sets its own schedule"},
		"vus":            {func(c *Config) { c.VUs = 2 }, "sets its own schedule"},
		"bad scale":      {func(c *Config) { c.Workload.TimeScale = -1 }, "time scale"},
		"scale no trace": {func(c *Config) { c.Workload = WorkloadConfig{TimeScale: 2} }, "only to --trace"},
		"unknown ext":    {func(c *Config) { c.Workload.TraceFile = writeFile(t, "t.txt", "x") }, "--trace-format"},
		"bad format":     {func(c *Config) { c.Workload.TraceFormat = "sharegpt" }, `format "sharegpt"`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1")
			cfg.Workload = WorkloadConfig{Kind: "trace", TraceFile: p}
			tc.mod(&cfg)
			_, err := Run(context.Background(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzParseMooncake(f *testing.F) {
	f.Add([]byte(`{"timestamp": 10, "input_length": 600, "output_length": 3, "hash_ids": [1, 3]}` + "\n" + `{"timestamp": 5, "input_length": 1, "output_length": 0}`))
	f.Add([]byte(`{"timestamp": 1e308, "input_length": 1, "output_length": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkTrace(t, parseMooncake, b)
	})
}

func FuzzParseAzureTrace(f *testing.F) {
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:45,1,1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkTrace(t, parseAzureTrace, b)
	})
}

// checkTrace: a parser never panics, and an accepted trace is ordered, starts at 0 and
// holds lengths within the bounds.
func checkTrace(t *testing.T, parse func(r io.Reader) ([]traceEntry, error), b []byte) {
	entries, err := parse(bytes.NewReader(b))
	if err != nil {
		return
	}
	if len(entries) == 0 || entries[0].at != 0 {
		t.Fatalf("accepted trace starts at %v with %d entries", entries[0].at, len(entries))
	}
	for i, e := range entries {
		if i > 0 && e.at < entries[i-1].at {
			t.Fatalf("entry %d at %v before entry %d at %v", i, e.at, i-1, entries[i-1].at)
		}
		if e.input < 1 || e.input > maxTraceTokens || e.output < 0 || e.output > maxTraceTokens {
			t.Fatalf("entry %d lengths %d/%d out of bounds", i, e.input, e.output)
		}
	}
}
