package kvroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/kvevents"
	"github.com/infergw/infergw/kvindex"
	"github.com/infergw/infergw/kvprompt"
)

// Options configure precise prefix routing in a picker process.
type Options struct {
	// Bind is the endpoint the model servers' publishers connect to ("tcp://0.0.0.0:5557");
	// Connect lists publishers that bind instead.
	Bind    string
	Connect []string
	// PodPort, when > 0, dials every pod of the picker's pools at tcp://POD:PodPort
	// (FollowPods): for several picker replicas, with vLLM binding "tcp://*:PodPort".
	PodPort int
	// ReplayPort, when > 0, is every pod's vLLM replay_endpoint port: a pod first heard
	// mid-stream (this picker restarted, or started after the pod) is replayed from its
	// publisher's buffer at tcp://POD:ReplayPort before its live events.
	ReplayPort int
	// Tokenizers maps a model name to a directory with its tokenizer.json (and
	// tokenizer_config.json for chat); the key "" is used for every other model.
	Tokenizers map[string]string
	// Index bounds the block index (zero: defaults).
	Index kvindex.Config
	// ShadowOraclePort, benchmark only, when > 0: every answer is compared with the
	// infergw sims' own (kvroute.Oracle on this port); see Source.EnableShadow.
	ShadowOraclePort int
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
	log    *slog.Logger
}

// Start loads the tokenizers, builds the index and starts the subscriber.
func Start(ctx context.Context, o Options, log *slog.Logger, reg prometheus.Registerer) (*Runtime, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
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
	if o.ShadowOraclePort > 0 {
		or, err := NewOracle(o.ShadowOraclePort)
		if err != nil {
			return nil, err
		}
		if err := src.EnableShadow(or, reg); err != nil {
			return nil, err
		}
	}
	cfg := kvevents.Config{Bind: o.Bind, Connect: o.Connect}
	if o.ReplayPort > 0 {
		port := strconv.Itoa(o.ReplayPort)
		cfg.ReplayEndpoint = func(pod string) string {
			if net.ParseIP(pod) == nil {
				return "" // a topic's pod that is no IP address: nowhere to ask
			}
			return "tcp://" + net.JoinHostPort(pod, port)
		}
	}
	sub, err := kvevents.New(cfg, ix, log, reg)
	if err != nil {
		return nil, err
	}
	if err := sub.Start(ctx); err != nil {
		return nil, err
	}
	log.Info("kv events: subscribed", "bind", sub.Addr(), "connect", o.Connect)
	return &Runtime{Source: src, Index: ix, Sub: sub, log: log}, nil
}

// Close stops the subscriber.
func (r *Runtime) Close() error { return r.Sub.Close() }

// FollowPods keeps the runtime in step with the pods the picker routes to, every period
// until ctx ends: with port > 0 it dials each pod's publisher at tcp://POD:port (vLLM with
// "tcp://*:port": every picker replica then hears every pod, which a publisher connecting
// to one Service address cannot give), and it forgets the index entries of pods that left,
// so pod churn does not grow the index.
func (r *Runtime) FollowPods(ctx context.Context, hosts func() []string, port int, period time.Duration) {
	sync := func() {
		hs := hosts()
		if port > 0 {
			eps := make([]string, len(hs))
			for i, h := range hs {
				eps[i] = "tcp://" + net.JoinHostPort(h, strconv.Itoa(port))
			}
			if err := r.Sub.SetPublishers(eps); err != nil {
				r.log.Warn("kv events: following pods", "err", err)
			}
		}
		keep := make(map[string]bool, len(hs))
		for _, h := range hs {
			keep[h] = true
		}
		for _, p := range r.Index.Pods() {
			if !keep[p] {
				r.Index.Forget(p)
			}
		}
	}
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			sync()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
