package chart

import (
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// resolvePort finds the container port a probe or Service targetPort names (by name or
// number) among the ports the container declares.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// TestProbesTargetDeclaredPorts: every probe of every container points at a port that
// container declares, and the long-running infergw containers have readiness and liveness.
func TestProbesTargetDeclaredPorts(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			for _, d := range o.deployments {
				for i := range d.Spec.Template.Spec.Containers {
					c := &d.Spec.Template.Spec.Containers[i]
					if c.ReadinessProbe == nil {
						t.Errorf("%s/%s has no readiness probe", d.Name, c.Name)
					}
					if c.Name != "envoy" && c.LivenessProbe == nil {
						t.Errorf("%s/%s has no liveness probe", d.Name, c.Name)
					}
					for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
						if p == nil {
							continue
						}
						var port intstr.IntOrString
						switch {
						case p.HTTPGet != nil:
							port = p.HTTPGet.Port
							if p.HTTPGet.Path != "/healthz" && p.HTTPGet.Path != "/readyz" {
								t.Errorf("%s/%s %s probe path %q is not a health endpoint", d.Name, c.Name, kind, p.HTTPGet.Path)
							}
						case p.GRPC != nil:
							port = intstr.FromInt32(p.GRPC.Port)
						case p.TCPSocket != nil:
							port = p.TCPSocket.Port
						default:
							t.Errorf("%s/%s %s probe has no network handler", d.Name, c.Name, kind)
							continue
						}
						if _, ok := resolvePort(c, port); !ok {
							t.Errorf("%s/%s %s probe targets port %s, which the container does not declare", d.Name, c.Name, kind, port.String())
						}
					}
				}
			}
		})
	}
}

// TestProbeEndpoints pins which health endpoint each probe uses: the readiness probes use
// the "ready" endpoints, the picker uses gRPC health services unless TLS is on (the kubelet's
// gRPC probe cannot do TLS).
func TestProbeEndpoints(t *testing.T) {
	for _, tc := range []struct {
		set string
		tls bool
	}{{"default", false}, {"tls", true}} {
		t.Run(tc.set, func(t *testing.T) {
			o := renderObjects(t, valueSetByName(t, tc.set))
			cp := container(t, o.deploymentByComponent(t, "controlplane"), "controlplane", false)
			if cp.ReadinessProbe.HTTPGet == nil || cp.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("control plane readiness probe %+v, want httpGet /readyz", cp.ReadinessProbe)
			}
			if cp.LivenessProbe.HTTPGet == nil || cp.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("control plane liveness probe %+v, want httpGet /healthz", cp.LivenessProbe)
			}
			pk := container(t, o.deploymentByComponent(t, "picker"), "picker", false)
			if tc.tls {
				if pk.ReadinessProbe.HTTPGet == nil || pk.ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Errorf("TLS picker readiness probe %+v, want httpGet /readyz", pk.ReadinessProbe)
				}
			} else {
				if g := pk.ReadinessProbe.GRPC; g == nil || g.Service == nil || *g.Service != "readiness" {
					t.Errorf("picker readiness probe %+v, want gRPC service readiness", pk.ReadinessProbe)
				}
				if g := pk.LivenessProbe.GRPC; g == nil || g.Service == nil || *g.Service != "liveness" {
					t.Errorf("picker liveness probe %+v, want gRPC service liveness", pk.LivenessProbe)
				}
			}
		})
	}
}

