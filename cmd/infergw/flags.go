package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/infergw/infergw/router"
)

// registerRouterFlags binds the router's scrape and pick settings to flags, with cfg's
// values as defaults; router.New validates them.
func registerRouterFlags(fl *pflag.FlagSet, cfg *router.Config) {
	fl.DurationVar(&cfg.ScrapeInterval, "scrape-interval", cfg.ScrapeInterval,
		"period of each model server's /metrics scrape (CPU: about 3 ms/s per server at 50ms)")
	fl.DurationVar(&cfg.IdleScrapeInterval, "idle-scrape-interval", cfg.IdleScrapeInterval,
		"scrape period of an idle model server (nothing waiting, running or in flight): each scrape costs the server CPU; "+
			"0 = min(10 x --scrape-interval, --staleness-threshold / 4); must stay below --staleness-threshold")
	fl.DurationVar(&cfg.ScrapeTimeout, "scrape-timeout", cfg.ScrapeTimeout, "bound of one scrape and one /v1/models request")
	fl.DurationVar(&cfg.StalenessThreshold, "staleness-threshold", cfg.StalenessThreshold,
		"age after which a server's metrics are stale (not picked while fresh ones exist); must exceed --scrape-interval")
	fl.DurationVar(&cfg.ModelsRefresh, "models-refresh", cfg.ModelsRefresh, "period of each model server's GET /v1/models")
	fl.IntVar(&cfg.Fallbacks, "fallbacks", cfg.Fallbacks, "fallback endpoints sent to Envoy after the chosen one")
	fl.IntVar(&cfg.MaxScrapeBytes, "max-scrape-bytes", cfg.MaxScrapeBytes, "largest /metrics body (after gzip) a scrape accepts; larger fails the scrape")
	fl.IntVar(&cfg.MaxScrapeSeries, "max-scrape-series", cfg.MaxScrapeSeries, "most series (sample lines) a /metrics scrape accepts; more fails the scrape")
	// Where the model servers' metrics are, under GIE's flag names where it has them.
	fl.StringVar(&cfg.Metrics.Scheme, "model-server-metrics-scheme", "http", "scheme of the model servers' metrics: http or https")
	fl.StringVar(&cfg.Metrics.Path, "model-server-metrics-path", "/metrics", "path of the model servers' metrics")
	fl.IntVar(&cfg.Metrics.Port, "model-server-metrics-port", 0, "port of the model servers' metrics (0 = the serving port, the pool's target port)")
	fl.Var(&metricsTLSFlag{cfg: &cfg.Metrics, kind: "insecure"}, "model-server-metrics-https-insecure-skip-verify",
		"https metrics: do not verify the model servers' certificates")
	fl.Lookup("model-server-metrics-https-insecure-skip-verify").NoOptDefVal = "true"
	fl.Var(&metricsTLSFlag{cfg: &cfg.Metrics, kind: "ca"}, "model-server-metrics-ca-file",
		"https metrics: PEM CA bundle to verify the model servers with (default: the system roots)")
	fl.Var(&metricsTLSFlag{cfg: &cfg.Metrics, kind: "token"}, "model-server-metrics-bearer-token-file",
		"file holding a bearer token sent with every scrape (e.g. a mounted ServiceAccount token)")
}

// metricsTLSFlag sets the parts of router.MetricsEndpoint that come from files or need a
// tls.Config, at parse time, so a bad file fails the command line with its name.
type metricsTLSFlag struct {
	cfg  *router.MetricsEndpoint
	kind string // "insecure", "ca" or "token"
	val  string
}

func (f *metricsTLSFlag) String() string { return f.val }
func (f *metricsTLSFlag) Type() string {
	if f.kind == "insecure" {
		return "bool"
	}
	return "string"
}

func (f *metricsTLSFlag) Set(v string) error {
	f.val = v
	tlsCfg := func() *tls.Config {
		if f.cfg.TLS == nil {
			f.cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return f.cfg.TLS
	}
	switch f.kind {
	case "insecure":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return err
		}
		if b {
			tlsCfg().InsecureSkipVerify = true // the operator asked for it with this flag
		}
	case "ca":
		pool, err := router.ReadCAFile(v)
		if err != nil {
			return err
		}
		tlsCfg().RootCAs = pool
	case "token":
		tok, err := router.ReadBearerToken(v)
		if err != nil {
			return err
		}
		f.cfg.BearerToken = tok
	}
	return nil
}

// newLogger is the text logger on stderr every subcommand uses, at a --log-level value.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// sourceFlags choose where the picker and the control plane read their resources from.
type sourceFlags struct {
	manifests  string
	kubernetes bool
	kubeconfig string
	namespaces []string
}

func (s *sourceFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&s.manifests, "manifests", "", "directory of YAML manifests to read resources from (local mode)")
	fl.BoolVar(&s.kubernetes, "kubernetes", false, "read resources from the Kubernetes API")
	fl.StringVar(&s.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
	fl.StringSliceVar(&s.namespaces, "namespace", nil, "namespace to watch (repeatable; default all)")
}

func (s *sourceFlags) validate() error {
	if (s.manifests == "") == !s.kubernetes {
		return errors.New("give exactly one of --manifests DIR or --kubernetes")
	}
	return nil
}

// restConfig loads --kubeconfig, else the default kubeconfig rules, which fall back to the
// in-cluster config.
func (s *sourceFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if s.kubeconfig != "" {
		rules.ExplicitPath = s.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	return cfg, nil
}
