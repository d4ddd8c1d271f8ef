package loadtest

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseThreshold(t *testing.T) {
	for in, want := range map[string]Threshold{
		"ttft_p95<500ms":      {Metric: "ttft_p95", Op: "<", Value: 500},
		"ttft_p99.9 <= 1.5s":  {Metric: "ttft_p99.9", Op: "<=", Value: 1500},
		"tpot_p50<50":         {Metric: "tpot_p50", Op: "<", Value: 50},
		"e2e_max<250us":       {Metric: "e2e_max", Op: "<", Value: 0.25},
		"error_rate<0.01":     {Metric: "error_rate", Op: "<", Value: 0.01},
		"request_rate>=100":   {Metric: "request_rate", Op: ">=", Value: 100},
		"dropped==0":          {Metric: "dropped", Op: "==", Value: 0},
		"lag_p99<2ms":         {Metric: "lag_p99", Op: "<", Value: 2},
		"goodput_ratio > 0.9": {Metric: "goodput_ratio", Op: ">", Value: 0.9},
	} {
		got, err := ParseThreshold(in)
		want.Expr = strings.TrimSpace(in)
		if err != nil || got != want {
			t.Errorf("ParseThreshold(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ttft_p95", "ttft_p42<5ms", "nope<1", "error_rate<1ms", "ttft_p95<fast", "<5", "ttft_p95<NaN"} {
		if _, err := ParseThreshold(bad); err == nil {
			t.Errorf("ParseThreshold(%q) accepted", bad)
		}
	}
}

func TestThresholdCheck(t *testing.T) {
	s := &Summary{TTFT: Latency{P95: 400}, ErrorRate: 0.02}
	for expr, pass := range map[string]bool{
		"ttft_p95<500ms": true, "ttft_p95<0.3s": false, "error_rate<0.01": false, "error_rate<=0.02": true, "ttft_p95!=400": false,
	} {
		th, err := ParseThreshold(expr)
		if err != nil {
			t.Fatal(err)
		}
		if r := th.Check(s); r.Passed != pass {
			t.Errorf("%s on %+v: passed=%v, want %v", expr, s.TTFT, r.Passed, pass)
		}
	}
}

// FuzzParseThreshold: no panic; an accepted expression parses again to the same threshold.
func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"ttft_p95<500ms", "error_rate<0.01", "e2e_p99.9>=2s", "lag_max==1us", "x<"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		th, err := ParseThreshold(in)
		if err != nil {
			return
		}
		again, err := ParseThreshold(th.Expr)
		if err != nil || again != th {
			t.Fatalf("%q parsed to %+v, re-parse %+v %v", in, th, again, err)
		}
		_ = th.Check(&Summary{})
	})
}

// FuzzAppendJSONString: the encoder always produces JSON that decodes to the input (with
// invalid UTF-8 replaced).
func FuzzAppendJSONString(f *testing.F) {
	f.Add("plain")
	f.Add("quote \" backslash \\ newline \n tab \t ctrl \x01 unicode é 🚀")
	f.Add("bad \xff utf8")
	f.Fuzz(func(t *testing.T, in string) {
		var out string
		if err := json.Unmarshal(appendJSONString(nil, in), &out); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if utf8.ValidString(in) && out != in {
			t.Fatalf("round trip %q -> %q", in, out)
		}
	})
}