// TestEnvoyBootstrapPointsAtControlPlane: the initContainer's --xds-addr names the control
// plane Service (in the release namespace) on a port that Service forwards to the port the
// control plane's --xds-addr listens on; the bootstrap file lands where Envoy reads it.
func TestEnvoyBootstrapPointsAtControlPlane(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			envoy := o.deploymentByComponent(t, "envoy")
			boot := container(t, envoy, "bootstrap", true)
			if len(boot.Args) < 2 || boot.Args[0] != "controlplane" || boot.Args[1] != "bootstrap" {
				t.Fatalf("bootstrap args %v, want `controlplane bootstrap …`", boot.Args)
			}
			xds, ok := flagValue(boot.Args, "--xds-addr")
			if !ok {
				t.Fatalf("bootstrap args lack --xds-addr: %v", boot.Args)
			}
			host, portText, err := net.SplitHostPort(xds)
			if err != nil {
				t.Fatalf("--xds-addr %q: %v", xds, err)
			}
			labels := strings.Split(host, ".")
			if len(labels) < 3 || labels[2] != "svc" {
				t.Fatalf("--xds-addr host %q is not a Service DNS name", host)
			}
			svcName, svcNS := labels[0], labels[1]
			if svcNS != releaseNamespace {
				t.Errorf("--xds-addr namespace %q, want the release namespace %q", svcNS, releaseNamespace)
			}
			var svc *corev1.Service
			for _, s := range o.services {
				if s.Name == svcName && s.Namespace == svcNS {
					svc = s
				}
			}
			if svc == nil {
				t.Fatalf("--xds-addr names Service %s/%s, which the chart does not render", svcNS, svcName)
			}
			cpDeploy := o.deploymentByComponent(t, "controlplane")
			if !selectorMatches(svc.Spec.Selector, cpDeploy.Spec.Template.Labels) {
				t.Fatalf("Service %s does not select the control plane pods", svc.Name)
			}
			port, _ := strconv.Atoi(portText)
			var sp *corev1.ServicePort
			for i := range svc.Spec.Ports {
				if int(svc.Spec.Ports[i].Port) == port {
					sp = &svc.Spec.Ports[i]
				}
			}
			if sp == nil {
				t.Fatalf("Service %s has no port %d", svc.Name, port)
			}
			cp := container(t, cpDeploy, "controlplane", false)
			target, ok := resolvePort(cp, sp.TargetPort)
			if !ok {
				t.Fatalf("Service port %d targets %s, not a control plane container port", port, sp.TargetPort.String())
			}
			listen, ok := flagValue(cp.Args, "--xds-addr")
			if !ok {
				t.Fatalf("control plane args lack --xds-addr: %v", cp.Args)
			}
			if _, lp, _ := net.SplitHostPort(listen); lp != strconv.Itoa(int(target.ContainerPort)) {
				t.Errorf("control plane listens on %s but the Service forwards to container port %d", listen, target.ContainerPort)
			}

			if node, _ := flagValue(boot.Args, "--node-id"); node != "$(POD_NAME)" {
				t.Errorf("--node-id %q, want $(POD_NAME)", node)
			}
			if !slices.ContainsFunc(boot.Env, func(e corev1.EnvVar) bool {
				return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
			}) {
				t.Errorf("bootstrap container does not set POD_NAME from metadata.name: %+v", boot.Env)
			}
			if admin, _ := flagValue(boot.Args, "--admin-addr"); !strings.HasPrefix(admin, "127.0.0.1:") {
				t.Errorf("--admin-addr %q: Envoy's admin interface must bind loopback only", admin)
			}
			out, _ := flagValue(boot.Args, "--output")
			ev := container(t, envoy, "envoy", false)
			cfg, _ := flagValue(ev.Args, "--config-path")
			if out == "" || out != cfg {
				t.Fatalf("bootstrap writes %q but Envoy reads --config-path %q", out, cfg)
			}
			wv := volumeMountedAt(boot, path.Dir(out))
			rv := volumeMountedAt(ev, path.Dir(cfg))
			if wv == "" || wv != rv {
				t.Errorf("bootstrap file directory is volume %q in the initContainer and %q in Envoy", wv, rv)
			}
			if vol := podVolume(envoy, wv); vol == nil || vol.EmptyDir == nil {
				t.Errorf("bootstrap volume %q is not an emptyDir", wv)
			}
			if !strings.HasPrefix(ev.Image, "envoyproxy/envoy:") && vs.name != "everything" {
				t.Errorf("Envoy image %q", ev.Image)
			}
		})
	}
}

func volumeMountedAt(c *corev1.Container, dir string) string {
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			return m.Name
		}
	}
	return ""
}

func podVolume(d *appsv1.Deployment, name string) *corev1.Volume {
	for i := range d.Spec.Template.Spec.Volumes {
		if d.Spec.Template.Spec.Volumes[i].Name == name {
			return &d.Spec.Template.Spec.Volumes[i]
		}
	}
	return nil
}

