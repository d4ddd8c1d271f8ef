package chart

import (
	"fmt"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
)

// strictDecoder decodes YAML or JSON into typed objects and fails on any field the type does
// not have (and on duplicate fields), so a typo in a template is an error, not a silently
// dropped setting. Its scheme has the Kubernetes built-in types, Gateway API v1 and infergw's
// own API types.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, gwapiv1.Install, infv1.AddToScheme, infv1alpha2.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatalf("build scheme: %v", err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

// objects are the rendered manifests, decoded.
type objects struct {
	deployments         []*appsv1.Deployment
	services            []*corev1.Service
	serviceAccounts     []*corev1.ServiceAccount
	configMaps          []*corev1.ConfigMap
	clusterRoles        []*rbacv1.ClusterRole
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	roles               []*rbacv1.Role
	roleBindings        []*rbacv1.RoleBinding
	pdbs                []*policyv1.PodDisruptionBudget
	gatewayClasses      []*gwapiv1.GatewayClass
	// serviceMonitors have no typed scheme here; they are plain maps checked field by field.
	serviceMonitors []map[string]any
}

// decodeAll decodes every document strictly. A kind the chart is not expected to render
// fails the test, so a new template must come with its checks.
func decodeAll(t *testing.T, docs []sourcedDoc) *objects {
	t.Helper()
	dec := strictDecoder(t)
	out := &objects{}
	for _, d := range docs {
		where := fmt.Sprintf("%s (document %d)", d.source, d.index)
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(d.yaml), &meta); err != nil {
			t.Fatalf("%s: not YAML: %v", where, err)
		}
		if meta.APIVersion == "monitoring.coreos.com/v1" && meta.Kind == "ServiceMonitor" {
			var m map[string]any
			if err := yaml.UnmarshalStrict([]byte(d.yaml), &m); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			out.serviceMonitors = append(out.serviceMonitors, m)
			continue
		}
		obj, _, err := dec.Decode([]byte(d.yaml), nil, nil)
		if err != nil {
			t.Fatalf("%s: strict decode of %s %s: %v\n%s", where, meta.APIVersion, meta.Kind, err, d.yaml)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			out.deployments = append(out.deployments, o)
		case *corev1.Service:
			out.services = append(out.services, o)
		case *corev1.ServiceAccount:
			out.serviceAccounts = append(out.serviceAccounts, o)
		case *corev1.ConfigMap:
			out.configMaps = append(out.configMaps, o)
		case *rbacv1.ClusterRole:
			out.clusterRoles = append(out.clusterRoles, o)
		case *rbacv1.ClusterRoleBinding:
			out.clusterRoleBindings = append(out.clusterRoleBindings, o)
		case *rbacv1.Role:
			out.roles = append(out.roles, o)
		case *rbacv1.RoleBinding:
			out.roleBindings = append(out.roleBindings, o)
		case *policyv1.PodDisruptionBudget:
			out.pdbs = append(out.pdbs, o)
		case *gwapiv1.GatewayClass:
			out.gatewayClasses = append(out.gatewayClasses, o)
		default:
			t.Fatalf("%s: unexpected kind %T; add checks for it to the chart tests", where, obj)
		}
	}
	return out
}

// rendered caches each value set's decoded objects: most tests check the same renders, and
// rendering is the slow part under -race. Tests only read the objects.
var rendered = struct {
	sync.Mutex
	byValues map[string]*objects
}{byValues: map[string]*objects{}}

// renderObjects renders and decodes one value set.
func renderObjects(t *testing.T, vs valueSet) *objects {
	t.Helper()
	rendered.Lock()
	defer rendered.Unlock()
	if o, ok := rendered.byValues[vs.yaml]; ok {
		return o
	}
	o := decodeAll(t, manifestDocs(renderFiles(t, vs)))
	rendered.byValues[vs.yaml] = o
	return o
}

// deploymentByComponent returns the Deployment whose pods carry the component label.
func (o *objects) deploymentByComponent(t *testing.T, component string) *appsv1.Deployment {
	t.Helper()
	var found *appsv1.Deployment
	for _, d := range o.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			if found != nil {
				t.Fatalf("two Deployments for component %q: %s and %s", component, found.Name, d.Name)
			}
			found = d
		}
	}
	if found == nil {
		t.Fatalf("no Deployment for component %q", component)
	}
	return found
}

// serviceFor returns the Services whose selector matches the Deployment's pods.
func (o *objects) servicesFor(d *appsv1.Deployment) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range o.services {
		if len(s.Spec.Selector) > 0 && selectorMatches(s.Spec.Selector, d.Spec.Template.Labels) {
			out = append(out, s)
		}
	}
	return out
}

func selectorMatches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func container(t *testing.T, d *appsv1.Deployment, name string, init bool) *corev1.Container {
	t.Helper()
	list := d.Spec.Template.Spec.Containers
	if init {
		list = d.Spec.Template.Spec.InitContainers
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	t.Fatalf("Deployment %s has no container %q (init=%v)", d.Name, name, init)
	return nil
}

// flagValue returns the value of --name in args ("--name value" or "--name=value").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if len(a) > len(name) && a[:len(name)+1] == name+"=" {
			return a[len(name)+1:], true
		}
	}
	return "", false
}

// flagValues returns every value of a repeated flag.
func flagValues(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == name && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		}
	}
	return out
}
