package main

import (
	"github.com/spf13/pflag"

	"github.com/infergw/infergw/kvroute"
)

// kvFlags turn on precise prefix routing from the model servers' KV events.
type kvFlags struct {
	bind       string
	connect    []string
	tokenizers []string
}

func (k *kvFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&k.bind, "kv-events-bind", "",
		"ZMQ endpoint the model servers' KV-event publishers connect to (vLLM --kv-events-config endpoint), e.g. tcp://0.0.0.0:5557; turns on the precise-prefix scorer")
	fl.StringSliceVar(&k.connect, "kv-events-connect", nil,
		"ZMQ endpoints of publishers that bind (vLLM with '*' in its endpoint); repeatable")
	fl.StringSliceVar(&k.tokenizers, "kv-tokenizer", nil,
		"directory with the model's tokenizer.json and tokenizer_config.json, as DIR (every model) or MODEL=DIR; repeatable")
}

func (k *kvFlags) enabled() bool { return k.bind != "" || len(k.connect) > 0 }

func (k *kvFlags) options() (kvroute.Options, error) {
	tk, err := kvroute.ParseTokenizers(k.tokenizers)
	if err != nil {
		return kvroute.Options{}, err
	}
	return kvroute.Options{Bind: k.bind, Connect: k.connect, Tokenizers: tk}, nil
}
