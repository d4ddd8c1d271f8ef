package kubesource

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/model"
)

// GatewayServiceOptions make the control plane give every Gateway its own address: a
// Service per Gateway, in the proxy's namespace, selecting the proxy's Pods, whose port for
// each Gateway listener port targets the Envoy port the model allocated to that Gateway
// (model.Options.GatewayPorts). The Service's address is written into the Gateway's
// status.addresses. Services of Gateways that are gone are deleted.
type GatewayServiceOptions struct {
	// Namespace is the proxy's namespace, where the Services are made (a Service selects
	// Pods of its own namespace only). It must be among the source's Namespaces.
	Namespace string
	// Selector selects the proxy's Pods. Required.
	Selector map[string]string
	// Type is the Services' type (default ClusterIP).
	Type corev1.ServiceType
	// Prefix starts every Service name (default "infergw-gw").
	Prefix string
}

// Labels and annotations of the per-Gateway Services.
const (
	// gatewayServiceManagedLabel marks a Service as a per-Gateway Service; its value
	// identifies the control plane (a hash of its GatewayClass), so that two control planes
	// serving different classes in one namespace never delete each other's Services.
	gatewayServiceManagedLabel = "infergw.dev/gateway-service"
	// gatewayNameLabel is the Gateway API's label for resources made for a Gateway (set when
	// the name fits a label value).
	gatewayNameLabel = "gateway.networking.k8s.io/gateway-name"
	// gatewayServiceGatewayAnnotation holds the Gateway's namespace/name.
	gatewayServiceGatewayAnnotation = "infergw.dev/gateway"
)

func (o *GatewayServiceOptions) validate(namespaces []string) error {
	if o.Namespace == "" {
		return errors.New("gateway services: Namespace is required")
	}
	if len(namespaces) > 0 && !slices.Contains(namespaces, o.Namespace) {
		return fmt.Errorf("gateway services: namespace %s must be among the watched namespaces %v", o.Namespace, namespaces)
	}
	if len(o.Selector) == 0 {
		return errors.New("gateway services: a Selector of the proxy's Pods is required")
	}
	if o.Type == "" {
		o.Type = corev1.ServiceTypeClusterIP
	}
	if o.Prefix == "" {
		o.Prefix = "infergw-gw"
	}
	if errs := validation.IsDNS1035Label(o.Prefix); len(errs) > 0 || len(o.Prefix) > 30 {
		return fmt.Errorf("gateway services: prefix %q must be a DNS label of at most 30 characters", o.Prefix)
	}
	return nil
}

// GatewayServiceName is the name of a Gateway's Service: the prefix, the Gateway's namespace
// and name (shortened to fit), and a hash of namespace/name that keeps shortened names
// apart. It is a DNS-1035 label (at most 63 characters).
func GatewayServiceName(prefix, namespace, name string) string {
	h := fnv.New32a()
	h.Write([]byte(namespace + "/" + name))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	base := strings.ReplaceAll(prefix+"-"+namespace+"-"+name, ".", "-")
	if max := validation.DNS1035LabelMaxLength - len(suffix); len(base) > max {
		base = base[:max]
	}
	return strings.TrimRight(base, "-") + suffix
}

func ownerHash(class string) string {
	h := fnv.New32a()
	h.Write([]byte(class))
	return fmt.Sprintf("%08x", h.Sum32())
}

// desiredGatewayService is the Service a Gateway of m should have, or nil when it has no
// listener port to serve.
func (s *KubeSource) desiredGatewayService(g *model.Gateway) *corev1.Service {
	o := s.opts.GatewayServices
	ports := g.GatewayPorts()
	if len(ports) == 0 {
		return nil
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   o.Namespace,
			Name:        GatewayServiceName(o.Prefix, g.Namespace, g.Name),
			Labels:      map[string]string{gatewayServiceManagedLabel: ownerHash(s.opts.GatewayClass)},
			Annotations: map[string]string{gatewayServiceGatewayAnnotation: g.Key},
		},
		Spec: corev1.ServiceSpec{Type: o.Type, Selector: maps.Clone(o.Selector)},
	}
	if len(validation.IsValidLabelValue(g.Name)) == 0 {
		svc.Labels[gatewayNameLabel] = g.Name
	}
	// An owner reference can only name an owner in the same namespace: a Gateway elsewhere
	// relies on this control plane's garbage collection alone.
	if g.Namespace == o.Namespace && g.UID != "" {
		svc.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: gwapiv1.GroupVersion.String(), Kind: "Gateway", Name: g.Name, UID: g.UID,
		}}
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:       fmt.Sprintf("port-%d", p.Port),
			Protocol:   corev1.ProtocolTCP,
			Port:       p.Port,
			TargetPort: intstr.FromInt32(p.EnvoyPort),
		})
	}
	return svc
}

