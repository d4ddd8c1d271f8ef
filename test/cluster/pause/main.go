// Command pause is the Pod sandbox ("pause") process of the test cluster: it holds the Pod's
// namespaces by sleeping until it is told to stop. Clusters normally pull
// registry.k8s.io/pause; the test machines reach no registry, so `make images` packs this
// static binary into the sandbox image containerd is configured with.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
