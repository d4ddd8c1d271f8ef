package validation

import (
	"regexp"
	"strings"

	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	infv1 "github.com/infergw/infergw/api/v1"
)

// Limits and patterns of the InferencePool CRD (see the markers in api/v1).
const (
	MinTargetPorts     = 1
	MaxTargetPorts     = 8
	MaxSelectorLabels  = 64
	maxGroupLength     = 253
	maxKindLength      = 63
	minPortNumber      = 1
	maxPortNumber      = 65535
	serviceKind        = "Service"
	inferencePoolKind  = "InferencePool"
	inferencePoolGroup = "inference.networking.k8s.io"
)

// Compiled once; read-only.
var (
	groupPattern = regexp.MustCompile(`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	kindPattern  = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
)

// Pool checks an InferencePool against its CRD's schema and CEL rules: metadata, a
// non-empty label selector of valid labels, 1–8 unique target ports in 1–65535, the
// appProtocol enum, and the endpointPickerRef (name, group/kind syntax, a port when the kind
// is Service or unset, port range, failureMode enum).
func Pool(p *infv1.InferencePool) Errors {
	var es Errors
	if p == nil {
		es.add("", "object is empty")
		return es
	}
	validateMeta(&p.ObjectMeta, &es)
	spec := field.NewPath("spec")
	validateSelector(spec.Child("selector", "matchLabels"), p.Spec.Selector.MatchLabels, &es)
	validateTargetPorts(spec.Child("targetPorts"), p.Spec.TargetPorts, &es)
	switch p.Spec.AppProtocol {
	case "", infv1.AppProtocolHTTP, infv1.AppProtocolH2C:
	default:
		es.add(spec.Child("appProtocol").String(), "unsupported value %q: must be %q or %q",
			p.Spec.AppProtocol, infv1.AppProtocolHTTP, infv1.AppProtocolH2C)
	}
	validatePickerRef(spec.Child("endpointPickerRef"), p.Spec.EndpointPickerRef, &es)
	return es
}

func validateSelector(path *field.Path, labels map[infv1.LabelKey]infv1.LabelValue, es *Errors) {
	switch {
	case len(labels) == 0:
		es.add(path.String(), "must have at least 1 label")
		return
	case len(labels) > MaxSelectorLabels:
		es.add(path.String(), "must have at most %d labels, has %d", MaxSelectorLabels, len(labels))
	}
	for _, k := range sortedKeys(labels) {
		if msgs := k8svalidation.IsQualifiedName(string(k)); len(msgs) > 0 {
			es.add(path.Key(string(k)).String(), "invalid label key: %s", strings.Join(msgs, "; "))
		}
		if msgs := k8svalidation.IsValidLabelValue(string(labels[k])); len(msgs) > 0 {
			es.add(path.Key(string(k)).String(), "invalid label value %q: %s", labels[k], strings.Join(msgs, "; "))
		}
	}
}

func validateTargetPorts(path *field.Path, ports []infv1.Port, es *Errors) {
	switch {
	case len(ports) < MinTargetPorts:
		es.add(path.String(), "must have at least %d port", MinTargetPorts)
	case len(ports) > MaxTargetPorts:
		es.add(path.String(), "must have at most %d ports, has %d", MaxTargetPorts, len(ports))
	}
	seen := make(map[infv1.PortNumber]int, len(ports))
	for i, p := range ports {
		num := path.Index(i).Child("number")
		validatePortNumber(num, p.Number, es)
		if first, dup := seen[p.Number]; dup {
			es.add(num.String(), "duplicate port %d (also targetPorts[%d])", p.Number, first)
			continue
		}
		seen[p.Number] = i
	}
}

func validatePortNumber(path *field.Path, n infv1.PortNumber, es *Errors) {
	if n < minPortNumber || n > maxPortNumber {
		es.add(path.String(), "port %d out of range %d-%d", n, minPortNumber, maxPortNumber)
	}
}

func validatePickerRef(path *field.Path, ref infv1.EndpointPickerRef, es *Errors) {
	validateObjectName(path.Child("name").String(), string(ref.Name), es)
	if ref.Group != nil {
		validateGroup(path.Child("group"), string(*ref.Group), es)
	}
	if ref.Kind != "" {
		validateKind(path.Child("kind"), string(ref.Kind), es)
	}
	// CEL: self.kind != 'Service' || has(self.port), with kind defaulting to Service.
	if ref.Kind == "" || ref.Kind == serviceKind {
		if ref.Port == nil {
			es.add(path.Child("port").String(), "required when kind is Service (the default)")
		}
	}
	if ref.Port != nil {
		validatePortNumber(path.Child("port", "number"), ref.Port.Number, es)
	}
	switch ref.FailureMode {
	case "", infv1.EndpointPickerFailOpen, infv1.EndpointPickerFailClose:
	default:
		es.add(path.Child("failureMode").String(), "unsupported value %q: must be %q or %q",
			ref.FailureMode, infv1.EndpointPickerFailOpen, infv1.EndpointPickerFailClose)
	}
}

func validateGroup(path *field.Path, group string, es *Errors) {
	if len(group) > maxGroupLength || !groupPattern.MatchString(group) {
		es.add(path.String(), "invalid group %q", group)
	}
}

func validateKind(path *field.Path, kind string, es *Errors) {
	if len(kind) > maxKindLength || !kindPattern.MatchString(kind) {
		es.add(path.String(), "invalid kind %q", kind)
	}
}
