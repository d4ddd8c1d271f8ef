package kubesource

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
	dt "github.com/infergw/infergw/discovery/discoverytest"
	"github.com/infergw/infergw/model"
)

// TestGatewayServicesRealAPIServer: against a real kube-apiserver (no fake clientset), the
// source creates a Service per Gateway of its class in the proxy's namespace, with ports
// targeting exactly the Envoy ports the model allocates (the xDS translation computes the
// same), writes the Service's ClusterIP into the Gateway's status.addresses, updates the
// Service when the Gateway's ports change, recreates it when it is deleted by hand, and
// deletes it when the Gateway goes. Gateways of another class and Services it does not own
// are left alone. (No controller-manager runs here, so the owner reference's garbage
// collection is not exercised; the control plane's own deletion is.)
func TestGatewayServicesRealAPIServer(t *testing.T) {
	env, f := realAPIFixture(t)
	c := f.c
	ctx, cancel := context.WithCancel(f.ctx) // stops the source before the checks below end
	defer cancel()
	const proxyNS, appNS = "infergw-system", "apps"
	for _, n := range []string{proxyNS, appNS} {
		f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	f.create(&gwapiv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "infergw"}, Spec: gwapiv1.GatewayClassSpec{ControllerName: model.DefaultControllerName}})
	// A Service in the proxy namespace that is not the source's: never touched.
	f.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: proxyNS, Name: "infergw-envoy"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}, Selector: map[string]string{"app": "envoy"}},
	})

	ports := model.PortRange{First: 20000, Last: 20999}
	selector := map[string]string{"app.kubernetes.io/component": "envoy"}
	src, err := NewKubeSource(KubeOptions{
		RESTConfig: env.Config, WriteStatus: true, GatewayAPI: true, Registerer: prometheus.NewRegistry(),
		Debounce:        50 * time.Millisecond,
		GatewayPorts:    ports,
		GatewayServices: &GatewayServiceOptions{Namespace: proxyNS, Selector: selector},
	}, slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	local := dt.Gateway(proxyNS, "local", "infergw")
	local.Spec.Listeners = []gwapiv1.Listener{
		{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType},
		{Name: "http-alt", Port: 80, Protocol: gwapiv1.HTTPProtocolType, Hostname: new(gwapiv1.Hostname("alt.example.com"))},
		{Name: "other", Port: 8080, Protocol: gwapiv1.HTTPProtocolType},
	}
	remote := dt.Gateway(appNS, "remote", "infergw")
	remote.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 80, Protocol: gwapiv1.HTTPProtocolType}}
	foreign := dt.Gateway(appNS, "foreign", "someone-else")
	for _, g := range []*gwapiv1.Gateway{local, remote, foreign} {
		f.create(g)
	}

	// What the xDS translation allocates, from the same snapshot the source publishes.
	envoyPorts := func() map[string]map[int32]int32 {
		snap := waitSnapshot(t, src, "both gateways are in the snapshot", func(s *discovery.Snapshot) bool { return len(s.Gateways) == 2 })
		m := model.Resolve(snap, model.Options{GatewayPorts: ports})
		out := map[string]map[int32]int32{}
		for _, g := range m.Gateways {
			out[g.Key] = map[int32]int32{}
			for _, p := range g.GatewayPorts() {
				out[g.Key][p.Port] = p.EnvoyPort
			}
		}
		return out
	}
	want := envoyPorts()
	if len(want[proxyNS+"/local"]) != 2 || len(want[appNS+"/remote"]) != 1 || want[proxyNS+"/local"][80] == want[appNS+"/remote"][80] {
		t.Fatalf("allocation = %v: want ports 80 and 8080 for local, 80 for remote, on different Envoy ports", want)
	}

	serviceOf := func(g *gwapiv1.Gateway) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: proxyNS, Name: GatewayServiceName("infergw-gw", g.Namespace, g.Name)}}
	}
	checkService := func(g *gwapiv1.Gateway, ports map[int32]int32) func(*corev1.Service) error {
		return func(svc *corev1.Service) error {
			if svc.Spec.ClusterIP == "" || svc.Spec.Selector["app.kubernetes.io/component"] != "envoy" || len(svc.Spec.Selector) != 1 {
				return fmt.Errorf("clusterIP %q selector %v", svc.Spec.ClusterIP, svc.Spec.Selector)
			}
			if len(svc.Spec.Ports) != len(ports) {
				return fmt.Errorf("ports %+v, want %v", svc.Spec.Ports, ports)
			}
			for _, p := range svc.Spec.Ports {
				if ports[p.Port] == 0 || p.TargetPort.IntVal != ports[p.Port] {
					return fmt.Errorf("port %d targets %s, want %d", p.Port, p.TargetPort.String(), ports[p.Port])
				}
			}
			if svc.Annotations[gatewayServiceGatewayAnnotation] != g.Namespace+"/"+g.Name || svc.Labels[gatewayNameLabel] != g.Name {
				return fmt.Errorf("labels %v annotations %v", svc.Labels, svc.Annotations)
			}
			return nil
		}
	}
	localSvc, remoteSvc := serviceOf(local), serviceOf(remote)
	waitCondition(f, localSvc, "the local Gateway's Service", checkService(local, want[proxyNS+"/local"]))
	waitCondition(f, remoteSvc, "the remote Gateway's Service", checkService(remote, want[appNS+"/remote"]))
	// Same namespace: owned by the Gateway; another namespace: no owner reference possible.
	if o := localSvc.OwnerReferences; len(o) != 1 || o[0].Kind != "Gateway" || o[0].UID != local.UID {
		t.Errorf("local Service owners = %+v, want its Gateway", o)
	}
	if len(remoteSvc.OwnerReferences) != 0 {
		t.Errorf("remote Service owners = %+v, want none", remoteSvc.OwnerReferences)
	}
	for _, g := range []*gwapiv1.Gateway{local, remote} {
		ip := map[*gwapiv1.Gateway]string{local: localSvc.Spec.ClusterIP, remote: remoteSvc.Spec.ClusterIP}[g]
		waitCondition(f, g, g.Name+" status has its Service's address", func(g *gwapiv1.Gateway) error {
			if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != ip {
				return fmt.Errorf("addresses %v, want %s", g.Status.Addresses, ip)
			}
			return expectCondition(g.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed", g.Generation)
		})
	}
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs, client.InNamespace(appNS)); err != nil || len(svcs.Items) != 0 {
		t.Errorf("services in the Gateways' namespace: %d (%v), want none", len(svcs.Items), err)
	}

	// The Gateway drops port 8080: its Service follows.
	if err := c.Get(ctx, client.ObjectKeyFromObject(local), local); err != nil {
		t.Fatal(err)
	}
	local.Spec.Listeners = local.Spec.Listeners[:2]
	if err := c.Update(ctx, local); err != nil {
		t.Fatal(err)
	}
	clusterIP := localSvc.Spec.ClusterIP
	waitCondition(f, localSvc, "the local Service without port 8080", checkService(local, map[int32]int32{80: want[proxyNS+"/local"][80]}))
	if localSvc.Spec.ClusterIP != clusterIP {
		t.Errorf("the update replaced the Service (clusterIP %s, was %s)", localSvc.Spec.ClusterIP, clusterIP)
	}

	// Deleted by hand: made again.
	f.delete(remoteSvc.DeepCopy())
	waitCondition(f, serviceOf(remote), "the remote Service made again", checkService(remote, want[appNS+"/remote"]))

	// The Gateway goes: its Service goes; the other Services stay.
	f.delete(remote)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(remoteSvc), &corev1.Service{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted Gateway's Service still exists (get: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, name := range []string{"infergw-envoy", localSvc.Name} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: proxyNS, Name: name}, &corev1.Service{}); err != nil {
			t.Errorf("service %s: %v, want it kept", name, err)
		}
	}
}

