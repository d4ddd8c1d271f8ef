package router

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// PoolMetrics are one pool's own scrape settings (the picker reads them from the
// InferencePool's annotations): each field that is set overrides Config.Metrics for the
// pool's endpoints. It is compared by value: an endpoint whose settings change is replaced
// (a new scrape loop with the new settings; its files are read again then).
type PoolMetrics struct {
	// Scheme is "http" or "https" ("" = Config.Metrics').
	Scheme string
	// Path of the exposition ("" = Config.Metrics').
	Path string
	// Port of the exposition (0 = Config.Metrics', else the serving port).
	Port int
	// CAFile is a PEM bundle the servers' certificates are verified with.
	CAFile string
	// InsecureSkipVerify turns certificate verification off.
	InsecureSkipVerify bool
	// BearerTokenFile holds a token sent as "Authorization: Bearer TOKEN".
	BearerTokenFile string
}

// metricsFor is where endpoint e's metrics are: Config.Metrics with the pool's settings
// over it. An unreadable file or an invalid result is an error (the endpoint's scrapes then
// fail with it).
func (r *Router) metricsFor(e *endpoint) (MetricsEndpoint, error) {
	m, pm := r.cfg.Metrics, e.spec.Metrics
	if pm == nil {
		return m, nil
	}
	if pm.Scheme != "" {
		m.Scheme = pm.Scheme
	}
	if pm.Path != "" {
		m.Path = pm.Path
	}
	if pm.Port != 0 {
		m.Port = pm.Port
	}
	if pm.CAFile != "" || pm.InsecureSkipVerify {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if m.TLS != nil {
			cfg = m.TLS.Clone()
		}
		if pm.CAFile != "" {
			pool, err := ReadCAFile(pm.CAFile)
			if err != nil {
				return m, err
			}
			cfg.RootCAs = pool
		}
		if pm.InsecureSkipVerify {
			cfg.InsecureSkipVerify = true // the pool's owner asked for it
		}
		m.TLS = cfg
	}
	if pm.BearerTokenFile != "" {
		tok, err := ReadBearerToken(pm.BearerTokenFile)
		if err != nil {
			return m, err
		}
		m.BearerToken = tok
	}
	if err := m.validate(); err != nil {
		return m, fmt.Errorf("pool metrics settings: %w", err)
	}
	return m, nil
}

// ReadCAFile reads a PEM CA bundle for verifying model servers.
func ReadCAFile(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("metrics CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("metrics CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ReadBearerToken reads a bearer token file (surrounding whitespace dropped; empty is an
// error).
func ReadBearerToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("metrics bearer token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("metrics bearer token %s: empty", path)
	}
	return tok, nil
}

func samePoolMetrics(a, b *PoolMetrics) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