// assertTLS checks that each flag names a file inside a read-only mount of a volume backed
// by the secret.
func assertTLS(t *testing.T, d *appsv1.Deployment, c *corev1.Container, secret string, flags []string) {
	t.Helper()
	for _, f := range flags {
		file, ok := flagValue(c.Args, f)
		if !ok {
			t.Errorf("%s/%s: TLS on but no %s flag: %v", d.Name, c.Name, f, c.Args)
			continue
		}
		var mount *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if strings.HasPrefix(file, path.Clean(c.VolumeMounts[i].MountPath)+"/") {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil {
			t.Errorf("%s/%s: %s %s is on no mounted volume", d.Name, c.Name, f, file)
			continue
		}
		if !mount.ReadOnly {
			t.Errorf("%s/%s: TLS mount %s is writable", d.Name, c.Name, mount.MountPath)
		}
		vol := podVolume(d, mount.Name)
		if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret {
			t.Errorf("%s/%s: %s %s is on volume %+v, want secret %q", d.Name, c.Name, f, file, vol, secret)
		}
		key := strings.TrimPrefix(file, path.Clean(mount.MountPath)+"/")
		if key != "tls.crt" && key != "tls.key" && key != "ca.crt" {
			t.Errorf("%s/%s: %s names key %q, not a kubernetes.io/tls secret key", d.Name, c.Name, f, key)
		}
	}
}

// TestTLS: with tls.enabled every hop's secret is mounted and the flags are passed (server
// cert/key/client CA for the control plane, cert/key for the picker, client cert/key/CA for
// Envoy's bootstrap); without it no TLS flag or secret appears.
func TestTLS(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		o := renderObjects(t, valueSetByName(t, "tls"))
		cp := o.deploymentByComponent(t, "controlplane")
		assertTLS(t, cp, container(t, cp, "controlplane", false), "infergw-controlplane-tls", []string{"--tls-cert", "--tls-key", "--tls-ca"})
		pk := o.deploymentByComponent(t, "picker")
		assertTLS(t, pk, container(t, pk, "picker", false), "my-picker-cert", []string{"--tls-cert", "--tls-key"})
		ev := o.deploymentByComponent(t, "envoy")
		assertTLS(t, ev, container(t, ev, "bootstrap", true), "infergw-envoy-tls", []string{"--tls-cert", "--tls-key", "--tls-ca"})
		// Envoy itself reads the files the bootstrap names, so it mounts the same secret at
		// the same place.
		boot := container(t, ev, "bootstrap", true)
		envoy := container(t, ev, "envoy", false)
		cert, _ := flagValue(boot.Args, "--tls-cert")
		if volumeMountedAt(envoy, path.Dir(cert)) != volumeMountedAt(boot, path.Dir(cert)) {
			t.Errorf("Envoy does not mount the TLS secret where the bootstrap points (%s)", path.Dir(cert))
		}
		assertPickerTLS(t, o, "infergw-envoy-tls", "")
	})
	t.Run("everything", func(t *testing.T) {
		o := renderObjects(t, valueSetByName(t, "everything"))
		assertPickerTLS(t, o, "edge-envoy-tls", "llama-epp.serving.svc.cluster.local")
	})
	t.Run("off", func(t *testing.T) {
		o := renderObjects(t, valueSetByName(t, "default"))
		for _, d := range o.deployments {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					t.Errorf("%s mounts secret %s with TLS off", d.Name, v.Secret.SecretName)
				}
			}
			for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
				for _, a := range c.Args {
					if strings.HasPrefix(a, "--tls-") || strings.HasPrefix(a, "--picker-tls-") {
						t.Errorf("%s/%s passes %s with TLS off", d.Name, c.Name, a)
					}
				}
			}
		}
	})
}

// assertPickerTLS checks the Envoy → picker TLS wiring: the control plane names, in its
// --picker-tls-* flags, files that Envoy itself (not the control plane, which only copies the
// paths into the picker clusters) has: the right key of the Envoy secret on a read-only
// mount of the Envoy container. wantSNI is the --picker-tls-sni value ("" = not passed).
func assertPickerTLS(t *testing.T, o *objects, envoySecret, wantSNI string) {
	t.Helper()
	cp := container(t, o.deploymentByComponent(t, "controlplane"), "controlplane", false)
	ev := o.deploymentByComponent(t, "envoy")
	envoy := container(t, ev, "envoy", false)
	for flag, key := range map[string]string{"--picker-tls-ca": "ca.crt", "--picker-tls-cert": "tls.crt", "--picker-tls-key": "tls.key"} {
		file, ok := flagValue(cp.Args, flag)
		if !ok {
			t.Errorf("TLS on but the control plane has no %s: %v", flag, cp.Args)
			continue
		}
		mountName := volumeMountedAt(envoy, path.Dir(file))
		if mountName == "" {
			t.Errorf("control plane %s %s: the Envoy container mounts nothing at %s", flag, file, path.Dir(file))
			continue
		}
		for _, m := range envoy.VolumeMounts {
			if m.Name == mountName && !m.ReadOnly {
				t.Errorf("Envoy's TLS mount %s is writable", m.MountPath)
			}
		}
		if vol := podVolume(ev, mountName); vol == nil || vol.Secret == nil || vol.Secret.SecretName != envoySecret {
			t.Errorf("control plane %s %s: Envoy mounts volume %+v there, want secret %q", flag, file, vol, envoySecret)
		}
		if path.Base(file) != key {
			t.Errorf("control plane %s names %s, want the secret key %s", flag, file, key)
		}
	}
	sni, ok := flagValue(cp.Args, "--picker-tls-sni")
	if wantSNI == "" && ok {
		t.Errorf("control plane passes --picker-tls-sni %q without tls.pickerServerName", sni)
	}
	if wantSNI != "" && sni != wantSNI {
		t.Errorf("control plane --picker-tls-sni = %q (given: %v), want %q", sni, ok, wantSNI)
	}
}

