package xds

import (
	"strconv"
	"strings"

	"github.com/infergw/infergw/contract"
)

// Names of generated resources. Kubernetes names never contain '/', so these never collide.

// Well-known header, metadata and filter names shared with the picker (package contract).
const (
	HeaderDestinationEndpoint = contract.HeaderDestinationEndpoint
	MetadataNamespaceLB       = contract.MetadataNamespaceLB
	MetadataSubsetHint        = contract.MetadataNamespaceSubset
	HeaderPool                = contract.HeaderPool
	MetadataPools             = contract.MetadataPools
	HeaderUpstream            = contract.HeaderUpstream
	// HeaderPerTryTimeout is the Envoy header the picker sets on streaming requests to
	// bound each try's wait for the first byte.
	HeaderPerTryTimeout = contract.HeaderPerTryTimeout
	ExtProcFilterName   = "envoy.filters.http.ext_proc"
	// ObserverFilterName is the second ext_proc filter, in observability mode, that reads
	// the response bodies the picker leaves to it (observer.go).
	ObserverFilterName = "infergw.filters.http.ext_proc_observer"
	RouterFilterName   = "envoy.filters.http.router"
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
