// Package discoverytest builds the small Kubernetes objects the tests of the discovery
// packages, the resolved model and the translation share, so that each package's tests
// describe their fixtures in one line instead of a struct literal.
package discoverytest

import (
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
)

// Pod is a pod with an IP, labels and a Ready condition.
func Pod(ns, name, ip string, ready bool, labels map[string]string) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status: corev1.PodStatus{
			PodIP:      ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

// Pool is an InferencePool selecting selector, on ports, whose picker is the Service
// name+"-epp" port 9002.
func Pool(ns, name string, selector map[string]string, ports ...int32) *infv1.InferencePool {
	ml := make(map[infv1.LabelKey]infv1.LabelValue, len(selector))
	for k, v := range selector {
		ml[infv1.LabelKey(k)] = infv1.LabelValue(v)
	}
	tp := make([]infv1.Port, 0, len(ports))
	for _, p := range ports {
		tp = append(tp, infv1.Port{Number: infv1.PortNumber(p)})
	}
	return &infv1.InferencePool{
		TypeMeta:   metav1.TypeMeta{APIVersion: "inference.networking.k8s.io/v1", Kind: "InferencePool"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: infv1.InferencePoolSpec{
			Selector:    infv1.LabelSelector{MatchLabels: ml},
			TargetPorts: tp,
			EndpointPickerRef: infv1.EndpointPickerRef{
				Name: infv1.ObjectName(name + "-epp"),
				Port: &infv1.Port{Number: 9002},
			},
		},
	}
}

// Gateway has one HTTP listener "http" on port 8080 (routes from its own namespace).
func Gateway(ns, name, class string) *gwapiv1.Gateway {
	return &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gwapiv1.GatewaySpec{
			GatewayClassName: gwapiv1.ObjectName(class),
			Listeners:        []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType}},
		},
	}
}

// Ptr returns a pointer to v.
func Ptr[T any](v T) *T { return &v }

// Route attaches to gateway gwNS/gwName and sends to the named pools (and Services, port
// 80, when a name starts with "svc:").
func Route(ns, name, gwNS, gwName string, backends ...string) *gwapiv1.HTTPRoute {
	refs := make([]gwapiv1.HTTPBackendRef, 0, len(backends))
	for _, b := range backends {
		var ref gwapiv1.BackendObjectReference
		if len(b) > 4 && b[:4] == "svc:" {
			ref = gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(b[4:]), Port: Ptr(gwapiv1.PortNumber(80))}
		} else {
			ref = gwapiv1.BackendObjectReference{
				Group: Ptr(gwapiv1.Group("inference.networking.k8s.io")),
				Kind:  Ptr(gwapiv1.Kind("InferencePool")),
				Name:  gwapiv1.ObjectName(b),
			}
		}
		refs = append(refs, gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: ref}})
	}
	parent := gwapiv1.ParentReference{Name: gwapiv1.ObjectName(gwName)}
	if gwNS != ns {
		parent.Namespace = Ptr(gwapiv1.Namespace(gwNS))
	}
	return &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{parent}},
			Rules:           []gwapiv1.HTTPRouteRule{{BackendRefs: refs}},
		},
	}
}

// Service has clusterIP 127.0.0.1 and port 9002 (a picker's).
func Service(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: "127.0.0.1", Ports: []corev1.ServicePort{{Port: 9002}}},
	}
}

// WaitGoroutines waits up to 5 s for the number of goroutines to fall to want, and fails
// the test with every goroutine's stack if it does not.
func WaitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), want, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WithGeneration sets obj's metadata.generation and returns obj.
func WithGeneration[T interface{ SetGeneration(int64) }](obj T, gen int64) T {
	obj.SetGeneration(gen)
	return obj
}