// TestServicesSelectTheirPods: every Service selects exactly one Deployment's pods, and
// each of its ports targets a port those pods declare. The picker Service exposes the
// ext_proc port under the name InferencePools refer to.
func TestServicesSelectTheirPods(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			for _, s := range o.services {
				var matched []*appsv1.Deployment
				for _, d := range o.deployments {
					if selectorMatches(s.Spec.Selector, d.Spec.Template.Labels) {
						matched = append(matched, d)
					}
				}
				if len(matched) != 1 {
					t.Errorf("Service %s selects %d Deployments, want 1", s.Name, len(matched))
					continue
				}
				d := matched[0]
				for _, sp := range s.Spec.Ports {
					found := false
					for i := range d.Spec.Template.Spec.Containers {
						if _, ok := resolvePort(&d.Spec.Template.Spec.Containers[i], sp.TargetPort); ok {
							found = true
						}
					}
					if !found {
						t.Errorf("Service %s port %s targets %s, which Deployment %s does not declare", s.Name, sp.Name, sp.TargetPort.String(), d.Name)
					}
				}
				// A Deployment's selector must match its own template, and only its own.
				if !selectorMatches(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("Deployment %s selector does not match its pods", d.Name)
				}
			}
			wantPicker := "infergw-picker"
			if vs.name == "everything" {
				wantPicker = "llama-epp"
			}
			pickerSvcs := o.servicesFor(o.deploymentByComponent(t, "picker"))
			if len(pickerSvcs) != 1 || pickerSvcs[0].Name != wantPicker {
				t.Fatalf("picker Services %v, want one named %s", pickerSvcs, wantPicker)
			}
			if !slices.ContainsFunc(pickerSvcs[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 9002 }) {
				t.Errorf("picker Service %s does not expose the ext_proc port 9002", wantPicker)
			}
		})
	}
}

// TestPodDisruptionBudgets: none for single replicas (it would block drains or protect
// nothing); one per multi-replica component, selecting exactly that component's pods.
func TestPodDisruptionBudgets(t *testing.T) {
	if o := renderObjects(t, valueSetByName(t, "default")); len(o.pdbs) != 0 {
		t.Errorf("default values render %d PodDisruptionBudgets, want 0 (single replicas)", len(o.pdbs))
	}
	o := renderObjects(t, valueSetByName(t, "ha"))
	if len(o.pdbs) != 3 {
		t.Fatalf("%d PodDisruptionBudgets, want 3", len(o.pdbs))
	}
	for _, pdb := range o.pdbs {
		var matched []*appsv1.Deployment
		for _, d := range o.deployments {
			if selectorMatches(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				matched = append(matched, d)
			}
		}
		if len(matched) != 1 {
			t.Fatalf("PDB %s selects %d Deployments, want 1", pdb.Name, len(matched))
		}
		d := matched[0]
		if *d.Spec.Replicas < 2 {
			t.Errorf("PDB %s for single-replica Deployment %s", pdb.Name, d.Name)
		}
		if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			t.Errorf("PDB %s must set exactly one of minAvailable and maxUnavailable", pdb.Name)
		}
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "picker" {
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
				t.Errorf("picker PDB minAvailable %v, want 2 from values", pdb.Spec.MinAvailable)
			}
		} else if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PDB %s maxUnavailable %v, want the default 1", pdb.Name, pdb.Spec.MaxUnavailable)
		}
	}
	if got := *o.deploymentByComponent(t, "envoy").Spec.Replicas; got != 4 {
		t.Errorf("Envoy replicas %d, want 4", got)
	}
}