func TestGatewayServiceName(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct{ ns, name string }{{"apps", "web"}, {"apps", "my.gateway.v2"}, {long[:63], long}} {
		n := GatewayServiceName("infergw-gw", tc.ns, tc.name)
		if len(n) > 63 || strings.ContainsAny(n, ".") || !strings.HasPrefix(n, "infergw-gw-") {
			t.Errorf("%s/%s -> %q: not a DNS-1035 label with the prefix", tc.ns, tc.name, n)
		}
	}
	// Names shortened to the same prefix stay apart.
	if a, b := GatewayServiceName("p", long[:63], long+"x"), GatewayServiceName("p", long[:63], long+"y"); a == b {
		t.Errorf("two Gateways share the Service name %q", a)
	}
	if GatewayServiceName("p", "a-b", "c") == GatewayServiceName("p", "a", "b-c") {
		t.Error("a-b/c and a/b-c share a Service name")
	}
}

func TestGatewayServiceOptionsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		o  GatewayServiceOptions
		ns []string
	}{
		"no namespace":        {GatewayServiceOptions{Selector: map[string]string{"a": "b"}}, nil},
		"no selector":         {GatewayServiceOptions{Namespace: "x"}, nil},
		"namespace unwatched": {GatewayServiceOptions{Namespace: "x", Selector: map[string]string{"a": "b"}}, []string{"y"}},
		"bad prefix":          {GatewayServiceOptions{Namespace: "x", Selector: map[string]string{"a": "b"}, Prefix: "9_bad"}, nil},
	} {
		if err := tc.o.validate(tc.ns); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	o := GatewayServiceOptions{Namespace: "x", Selector: map[string]string{"a": "b"}}
	if err := o.validate([]string{"x"}); err != nil || o.Type != corev1.ServiceTypeClusterIP || o.Prefix == "" {
		t.Errorf("valid options: %v, defaults %+v", err, o)
	}
	_, err := NewKubeSource(KubeOptions{RESTConfig: &rest.Config{Host: "http://127.0.0.1:1"}, GatewayServices: &o}, nil)
	if err == nil || !strings.Contains(err.Error(), "WriteStatus") {
		t.Errorf("gateway services without WriteStatus/GatewayPorts: %v", err)
	}
}
