package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvroute"
)

// kvFollowPeriod is how often the KV-event subscriber follows the pools' pods (dials new
// ones with --kv-events-pod-port, forgets the index entries of departed ones).
const kvFollowPeriod = 2 * time.Second

// kvFlags turn on precise prefix routing from the model servers' KV events.
type kvFlags struct {
	bind       string
	connect    []string
	podPort    int
	replayPort int
	tokenizers []string
	specTTL    time.Duration
	specGrace  time.Duration
}

func (k *kvFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&k.bind, "kv-events-bind", "",
		"ZMQ endpoint the model servers' KV-event publishers connect to (vLLM --kv-events-config endpoint), e.g. tcp://0.0.0.0:5557; turns on the precise-prefix scorer")
	fl.StringSliceVar(&k.connect, "kv-events-connect", nil,
		"ZMQ endpoints of publishers that bind (vLLM with '*' in its endpoint); repeatable")
	fl.IntVar(&k.podPort, "kv-events-pod-port", 0,
		"dial every pod of the picker's pools at this port (vLLM publishing with endpoint tcp://*:PORT): each picker replica then hears every pod")
	fl.IntVar(&k.replayPort, "kv-events-replay-port", 0,
		"the pods' KV-event replay port (vLLM --kv-events-config replay_endpoint tcp://*:PORT): a pod first heard mid-stream, as after a picker restart, is replayed from its publisher's buffer")
	fl.DurationVar(&k.specTTL, "kv-speculation-ttl", kvindex.DefaultSpeculationTTL,
		"backstop for the blocks a request routed to a pod counts as the pod's before its KV events confirm them: they count until a BlockStored confirms them, the request's first token (+ --kv-speculation-grace) or its failure; this bounds them when the picker never learns the request's end")
	fl.DurationVar(&k.specGrace, "kv-speculation-grace", kvindex.DefaultSpeculationGrace,
		"how long a request's speculative blocks outlive its first token, for the KV events of the engine step that finished its prefill to arrive (raise it when the events' path is slower than a few engine steps)")
	fl.StringSliceVar(&k.tokenizers, "kv-tokenizer", nil,
		"directory with the model's tokenizer.json and tokenizer_config.json, as DIR (every model) or MODEL=DIR; repeatable")
}

func (k *kvFlags) enabled() bool { return k.bind != "" || len(k.connect) > 0 || k.podPort > 0 }

func (k *kvFlags) options() (kvroute.Options, error) {
	tk, err := kvroute.ParseTokenizers(k.tokenizers)
	if err != nil {
		return kvroute.Options{}, err
	}
	if k.podPort < 0 || k.podPort > 65535 {
		return kvroute.Options{}, fmt.Errorf("--kv-events-pod-port %d out of range", k.podPort)
	}
	if k.replayPort < 0 || k.replayPort > 65535 {
		return kvroute.Options{}, fmt.Errorf("--kv-events-replay-port %d out of range", k.replayPort)
	}
	if k.specTTL <= 0 {
		return kvroute.Options{}, fmt.Errorf("--kv-speculation-ttl %s: must be positive", k.specTTL)
	}
	if k.specGrace <= 0 || k.specGrace > k.specTTL {
		return kvroute.Options{}, fmt.Errorf("--kv-speculation-grace %s: must be positive and at most --kv-speculation-ttl (%s)", k.specGrace, k.specTTL)
	}
	return kvroute.Options{Bind: k.bind, Connect: k.connect, PodPort: k.podPort, ReplayPort: k.replayPort, Tokenizers: tk,
		Index: kvindex.Config{SpeculationTTL: k.specTTL, SpeculationGrace: k.specGrace}}, nil
}