// TestServiceMonitor: off by default; when on, it has the fields the Prometheus Operator
// requires and selects exactly the two metrics Services through their "metrics" port.
func TestServiceMonitor(t *testing.T) {
	if o := renderObjects(t, valueSetByName(t, "default")); len(o.serviceMonitors) != 0 {
		t.Fatalf("ServiceMonitor rendered by default")
	}
	o := renderObjects(t, valueSetByName(t, "servicemonitor"))
	if len(o.serviceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(o.serviceMonitors))
	}
	sm := o.serviceMonitors[0]
	if sm["apiVersion"] != "monitoring.coreos.com/v1" || sm["kind"] != "ServiceMonitor" {
		t.Fatalf("apiVersion/kind %v/%v", sm["apiVersion"], sm["kind"])
	}
	meta, _ := sm["metadata"].(map[string]any)
	if meta["name"] == nil || meta["namespace"] != releaseNamespace {
		t.Errorf("metadata %v lacks a name or the release namespace", meta)
	}
	if labels, _ := meta["labels"].(map[string]any); labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack the configured release label", labels)
	}
	for key := range sm {
		if key != "apiVersion" && key != "kind" && key != "metadata" && key != "spec" {
			t.Errorf("unknown top-level field %q", key)
		}
	}
	spec, _ := sm["spec"].(map[string]any)
	for key := range spec {
		if !slices.Contains([]string{"selector", "endpoints", "namespaceSelector", "jobLabel"}, key) {
			t.Errorf("unexpected spec field %q", key)
		}
	}
	selector, _ := spec["selector"].(map[string]any)
	match, _ := selector["matchLabels"].(map[string]any)
	if len(match) == 0 {
		t.Fatalf("spec.selector.matchLabels is empty (it would select every Service): %v", spec["selector"])
	}
	want := map[string]string{}
	for k, v := range match {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("matchLabels[%s] = %v is not a string", k, v)
		}
		want[k] = s
	}
	nsSel, _ := spec["namespaceSelector"].(map[string]any)
	if names, _ := nsSel["matchNames"].([]any); len(names) != 1 || names[0] != releaseNamespace {
		t.Errorf("namespaceSelector %v, want the release namespace", nsSel)
	}
	endpoints, _ := spec["endpoints"].([]any)
	if len(endpoints) == 0 {
		t.Fatal("spec.endpoints is empty")
	}
	var selected []string
	for _, s := range o.services {
		if !selectorMatches(want, s.Labels) {
			continue
		}
		selected = append(selected, s.Name)
		for _, e := range endpoints {
			ep, _ := e.(map[string]any)
			port, _ := ep["port"].(string)
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
				t.Errorf("endpoint port %q is not a port of selected Service %s", port, s.Name)
			}
			if ep["interval"] != "15s" {
				t.Errorf("endpoint interval %v, want 15s from values", ep["interval"])
			}
			if ep["path"] != "/metrics" {
				t.Errorf("endpoint path %v", ep["path"])
			}
		}
	}
	slices.Sort(selected)
	if !slices.Equal(selected, []string{"infergw-controlplane", "infergw-picker"}) {
		t.Errorf("ServiceMonitor selects Services %v, want the control plane and picker", selected)
	}
}

