package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/infergw/infergw/kvindex"
)

// TestKVSpeculationTTLFlag: the TTL and grace flags reach the index's config, default to
// the index's defaults, and a TTL or grace that is not positive, or a grace past the TTL,
// is refused.
func TestKVSpeculationTTLFlag(t *testing.T) {
	parse := func(args ...string) (*kvFlags, error) {
		var k kvFlags
		fl := pflag.NewFlagSet("t", pflag.ContinueOnError)
		k.register(fl)
		return &k, fl.Parse(append([]string{"--kv-events-bind", "tcp://127.0.0.1:0", "--kv-tokenizer", "dir"}, args...))
	}
	k, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if o, err := k.options(); err != nil || o.Index.SpeculationTTL != kvindex.DefaultSpeculationTTL {
		t.Fatalf("default: %v %v", o.Index.SpeculationTTL, err)
	}
	k, _ = parse("--kv-speculation-ttl", "5s")
	if o, err := k.options(); err != nil || o.Index.SpeculationTTL != 5*time.Second {
		t.Fatalf("5s: %v %v", o.Index.SpeculationTTL, err)
	}
	k, _ = parse("--kv-speculation-ttl", "0s")
	if _, err := k.options(); err == nil {
		t.Fatal("a zero TTL accepted")
	}
	if o, _ := parse(); o != nil {
		if opts, err := o.options(); err != nil || opts.Index.SpeculationGrace != kvindex.DefaultSpeculationGrace {
			t.Fatalf("default grace: %v %v", opts.Index.SpeculationGrace, err)
		}
	}
	k, _ = parse("--kv-speculation-grace", "2s")
	if o, err := k.options(); err != nil || o.Index.SpeculationGrace != 2*time.Second {
		t.Fatalf("grace 2s: %v %v", o.Index.SpeculationGrace, err)
	}
	for _, bad := range [][]string{{"--kv-speculation-grace", "0s"}, {"--kv-speculation-ttl", "1s", "--kv-speculation-grace", "2s"}} {
		k, _ = parse(bad...)
		if _, err := k.options(); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}
