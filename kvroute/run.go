package kvroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
)

// Options configure precise prefix routing in a picker process.
type Options struct {
	// Bind is the endpoint the model servers' publishers connect to ("tcp://0.0.0.0:5557");
	// Connect lists publishers that bind instead. One of them is needed.
	Bind    string
	Connect []string
	// Tokenizers maps a model name to a directory with its tokenizer.json (and
	// tokenizer_config.json for chat); the key "" is used for every other model.
	Tokenizers map[string]string
	// Index bounds the block index (zero: defaults).
	Index kvindex.Config
}

// ParseTokenizers reads "DIR" (every model) and "MODEL=DIR" items.
func ParseTokenizers(items []string) (map[string]string, error) {
	out := make(map[string]string, len(items))
	for _, it := range items {
		model, dir, ok := strings.Cut(it, "=")
		if !ok {
			model, dir = "", it
		}
		if dir == "" {
			return nil, fmt.Errorf("tokenizer %q: empty directory", it)
		}
		if _, dup := out[model]; dup {
			return nil, fmt.Errorf("tokenizer for model %q given twice", model)
		}
		out[model] = dir
	}
	return out, nil
}

// Runtime is a running subscriber feeding an index, and the Source reading it.
type Runtime struct {
	Source *Source
	Index  *kvindex.Index
	Sub    *kvevents.Subscriber
}

// Start loads the tokenizers, builds the index and starts the subscriber.
func Start(ctx context.Context, o Options, log *slog.Logger, reg prometheus.Registerer) (*Runtime, error) {
	if len(o.Tokenizers) == 0 {
		return nil, errors.New("kv events: no tokenizer given (the picker must tokenize prompts as the model servers do)")
	}
	models := make(map[string]*kvprompt.Model, len(o.Tokenizers))
	for name, dir := range o.Tokenizers {
		m, err := kvprompt.Load(dir, runtime.GOMAXPROCS(0))
		if err != nil {
			return nil, err
		}
		if !m.Fast() {
			log.Warn("kv events: this tokenizer takes the library's slow path (tens of ms per 8 KB prompt)", "model", name, "dir", dir)
		}
		models[name] = m
	}
	ix, err := kvindex.New(o.Index, reg)
	if err != nil {
		return nil, err
	}
	src, err := New(ix, models, 0, log, reg)
	if err != nil {
		return nil, err
	}
	sub, err := kvevents.New(kvevents.Config{Bind: o.Bind, Connect: o.Connect}, ix, log, reg)
	if err != nil {
		return nil, err
	}
	if err := sub.Start(ctx); err != nil {
		return nil, err
	}
	log.Info("kv events: subscribed", "bind", sub.Addr(), "connect", o.Connect)
	return &Runtime{Source: src, Index: ix, Sub: sub}, nil
}

// Close stops the subscriber.
func (r *Runtime) Close() error { return r.Sub.Close() }
