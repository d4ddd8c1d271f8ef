package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// env is the running cluster with the chart installed, shared by every test of the package
// (set once by TestMain before the tests run, read-only after).
var env *testEnv

// logf prints harness progress with the time since the start, unbuffered, so that a CI log
// shows where a slow or stuck run is.
func newLogf(start time.Time) func(string, ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stderr, "[cluster %6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv("INFERGW_CLUSTER") != "1" {
		fmt.Fprintln(os.Stderr, "cluster tests skipped: set INFERGW_CLUSTER=1 (make test-cluster) to start a one-node cluster on this machine")
		os.Exit(m.Run())
	}
	os.Exit(runWithCluster(m))
}

// requireCluster skips a test when TestMain did not start the cluster.
func requireCluster(t *testing.T) *testEnv {
	t.Helper()
	if env == nil {
		t.Skip("no cluster: set INFERGW_CLUSTER=1 (make test-cluster)")
	}
	return env
}

func runWithCluster(m *testing.M) (code int) {
	start := time.Now()
	logf := newLogf(start)
	fail := func(format string, args ...any) int {
		logf("FAIL: "+format, args...)
		return 1
	}
	if os.Geteuid() != 0 {
		return fail("%v", errNotRoot)
	}
	bin := os.Getenv("INFERGW_K8S_BIN")
	images := os.Getenv("INFERGW_IMAGES")
	tag := os.Getenv("INFERGW_IMAGE_TAG")
	if tag == "" {
		tag = "dev"
	}
	if bin == "" || images == "" {
		return fail("INFERGW_K8S_BIN (test/k8sbin/build.sh --cluster) and INFERGW_IMAGES (make images) must be set")
	}
	var tarballs []string
	names := []string{"pause", "infergw", "sim", "envoy"}
	if os.Getenv("INFERGW_CONFORMANCE") == "1" {
		names = append(names, "echo-basic") // the conformance suite's backends
	}
	for _, name := range names {
		p := filepath.Join(images, name+".tar")
		if _, err := os.Stat(p); err != nil {
			return fail("image %s: %v (run make images)", p, err)
		}
		tarballs = append(tarballs, p)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return fail("%v", err)
	}
	scratch, err := os.MkdirTemp("", "infergw-cluster-")
	if err != nil {
		return fail("%v", err)
	}
	host, err := snapshotHost(scratch, nodeIP, bridgeName)
	if err != nil {
		os.RemoveAll(scratch)
		return fail("%v", err)
	}
	n := &node{bin: bin, dir: scratch, host: host, logf: logf, started: start, imageTag: tag}

	// Teardown runs once: at the end, or when the run is interrupted.
	var once sync.Once
	teardown := func() {
		once.Do(func() {
			t0 := time.Now()
			logf("teardown: stopping the cluster")
			if env != nil {
				env.removeWorkloads(logf)
			}
			n.stopAll()
			logf("teardown: undoing host changes")
			if err := host.undo(filepath.Join(bin, "kube-proxy"), logf); err != nil {
				logf("teardown: %v", err)
				code = 1
			}
			if left := host.leftovers(n.pids()); len(left) > 0 {
				sort.Strings(left)
				logf("FAIL: the run left these behind:\n  %s", strings.Join(left, "\n  "))
				code = 1
			} else {
				logf("teardown: host is as before the run (processes, mounts, iptables, links, address, sysctls, cgroups, paths) in %.1fs", time.Since(t0).Seconds())
			}
		})
	}
	defer teardown()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("%v: tearing down", s)
		teardown()
		os.Exit(130)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	logf("starting a one-node cluster in %s (binaries %s)", scratch, bin)
	if err := n.startNode(ctx, tarballs); err != nil {
		return fail("cluster start: %v", err)
	}
	e, err := newTestEnv(ctx, n, root)
	if err != nil {
		return fail("%v", err)
	}
	env = e
	if err := e.install(ctx); err != nil {
		return fail("install: %v", err)
	}
	logf("cluster and chart ready after %.1fs; running tests", time.Since(start).Seconds())
	code = m.Run()
	logf("tests done after %.1fs (exit %d)", time.Since(start).Seconds(), code)
	return code
}
