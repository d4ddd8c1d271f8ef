package validation

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Pod checks what infergw reads from a Pod manifest: metadata and, when set, a valid
// status.podIP.
func Pod(p *corev1.Pod) Errors {
	var es Errors
	if p == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&p.ObjectMeta, &es)
	if ip := p.Status.PodIP; ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			es.add(field.NewPath("status", "podIP").String(), "invalid IP address %q", ip)
		}
	}
	return es
}

// Service checks what infergw reads from a Service manifest: metadata, a clusterIP that is
// empty, "None" or an IP address, and ports in 1–65535.
func Service(s *corev1.Service) Errors {
	var es Errors
	if s == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&s.ObjectMeta, &es)
	spec := field.NewPath("spec")
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		if _, err := netip.ParseAddr(ip); err != nil {
			es.add(spec.Child("clusterIP").String(), "invalid IP address %q", ip)
		}
	}
	for i, p := range s.Spec.Ports {
		if p.Port < minPortNumber || p.Port > maxPortNumber {
			es.add(spec.Child("ports").Index(i).Child("port").String(), "port %d out of range %d-%d", p.Port, minPortNumber, maxPortNumber)
		}
	}
	return es
}

// EndpointSlice checks what infergw reads from an EndpointSlice manifest (the endpoints of a
// Service written by hand, e.g. several local picker replicas): metadata, the
// kubernetes.io/service-name label, ports in 1–65535 and IP addresses of the slice's type.
func EndpointSlice(s *discoveryv1.EndpointSlice) Errors {
	var es Errors
	if s == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&s.ObjectMeta, &es)
	if s.Labels[discoveryv1.LabelServiceName] == "" {
		es.add(field.NewPath("metadata", "labels").Key(discoveryv1.LabelServiceName).String(), "required")
	}
	for i, p := range s.Ports {
		if p.Port != nil && (*p.Port < minPortNumber || *p.Port > maxPortNumber) {
			es.add(field.NewPath("ports").Index(i).Child("port").String(), "port %d out of range %d-%d", *p.Port, minPortNumber, maxPortNumber)
		}
	}
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		return es // FQDN slices are skipped by the model, as kube-proxy skips them
	}
	for i, ep := range s.Endpoints {
		for j, a := range ep.Addresses {
			if _, err := netip.ParseAddr(a); err != nil {
				es.add(field.NewPath("endpoints").Index(i).Child("addresses").Index(j).String(), "invalid IP address %q", a)
			}
		}
	}
	return es
}
