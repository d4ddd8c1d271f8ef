package kubesource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/internal/envoytest"
	"github.com/infergw/infergw/model"
	"github.com/infergw/infergw/xds"
)

// TestSecretRotationReachesEnvoy follows a certificate rotation the whole way on real parts:
// a kubernetes.io/tls Secret on a real kube-apiserver, named by an HTTPS listener, is
// updated; the Kubernetes source publishes a new snapshot, the xDS server sends the new
// listener, and the same Envoy process (no restart) presents the new certificate.
func TestSecretRotationReachesEnvoy(t *testing.T) {
	bin := envoytest.Binary(t)
	env, f := realAPIFixture(t)
	c := f.c
	ctx, cancel := context.WithCancel(f.ctx) // stops the source at the end
	defer cancel()
	const ns = "edge"
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	f.create(&gwapiv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "infergw"}, Spec: gwapiv1.GatewayClassSpec{ControllerName: model.DefaultControllerName}})
	certOne, keyOne := selfSignedPEM(t, "one.example.com")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certOne, corev1.TLSPrivateKeyKey: keyOne}}
	f.create(secret)
	port := freeTCPPort(t)
	f.create(&gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls"},
		Spec: gwapiv1.GatewaySpec{GatewayClassName: "infergw", Listeners: []gwapiv1.Listener{{
			Name: "https", Port: gwapiv1.PortNumber(port), Protocol: gwapiv1.HTTPSProtocolType,
			TLS: &gwapiv1.ListenerTLSConfig{CertificateRefs: []gwapiv1.SecretObjectReference{{Name: "cert"}}},
		}}},
	})

	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src, err := NewKubeSource(KubeOptions{RESTConfig: env.Config, GatewayAPI: true, Debounce: 50 * time.Millisecond, Registerer: prometheus.NewRegistry()}, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewServer(xds.ServerOptions{Translate: xds.Options{ListenerAddress: "127.0.0.1"}, Registerer: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	snaps, unsubscribe := src.Subscribe()
	defer unsubscribe()
	runDone, done := make(chan error, 1), make(chan struct{})
	defer func() { cancel(); <-done; <-runDone }()
	go func() { runDone <- src.Run(ctx) }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case snap := <-snaps:
				if _, err := srv.Update(ctx, snap); err != nil {
					t.Errorf("xds update: %v", err)
				}
			}
		}
	}()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, lis)
	envoyExited := startEnvoyProcess(t, bin, lis.Addr().String())

	// InsecureSkipVerify: the test reads which certificate is served, whoever signed it.
	servedCN := func() (string, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
			&tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	waitCN := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			cn, err := servedCN()
			if cn == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Envoy serves %q (%v), want %q", cn, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCN("one.example.com")

	certTwo, keyTwo := selfSignedPEM(t, "two.example.com")
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{corev1.TLSCertKey: certTwo, corev1.TLSPrivateKeyKey: keyTwo}
	start := time.Now()
	if err := c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitCN("two.example.com")
	t.Logf("rotated certificate served %v after the Secret update", time.Since(start).Round(time.Millisecond))
	select {
	case <-envoyExited:
		t.Fatal("Envoy exited: the rotation must not need a restart")
	default:
	}
}

func selfSignedPEM(t *testing.T, host string) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEnvoyProcess runs Envoy against the xDS server until the test ends; the channel
// closes if it exits.
func startEnvoyProcess(t *testing.T, bin, xdsAddr string) <-chan struct{} {
	t.Helper()
	boot, err := xds.Bootstrap(xds.BootstrapOptions{XDSAddr: xdsAddr, AdminAddr: fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), NodeID: "rotation-test"})
	if err != nil {
		t.Fatal(err)
	}
	return envoytest.Run(t, bin, boot).Exited
}
