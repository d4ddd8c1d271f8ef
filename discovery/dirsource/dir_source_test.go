package dirsource

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergw/infergw/discovery"
	dt "github.com/infergw/infergw/discovery/discoverytest"
)

// writeAtomic replaces a file the way editors and kubectl-like tools do (write a hidden
// temporary file, then rename), so the source never reads a half-written file.
func writeAtomic(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// nextSnapshot waits for a snapshot that satisfies ok, skipping others.
func nextSnapshot(t *testing.T, ch <-chan *discovery.Snapshot, what string, ok func(*discovery.Snapshot) bool) *discovery.Snapshot {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s, open := <-ch:
			if !open {
				t.Fatalf("%s: subscription closed", what)
			}
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("%s: no matching snapshot within 10s", what)
		}
	}
}

func endpointsOf(s *discovery.Snapshot) string {
	if len(s.Pools) == 0 {
		return "<no pool>"
	}
	var names []string
	for _, e := range s.Pools[0].Endpoints {
		names = append(names, e.Name)
	}
	return strings.Join(names, ",")
}

func TestDirSourceFollowsEditsAndKeepsLastGoodSnapshot(t *testing.T) {
	baseline := runtime.NumGoroutine()
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "gateway.yaml"), gatewayDoc+"---\n"+routeDoc)
	writeAtomic(t, filepath.Join(dir, "pool.yaml"), poolDoc+"---\n"+serviceDoc)
	writeAtomic(t, filepath.Join(dir, "pods.yaml"), podDoc("p0", "127.0.0.2", "True")+"---\n"+podDoc("p1", "127.0.0.3", "False"))

	reg := prometheus.NewRegistry()
	var logs lockedBuffer
	src, err := NewDirSource(dir, DirOptions{Debounce: 20 * time.Millisecond, Registerer: reg}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ch, cancelSub := src.Subscribe()
	defer cancelSub()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- src.Run(ctx) }()
	const recoveredLine = "manifests accepted again after an error"

	// 1. The first snapshot: one ready pod of two.
	s1 := nextSnapshot(t, ch, "initial", func(s *discovery.Snapshot) bool { return true })
	if s1.Version != 1 || endpointsOf(s1) != "p0" || len(s1.Gateways) != 1 || len(s1.HTTPRoutes) != 1 || len(s1.Services) != 1 {
		t.Fatalf("initial snapshot: version %d endpoints %q gateways %d routes %d services %d",
			s1.Version, endpointsOf(s1), len(s1.Gateways), len(s1.HTTPRoutes), len(s1.Services))
	}

	// 2. Edit: p1 becomes ready.
	writeAtomic(t, filepath.Join(dir, "pods.yaml"), podDoc("p0", "127.0.0.2", "True")+"---\n"+podDoc("p1", "127.0.0.3", "True"))
	s2 := nextSnapshot(t, ch, "p1 ready", func(s *discovery.Snapshot) bool { return endpointsOf(s) == "p0,p1" })
	if s2.Version <= s1.Version {
		t.Fatalf("version went from %d to %d", s1.Version, s2.Version)
	}

	// 3. Break: a duplicate target port. Nothing is published; the last good one serves.
	errorsBefore := gaugeValue(t, reg, "infergw_discovery_reload_errors_total")
	writeAtomic(t, filepath.Join(dir, "pool.yaml"),
		strings.Replace(poolDoc, "    - number: 8000\n", "    - number: 8000\n    - number: 8000\n", 1)+"---\n"+serviceDoc)
	deadline := time.Now().Add(10 * time.Second)
	for src.LastError() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	wantErr := "pool.yaml: document 1 (InferencePool default/llama): spec.targetPorts[1].number: duplicate port 8000 (also targetPorts[0])"
	if err := src.LastError(); err == nil || err.Error() != wantErr {
		t.Fatalf("LastError = %v, want %q", err, wantErr)
	}
	if cur := src.Current(); cur != s2 {
		t.Fatalf("Current changed to version %d while the directory was invalid", cur.Version)
	}
	if got := gaugeValue(t, reg, "infergw_discovery_reload_errors_total"); got <= errorsBefore {
		t.Fatalf("reload errors %v, want > %v", got, errorsBefore)
	}
	if got := gaugeValue(t, reg, "infergw_discovery_last_good_version"); got != float64(s2.Version) {
		t.Fatalf("last good version gauge %v, want %d", got, s2.Version)
	}
	select {
	case s := <-ch:
		t.Fatalf("snapshot %d published from an invalid directory", s.Version)
	default:
	}
	if strings.Contains(logs.String(), recoveredLine) {
		t.Fatal("a recovery was logged before the fix")
	}

	// 4. Fix, and add a pod in a new subdirectory (watched recursively).
	writeAtomic(t, filepath.Join(dir, "pool.yaml"), poolDoc+"---\n"+serviceDoc)
	writeAtomic(t, filepath.Join(dir, "more", "pods.yaml"), podDoc("p2", "127.0.0.4", "True"))
	s3 := nextSnapshot(t, ch, "fixed", func(s *discovery.Snapshot) bool { return endpointsOf(s) == "p0,p1,p2" })
	if src.LastError() != nil {
		t.Fatalf("LastError after fix: %v", src.LastError())
	}
	if n := strings.Count(logs.String(), recoveredLine); n != 1 {
		t.Fatalf("the recovery was logged %d times, want once:\n%s", n, logs.String())
	}
	if s3.Version <= s2.Version {
		t.Fatalf("version went from %d to %d", s2.Version, s3.Version)
	}
	if ts := gaugeValue(t, reg, "infergw_discovery_last_success_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("success timestamp %v is stale", ts)
	}

	// 5. Delete a file: its pods go away.
	if err := os.Remove(filepath.Join(dir, "pods.yaml")); err != nil {
		t.Fatal(err)
	}
	nextSnapshot(t, ch, "pods.yaml removed", func(s *discovery.Snapshot) bool { return endpointsOf(s) == "p2" })

	// 6. Reloading an unchanged directory publishes nothing.
	before := src.Current().Version
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if src.Current().Version != before {
		t.Fatalf("unchanged reload published version %d", src.Current().Version)
	}

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	cancelSub()
	dt.WaitGoroutines(t, baseline)
}

