package chart

import (
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

const (
	chartDir         = "../../charts/infergw"
	releaseName      = "infergw"
	releaseNamespace = "infergw-system"
)

// valueSet is one set of user values the chart is rendered with.
type valueSet struct {
	name string
	yaml string
}

// valueSets are the default values and the non-default sets every generic check runs on.
var valueSets = []valueSet{
	{name: "default", yaml: ``},
	{name: "tls", yaml: `
tls:
  enabled: true
  pickerSecretName: my-picker-cert
`},
	{name: "servicemonitor", yaml: `
serviceMonitor:
  enabled: true
  interval: 15s
  labels:
    release: kube-prometheus-stack
`},
	{name: "modelservermetrics", yaml: `
picker:
  modelServerMetrics:
    scheme: https
    path: /custom/metrics
    port: 9400
    httpsInsecureSkipVerify: false
    caFile: /etc/infergw/model-server-metrics/vllm-metrics-ca/ca.crt
    bearerTokenFile: /etc/infergw/model-server-metrics/vllm-metrics-token/token
    secrets: [vllm-metrics-ca, vllm-metrics-token]
`},
	{name: "watchnamespaces", yaml: `
watchNamespaces: [team-a, team-b]
`},
	{name: "ha", yaml: `
controlPlane: {replicas: 2}
picker:
  replicas: 3
  podDisruptionBudget: {minAvailable: 2}
envoy: {replicas: 4}
`},
	{name: "extraargs", yaml: `
controlPlane:
  extraArgs: ["--log-level=debug"]
  extraEnv: [{name: GOMAXPROCS, value: "2"}]
picker:
  extraArgs: ["--log-level", "debug"]
  pool: llm/vllm-llama3-8b
  maxBodyBytes: 1048576
  grpcTransport: grpc-go
  schedulerConfig: |
    scorers:
      queue: 2
envoy:
  extraArgs: ["--concurrency", "2"]
  bootstrapExtraArgs: ["--cluster", "gw"]
`},
	{name: "kvevents", yaml: `
picker:
  replicas: 2
  kvEvents:
    enabled: true
    podPort: 5600
    replayPort: 5601
    tokenizerVolume: {configMap: {name: llama-tokenizer}}
`},
	{name: "gatewayservices", yaml: `
gatewayServices: {enabled: true, type: LoadBalancer, firstPort: 30000, lastPort: 30999, readyPort: 19002}
`},
	{name: "everything", yaml: `
fullnameOverride: edge
nameOverride: gw
commonLabels: {team: ml-platform}
imagePullSecrets: [{name: regcred}]
image: {repository: registry.example.com/infergw, tag: v9.9.9, pullPolicy: Always}
gatewayClass: {name: edge-class, create: false}
watchNamespaces: [serving]
tls: {enabled: true, pickerServerName: llama-epp.serving.svc.cluster.local}
serviceMonitor: {enabled: true}
controlPlane:
  replicas: 2
  writeStatus: false
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: gateway, effect: NoSchedule}]
  service: {type: ClusterIP, annotations: {a: b}}
  serviceAccount: {annotations: {iam.example.com/role: cp}}
  priorityClassName: system-cluster-critical
picker:
  replicas: 2
  service: {name: llama-epp}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels: {app.kubernetes.io/component: picker}
envoy:
  replicas: 3
  listeners:
    - {name: http, containerPort: 8080, servicePort: 80}
    - {name: http-alt, containerPort: 8081, servicePort: 8081}
  service: {type: LoadBalancer, externalTrafficPolicy: Local, annotations: {lb: internal}}
  podAnnotations: {prometheus.io/scrape: "false"}
`},
}

// loadChart loads the chart from the repository.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return c
}

// parseValues reads a value set's YAML.
func parseValues(t *testing.T, vs valueSet) chartutil.Values {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(vs.yaml))
	if err != nil {
		t.Fatalf("value set %q: %v", vs.name, err)
	}
	return vals
}

// renderFiles renders the chart as `helm install --dry-run` would (install, the release
// namespace, the default capabilities of the Kubernetes version Helm was built against) and
// returns the non-empty rendered files by template path.
func renderFiles(t *testing.T, vs valueSet) map[string]string {
	t.Helper()
	files, err := tryRender(loadChart(t), parseValues(t, vs))
	if err != nil {
		t.Fatalf("render value set %q: %v", vs.name, err)
	}
	return files
}

func tryRender(c *chart.Chart, vals chartutil.Values) (map[string]string, error) {
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true}
	renderVals, err := chartutil.ToRenderValues(c, vals, opts, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(c, renderVals)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for name, content := range out {
		if strings.TrimSpace(content) != "" {
			files[name] = content
		}
	}
	return files, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// manifestDocs splits the rendered templates (not NOTES.txt) into YAML documents, in a
// stable order, each tagged with its source for error messages.
func manifestDocs(files map[string]string) []sourcedDoc {
	names := make([]string, 0, len(files))
	for name := range files {
		if filepath.Ext(name) == ".yaml" || filepath.Ext(name) == ".yml" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var docs []sourcedDoc
	for _, name := range names {
		for i, doc := range docSeparator.Split(files[name], -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			docs = append(docs, sourcedDoc{source: name, index: i, yaml: doc})
		}
	}
	return docs
}

type sourcedDoc struct {
	source string
	index  int
	yaml   string
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// notes returns the rendered NOTES.txt.
func notes(t *testing.T, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			return content
		}
	}
	t.Fatal("NOTES.txt was not rendered")
	return ""
}
