package extproc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/infergw/infergw/router"
)

// InferencePool annotations that give a pool its own model-server metrics settings, named
// after GIE's --model-server-metrics-* flags (GIE runs one picker per pool and sets them on
// its command line; infergw's picker serves many pools). Each one set overrides the
// picker's flag of the same name for that pool's endpoints.
const (
	AnnotationMetricsScheme             = "infergw.dev/model-server-metrics-scheme"
	AnnotationMetricsPath               = "infergw.dev/model-server-metrics-path"
	AnnotationMetricsPort               = "infergw.dev/model-server-metrics-port"
	AnnotationMetricsInsecureSkipVerify = "infergw.dev/model-server-metrics-https-insecure-skip-verify"
	AnnotationMetricsCAFile             = "infergw.dev/model-server-metrics-ca-file"
	AnnotationMetricsBearerTokenFile    = "infergw.dev/model-server-metrics-bearer-token-file" //nolint:gosec // G101: the name of an annotation holding a file path, not a credential
)

// poolMetrics reads a pool's metrics annotations: nil when it has none; an error naming
// the annotation when one is malformed. File paths are the picker's (files mounted into its
// pod); they are read by the router when it starts scraping an endpoint.
func poolMetrics(ann map[string]string) (*router.PoolMetrics, error) {
	var pm router.PoolMetrics
	set := false
	for key, val := range ann {
		if !strings.HasPrefix(key, "infergw.dev/model-server-metrics-") {
			continue
		}
		set = true
		switch key {
		case AnnotationMetricsScheme:
			if val != "http" && val != "https" {
				return nil, fmt.Errorf("annotation %s: %q, want http or https", key, val)
			}
			pm.Scheme = val
		case AnnotationMetricsPath:
			if !strings.HasPrefix(val, "/") || strings.ContainsAny(val, " \r\n?#") {
				return nil, fmt.Errorf("annotation %s: %q must start with / and hold no spaces, query or fragment", key, val)
			}
			pm.Path = val
		case AnnotationMetricsPort:
			p, err := strconv.Atoi(val)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("annotation %s: %q is not a port number", key, val)
			}
			pm.Port = p
		case AnnotationMetricsInsecureSkipVerify:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return nil, fmt.Errorf("annotation %s: %q is not true or false", key, val)
			}
			pm.InsecureSkipVerify = b
		case AnnotationMetricsCAFile:
			pm.CAFile = val
		case AnnotationMetricsBearerTokenFile:
			pm.BearerTokenFile = val
		default:
			return nil, fmt.Errorf("annotation %s is not known (known: the scheme, path, port, https-insecure-skip-verify, ca-file and bearer-token-file suffixes)", key)
		}
	}
	if !set {
		return nil, nil
	}
	return &pm, nil
}