// TestExtraArgsAndOptions: extra args come last (so they can override), and the picker's
// optional flags and scheduler ConfigMap are wired.
func TestExtraArgsAndOptions(t *testing.T) {
	o := renderObjects(t, valueSetByName(t, "extraargs"))
	cp := container(t, o.deploymentByComponent(t, "controlplane"), "controlplane", false)
	if !slices.Equal(cp.Args[len(cp.Args)-1:], []string{"--log-level=debug"}) {
		t.Errorf("control plane args %v do not end with the extra args", cp.Args)
	}
	if !slices.ContainsFunc(cp.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMAXPROCS" && e.Value == "2" }) {
		t.Errorf("control plane env %v lacks extraEnv", cp.Env)
	}
	pickerDeploy := o.deploymentByComponent(t, "picker")
	pk := container(t, pickerDeploy, "picker", false)
	if !slices.Equal(pk.Args[len(pk.Args)-2:], []string{"--log-level", "debug"}) {
		t.Errorf("picker args %v do not end with the extra args", pk.Args)
	}
	if v, _ := flagValue(pk.Args, "--pool"); v != "llm/vllm-llama3-8b" {
		t.Errorf("--pool %q", v)
	}
	if v, _ := flagValue(pk.Args, "--max-body-bytes"); v != "1048576" {
		t.Errorf("--max-body-bytes %q, want 1048576", v)
	}
	if v, _ := flagValue(pk.Args, "--grpc-transport"); v != "grpc-go" {
		t.Errorf("--grpc-transport %q, want grpc-go", v)
	}
	cfgPath, ok := flagValue(pk.Args, "--scheduler-config")
	if !ok {
		t.Fatalf("picker args lack --scheduler-config: %v", pk.Args)
	}
	vol := podVolume(pickerDeploy, volumeMountedAt(pk, path.Dir(cfgPath)))
	if vol == nil || vol.ConfigMap == nil {
		t.Fatalf("--scheduler-config %s is not on a ConfigMap volume", cfgPath)
	}
	var cm *corev1.ConfigMap
	for _, c := range o.configMaps {
		if c.Name == vol.ConfigMap.Name {
			cm = c
		}
	}
	if cm == nil {
		t.Fatalf("ConfigMap %s is not rendered", vol.ConfigMap.Name)
	}
	if got := cm.Data[path.Base(cfgPath)]; got != "scorers:\n  queue: 2\n" {
		t.Errorf("scheduler config in ConfigMap = %q", got)
	}
	if pickerDeploy.Spec.Template.Annotations["checksum/scheduler-config"] == "" {
		t.Error("picker pods do not roll when the scheduler config changes (no checksum annotation)")
	}
	ev := o.deploymentByComponent(t, "envoy")
	envoy := container(t, ev, "envoy", false)
	if !slices.Equal(envoy.Args[len(envoy.Args)-2:], []string{"--concurrency", "2"}) {
		t.Errorf("Envoy args %v do not end with the extra args", envoy.Args)
	}
	boot := container(t, ev, "bootstrap", true)
	if !slices.Equal(boot.Args[len(boot.Args)-2:], []string{"--cluster", "gw"}) {
		t.Errorf("bootstrap args %v do not end with the extra args", boot.Args)
	}

	def := renderObjects(t, valueSetByName(t, "default"))
	dpk := container(t, def.deploymentByComponent(t, "picker"), "picker", false)
	if v, _ := flagValue(dpk.Args, "--max-body-bytes"); v != "16777216" {
		t.Errorf("default --max-body-bytes %q, want 16777216", v)
	}
	if v, _ := flagValue(dpk.Args, "--grpc-transport"); v != "inline" {
		t.Errorf("default --grpc-transport %q, want inline", v)
	}
	// A stopping picker drains its open streams for most of its termination grace period,
	// after a preStop pause that lets proxies stop choosing it.
	dpd := def.deploymentByComponent(t, "picker")
	if g := dpd.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 60 {
		t.Errorf("picker terminationGracePeriodSeconds %v, want 60", g)
	}
	if v, _ := flagValue(dpk.Args, "--shutdown-grace"); v != "50s" {
		t.Errorf("default --shutdown-grace %q, want 50s", v)
	}
	if lc := dpk.Lifecycle; lc == nil || lc.PreStop == nil || lc.PreStop.Sleep == nil || lc.PreStop.Sleep.Seconds != 5 {
		t.Errorf("picker lifecycle %+v, want a 5 s preStop sleep", lc)
	}
	for _, f := range []string{"--pool", "--scheduler-config"} {
		if _, ok := flagValue(dpk.Args, f); ok {
			t.Errorf("default picker args pass %s", f)
		}
	}
	if len(def.configMaps) != 0 {
		t.Errorf("default values render %d ConfigMaps", len(def.configMaps))
	}
}

// contractFlags are the flags the shared command-line contract defines for each command.
// --write-status (the control plane writes status), the control plane's --picker-tls-* (Envoy
// → picker TLS) and the bootstrap's --output (the image has no shell to redirect stdout) are
// the chart's additions, as are the per-Gateway Service flags (gatewayServices.enabled).
var contractFlags = map[string][]string{
	"controlplane":           {"--xds-addr", "--metrics-addr", "--manifests", "--kubernetes", "--kubeconfig", "--namespace", "--gateway-class", "--listener-address", "--tls-cert", "--tls-key", "--tls-ca", "--write-status", "--gateway-service", "--picker-tls-ca", "--picker-tls-cert", "--picker-tls-key", "--picker-tls-sni", "--gateway-port-range", "--gateway-services-namespace", "--gateway-services-selector", "--gateway-services-type", "--ready-port"},
	"picker":                 {"--grpc-addr", "--metrics-addr", "--manifests", "--kubernetes", "--kubeconfig", "--namespace", "--pool", "--scheduler-config", "--max-body-bytes", "--grpc-transport", "--shutdown-grace", "--tls-cert", "--tls-key", "--model-server-metrics-scheme", "--model-server-metrics-path", "--model-server-metrics-port", "--model-server-metrics-https-insecure-skip-verify", "--model-server-metrics-ca-file", "--model-server-metrics-bearer-token-file", "--kv-events-pod-port", "--kv-events-replay-port", "--kv-tokenizer"},
	"controlplane bootstrap": {"--xds-addr", "--node-id", "--admin-addr", "--tls-cert", "--tls-key", "--tls-ca", "--output"},
}

