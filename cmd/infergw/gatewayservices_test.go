package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/infergw/infergw/model"
)

func TestPortRangeFlag(t *testing.T) {
	var r model.PortRange
	v := portRangeValue{&r}
	if err := v.Set("20000-29999"); err != nil || r != (model.PortRange{First: 20000, Last: 29999}) || v.String() != "20000-29999" {
		t.Fatalf("Set(20000-29999) = %v, range %+v, String %q", err, r, v.String())
	}
	for _, bad := range []string{"", "20000", "5-2", "0-10", "1-70000", "a-b", "-1-5"} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestGatewayServiceFlagsNeedEachOther(t *testing.T) {
	r := model.PortRange{First: 20000, Last: 20999}
	on := gatewayServiceFlags{namespace: "infergw", selector: map[string]string{"app": "envoy"}, svcType: "ClusterIP", prefix: "gw"}
	if o, err := (&gatewayServiceFlags{}).options(model.PortRange{}, true, true); err != nil || o != nil {
		t.Errorf("off: %+v, %v", o, err)
	}
	if _, err := (&gatewayServiceFlags{}).options(r, true, true); err == nil {
		t.Error("a port range without a Service namespace accepted (the ports would be unreachable)")
	}
	for name, tc := range map[string]struct {
		r                   model.PortRange
		kubernetes, writeSt bool
	}{"no range": {model.PortRange{}, true, true}, "manifests": {r, false, true}, "no status": {r, true, false}} {
		if _, err := on.options(tc.r, tc.kubernetes, tc.writeSt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := on
	bad.svcType = "ExternalName"
	if _, err := bad.options(r, true, true); err == nil {
		t.Error("ExternalName accepted as the Services' type")
	}
	o, err := on.options(r, true, true)
	if err != nil || o.Namespace != "infergw" || o.Type != corev1.ServiceTypeClusterIP || o.Selector["app"] != "envoy" || o.Prefix != "gw" {
		t.Errorf("on: %+v, %v", o, err)
	}
}
