package attack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/extproc"
	"github.com/infergw/infergw/router"
)

var transports = []extproc.Transport{extproc.TransportInline, extproc.TransportGRPCGo}

// picker is a real picker (extproc.Server over a real router that scrapes a real HTTP
// model server on 127.0.0.2) on one transport, on a loopback port.
type picker struct {
	addr string
}

func startPicker(t *testing.T, tr extproc.Transport) *picker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable: %v", err)
	}
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprint(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"base\"} 0\n"+
				"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"base\"} 0.1\n")
		case "/v1/models":
			fmt.Fprint(w, `{"object":"list","data":[{"id":"base","object":"model"}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	backend.Listener = lis
	backend.Start()
	t.Cleanup(backend.Close)
	port := lis.Addr().(*net.TCPAddr).Port

	reg := prometheus.NewRegistry()
	r, err := router.New(router.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	srv, err := extproc.NewServer(r, extproc.Options{Registerer: reg, Transport: tr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.ApplySnapshot(&discovery.Snapshot{Version: 1, Pools: []*discovery.Pool{{
		InferencePool: &infv1.InferencePool{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "main"},
			Spec: infv1.InferencePoolSpec{
				TargetPorts:       []infv1.Port{{Number: infv1.PortNumber(port)}},
				EndpointPickerRef: infv1.EndpointPickerRef{Name: "picker"},
			},
		},
		Endpoints: []discovery.Endpoint{{Name: "main-0", Namespace: "default", IP: "127.0.0.2", Labels: map[string]string{"app": "main"}}},
	}}})
	deadline := time.Now().Add(10 * time.Second)
	for r.PoolStats("default/main").Ready != 1 || !r.ServesModel("default/main", "base") {
		if time.Now().After(deadline) {
			t.Fatal("router never saw the backend ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	g, err := srv.NewGRPCServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(gl) }()
	t.Cleanup(func() {
		g.Close()
		<-served
	})
	return &picker{addr: gl.Addr().String()}
}

// Messages of one request in FULL_DUPLEX_STREAMED mode both ways.
func requestHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
			ResponseBodyMode: extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
		},
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/v1/completions")},
				{Key: "content-type", RawValue: []byte("application/json")}}}}},
	}
}

func requestBody() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
		Body: []byte(`{"model":"base","prompt":"hello"}`), EndOfStream: true}}}
}

func responseHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}}}}
}

func responseBody(b []byte) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: b}}}
}

// legitRequest is what Envoy does for one request, on its own connection (grpc-go's
// client): it must get the picker's routing answer while an attack runs.
func legitRequest(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	for _, m := range []*extprocv3.ProcessingRequest{requestHeaders(), requestBody()} {
		if err := st.Send(m); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	resp, err := st.Recv()
	if err != nil {
		return fmt.Errorf("recv: %w", err)
	}
	dest := ""
	for _, h := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == "x-gateway-destination-endpoint" {
			dest = string(h.GetHeader().GetRawValue()) + h.GetHeader().GetValue()
		}
	}
	if !strings.HasPrefix(dest, "127.0.0.2:") {
		return fmt.Errorf("no pick in the answer: %v", resp)
	}
	return st.CloseSend()
}

// meter samples the heap while an attack runs and takes the process's CPU time. The
// client and the server share the process; the attacking client holds little (it keeps
// no frames), so the heap's growth is the server's.
type meter struct {
	gogc     int
	base     uint64
	cpu0     time.Duration
	mu       sync.Mutex
	peak     uint64
	stop     chan struct{}
	finished chan struct{}
}

func startMeter() *meter {
	runtime.GC()
	base := liveBytes()
	m := &meter{base: base, peak: base, gogc: debug.SetGCPercent(10), cpu0: cpuTime(), stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(m.finished)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
				m.sample()
			}
		}
	}()
	return m
}

// liveBytes is the heap the last GC found live plus goroutine stacks: what the process
// holds, without garbage waiting for the next cycle, and counting the stacks of grpc-go's
// goroutine per stream, memory a server holds as much as a heap object. During an attack
// the meter sets GOGC to 10, so cycles come every 10 % of growth and the live figure
// follows the heap closely; the GC work that costs is the attack's allocations', on
// either transport.
func liveBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	var total uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			total += v.Value.Uint64()
		}
	}
	return total
}

func (m *meter) sample() {
	h := liveBytes()
	m.mu.Lock()
	m.peak = max(m.peak, h)
	m.mu.Unlock()
}

// result is one attack's measurements.
type result struct {
	peakMiB, retainedMiB, cpuSeconds float64
	legit                            string
	note                             string
}

// finish stops sampling; retained is the heap after a GC, with the attacker still
// connected.
func (m *meter) finish() result {
	m.sample()
	close(m.stop)
	<-m.finished
	cpu := cpuTime() - m.cpu0
	debug.SetGCPercent(m.gogc)
	runtime.GC()
	after := liveBytes()
	mib := func(v uint64) float64 {
		if v < m.base {
			return 0
		}
		return float64(v-m.base) / (1 << 20)
	}
	return result{peakMiB: mib(max(m.peak, after)), retainedMiB: mib(after), cpuSeconds: cpu.Seconds()}
}

// cpuTime is the process's CPU time (getrusage): server, attacking client and GC.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// table collects the results for ATTACK_TABLE.
var table = struct {
	sync.Mutex
	rows map[string]map[extproc.Transport]result
}{rows: map[string]map[extproc.Transport]result{}}

func record(name string, tr extproc.Transport, r result) {
	table.Lock()
	defer table.Unlock()
	if table.rows[name] == nil {
		table.rows[name] = map[extproc.Transport]result{}
	}
	table.rows[name][tr] = r
}

func TestMain(m *testing.M) {
	code := m.Run()
	if path := os.Getenv("ATTACK_TABLE"); path != "" {
		var b strings.Builder
		b.WriteString("| attack | transport | peak live heap + stacks, MiB | after, MiB | CPU s (process) | legit request | outcome |\n|---|---|---|---|---|---|---|\n")
		names := make([]string, 0, len(table.rows))
		for n := range table.rows {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			for _, tr := range transports {
				if r, ok := table.rows[n][tr]; ok {
					fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.2f | %s | %s |\n", n, tr, r.peakMiB, r.retainedMiB, r.cpuSeconds, r.legit, r.note)
				}
			}
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// runAttack runs attack against a fresh picker on each transport; attack returns what it
// saw (for the table) and may fail the test. A legitimate request on a new connection
// follows each attack while the attacking connection is still open, and must succeed;
// then the memory bounds are checked.
func runAttack(t *testing.T, name string, peakMiB, retainedMiB float64, attack func(t *testing.T, tr extproc.Transport, addr string) string) {
	runAttackBounds(t, name, func(extproc.Transport) (float64, float64) { return peakMiB, retainedMiB }, attack)
}

// runAttackBounds is runAttack with bounds per transport.
func runAttackBounds(t *testing.T, name string, bounds func(extproc.Transport) (peakMiB, retainedMiB float64), attack func(t *testing.T, tr extproc.Transport, addr string) string) {
	for _, tr := range transports {
		peakMiB, retainedMiB := bounds(tr)
		t.Run(string(tr), func(t *testing.T) {
			p := startPicker(t, tr)
			if err := legitRequest(p.addr); err != nil {
				t.Fatalf("request before the attack: %v", err)
			}
			m := startMeter()
			note := attack(t, tr, p.addr)
			legitErr := legitRequest(p.addr)
			r := m.finish()
			r.note, r.legit = note, "answered"
			if legitErr != nil {
				r.legit = "failed: " + legitErr.Error()
			}
			record(name, tr, r)
			t.Logf("%s on %s: peak +%.1f MiB, after GC +%.1f MiB, CPU %.2f s, legit: %s, %s", name, tr, r.peakMiB, r.retainedMiB, r.cpuSeconds, r.legit, note)
			if legitErr != nil {
				t.Errorf("legitimate request during the attack: %v", legitErr)
			}
			if r.peakMiB > peakMiB {
				t.Errorf("peak heap grew %.1f MiB during the attack, bound %.0f", r.peakMiB, peakMiB)
			}
			if r.retainedMiB > retainedMiB {
				t.Errorf("heap after the attack (GC'd) %.1f MiB above the start, bound %.0f", r.retainedMiB, retainedMiB)
			}
		})
	}
}

// referenceCPU is the CPU seconds this machine, at this moment and with this build (the race
// detector multiplies Go code's cost several times), spends on a fixed piece of Go work
// shaped like a server's frame handling: decoding 1M small protobuf fields and touching a
// map per field. The work bounds of the attacks are multiples of it, so that they hold a
// server to linear work on a slow or busy machine as on a fast one, instead of to a figure
// measured once on one machine.
func referenceCPU() float64 {
	var buf []byte
	for i := 0; i < 1<<20; i++ {
		buf = protowire.AppendBytes(protowire.AppendTag(buf, 1, protowire.BytesType), []byte{byte(i)})
	}
	// The least of three runs: a run the scheduler interrupted is not the machine's speed.
	best := 0.0
	for run := 0; run < 3; run++ {
		seen := make(map[byte]int, 256)
		cpu0 := cpuTime()
		for b := buf; len(b) > 0; {
			_, _, n := protowire.ConsumeField(b)
			if n < 0 {
				break
			}
			seen[b[n-1]]++
			b = b[n:]
		}
		if len(seen) == 0 {
			panic("reference work decoded nothing")
		}
		if d := (cpuTime() - cpu0).Seconds(); run == 0 || d < best {
			best = d
		}
	}
	return best
}
