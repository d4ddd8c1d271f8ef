package stack

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infv1 "github.com/infergw/infergw/api/v1"
	"github.com/infergw/infergw/discovery"
	"github.com/infergw/infergw/sim"
)

// TestSimsFollowPoolAnnotations: a pool's sim annotations choose what its sims serve, the
// others serve the base configuration, and an annotation edit restarts the pool's sims
// with the new model (a manifest edit in `infergw up` behaves like a redeploy).
func TestSimsFollowPoolAnnotations(t *testing.T) {
	port := 0
	for attempt := 0; attempt < 20 && port == 0; attempt++ { // a port free on both addresses
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(p))); err == nil {
			l2.Close()
			port = p
		}
		l.Close()
	}
	if port == 0 {
		t.Fatal("no port free on 127.0.0.1 and 127.0.0.2")
	}
	base := sim.DefaultConfig()
	base.TimeScale = 0.01
	base.LoRAAdapters = []string{"food-review-1"}
	m := newSimManager(base, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		if err := m.closeAll(); err != nil {
			t.Error(err)
		}
	})
	pool := func(name, ip string, ann map[string]string) *discovery.Pool {
		return &discovery.Pool{
			InferencePool: &infv1.InferencePool{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: ann},
				Spec:       infv1.InferencePoolSpec{TargetPorts: []infv1.Port{{Number: infv1.PortNumber(port)}}},
			},
			Endpoints: []discovery.Endpoint{{Name: name + "-0", Namespace: "default", IP: ip}},
		}
	}
	snap := func(qwenModel string) *discovery.Snapshot {
		return &discovery.Snapshot{Pools: []*discovery.Pool{
			pool("llama", "127.0.0.1", nil),
			pool("qwen", "127.0.0.2", map[string]string{AnnotationSimModel: qwenModel, AnnotationSimLoRAAdapters: ""}),
		}}
	}
	models := func(ip string) []string {
		t.Helper()
		resp, err := http.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range list.Data {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if err := m.sync(snap("qwen-a")); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(models("127.0.0.1")); got != "["+base.Model+" food-review-1]" {
		t.Errorf("unannotated pool's sim serves %s", got)
	}
	if got := fmt.Sprint(models("127.0.0.2")); got != "[qwen-a]" {
		t.Errorf("annotated pool's sim serves %s, want [qwen-a]", got)
	}
	llama := m.running["127.0.0.1:"+strconv.Itoa(port)].srv
	if err := m.sync(snap("qwen-b")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fmt.Sprint(models("127.0.0.2")) != "[qwen-b]" {
		if time.Now().After(deadline) {
			t.Fatalf("after the annotation edit the sim serves %v, want [qwen-b]", models("127.0.0.2"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.running["127.0.0.1:"+strconv.Itoa(port)].srv != llama {
		t.Error("the unchanged pool's sim was restarted")
	}
}
