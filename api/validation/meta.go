package validation

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// validateMeta checks the name and namespace every namespaced object needs.
func validateMeta(meta *metav1.ObjectMeta, es *Errors) {
	if meta.Name == "" {
		es.add("metadata.name", "required")
	} else if msgs := k8svalidation.IsDNS1123Subdomain(meta.Name); len(msgs) > 0 {
		es.add("metadata.name", "invalid name %q: %s", meta.Name, strings.Join(msgs, "; "))
	}
	if meta.Namespace != "" {
		if msgs := k8svalidation.IsDNS1123Label(meta.Namespace); len(msgs) > 0 {
			es.add("metadata.namespace", "invalid namespace %q: %s", meta.Namespace, strings.Join(msgs, "; "))
		}
	}
}

// validateObjectName checks a reference to an object by name (DNS-1123 subdomain).
func validateObjectName(path, name string, es *Errors) {
	if name == "" {
		es.add(path, "required")
		return
	}
	if msgs := k8svalidation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		es.add(path, "invalid name %q: %s", name, strings.Join(msgs, "; "))
	}
}
