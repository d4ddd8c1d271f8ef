package xds

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
)

// upstreamTLS decodes a cluster's TLS transport socket, nil when it has none.
func upstreamTLS(t *testing.T, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil
	}
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster %s: transport socket %q", c.GetName(), ts.GetName())
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatalf("cluster %s: %v", c.GetName(), err)
	}
	return &ctx
}

// TestPickerTLSOnEveryPickerClusterOnly: with PickerTLS every picker cluster (EDS, DNS and
// ExternalName Services alike) gets TLS with h2, the CA, the client certificate and its own
// Service name as SNI and required SAN; pool and Service-backend clusters stay plaintext.
func TestPickerTLSOnEveryPickerClusterOnly(t *testing.T) {
	snap := failModes(8000, 9002)
	snap.Pools = append(snap.Pools,
		pool("dns", "dns-epp", 9003, infv1.EndpointPickerFailClose, 8000, 2, 1),
		pool("ext", "ext-epp", 9004, infv1.EndpointPickerFailClose, 8000, 2, 1))
	snap.Services = append(snap.Services,
		service("dns-epp", "None", 9003),
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ext-epp"},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "picker.example.net", Ports: []corev1.ServicePort{{Port: 9004}}},
		},
		service("web", "127.0.0.9", 80))
	opts := Options{PickerTLS: PickerTLS{CAFile: "/tls/ca.crt", CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"}}
	res, err := Translate(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantSNI := map[string]string{
		"picker/default/epp/9002":     "epp.default.svc",
		"picker/default/dns-epp/9003": "dns-epp.default.svc",
		"picker/default/ext-epp/9004": "picker.example.net",
	}
	seen := 0
	for _, c := range res.Clusters {
		ctx := upstreamTLS(t, c)
		sni, isPicker := wantSNI[c.GetName()]
		if !isPicker {
			if ctx != nil {
				t.Errorf("non-picker cluster %s has TLS", c.GetName())
			}
			continue
		}
		seen++
		if ctx == nil {
			t.Errorf("picker cluster %s has no TLS", c.GetName())
			continue
		}
		common := ctx.GetCommonTlsContext()
		vc := common.GetValidationContext()
		sans := vc.GetMatchTypedSubjectAltNames()
		switch {
		case ctx.GetSni() != sni:
			t.Errorf("%s: SNI %q, want %q", c.GetName(), ctx.GetSni(), sni)
		case len(common.GetAlpnProtocols()) != 1 || common.GetAlpnProtocols()[0] != "h2":
			t.Errorf("%s: ALPN %v, want [h2]", c.GetName(), common.GetAlpnProtocols())
		case vc.GetTrustedCa().GetFilename() != "/tls/ca.crt":
			t.Errorf("%s: trusted CA %v", c.GetName(), vc.GetTrustedCa())
		case len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || sans[0].GetMatcher().GetExact() != sni:
			t.Errorf("%s: SAN matchers %v, want DNS %s", c.GetName(), sans, sni)
		case len(common.GetTlsCertificates()) != 1 || common.GetTlsCertificates()[0].GetCertificateChain().GetFilename() != "/tls/tls.crt" ||
			common.GetTlsCertificates()[0].GetPrivateKey().GetFilename() != "/tls/tls.key":
			t.Errorf("%s: client certificate %v", c.GetName(), common.GetTlsCertificates())
		}
	}
	if seen != len(wantSNI) {
		t.Errorf("found %d of the %d picker clusters", seen, len(wantSNI))
	}

	// An explicit SNI replaces every picker's default name; without a client certificate
	// none is configured.
	res, err = Translate(snap, Options{PickerTLS: PickerTLS{CAFile: "/tls/ca.crt", SNI: "epp.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Clusters {
		if _, isPicker := wantSNI[c.GetName()]; !isPicker {
			continue
		}
		ctx := upstreamTLS(t, c)
		if ctx.GetSni() != "epp.internal" || ctx.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "epp.internal" {
			t.Errorf("%s: SNI override not applied: %v", c.GetName(), ctx)
		}
		if n := len(ctx.GetCommonTlsContext().GetTlsCertificates()); n != 0 {
			t.Errorf("%s: %d client certificates without CertFile", c.GetName(), n)
		}
	}
}

func TestPickerTLSOffIsPlaintext(t *testing.T) {
	res, err := Translate(failModes(8000, 9002), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Clusters {
		if c.GetTransportSocket() != nil {
			t.Errorf("cluster %s has a transport socket without PickerTLS", c.GetName())
		}
	}
}

func TestPickerTLSInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  PickerTLS
		want string
	}{
		{"no CA", PickerTLS{CertFile: "c", KeyFile: "k"}, "CA file is required"},
		{"SNI only", PickerTLS{SNI: "epp.default.svc"}, "CA file is required"},
		{"cert without key", PickerTLS{CAFile: "ca", CertFile: "c"}, "given together"},
		{"key without cert", PickerTLS{CAFile: "ca", KeyFile: "k"}, "given together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{PickerTLS: tc.tls}
			if err := opts.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
			if _, err := Translate(onePool(), opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Translate: %v, want %q", err, tc.want)
			}
			if _, err := NewServer(ServerOptions{Translate: opts}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewServer: %v, want %q", err, tc.want)
			}
		})
	}
	if err := (Options{PickerTLS: PickerTLS{CAFile: "ca"}}).Validate(); err != nil {
		t.Errorf("CA only: %v", err)
	}
}
