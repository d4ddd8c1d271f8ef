package stack

import (
	"testing"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/infergw/infergw/discovery"
)

func TestGatewayURLFollowsListenerAddress(t *testing.T) {
	snap := &discovery.Snapshot{Gateways: []*gwapiv1.Gateway{{Spec: gwapiv1.GatewaySpec{
		Listeners: []gwapiv1.Listener{{Name: "http", Protocol: "HTTP", Port: 8080}},
	}}}}
	for addr, want := range map[string]string{
		"":          "http://127.0.0.1:8080",
		"0.0.0.0":   "http://127.0.0.1:8080",
		"::":        "http://[::1]:8080",
		"127.0.0.9": "http://127.0.0.9:8080",
		"10.1.2.3":  "http://10.1.2.3:8080",
	} {
		got, err := gatewayURL(snap, addr)
		if err != nil || got != want {
			t.Errorf("listener address %q: %q %v, want %q", addr, got, err, want)
		}
	}
	if _, err := gatewayURL(&discovery.Snapshot{}, "127.0.0.1"); err == nil {
		t.Error("no Gateway: no error")
	}
}
