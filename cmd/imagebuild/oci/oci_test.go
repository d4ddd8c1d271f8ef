package oci

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestWriteReadBack writes an image and reads the tarball back as a container runtime would:
// the tag, the config and every file with its parents and modes.
func TestWriteReadBack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("binary-content"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := InfergwImage("localhost/infergw/sim:test", bin, []string{"sim"})
	out := filepath.Join(dir, spec.FileName())
	if spec.FileName() != "sim.tar" {
		t.Fatalf("file name %q", spec.FileName())
	}
	digest, err := Write(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("localhost/infergw/sim:test")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := img.Digest()
	if got.String() != digest {
		t.Fatalf("digest %s, Write said %s", got, digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || len(cf.Config.Entrypoint) != 2 || cf.Config.Entrypoint[1] != "sim" || cf.OS != "linux" {
		t.Fatalf("config %+v", cf.Config)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	content := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		b, _ := io.ReadAll(tr)
		content[h.Name] = string(b)
	}
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/", "etc/", "tmp/"} {
		if h := files[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("directory %s missing", d)
		}
	}
	if h := files["tmp/"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("/tmp mode %o", h.Mode)
	}
	if content["usr/local/bin/infergw"] != "binary-content" || files["usr/local/bin/infergw"].Mode != 0o755 {
		t.Errorf("binary entry %+v %q", files["usr/local/bin/infergw"], content["usr/local/bin/infergw"])
	}

	// Same inputs, same image: the layer has fixed times.
	digest2, err := Write(spec, out)
	if err != nil || digest2 != digest {
		t.Fatalf("second write: %s, %v; first %s", digest2, err, digest)
	}
}

func TestLayerRejectsRelativePath(t *testing.T) {
	if _, err := layer([]File{{Path: "etc/passwd", Data: []byte("x")}}); err == nil {
		t.Fatal("relative path accepted")
	}
}

// TestSharedLibraries runs ldd on a dynamically linked binary of this machine: the C
// library and the loader must be among the paths, all absolute and existing.
func TestSharedLibraries(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	libs, err := SharedLibraries(sh)
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) < 2 {
		t.Fatalf("libraries of %s: %v", sh, libs)
	}
	for _, l := range libs {
		if _, err := os.Stat(l); err != nil || !filepath.IsAbs(l) {
			t.Errorf("library %q: %v", l, err)
		}
	}
	// A static binary has none.
	static := filepath.Join(t.TempDir(), "static")
	if err := os.WriteFile(static, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if libs, err := SharedLibraries(static); err != nil || len(libs) != 0 {
		t.Fatalf("non-dynamic file: %v, %v", libs, err)
	}
}

func TestResolveEnvoy(t *testing.T) {
	venv := t.TempDir()
	launcher := filepath.Join(venv, "bin", "envoy")
	real := filepath.Join(venv, "lib", "python3.11", "site-packages", "envoy", "_bin", "envoy")
	for _, p := range []string{launcher, real} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(launcher, []byte("#!/usr/bin/python3\nimport envoy\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := ResolveEnvoy(launcher); err != nil || got != real {
		t.Fatalf("ResolveEnvoy(launcher) = %q, %v; want %q", got, err, real)
	}
	if got, err := ResolveEnvoy(real); err != nil || got != real {
		t.Fatalf("ResolveEnvoy(binary) = %q, %v", got, err)
	}
	os.Remove(real)
	if _, err := ResolveEnvoy(launcher); err == nil {
		t.Fatal("launcher without a binary accepted")
	}
}
