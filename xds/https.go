package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/infergw/infergw/model"
)

// tlsChain is one certificate an HTTPS port serves: for the listener hostname's SNI, or for
// every name when hostname is "".
type tlsChain struct {
	hostname string
	cert     *model.Certificate
}

// addTLSChain records the certificate of an HTTPS Gateway listener on its port; the first
// listener with a given hostname wins (the model marks same-Gateway duplicates Conflicted).
func (pl *portListener) addTLSChain(hostname string, cert *model.Certificate) {
	for _, c := range pl.tls {
		if c.hostname == hostname {
			return
		}
	}
	pl.tls = append(pl.tls, tlsChain{hostname: hostname, cert: cert})
}

// tlsFilterChains terminates TLS on an HTTPS port: one filter chain per certificate,
// matched by SNI (the chain without a hostname matches any name), each running the same
// connection manager. The certificates travel inline in the listener (from the Secrets the
// model resolved); a Secret change is a new listener version, which Envoy applies to new
// connections.
func (b *builder) tlsFilterChains(pl *portListener, hcm *listenerv3.Filter) []*listenerv3.FilterChain {
	out := make([]*listenerv3.FilterChain, 0, len(pl.tls))
	for _, c := range pl.tls {
		fc := &listenerv3.FilterChain{
			Filters: []*listenerv3.Filter{hcm},
			TransportSocket: &corev3.TransportSocket{
				Name: "envoy.transport_sockets.tls",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.DownstreamTlsContext{
					CommonTlsContext: &tlsv3.CommonTlsContext{
						TlsCertificates: []*tlsv3.TlsCertificate{{
							CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.cert.CertPEM}},
							PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.cert.KeyPEM}},
						}},
						AlpnProtocols: []string{"h2", "http/1.1"},
					},
				})},
			},
		}
		if c.hostname != "" {
			fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{c.hostname}}
		}
		out = append(out, fc)
	}
	return out
}

// tlsInspector reads the SNI before a filter chain is chosen.
func (b *builder) tlsInspector() []*listenerv3.ListenerFilter {
	return []*listenerv3.ListenerFilter{{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: b.any(&tlsinspectorv3.TlsInspector{})},
	}}
}
