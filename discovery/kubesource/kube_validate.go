package kubesource

import (
	"log/slog"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/infergw/infergw/api/validation"
	"github.com/infergw/infergw/discovery"
)

// The API server enforces the CRD schemas, so objects read from it are normally valid.
// api/validation, which mirrors those schemas and CEL rules, is the safety net for
// clusters whose installed CRDs are older or lack validation: an object that fails it is
// left out of the snapshot with a log line (once per resourceVersion), never fatal. Pods
// and Services are core types the API server always validates.

// dropInvalid returns objs without the pools, objectives, rewrites, Gateways and HTTPRoutes
// that fail validation, logging each bad object version once.
func (s *KubeSource) dropInvalid(objs discovery.Objects) discovery.Objects {
	var n int
	objs.Pools, n = keepValid(objs.Pools, "InferencePool", validation.Pool, s.invalid, s.log)
	s.metrics.invalid.WithLabelValues("InferencePool").Set(float64(n))
	objs.Objectives, n = keepValid(objs.Objectives, "InferenceObjective", validation.Objective, s.invalid, s.log)
	s.metrics.invalid.WithLabelValues("InferenceObjective").Set(float64(n))
	objs.Rewrites, n = keepValid(objs.Rewrites, "InferenceModelRewrite", validation.Rewrite, s.invalid, s.log)
	s.metrics.invalid.WithLabelValues("InferenceModelRewrite").Set(float64(n))
	objs.Gateways, n = keepValid(objs.Gateways, "Gateway", validation.Gateway, s.invalid, s.log)
	s.metrics.invalid.WithLabelValues("Gateway").Set(float64(n))
	objs.HTTPRoutes, n = keepValid(objs.HTTPRoutes, "HTTPRoute", validation.HTTPRoute, s.invalid, s.log)
	s.metrics.invalid.WithLabelValues("HTTPRoute").Set(float64(n))
	s.invalid.forgetUnseen()
	return objs
}

// keepValid filters items in place (the slice is the source's own) and counts the dropped.
func keepValid[T client.Object](items []T, kind string, validate func(T) validation.Errors, seen *invalidLog, log *slog.Logger) ([]T, int) {
	kept := items[:0]
	dropped := 0
	for _, it := range items {
		if err := validate(it).Err(); err != nil {
			dropped++
			if seen.first(kind, it) {
				log.Warn("invalid object left out of the snapshot", "kind", kind,
					"namespace", it.GetNamespace(), "name", it.GetName(), "error", err)
			}
			continue
		}
		kept = append(kept, it)
	}
	return kept, dropped
}

// invalidLog remembers which invalid object versions were already logged, so that a bad
// object is reported once per change and not on every rebuild.
type invalidLog struct {
	mu       sync.Mutex
	logged   map[string]string // kind/namespace/name -> resourceVersion
	thisPass map[string]bool
}

func newInvalidLog() *invalidLog {
	return &invalidLog{logged: map[string]string{}, thisPass: map[string]bool{}}
}

func (l *invalidLog) first(kind string, o client.Object) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := kind + "/" + discovery.Key(o.GetNamespace(), o.GetName())
	l.thisPass[k] = true
	if rv, ok := l.logged[k]; ok && rv == o.GetResourceVersion() {
		return false
	}
	l.logged[k] = o.GetResourceVersion()
	return true
}

// forgetUnseen drops objects that were not invalid in this pass (fixed or deleted), so that
// they are reported again if they break again.
func (l *invalidLog) forgetUnseen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.logged {
		if !l.thisPass[k] {
			delete(l.logged, k)
		}
	}
	clear(l.thisPass)
}