// TestCommandLinesFollowTheContract: without extra args, the containers pass only the
// contract's flags; both servers use the Kubernetes source with the watched namespaces, and
// only the control plane writes status.
func TestCommandLinesFollowTheContract(t *testing.T) {
	for _, vs := range valueSets {
		if vs.name == "extraargs" {
			continue
		}
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			check := func(c *corev1.Container, command string) {
				words := strings.Fields(command)
				if !slices.Equal(c.Args[:len(words)], words) {
					t.Fatalf("%s args %v do not start with %q", c.Name, c.Args, command)
				}
				for _, a := range c.Args[len(words):] {
					if !strings.HasPrefix(a, "--") {
						continue
					}
					name, _, _ := strings.Cut(a, "=")
					if !slices.Contains(contractFlags[command], name) {
						t.Errorf("%s passes %s, which `infergw %s` does not define", c.Name, name, command)
					}
				}
			}
			watched := parseValues(t, vs)["watchNamespaces"]
			var want []string
			if list, ok := watched.([]any); ok {
				for _, n := range list {
					want = append(want, n.(string))
				}
			}
			for _, component := range []string{"controlplane", "picker"} {
				c := container(t, o.deploymentByComponent(t, component), component, false)
				check(c, component)
				if !slices.Contains(c.Args, "--kubernetes") {
					t.Errorf("%s does not use the Kubernetes source: %v", component, c.Args)
				}
				if got := flagValues(c.Args, "--namespace"); !slices.Equal(got, want) {
					t.Errorf("%s --namespace %v, want %v", component, got, want)
				}
				wantStatus := component == "controlplane" && vs.name != "everything"
				if got := slices.Contains(c.Args, "--write-status"); got != wantStatus {
					t.Errorf("%s --write-status = %v, want %v", component, got, wantStatus)
				}
			}
			check(container(t, o.deploymentByComponent(t, "envoy"), "bootstrap", true), "controlplane bootstrap")
		})
	}
}

// TestSecurityContexts: every pod runs as non-root with the RuntimeDefault seccomp profile;
// every container has a read-only root, no privilege escalation, no capabilities, and
// resource requests and a memory limit.
func TestSecurityContexts(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			o := renderObjects(t, vs)
			for _, d := range o.deployments {
				psc := d.Spec.Template.Spec.SecurityContext
				if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
					t.Errorf("%s: pod security context %+v does not force a non-root user", d.Name, psc)
				}
				if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: no RuntimeDefault seccomp profile", d.Name)
				}
				for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
					sc := c.SecurityContext
					switch {
					case sc == nil:
						t.Errorf("%s/%s: no security context", d.Name, c.Name)
						continue
					case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
						t.Errorf("%s/%s: root filesystem is writable", d.Name, c.Name)
					case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
						t.Errorf("%s/%s: privilege escalation allowed", d.Name, c.Name)
					case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
						t.Errorf("%s/%s: capabilities %+v, want drop ALL and add none", d.Name, c.Name, sc.Capabilities)
					case sc.RunAsUser != nil && *sc.RunAsUser == 0:
						t.Errorf("%s/%s: runs as root", d.Name, c.Name)
					}
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
						t.Errorf("%s/%s: no cpu/memory requests", d.Name, c.Name)
					}
					if c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s/%s: no memory limit", d.Name, c.Name)
					}
				}
			}
		})
	}
}

// TestControlPlaneFixedClusterIP: with controlPlane.service.clusterIP set (clusters without
// DNS, such as test/cluster's), the control plane Service gets that ClusterIP and Envoy's
// bootstrap dials it instead of the Service's DNS name, on the same xDS port.
func TestControlPlaneFixedClusterIP(t *testing.T) {
	o := renderObjects(t, valueSet{name: "fixed-ip", yaml: `
controlPlane:
  service:
    clusterIP: 10.96.100.18
`})
	boot := container(t, o.deploymentByComponent(t, "envoy"), "bootstrap", true)
	if xds, _ := flagValue(boot.Args, "--xds-addr"); xds != "10.96.100.18:18000" {
		t.Fatalf("--xds-addr %q, want 10.96.100.18:18000", xds)
	}
	cp := o.deploymentByComponent(t, "controlplane")
	var found bool
	for _, s := range o.servicesFor(cp) {
		if slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "xds" }) {
			found = true
			if s.Spec.ClusterIP != "10.96.100.18" {
				t.Errorf("control plane Service clusterIP %q, want 10.96.100.18", s.Spec.ClusterIP)
			}
		}
	}
	if !found {
		t.Fatal("no Service with the xds port selects the control plane")
	}
	// Default: no fixed IP, so Kubernetes picks one.
	def := renderObjects(t, valueSets[0])
	for _, s := range def.servicesFor(def.deploymentByComponent(t, "controlplane")) {
		if s.Spec.ClusterIP != "" {
			t.Errorf("default values set clusterIP %q", s.Spec.ClusterIP)
		}
	}
}

