package xds

import (
	"strconv"
	"strings"
)

// Names of generated resources. Kubernetes names never contain '/', so these never collide.

// Well-known header, metadata and filter names shared with the picker (see the contracts).
const (
	HeaderDestinationEndpoint = "x-gateway-destination-endpoint"
	MetadataNamespaceLB       = "envoy.lb"
	MetadataSubsetHint        = "envoy.lb.subset_hint"
	HeaderPool                = "x-infergw-pool"
	MetadataPools             = "x-infergw-pools"
	HeaderUpstream            = "x-infergw-upstream"
	// HeaderPerTryTimeout is the Envoy header the picker sets on streaming requests to
	// bound each try's wait for the first byte (extproc.HeaderPerTryTimeout).
	HeaderPerTryTimeout = "x-envoy-upstream-rq-per-try-timeout-ms"
	ExtProcFilterName   = "envoy.filters.http.ext_proc"
	RouterFilterName    = "envoy.filters.http.router"
)

func poolClusterName(ns, name string) string { return "pool/" + ns + "/" + name }

func serviceClusterName(ns, name string, port int32) string {
	return "service/" + ns + "/" + name + "/" + strconv.Itoa(int(port))
}

func pickerClusterName(ns, name string, port int32) string {
	return "picker/" + ns + "/" + name + "/" + strconv.Itoa(int(port))
}

func listenerName(port int32) string    { return "listener/" + strconv.Itoa(int(port)) }
func routeConfigName(port int32) string { return "routes/" + strconv.Itoa(int(port)) }

// statName turns a resource name into something safe inside Envoy stat names, where '.'
// separates stat components.
func statName(name string) string {
	return strings.NewReplacer("/", "_", ".", "_").Replace(name)
}
