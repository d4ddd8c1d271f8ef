package xds

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// Validate checks every resource with its proto's ValidateAll and checks that every
// reference resolves: routes name existing clusters, EDS clusters have an assignment,
// listeners name existing route configurations and pickers are clusters.
func (r *Resources) Validate() error {
	clusters := make(map[string]*clusterv3.Cluster, len(r.Clusters))
	for _, c := range r.Clusters {
		if err := c.ValidateAll(); err != nil {
			return fmt.Errorf("cluster %s: %w", c.GetName(), err)
		}
		clusters[c.GetName()] = c
	}
	assigned := make(map[string]bool, len(r.Endpoints))
	for _, e := range r.Endpoints {
		if err := e.ValidateAll(); err != nil {
			return fmt.Errorf("endpoints %s: %w", e.GetClusterName(), err)
		}
		assigned[e.GetClusterName()] = true
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !assigned[c.GetEdsClusterConfig().GetServiceName()] {
			return fmt.Errorf("cluster %s: no ClusterLoadAssignment", c.GetName())
		}
	}
	routeConfigs := make(map[string]bool, len(r.Routes))
	for _, rc := range r.Routes {
		if err := rc.ValidateAll(); err != nil {
			return fmt.Errorf("route configuration %s: %w", rc.GetName(), err)
		}
		routeConfigs[rc.GetName()] = true
		if err := checkRouteRefs(rc, clusters); err != nil {
			return fmt.Errorf("route configuration %s: %w", rc.GetName(), err)
		}
	}
	for _, l := range r.Listeners {
		if err := l.ValidateAll(); err != nil {
			return fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		for _, name := range listenerRouteNames(l) {
			if !routeConfigs[name] {
				return fmt.Errorf("listener %s: route configuration %s missing", l.GetName(), name)
			}
		}
		for _, name := range listenerPickerClusters(l) {
			if clusters[name] == nil {
				return fmt.Errorf("listener %s: picker cluster %s missing", l.GetName(), name)
			}
		}
	}
	return nil
}

func checkRouteRefs(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) error {
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			for _, name := range routeClusters(rt) {
				if clusters[name] == nil {
					return fmt.Errorf("route %s names missing cluster %s", rt.GetName(), name)
				}
			}
			if cfg := rt.GetTypedPerFilterConfig()[ExtProcFilterName]; cfg != nil {
				var fc routev3.FilterConfig
				var per extprocv3.ExtProcPerRoute
				if err := cfg.UnmarshalTo(&fc); err != nil {
					return fmt.Errorf("route %s: ext_proc config: %w", rt.GetName(), err)
				}
				if err := fc.GetConfig().UnmarshalTo(&per); err != nil {
					return fmt.Errorf("route %s: ext_proc config: %w", rt.GetName(), err)
				}
				if err := per.ValidateAll(); err != nil {
					return fmt.Errorf("route %s: ext_proc config: %w", rt.GetName(), err)
				}
				picker := per.GetOverrides().GetGrpcService().GetEnvoyGrpc().GetClusterName()
				if clusters[picker] == nil {
					return fmt.Errorf("route %s names missing picker cluster %s", rt.GetName(), picker)
				}
			}
		}
	}
	return nil
}

func routeClusters(rt *routev3.Route) []string {
	a := rt.GetRoute()
	if a == nil {
		return nil
	}
	if c := a.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, wc := range a.GetWeightedClusters().GetClusters() {
		out = append(out, wc.GetName())
	}
	return out
}

func sortByName[T any](s []T, name func(T) string) {
	sort.Slice(s, func(i, j int) bool { return name(s[i]) < name(s[j]) })
}
