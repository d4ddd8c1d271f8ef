package validation

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
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
