package kubesource

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/model"
)

// writeStatus brings the status of the GatewayClass, the Gateways, the HTTPRoutes and the
// InferencePools in line with the resolved model of snap (package model decides every
// condition; this only writes them), writing only objects whose status differs. Each write
// is a merge patch of the status subresource guarded by the resourceVersion the decision was
// made on: if someone changed the object meanwhile the write fails with a conflict, and the
// informer event of that change triggers a new round. It returns the number of failed
// writes (for which the caller schedules a retry).
func (s *KubeSource) writeStatus(ctx context.Context, objs discovery.Objects, snap *discovery.Snapshot) int {
	mopts := model.Options{ControllerName: s.opts.ControllerName, Addresses: s.gatewayAddresses(objs.Services), GatewayPorts: s.opts.GatewayPorts}
	m := model.Resolve(snap, mopts)
	failed := 0
	if s.opts.GatewayServices != nil {
		// The Services come from the model's allocated ports; their addresses then make
		// the model whose Gateway status is written (a Gateway whose Service could not be
		// written has no address: Programmed=False, AddressNotAssigned, retried).
		var n int
		mopts.Addresses = nil
		mopts.GatewayAddresses, n = s.reconcileGatewayServices(ctx, m, objs.Services)
		failed += n
		m = model.Resolve(snap, mopts)
	}
	gateways := make(map[string]bool, len(objs.Gateways))
	for _, gw := range objs.Gateways {
		gateways[discovery.Key(gw.Namespace, gw.Name)] = true
	}
	scope := model.StatusScope{GatewayExists: func(k string) bool { return gateways[k] }, Watched: s.watched}
	now := metav1.Now()
	write := func(kind string, orig, updated client.Object) {
		if !s.patchStatus(ctx, kind, orig, updated) {
			failed++
		}
	}
	for _, gc := range snap.GatewayClasses {
		if want, changed, ok := m.DesiredClassStatus(gc, now); ok && changed {
			updated := gc.DeepCopy()
			updated.Status = want
			write("GatewayClass", gc, updated)
		}
	}
	for _, gw := range snap.Gateways {
		if want, changed, ok := m.DesiredGatewayStatus(gw, now); ok && changed {
			updated := gw.DeepCopy()
			updated.Status = want
			write("Gateway", gw, updated)
		}
	}
	for _, pool := range objs.Pools {
		if want, changed := m.DesiredPoolStatus(pool, scope, now); changed {
			updated := pool.DeepCopy()
			updated.Status = want
			write("InferencePool", pool, updated)
		}
	}
	for _, rt := range objs.HTTPRoutes {
		if want, changed := m.DesiredRouteStatus(rt, now); changed {
			updated := rt.DeepCopy()
			updated.Status = want
			write("HTTPRoute", rt, updated)
		}
	}
	return failed
}

// gatewayAddresses are the configured addresses, then those of the proxy's Service.
func (s *KubeSource) gatewayAddresses(services []*corev1.Service) []gwapiv1.GatewayStatusAddress {
	out := slices.Clone(s.opts.GatewayAddresses)
	if s.opts.GatewayService == "" {
		return out
	}
	for _, svc := range services {
		if discovery.Key(svc.Namespace, svc.Name) == s.opts.GatewayService {
			return append(out, ServiceAddresses(svc)...)
		}
	}
	return out
}

// ServiceAddresses are where a Service is reached: its load-balancer ingress IPs and
// hostnames, else its clusterIPs.
func ServiceAddresses(svc *corev1.Service) []gwapiv1.GatewayStatusAddress {
	var out []gwapiv1.GatewayStatusAddress
	add := func(t gwapiv1.AddressType, v string) {
		if v != "" && v != corev1.ClusterIPNone {
			out = append(out, gwapiv1.GatewayStatusAddress{Type: &t, Value: v})
		}
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		add(gwapiv1.IPAddressType, in.IP)
		add(gwapiv1.HostnameAddressType, in.Hostname)
	}
	if len(out) > 0 {
		return out
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		add(gwapiv1.IPAddressType, ip)
	}
	return out
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
