package dirsource

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/discovery"
)

// defaultNamespace is the namespace of a manifest that names none, as with kubectl apply.
const defaultNamespace = "default"

// maxManifestErrors caps how many errors one reload reports, so a broken directory cannot
// flood the log.
const maxManifestErrors = 50

// manifest is one decoded YAML document of a manifest file.
type manifest struct {
	file  string // path relative to the watched directory
	index int    // 1-based, counting non-empty documents
	kind  string
	obj   metav1.Object
}

// where locates the document for error messages: `pools.yaml: document 2 (InferencePool
// default/llama)`.
func (m *manifest) where() string {
	return fmt.Sprintf("%s: document %d (%s %s)", m.file, m.index, m.kind, discovery.Key(m.obj.GetNamespace(), m.obj.GetName()))
}

// newObjectFor returns an empty object of the given apiVersion and kind, or nil when
// infergw does not read that kind from manifests.
func newObjectFor(apiVersion, kind string) metav1.Object {
	switch apiVersion + " " + kind {
	case "gateway.networking.k8s.io/v1 GatewayClass":
		return &gwapiv1.GatewayClass{}
	case "gateway.networking.k8s.io/v1 Gateway":
		return &gwapiv1.Gateway{}
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		return &gwapiv1.HTTPRoute{}
	case "inference.networking.k8s.io/v1 InferencePool":
		return &infv1.InferencePool{}
	case "inference.networking.x-k8s.io/v1alpha2 InferenceObjective":
		return &infv1alpha2.InferenceObjective{}
	case "inference.networking.x-k8s.io/v1alpha2 InferenceModelRewrite":
		return &infv1alpha2.InferenceModelRewrite{}
	case "v1 Pod":
		return &corev1.Pod{}
	case "v1 Service":
		return &corev1.Service{}
	case "discovery.k8s.io/v1 EndpointSlice":
		return &discoveryv1.EndpointSlice{}
	}
	return nil
}

// supportedKinds lists what newObjectFor accepts, for error messages.
const supportedKinds = "gateway.networking.k8s.io/v1 GatewayClass, Gateway, HTTPRoute; " +
	"inference.networking.k8s.io/v1 InferencePool; " +
	"inference.networking.x-k8s.io/v1alpha2 InferenceObjective, InferenceModelRewrite; v1 Pod, Service; discovery.k8s.io/v1 EndpointSlice"

// decodeManifests splits a multi-document YAML file and decodes every document strictly
// (unknown and duplicate fields are errors, field names are case-sensitive) into the Go type
// its apiVersion and kind name. Empty documents are skipped. It returns every document it
// could decode and one error per document it could not.
func decodeManifests(file string, data []byte) ([]manifest, []error) {
	var (
		out  []manifest
		errs []error
	)
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	index := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: after document %d: %w", file, index, err))
			break
		}
		if isEmptyDocument(doc) {
			continue
		}
		index++
		m, err := decodeDocument(file, index, doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	return out, errs
}

// decodeDocument decodes one non-empty YAML document.
func decodeDocument(file string, index int, doc []byte) (manifest, error) {
	jsonDoc, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return manifest{}, fmt.Errorf("%s: document %d: %w", file, index, err)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(jsonDoc), []byte("{")) {
		return manifest{}, fmt.Errorf("%s: document %d: not a Kubernetes object (want a mapping with apiVersion, kind and metadata)", file, index)
	}
	// A lenient first pass finds the kind and the name, so that even a document that fails
	// strict decoding is reported by name.
	var head objectHead
	if err := kjson.UnmarshalCaseSensitivePreserveInts(jsonDoc, &head); err != nil {
		return manifest{}, fmt.Errorf("%s: document %d: not a Kubernetes object: %w", file, index, err)
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = defaultNamespace
	}
	where := fmt.Sprintf("%s: document %d (%s %s)", file, index, head.Kind, discovery.Key(ns, head.Metadata.Name))
	if head.APIVersion == "" || head.Kind == "" {
		return manifest{}, fmt.Errorf("%s: document %d: apiVersion and kind are required", file, index)
	}
	obj := newObjectFor(head.APIVersion, head.Kind)
	if obj == nil {
		return manifest{}, fmt.Errorf("%s: unsupported apiVersion/kind %q (supported: %s)", where, head.APIVersion+" "+head.Kind, supportedKinds)
	}
	strictErrs, err := kjson.UnmarshalStrict(jsonDoc, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return manifest{}, fmt.Errorf("%s: %w", where, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return manifest{}, fmt.Errorf("%s: %s", where, strings.Join(msgs, "; "))
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(defaultNamespace)
	}
	return manifest{file: file, index: index, kind: head.Kind, obj: obj}, nil
}

// objectHead is what every Kubernetes object starts with.
type objectHead struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// isEmptyDocument reports whether a YAML document holds nothing but blank lines and
// comments.
func isEmptyDocument(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) != 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