// reconcileGatewayServices brings the per-Gateway Services in line with the model m:
// creates the missing, updates those whose ports, selector, type or owner changed, deletes
// those of Gateways that are gone. existing are the Services the informers hold. It returns
// the address of every Gateway whose Service exists, and the number of failed writes.
func (s *KubeSource) reconcileGatewayServices(ctx context.Context, m *model.Model, existing []*corev1.Service) (map[string][]gwapiv1.GatewayStatusAddress, int) {
	o := s.opts.GatewayServices
	owner := ownerHash(s.opts.GatewayClass)
	have := map[string]*corev1.Service{}
	for _, svc := range existing {
		if svc.Namespace == o.Namespace && svc.Labels[gatewayServiceManagedLabel] == owner {
			have[svc.Name] = svc
		}
	}
	addrs := map[string][]gwapiv1.GatewayStatusAddress{}
	wanted := map[string]bool{}
	failed := 0
	for _, g := range m.Gateways {
		want := s.desiredGatewayService(g)
		if want == nil {
			continue
		}
		wanted[want.Name] = true
		got, err := s.applyGatewayService(ctx, want, have[want.Name])
		if err != nil {
			failed++
			s.log.Warn("gateway service write failed", "gateway", g.Key, "service", want.Name, "error", err)
			s.metrics.statusWrites.WithLabelValues("Service", "error").Inc()
			continue
		}
		if a := ServiceAddresses(got); len(a) > 0 {
			addrs[g.Key] = a
		}
	}
	for name, svc := range have {
		if wanted[name] {
			continue
		}
		if err := s.deleteGatewayService(ctx, svc); err != nil {
			failed++
			s.log.Warn("gateway service delete failed", "service", name, "error", err)
			continue
		}
		s.log.Info("gateway service deleted", "service", name, "gateway", svc.Annotations[gatewayServiceGatewayAnnotation])
	}
	return addrs, failed
}

// applyGatewayService creates want, or updates cur to it when they differ, and returns the
// Service as it stands (with its cluster IP).
func (s *KubeSource) applyGatewayService(ctx context.Context, want, cur *corev1.Service) (*corev1.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, kubeStatusTimeout)
	defer cancel()
	if cur == nil {
		if err := s.client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("create service %s/%s: %w", want.Namespace, want.Name, err)
		}
		s.metrics.statusWrites.WithLabelValues("Service", "ok").Inc()
		s.log.Info("gateway service created", "service", want.Name, "gateway", want.Annotations[gatewayServiceGatewayAnnotation])
		return want, nil
	}
	if gatewayServiceUpToDate(cur, want) {
		return cur, nil
	}
	updated := cur.DeepCopy() // the informer's object is never modified
	updated.Labels = want.Labels
	updated.Annotations = want.Annotations
	updated.OwnerReferences = want.OwnerReferences
	updated.Spec.Type = want.Spec.Type
	updated.Spec.Selector = want.Spec.Selector
	updated.Spec.Ports = mergePorts(cur.Spec.Ports, want.Spec.Ports)
	// The update carries cur's resourceVersion: a concurrent change fails it with a
	// conflict, and the informer event of that change brings a new round.
	if err := s.client.Update(ctx, updated); err != nil {
		return nil, fmt.Errorf("update service %s/%s: %w", want.Namespace, want.Name, err)
	}
	s.metrics.statusWrites.WithLabelValues("Service", "ok").Inc()
	s.log.Info("gateway service updated", "service", want.Name, "gateway", want.Annotations[gatewayServiceGatewayAnnotation])
	return updated, nil
}

func (s *KubeSource) deleteGatewayService(ctx context.Context, svc *corev1.Service) error {
	ctx, cancel := context.WithTimeout(ctx, kubeStatusTimeout)
	defer cancel()
	// Preconditions: never delete a Service that was replaced meanwhile.
	pre := metav1.Preconditions{UID: &svc.UID, ResourceVersion: &svc.ResourceVersion}
	err := s.client.Delete(ctx, svc.DeepCopy(), client.Preconditions(pre))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

// mergePorts is want's ports, keeping the node ports the API server gave cur's ports of the
// same name (a NodePort or LoadBalancer Service would otherwise get new ones each update).
func mergePorts(cur, want []corev1.ServicePort) []corev1.ServicePort {
	out := slices.Clone(want)
	for i := range out {
		for _, c := range cur {
			if c.Name == out[i].Name && c.Port == out[i].Port {
				out[i].NodePort = c.NodePort
			}
		}
	}
	return out
}

// gatewayServiceUpToDate reports whether cur already is what want asks for (the fields the
// API server fills in, such as cluster IPs and node ports, are not compared).
func gatewayServiceUpToDate(cur, want *corev1.Service) bool {
	if cur.Spec.Type != want.Spec.Type || !maps.Equal(cur.Spec.Selector, want.Spec.Selector) ||
		!maps.Equal(cur.Labels, want.Labels) || cur.Annotations[gatewayServiceGatewayAnnotation] != want.Annotations[gatewayServiceGatewayAnnotation] ||
		len(cur.Spec.Ports) != len(want.Spec.Ports) || len(cur.OwnerReferences) != len(want.OwnerReferences) {
		return false
	}
	for i, p := range want.Spec.Ports {
		c := cur.Spec.Ports[i]
		if c.Name != p.Name || c.Port != p.Port || c.TargetPort != p.TargetPort || c.Protocol != p.Protocol {
			return false
		}
	}
	for i, r := range want.OwnerReferences {
		if cur.OwnerReferences[i].UID != r.UID {
			return false
		}
	}
	return true
}
