package main

import (
	"strings"
	"testing"
)

// Picker TLS flags that cannot work are refused at start, before any port is opened or any
// source read, with the reason.
func TestControlPlaneRejectsIncompletePickerTLS(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--picker-tls-cert", "/tls/tls.crt", "--picker-tls-key", "/tls/tls.key"}, "CA file is required"},
		{[]string{"--picker-tls-sni", "epp.llm.svc"}, "CA file is required"},
		{[]string{"--picker-tls-ca", "/tls/ca.crt", "--picker-tls-cert", "/tls/tls.crt"}, "given together"},
	} {
		args := append([]string{"controlplane", "--manifests", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, tc.args...)
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
