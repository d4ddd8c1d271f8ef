// Package xds turns a discovery snapshot into Envoy v3 resources (a pure function, Translate)
// and serves them to Envoy over ADS from go-control-plane's snapshot cache (Server).
package xds

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/model"
)

type anyMsg = anypb.Any

// Resources are the Envoy resources of one snapshot, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Warnings describe input that was skipped or only partly supported. They never make
	// the resources inconsistent.
	Warnings []string
}

// builder carries the options and the first marshalling error through the constructors, so
// that they stay small expression-style functions.
type builder struct {
	opts Options
	ix   *index
	err  error
	// overrideHostCache holds the marshalled load-balancing policies pool clusters share:
	// [0] fails closed, [1] fails open (see overrideHostAny).
	overrideHostCache [2]*anyMsg
	// bodyRoutingPorts are the listeners with body-based routing (bodyrouting.go).
	bodyRoutingPorts map[int32]bool
}

func (b *builder) any(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		if b.err == nil {
			b.err = fmt.Errorf("marshal %T: %w", m, err)
		}
		return nil
	}
	return a
}

// Translate builds the Envoy resources for snap. It fails only for invalid options or for
// resources Envoy would reject (every resource passes ValidateAll); problems with single
// objects become warnings and a safe fallback (for example a 500 direct response).
func Translate(snap *discovery.Snapshot, opts Options) (*Resources, error) {
	if snap == nil {
		return nil, errors.New("translate: nil snapshot")
	}
	opts = opts.Defaults()
	if err := validateOptions(opts); err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	return TranslateModel(model.Resolve(snap, opts.ModelOptions()), opts)
}

// TranslateModel builds the Envoy resources of a resolved model (see Translate).
func TranslateModel(m *model.Model, opts Options) (*Resources, error) {
	if m == nil {
		return nil, errors.New("translate: nil model")
	}
	opts = opts.Defaults()
	if err := validateOptions(opts); err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	b := &builder{opts: opts, ix: newIndex(m)}
	res := &Resources{}

	ports := b.portListeners(m)
	for _, port := range sortedPorts(ports) {
		pl := ports[port]
		res.Routes = append(res.Routes, b.routeConfiguration(pl))
		res.Listeners = append(res.Listeners, b.listener(pl))
	}
	if l := b.readyListener(); l != nil {
		res.Listeners = append([]*listenerv3.Listener{l}, res.Listeners...) // "infergw/" sorts before "listener/"
	}
	b.addClusters(res)
	res.Warnings = b.ix.warnings
	if b.err != nil {
		return nil, fmt.Errorf("translate: %w", b.err)
	}
	if err := res.Validate(); err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	return res, nil
}

func validateOptions(o Options) error {
	switch o.RequestBodyMode {
	case BodyFullDuplexStreamed, BodyBuffered:
	default:
		return fmt.Errorf("request body mode %q: want %s or %s", o.RequestBodyMode, BodyFullDuplexStreamed, BodyBuffered)
	}
	switch o.ResponseBodyMode {
	case BodyFullDuplexStreamed, BodyStreamed:
	default:
		return fmt.Errorf("response body mode %q: want %s or %s", o.ResponseBodyMode, BodyFullDuplexStreamed, BodyStreamed)
	}
	for from, to := range o.ListenerPortMap {
		if from < 1 || from > 65535 || to < 1 || to > 65535 {
			return fmt.Errorf("listener port map %d=%d: ports must be 1-65535", from, to)
		}
	}
	if err := o.GatewayPorts.Validate(); err != nil {
		return err
	}
	if o.ReadyPort < 0 || o.ReadyPort > 65535 || (o.ReadyPort != 0 && o.GatewayPorts.Enabled() && o.ReadyPort >= o.GatewayPorts.First && o.ReadyPort <= o.GatewayPorts.Last) {
		return fmt.Errorf("ready port %d: must be 1-65535 and outside the gateway port range %s", o.ReadyPort, o.GatewayPorts)
	}
	if o.RouteTimeout < 0 || o.StreamIdleTimeout < 0 || o.ConnectTimeout < 0 || o.PickerMessageTimeout < 0 || o.FirstByteTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	return o.PickerTLS.validate()
}

// Validate reports whether Translate accepts the options, so that a program can refuse a
// bad command line at start instead of at its first snapshot.
func (o Options) Validate() error {
	return validateOptions(o.Defaults())
}

// addClusters emits a cluster for every pool, every picker and every Service backend a
// route uses, and a ClusterLoadAssignment for each EDS cluster among them.
func (b *builder) addClusters(res *Resources) {
	for _, key := range sortedKeys(b.ix.pools) {
		p := b.ix.pools[key]
		res.Clusters = append(res.Clusters, b.poolCluster(p))
		res.Endpoints = append(res.Endpoints, loadAssignment(p.cluster, p.up.addrs))
	}
	for _, name := range sortedKeys(b.ix.pickers) {
		p := b.ix.pickers[name]
		c := b.upstreamCluster(name, p.up, true)
		c.TransportSocket = b.pickerTransportSocket(p.serverName)
		b.addPickerHealthCheck(c)
		b.addUpstream(res, c, p.up)
	}
	for _, name := range sortedKeys(b.ix.svcs) {
		up := b.ix.svcs[name].up
		b.addUpstream(res, b.upstreamCluster(name, up, false), up)
	}
	sortByName(res.Clusters, func(c *clusterv3.Cluster) string { return c.GetName() })
	sortByName(res.Endpoints, func(c *endpointv3.ClusterLoadAssignment) string { return c.GetClusterName() })
}

func (b *builder) addUpstream(res *Resources, c *clusterv3.Cluster, up upstream) {
	res.Clusters = append(res.Clusters, c)
	if up.dnsName == "" {
		res.Endpoints = append(res.Endpoints, loadAssignment(c.GetName(), up.addrs))
	}
}
