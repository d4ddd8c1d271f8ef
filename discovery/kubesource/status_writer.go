package kubesource

import (
	"context"
	"github.com/infergw/infergw/discovery"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// writeStatus brings InferencePool and HTTPRoute status in line with DesiredPoolStatus and
// DesiredRouteStatus, writing only objects whose status differs. Each write is a merge
// patch of the status subresource guarded by the resourceVersion the decision was made
// on: if someone changed the object meanwhile the write fails with a conflict, and the
// informer event of that change triggers a new round. It returns the number of failed
// writes (for which the caller schedules a retry).
func (s *KubeSource) writeStatus(ctx context.Context, objs discovery.Objects) int {
	w := discovery.NewStatusWorld(objs, s.opts.GatewayClass, s.opts.ControllerName, s.watched)
	now := metav1.Now()
	failed := 0
	for _, pool := range objs.Pools {
		want, changed := discovery.DesiredPoolStatus(pool, w, now)
		if !changed {
			continue
		}
		updated := pool.DeepCopy()
		updated.Status = want
		if !s.patchStatus(ctx, "InferencePool", pool, updated) {
			failed++
		}
	}
	for _, rt := range objs.HTTPRoutes {
		want, changed := discovery.DesiredRouteStatus(rt, w, now)
		if !changed {
			continue
		}
		updated := rt.DeepCopy()
		updated.Status = want
		if !s.patchStatus(ctx, "HTTPRoute", rt, updated) {
			failed++
		}
	}
	return failed
}

// patchStatus writes updated's status; orig is the informer's object and is not modified.
// A NotFound (the object was just deleted) counts as done.
func (s *KubeSource) patchStatus(ctx context.Context, kind string, orig, updated client.Object) bool {
	ctx, cancel := context.WithTimeout(ctx, kubeStatusTimeout)
	defer cancel()
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	err := s.client.Status().Patch(ctx, updated, patch)
	switch {
	case err == nil:
		s.metrics.statusWrites.WithLabelValues(kind, "ok").Inc()
		s.log.Debug("status written", "kind", kind, "namespace", orig.GetNamespace(), "name", orig.GetName())
		return true
	case apierrors.IsNotFound(err):
		return true
	case apierrors.IsConflict(err):
		s.metrics.statusWrites.WithLabelValues(kind, "conflict").Inc()
		s.log.Debug("status write conflict, will retry", "kind", kind, "namespace", orig.GetNamespace(), "name", orig.GetName())
		return false
	default:
		s.metrics.statusWrites.WithLabelValues(kind, "error").Inc()
		s.log.Warn("status write failed", "kind", kind, "namespace", orig.GetNamespace(), "name", orig.GetName(), "error", err)
		return false
	}
}
