package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/infergw/infergw/kvindex"
)

// TestKVSpeculationTTLFlag: the flag reaches the index's config, defaults to the index's
// default, and a TTL that is not positive is refused.
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
}
