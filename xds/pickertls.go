package xds

import (
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// PickerTLS makes Envoy speak TLS to every endpoint picker (the ext_proc gRPC stream). The
// files are read by Envoy, not by the control plane, so the paths are as Envoy's container
// sees them. All fields empty keeps the picker connection plaintext.
type PickerTLS struct {
	// CAFile verifies the picker's certificate (required when TLS is on).
	CAFile string
	// CertFile and KeyFile are Envoy's client certificate, for a picker that asks for one.
	CertFile, KeyFile string
	// SNI is the server name Envoy sends and requires in the picker certificate's DNS SANs.
	// Empty: each picker Service's own name, <name>.<namespace>.svc (an ExternalName
	// Service's externalName).
	SNI string
}

// Enabled reports whether any TLS setting is given.
func (t PickerTLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.SNI != ""
}

func (t PickerTLS) validate() error {
	if !t.Enabled() {
		return nil
	}
	if t.CAFile == "" {
		return errors.New("picker tls: a CA file is required to verify the picker")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("picker tls: client certificate and key must be given together")
	}
	return nil
}

// pickerTransportSocket is the TLS transport socket of a picker cluster, or nil when picker
// TLS is off. serviceName is the picker Service's DNS name, the default SNI.
//
// A CA alone would accept any certificate the CA signed (Envoy's own client certificate,
// the control plane's); requiring the SNI among the DNS SANs pins the picker's identity.
func (b *builder) pickerTransportSocket(serviceName string) *corev3.TransportSocket {
	t := b.opts.PickerTLS
	if !t.Enabled() {
		return nil
	}
	sni := t.SNI
	if sni == "" {
		sni = serviceName
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		// gRPC needs HTTP/2, and gRPC servers refuse TLS connections that do not offer h2.
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: fileSource(t.CAFile),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: sni}},
			}},
		}},
	}}
	if t.CertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.CertFile),
			PrivateKey:       fileSource(t.KeyFile),
		}}
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(ctx)},
	}
}