// TestModelServerMetricsWiring: the picker's model-server metrics values become GIE's
// --model-server-metrics-* flags, and the files they name are in the secrets mounted for
// them (where the pools' infergw.dev/model-server-metrics-* annotations can name files
// too); default values pass none of these flags and mount nothing.
func TestModelServerMetricsWiring(t *testing.T) {
	o := renderObjects(t, valueSetByName(t, "modelservermetrics"))
	deploy := o.deploymentByComponent(t, "picker")
	pk := container(t, deploy, "picker", false)
	for flag, want := range map[string]string{
		"--model-server-metrics-scheme": "https", "--model-server-metrics-path": "/custom/metrics",
		"--model-server-metrics-port": "9400",
	} {
		if v, _ := flagValue(pk.Args, flag); v != want {
			t.Errorf("%s %q, want %q", flag, v, want)
		}
	}
	if slices.Contains(pk.Args, "--model-server-metrics-https-insecure-skip-verify") {
		t.Error("insecure-skip-verify passed while false")
	}
	for _, flag := range []string{"--model-server-metrics-ca-file", "--model-server-metrics-bearer-token-file"} {
		file, ok := flagValue(pk.Args, flag)
		if !ok {
			t.Fatalf("picker args lack %s: %v", flag, pk.Args)
		}
		vol := podVolume(deploy, volumeMountedAt(pk, path.Dir(file)))
		if vol == nil || vol.Secret == nil || vol.Secret.SecretName != path.Base(path.Dir(file)) {
			t.Errorf("%s %s is not in its mounted secret (volume %+v)", flag, file, vol)
		}
	}
	def := container(t, renderObjects(t, valueSetByName(t, "default")).deploymentByComponent(t, "picker"), "picker", false)
	for _, a := range def.Args {
		if strings.HasPrefix(a, "--model-server-metrics-") {
			t.Errorf("default picker args pass %s", a)
		}
	}
}

// TestGatewayServicesWiring: with gatewayServices.enabled the control plane keeps
// per-Gateway Services that select exactly the Envoy Pods (the selector flag matches the
// Envoy pod template), allocates from the configured range, and Envoy's readiness probe is
// the ready port the control plane programs; without it, none of those flags is passed and
// Gateway addresses come from the shared Envoy Service.
func TestGatewayServicesWiring(t *testing.T) {
	o := renderObjects(t, valueSetByName(t, "gatewayservices"))
	cp := container(t, o.deploymentByComponent(t, "controlplane"), "controlplane", false)
	envoyDep := o.deploymentByComponent(t, "envoy")
	envoy := container(t, envoyDep, "envoy", false)
	want := map[string]string{
		"--gateway-port-range":         "30000-30999",
		"--gateway-services-namespace": releaseNamespace,
		"--gateway-services-type":      "LoadBalancer",
		"--ready-port":                 "19002",
	}
	for flag, v := range want {
		if got, ok := flagValue(cp.Args, flag); !ok || got != v {
			t.Errorf("control plane %s = %q (present %v), want %q", flag, got, ok, v)
		}
	}
	if _, ok := flagValue(cp.Args, "--gateway-service"); ok {
		t.Error("control plane still writes the shared Envoy Service's address (--gateway-service)")
	}
	sel, ok := flagValue(cp.Args, "--gateway-services-selector")
	if !ok {
		t.Fatal("no --gateway-services-selector")
	}
	selector := map[string]string{}
	for kv := range strings.SplitSeq(sel, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("selector %q is not k=v,...", sel)
		}
		selector[k] = v
	}
	if !selectorMatches(selector, envoyDep.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the Envoy pods %v", selector, envoyDep.Spec.Template.Labels)
	}
	for _, d := range o.deployments {
		if d != envoyDep && selectorMatches(selector, d.Spec.Template.Labels) {
			t.Errorf("selector %v also selects %s", selector, d.Name)
		}
	}
	p := envoy.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("envoy readiness probe = %+v, want an HTTP probe of the ready port", p)
	}
	if cp, ok := resolvePort(envoy, p.HTTPGet.Port); !ok || cp.ContainerPort != 19002 {
		t.Errorf("envoy readiness probe port %v resolves to %+v, want 19002", p.HTTPGet.Port, cp)
	}

	def := renderObjects(t, valueSetByName(t, "default"))
	dcp := container(t, def.deploymentByComponent(t, "controlplane"), "controlplane", false)
	for _, flag := range []string{"--gateway-port-range", "--gateway-services-namespace", "--ready-port"} {
		if _, ok := flagValue(dcp.Args, flag); ok {
			t.Errorf("default values pass %s", flag)
		}
	}
	if _, ok := flagValue(dcp.Args, "--gateway-service"); !ok {
		t.Error("default values do not pass --gateway-service")
	}
}