func TestDirSourceRunFailsOnInvalidInitialDirectory(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, filepath.Join(dir, "o.yaml"), objectiveDoc)
	reg := prometheus.NewRegistry()
	src, err := NewDirSource(dir, DirOptions{Registerer: reg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(context.Background())
	want := "o.yaml: document 1 (InferenceObjective default/critical): spec.poolRef.name: InferencePool default/llama not found"
	if err == nil || !strings.HasSuffix(err.Error(), want) || !strings.Contains(err.Error(), "initial load") {
		t.Fatalf("Run error = %v, want one ending in %q", err, want)
	}
	if src.Current() != nil {
		t.Fatal("snapshot published from an invalid directory")
	}
	if src.LastError() == nil || src.LastError().Error() != strings.TrimPrefix(err.Error(), "discovery: initial load of "+dir+": ") {
		t.Fatal("LastError not recorded")
	}
	if got := gaugeValue(t, reg, "infergw_discovery_reload_errors_total"); got != 1 {
		t.Fatalf("reload errors = %v, want 1", got)
	}
}

func TestNewDirSourceRejectsBadOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f.yaml")
	writeAtomic(t, file, poolDoc)
	for name, dir := range map[string]string{"empty": "", "missing": filepath.Join(t.TempDir(), "nope"), "file": file} {
		if _, err := NewDirSource(dir, DirOptions{}, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	if _, err := NewDirSource(dir, DirOptions{Registerer: reg}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDirSource(dir, DirOptions{Registerer: reg}, nil); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("second source on one registry: %v", err)
	}
}

func TestDirSourceEmptyDirectoryGivesEmptySnapshot(t *testing.T) {
	src, err := NewDirSource(t.TempDir(), DirOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	s := src.Current()
	if s == nil || s.Version != 1 || len(s.Pools)+len(s.Gateways) != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

// lockedBuffer is a bytes.Buffer safe for the source's goroutine and the test's.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
