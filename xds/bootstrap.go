package xds

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

const xdsClusterName = "infergw_xds"

// BootstrapOptions describe the Envoy that connects to the control plane.
type BootstrapOptions struct {
	// XDSAddr is the control plane's host:port (an IP or a DNS name).
	XDSAddr string
	// NodeID and NodeCluster identify the Envoy (defaults "infergw-envoy" and "infergw").
	NodeID      string
	NodeCluster string
	// AdminAddr is the admin interface address (default 127.0.0.1:19000).
	AdminAddr string
	// TLS to the control plane: CAFile verifies the server; CertFile/KeyFile are the client
	// certificate when the control plane requires one. All empty means plaintext.
	CAFile, CertFile, KeyFile string
	// ServerName is the SNI and the name checked in the server certificate (default: the
	// host of XDSAddr).
	ServerName string
}

// Bootstrap returns an Envoy bootstrap that takes listeners, routes, clusters and endpoints
// from the control plane over one ADS gRPC stream (HTTP/2), as YAML.
func Bootstrap(o BootstrapOptions) ([]byte, error) {
	b, err := BootstrapProto(o)
	if err != nil {
		return nil, err
	}
	return messageYAML(b)
}

// BootstrapProto is Bootstrap before rendering.
func BootstrapProto(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" {
		o.NodeID = "infergw-envoy"
	}
	if o.NodeCluster == "" {
		o.NodeCluster = "infergw"
	}
	if o.AdminAddr == "" {
		o.AdminAddr = "127.0.0.1:19000"
	}
	xdsHost, xdsPort, err := splitHostPort(o.XDSAddr)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: xds address: %w", err)
	}
	adminHost, adminPort, err := splitHostPort(o.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: admin address: %w", err)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("bootstrap: client certificate and key must be given together")
	}
	b := &builder{}
	xds := &clusterv3.Cluster{
		Name:           xdsClusterName,
		ConnectTimeout: durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: xdsClusterName,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(xdsHost, xdsPort)}}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsName: b.any(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
					// Keepalive pings notice a dead control plane on an idle ADS stream.
					ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(5 * time.Second)},
				}},
			}},
		})},
	}
	if _, err := netip.ParseAddr(xdsHost); err == nil {
		xds.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		xds.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	}
	if o.CAFile != "" || o.CertFile != "" {
		xds.TransportSocket = b.upstreamTLS(o, xdsHost)
	}
	ads := &corev3.ApiConfigSource{
		ApiType:             corev3.ApiConfigSource_GRPC,
		TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices:        []*corev3.GrpcService{grpcService(xdsClusterName)},
	}
	boot := &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: o.NodeID, Cluster: o.NodeCluster},
		Admin: &bootstrapv3.Admin{Address: socketAddress(adminHost, adminPort)},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: ads,
			CdsConfig: adsConfigSource(),
			LdsConfig: adsConfigSource(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xds}},
	}
	if b.err != nil {
		return nil, fmt.Errorf("bootstrap: %w", b.err)
	}
	if err := boot.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return boot, nil
}

func (b *builder) upstreamTLS(o BootstrapOptions, host string) *corev3.TransportSocket {
	sni := o.ServerName
	if sni == "" {
		sni = host
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2"},
	}}
	if o.CAFile != "" {
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: fileSource(o.CAFile),
		}}
	}
	if o.CertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(o.CertFile),
			PrivateKey:       fileSource(o.KeyFile),
		}}
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(ctx)},
	}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func splitHostPort(addr string) (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: invalid port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, uint32(port), nil
}
