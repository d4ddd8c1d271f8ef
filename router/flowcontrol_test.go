package router

import (
	"strings"
	"testing"
	"time"

	"github.com/infergw/infergw/flowcontrol"
)

// The flowControl section: defaults from the scheduler's saturation section, per-pool
// overrides on top of the section's values, strict keys.
func TestFlowControlConfigParse(t *testing.T) {
	cfg, err := NewRegistry().ParseSchedulerConfig([]byte(`
saturation: {queueDepthThreshold: 3, kvCacheThreshold: 0.7}
flowControl:
  enabled: true
  maxRequests: 100
  requestTTL: 5s
  fairnessPolicy: token-weighted
  saturation: {maxInFlightPerEndpoint: 4}
  pools:
    default/batch: {orderingPolicy: edf, maxRequests: 10, saturation: {kvCacheUtilThreshold: 0.9}}
    default/off: {enabled: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	def := cfg.FlowControl.For("default/other")
	want := flowcontrol.Config{Enabled: true, MaxRequests: 100, RequestTTL: 5 * time.Second, Fairness: flowcontrol.FairnessTokenWeighted,
		Saturation: flowcontrol.SaturationConfig{QueueDepthThreshold: 3, KVCacheUtilThreshold: 0.7, MaxInFlightPerEndpoint: 4}}.WithDefaults()
	if def != want {
		t.Fatalf("default pool:\n got %+v\nwant %+v", def, want)
	}
	batch := cfg.FlowControl.For("default/batch")
	if !batch.Enabled || batch.Ordering != flowcontrol.OrderingEDF || batch.MaxRequests != 10 || batch.MaxFlowRequests != 10 ||
		batch.Fairness != flowcontrol.FairnessTokenWeighted || batch.Saturation.KVCacheUtilThreshold != 0.9 ||
		batch.Saturation.QueueDepthThreshold != 3 || batch.Saturation.MaxInFlightPerEndpoint != 4 {
		t.Fatalf("batch pool override: %+v", batch)
	}
	if cfg.FlowControl.For("default/off").Enabled {
		t.Fatal("default/off is enabled")
	}
}

// Without the section, flow control is off for every pool (today's behaviour).
func TestFlowControlOffByDefault(t *testing.T) {
	cfg, err := NewRegistry().ParseSchedulerConfig([]byte(`picker: max-score`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FlowControl.For("any/pool").Enabled || DefaultSchedulerConfig().FlowControl.For("any/pool").Enabled {
		t.Fatal("flow control on without being asked for")
	}
}

func TestFlowControlConfigRejects(t *testing.T) {
	bad := map[string]string{
		"unknown key":          "flowControl: {enabled: true, maxQueue: 3}",
		"key case":             "flowControl: {Enabled: true}",
		"nested key case":      "flowControl: {saturation: {QueueDepthThreshold: 3}}",
		"pool key case":        "flowControl: {pools: {a/b: {MaxRequests: 3}}}",
		"pools in pools":       "flowControl: {pools: {a/b: {pools: {}}}}",
		"bad policy":           "flowControl: {fairnessPolicy: lottery}",
		"bad pool policy":      "flowControl: {pools: {a/b: {orderingPolicy: lifo}}}",
		"bad duration":         "flowControl: {requestTTL: 5}",
		"negative ttl":         "flowControl: {requestTTL: -1s}",
		"flow over pool":       "flowControl: {maxRequests: 2, maxFlowRequests: 3}",
		"kv threshold over 1":  "flowControl: {saturation: {kvCacheUtilThreshold: 2}}",
		"bad reservation":      "flowControl: {reservation: always}",
		"negative window":      "flowControl: {demandWindow: -1s}",
		"quantile over 1":      "flowControl: {demandQuantile: 1.5}",
		"negative quantile":    "flowControl: {pools: {a/b: {demandQuantile: -0.5}}}",
		"bad batch limit":      "flowControl: {saturation: {batchLimit: guessed}}",
		"a detector as policy": "flowControl: {fairnessPolicy: utilization-detector}",
	}
	for name, y := range bad {
		if _, err := NewRegistry().ParseSchedulerConfig([]byte(y)); err == nil {
			t.Errorf("%s: %q accepted", name, y)
		} else if !strings.Contains(err.Error(), "scheduler config") {
			t.Errorf("%s: error without context: %v", name, err)
		}
	}
}

// A flow-controlled pick stays on the endpoints with room, even when the scorers prefer a
// full one (here: the full one has the empty scraped queue and the KV cache to spare).
func TestPickKeepsToEndpointsWithRoom(t *testing.T) {
	r, _ := newTestRouter(t, nil)
	full := staticEndpoint("10.0.0.1:8000", metricsState{})
	roomy := staticEndpoint("10.0.0.2:8000", metricsState{waiting: 3, kvUsage: 0.5})
	installPool(r, "p", []*endpoint{full, roomy})
	full.inflight.Store(2)
	det := flowcontrol.NewDetector("p", flowcontrol.SaturationConfig{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.9, MaxInFlightPerEndpoint: 2}, nil, nil)
	for i := 0; i < 20; i++ {
		d, err := r.Pick(&Request{Pool: "p", HasRoom: det.HasRoom})
		if err != nil {
			t.Fatal(err)
		}
		if d.Endpoints[0] != roomy.spec.Address {
			t.Fatalf("pick %d went to %s, which has no room", i, d.Endpoints[0])
		}
		d.Done()
	}
	// Without the check the scorers pick the full endpoint at least once.
	sawFull := false
	for i := 0; i < 20 && !sawFull; i++ {
		d, err := r.Pick(&Request{Pool: "p"})
		if err != nil {
			t.Fatal(err)
		}
		sawFull = d.Endpoints[0] == full.spec.Address
		d.Done()
	}
	if !sawFull {
		t.Fatal("the scorers never chose the full endpoint: the test shows nothing")
	}
}

// FuzzFlowControlSection: whatever the flowControl section holds, parsing fails cleanly or
// yields per-pool configs that pass flowcontrol's own validation (a controller can be made
// from every one of them).
func FuzzFlowControlSection(f *testing.F) {
	f.Add([]byte("flowControl: {enabled: true, requestTTL: 5s, fairnessPolicy: token-weighted, saturation: {maxInFlightPerEndpoint: 2}}"))
	f.Add([]byte("flowControl: {pools: {a/b: {enabled: true, maxRequests: 3, orderingPolicy: edf}}}"))
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := reg.ParseSchedulerConfig(b)
		if err != nil {
			return
		}
		all := []flowcontrol.Config{cfg.FlowControl.Default}
		for _, pc := range cfg.FlowControl.Pools {
			all = append(all, pc)
		}
		for _, c := range all {
			if !c.Enabled {
				continue
			}
			if err := c.WithDefaults().Validate(); err != nil {
				t.Fatalf("parsed flow-control config fails validation: %v (%+v)", err, c)
			}
		}
	})
}

func TestFlowControlSheddableHeadroomParse(t *testing.T) {
	cfg, err := NewRegistry().ParseSchedulerConfig([]byte("flowControl: {enabled: true, sheddableHeadroom: 2}"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.FlowControl.For("a/b").SheddableHeadroom; got != 2 {
		t.Fatalf("sheddableHeadroom %d", got)
	}
	if _, err := NewRegistry().ParseSchedulerConfig([]byte("flowControl: {sheddableHeadroom: -1}")); err == nil {
		t.Fatal("negative headroom accepted")
	}
}

// Policies are named by infergw's short names or GIE's plugin type names; the reservation,
// its window and the batch limit are set in the section and per pool.
func TestFlowControlConfigGIENamesAndReservation(t *testing.T) {
	cfg, err := NewRegistry().ParseSchedulerConfig([]byte(`
flowControl:
  enabled: true
  fairnessPolicy: round-robin-fairness-policy
  orderingPolicy: slo-deadline-ordering-policy
  demandWindow: 2s
  pools:
    default/batch: {reservation: none, fairnessPolicy: global-strict, saturation: {batchLimit: none}}
    default/lean: {demandQuantile: 0.9}
`))
	if err != nil {
		t.Fatal(err)
	}
	def := cfg.FlowControl.For("default/other")
	if def.Fairness != flowcontrol.FairnessRoundRobin || def.Ordering != flowcontrol.OrderingEDF || def.DemandWindow != 2*time.Second ||
		def.Reservation != flowcontrol.ReservationDemand || def.Saturation.BatchLimit != flowcontrol.BatchLimitLearned {
		t.Fatalf("default pool: %+v", def)
	}
	b := cfg.FlowControl.For("default/batch")
	if b.Fairness != flowcontrol.FairnessGlobalStrict || b.Ordering != flowcontrol.OrderingEDF || b.Reservation != flowcontrol.ReservationNone ||
		b.Saturation.BatchLimit != flowcontrol.BatchLimitNone || b.DemandWindow != 2*time.Second {
		t.Fatalf("batch pool: %+v", b)
	}
	if def.DemandQuantile != flowcontrol.DefaultDemandQuantile || cfg.FlowControl.For("default/lean").DemandQuantile != 0.9 {
		t.Fatalf("demandQuantile: default %v, lean %v", def.DemandQuantile, cfg.FlowControl.For("default/lean").DemandQuantile)
	}
}
