package extproc

import (
	"strings"
	"sync"
	"testing"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/router"
)

// recordingRouter keeps the specs ApplySnapshot hands over. A fake: what is tested is the
// snapshot-to-router mapping; the router's use of the settings is tested in router
// (TestScrapePerPoolMetricsSettings, against a real TLS server).
type recordingRouter struct {
	noopRouter
	mu    sync.Mutex
	pools map[string][]router.EndpointSpec
}

func (r *recordingRouter) SetPool(name string, eps []router.EndpointSpec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pools[name] = eps
}

func TestPoolMetricsAnnotations(t *testing.T) {
	rr := &recordingRouter{pools: map[string][]router.EndpointSpec{}}
	srv, err := NewServer(rr, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	secure := testPool("ns", "secure", 8000, []*backend{{ip: "10.0.0.1"}, {ip: "10.0.0.2"}})
	secure.Annotations = map[string]string{
		AnnotationMetricsScheme: "https", AnnotationMetricsPath: "/m", AnnotationMetricsPort: "9400",
		AnnotationMetricsInsecureSkipVerify: "true", AnnotationMetricsCAFile: "/etc/ca.pem",
		AnnotationMetricsBearerTokenFile: "/var/run/token", "other.io/x": "ignored",
	}
	plain := testPool("ns", "plain", 8000, []*backend{{ip: "10.0.0.3"}})
	broken := testPool("ns", "broken", 8000, []*backend{{ip: "10.0.0.4"}})
	broken.Annotations = map[string]string{AnnotationMetricsPort: "http"}
	srv.ApplySnapshot(&discovery.Snapshot{Version: 1, Pools: []*discovery.Pool{secure, plain, broken}})

	want := router.PoolMetrics{Scheme: "https", Path: "/m", Port: 9400, InsecureSkipVerify: true, CAFile: "/etc/ca.pem", BearerTokenFile: "/var/run/token"}
	if eps := rr.pools["ns/secure"]; len(eps) != 2 || eps[0].Metrics == nil || *eps[0].Metrics != want || *eps[1].Metrics != want {
		t.Fatalf("secure pool's endpoints %+v, want metrics %+v", eps, want)
	}
	if eps := rr.pools["ns/plain"]; len(eps) != 1 || eps[0].Metrics != nil {
		t.Fatalf("plain pool's endpoints %+v, want no metrics settings", eps)
	}
	if eps := rr.pools["ns/broken"]; len(eps) != 1 || eps[0].Metrics != nil {
		t.Fatalf("broken pool's endpoints %+v: a bad annotation must fall back to the picker's settings", eps)
	}
}

func TestPoolMetricsAnnotationErrors(t *testing.T) {
	for val, ann := range map[string]map[string]string{
		"scheme":  {AnnotationMetricsScheme: "ftp"},
		"path":    {AnnotationMetricsPath: "metrics"},
		"port":    {AnnotationMetricsPort: "70000"},
		"bool":    {AnnotationMetricsInsecureSkipVerify: "yes please"},
		"unknown": {"infergw.dev/model-server-metrics-sheme": "https"},
	} {
		if _, err := poolMetrics(ann); err == nil || !strings.Contains(err.Error(), "infergw.dev/model-server-metrics-") {
			t.Errorf("%s: error %v, want one naming the annotation", val, err)
		}
	}
}
