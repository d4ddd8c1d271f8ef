package dirsource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	infv1alpha2 "github.com/infergw/infergw/api/v1alpha2"
	"github.com/infergw/infergw/api/validation"
	"github.com/infergw/infergw/discovery"
)

// maxManifestFileBytes bounds one manifest file; anything bigger is a mistake (a model file
// dropped into the wrong directory), not configuration.
const maxManifestFileBytes = 8 << 20

// manifestFile is one file read from the directory.
type manifestFile struct {
	rel  string // slash-separated path relative to the directory
	data []byte
}

// readManifestDir reads every *.yaml and *.yml file under dir, recursively, sorted by path.
// Hidden files and directories (names starting with ".") are skipped: editors keep swap
// files there, and a Kubernetes ConfigMap volume keeps the previous revision in "..data"
// and "..<timestamp>" directories next to the symlinks of the current one.
func readManifestDir(dir string) ([]manifestFile, error) {
	var files []manifestFile
	// The trailing separator makes WalkDir follow dir itself when it is a symlink.
	root := dir + string(filepath.Separator)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isManifestName(d.Name()) {
			return nil
		}
		info, err := os.Stat(path) // follows symlinks (ConfigMap volumes are symlinks)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		if info.Size() > maxManifestFileBytes {
			return fmt.Errorf("read %s: %d bytes is over the %d-byte limit for a manifest file", path, info.Size(), maxManifestFileBytes)
		}
		data, err := readBounded(path, maxManifestFileBytes)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		files = append(files, manifestFile{rel: filepath.ToSlash(rel), data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b manifestFile) int { return strings.Compare(a.rel, b.rel) })
	return files, nil
}

func isManifestName(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// digestFiles hashes the names and contents of the files so that a reload that finds
// nothing changed (an editor touching a file, a second event of one save) publishes nothing.
func digestFiles(files []manifestFile) uint64 {
	h := xxhash.New()
	for _, f := range files {
		_, _ = h.WriteString(f.rel)
		_, _ = h.Write([]byte{0})
		_, _ = h.Write(f.data)
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

// parseManifests decodes, defaults and validates every document of the files, then checks
// the references between objects. It returns the objects only when everything is valid;
// otherwise one error listing each problem with its file, document and field.
func parseManifests(files []manifestFile) (discovery.Objects, error) {
	var (
		all  []manifest
		errs []error
	)
	for _, f := range files {
		ms, decodeErrs := decodeManifests(f.rel, f.data)
		all = append(all, ms...)
		errs = append(errs, decodeErrs...)
	}
	var objs discovery.Objects
	for i := range all {
		m := &all[i]
		if fieldErrs := validateManifest(m, &objs); len(fieldErrs) > 0 {
			for _, fe := range fieldErrs {
				errs = append(errs, fmt.Errorf("%s: %w", m.where(), fe))
			}
		}
	}
	errs = append(errs, checkReferences(all)...)
	if len(errs) > 0 {
		return discovery.Objects{}, joinCapped(errs)
	}
	return objs, nil
}

// validateManifest applies CRD defaults, validates the object and, when valid, adds it to
// objs.
func validateManifest(m *manifest, objs *discovery.Objects) validation.Errors {
	switch o := m.obj.(type) {
	case *gwapiv1.GatewayClass:
		// Read so that `kubectl apply`-able directories load unchanged; snapshots do not hold
		// classes (the Gateway's gatewayClassName selects it).
		return nil
	case *gwapiv1.Gateway:
		return addIfValid(validation.Gateway(o), &objs.Gateways, o)
	case *gwapiv1.HTTPRoute:
		return addIfValid(validation.HTTPRoute(o), &objs.HTTPRoutes, o)
	case *infv1.InferencePool:
		validation.DefaultPool(o)
		return addIfValid(validation.Pool(o), &objs.Pools, o)
	case *infv1alpha2.InferenceObjective:
		validation.DefaultObjective(o)
		return addIfValid(validation.Objective(o), &objs.Objectives, o)
	case *infv1alpha2.InferenceModelRewrite:
		validation.DefaultRewrite(o)
		return addIfValid(validation.Rewrite(o), &objs.Rewrites, o)
	case *corev1.Pod:
		return addIfValid(validation.Pod(o), &objs.Pods, o)
	case *corev1.Service:
		return addIfValid(validation.Service(o), &objs.Services, o)
	case *discoveryv1.EndpointSlice:
		return addIfValid(validation.EndpointSlice(o), &objs.EndpointSlices, o)
	}
	return validation.Errors{{Field: "kind", Detail: fmt.Sprintf("no validation for %T", m.obj)}}
}

func addIfValid[T any](es validation.Errors, list *[]T, obj T) validation.Errors {
	if len(es) == 0 {
		*list = append(*list, obj)
	}
	return es
}

// joinCapped joins errors, keeping the first maxManifestErrors.
func joinCapped(errs []error) error {
	if len(errs) > maxManifestErrors {
		extra := len(errs) - maxManifestErrors
		errs = append(errs[:maxManifestErrors:maxManifestErrors], fmt.Errorf("... and %d more errors", extra))
	}
	return errors.Join(errs...)
}

// readBounded reads a file of at most limit bytes. The size checked before is only a fast
// path: a file that grows after that check (a writer appending) still cannot make the read
// exceed the limit.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: over the %d-byte limit for a manifest file", path, limit)
	}
	return data, nil
}
