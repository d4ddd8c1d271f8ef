package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergw/infergw/stack"
)

const (
	qwenModel  = "Qwen/Qwen2.5-1.5B-Instruct"
	embedModel = "BAAI/bge-small-en-v1.5"
)

// annotatedPoolYAML is an InferencePool of the world's picker with annotations (the
// harness's pools have none): what the pool's sims serve, say.
func annotatedPoolYAML(w *world, name string, ann map[string]string) string {
	var a strings.Builder
	for k, v := range ann {
		fmt.Fprintf(&a, "    %s: %q\n", k, v)
	}
	return fmt.Sprintf(`---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %s
  namespace: default
  annotations:
%sspec:
  selector: {matchLabels: {app: %s}}
  targetPorts: [{number: %d}]
  endpointPickerRef: {kind: Service, name: picker, port: {number: %d}, failureMode: FailClose}
`, name, a.String(), name, w.TargetPort, w.PickerPort)
}

// modelRule is an HTTPRoute rule as GIE's body-based-routing guide writes it.
func modelRule(header, model, pathPrefix, pool string) string {
	return fmt.Sprintf(`    - matches: [{path: {type: PathPrefix, value: %s}, headers: [{name: %s, value: %q}]}]
      backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: %s}]
`, pathPrefix, header, model, pool)
}

// TestManyModelsBehindOneRoute: three models on three pools behind one HTTPRoute written
// for GIE's body-based routing, on real Envoy. Each model reaches its own pool; a LoRA
// adapter no rule names reaches its base model's pool through X-Gateway-Base-Model-Name
// (the base learnt from the servers' /v1/models); an unknown model is a JSON 404
// model_not_found that reaches no server; a client's own X-Gateway-Model-Name cannot
// steer; GET /v1/models is the gateway's union of the three pools plus the rewrite alias.
func TestManyModelsBehindOneRoute(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	w := newWorld(t, ips)
	w.Pods = []pod{
		{Name: "llama-0", IP: ips[0], App: "llama"}, {Name: "llama-1", IP: ips[1], App: "llama"},
		{Name: "qwen-0", IP: ips[2], App: "qwen"}, {Name: "embed-0", IP: ips[3], App: "embed"},
	}
	w.Routes = "  rules:\n" +
		modelRule("X-Gateway-Model-Name", baseModel, "/", "llama") +
		modelRule("X-Gateway-Base-Model-Name", baseModel, "/", "llama") +
		modelRule("X-Gateway-Model-Name", qwenModel, "/", "qwen") +
		modelRule("X-Gateway-Model-Name", "qwen-alias", "/", "qwen") +
		modelRule("X-Gateway-Model-Name", embedModel, "/v1/embeddings", "embed")
	w.Extra = annotatedPoolYAML(w, "llama", map[string]string{stack.AnnotationSimLoRAAdapters: "sql-lora"}) +
		annotatedPoolYAML(w, "qwen", map[string]string{stack.AnnotationSimModel: qwenModel, stack.AnnotationSimLoRAAdapters: ""}) +
		annotatedPoolYAML(w, "embed", map[string]string{stack.AnnotationSimModel: embedModel, stack.AnnotationSimLoRAAdapters: ""}) + `---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: qwen-alias, namespace: default}
spec:
  poolRef: {name: qwen}
  rules: [{matches: [{model: {value: qwen-alias}}], targets: [{modelRewrite: "` + qwenModel + `"}]}]
`
	gw := startGateway(t, w, nil)

	onPool := func(what string, r result, status int, model string, pods ...string) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: status %d, body %.300s", what, r.Status, r.Body)
		}
		if got := r.Header.Get("x-sim-model"); got != model {
			t.Errorf("%s: served model %q, want %q", what, got, model)
		}
		for _, p := range pods {
			if r.Instance == p {
				return
			}
		}
		t.Errorf("%s: answered by %q, want one of %v", what, r.Instance, pods)
	}
	for i := 0; i < 4; i++ {
		onPool("llama", chat(t, gw.url, baseModel, fmt.Sprintf("hello %d", i), nil), 200, baseModel, "llama-0", "llama-1")
		onPool("qwen", chat(t, gw.url, qwenModel, fmt.Sprintf("hello %d", i), nil), 200, qwenModel, "qwen-0")
		emb := post(t, gw.url+"/v1/embeddings", []byte(`{"model":"`+embedModel+`","input":"hello `+fmt.Sprint(i)+`"}`), nil)
		onPool("embeddings", emb, 200, embedModel, "embed-0")
	}
	// The alias rule's pool rewrites it (InferenceModelRewrite) after the body routing chose it.
	onPool("alias", chat(t, gw.url, "qwen-alias", "hi", nil), 200, qwenModel, "qwen-0")

	// The adapter is in no rule: the picker learns sql-lora's parent from /v1/models (the
	// first refresh may not have happened yet when the gateway turns ready).
	eventually(t, 10*time.Second, "the LoRA adapter routed to its base model's pool", func() bool {
		return chat(t, gw.url, "sql-lora", "hi", nil).Status == 200
	})
	for i := 0; i < 4; i++ {
		onPool("adapter", chat(t, gw.url, "sql-lora", fmt.Sprintf("hi %d", i), nil), 200, "sql-lora", "llama-0", "llama-1")
	}

	// One pass over the body: each body-routed request is one ext_proc stream to the picker
	// (the routing and the pick share it), not two; the response observer's streams, which
	// never see the request body, are not counted.
	streams := func() int64 {
		var n int64
		for name, v := range gw.envoyCounters(t, "ext_proc") {
			if strings.HasSuffix(name, ".ext_proc.streams_started") {
				n += v
			}
		}
		return n - gw.observerStreams(t)
	}
	before := streams()
	for i := 0; i < 10; i++ {
		onPool("one pass", chat(t, gw.url, qwenModel, fmt.Sprintf("count %d", i), nil), 200, qwenModel, "qwen-0")
	}
	if got := streams() - before; got != 10 {
		t.Errorf("10 body-routed requests opened %d ext_proc streams, want 10", got)
	}

	r := chat(t, gw.url, "no-such-model", "hi", nil)
	checkOpenAIError(t, "unknown model", r.Status, r.Header.Get("content-type"), r.Body, 404, `"model_not_found"`)
	if r.Instance != "" {
		t.Errorf("the unknown model reached sim %s", r.Instance)
	}
	// An embeddings model on the chat path is not routed by the /v1/embeddings-only rule.
	r = chat(t, gw.url, embedModel, "hi", nil)
	checkOpenAIError(t, "embeddings model on the chat path", r.Status, r.Header.Get("content-type"), r.Body, 404, `"model_not_found"`)

	// The client's own model header is stripped: the body decides.
	onPool("client header", chat(t, gw.url, baseModel, "hi", map[string]string{"X-Gateway-Model-Name": qwenModel}), 200, baseModel, "llama-0", "llama-1")

	resp, err := client.Get(gw.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string  `json:"id"`
			Parent *string `json:"parent"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 || list.Object != "list" {
		t.Fatalf("GET /v1/models: status %d, %v, body %.300s", resp.StatusCode, err, body)
	}
	if resp.Header.Get("x-sim-instance") != "" {
		t.Errorf("GET /v1/models was answered by sim %s, not the gateway", resp.Header.Get("x-sim-instance"))
	}
	got := map[string]string{}
	for _, m := range list.Data {
		if _, dup := got[m.ID]; dup {
			t.Errorf("model %s listed twice", m.ID)
		}
		got[m.ID] = ""
		if m.Parent != nil {
			got[m.ID] = *m.Parent
		}
	}
	want := map[string]string{baseModel: "", "sql-lora": baseModel, qwenModel: "", "qwen-alias": "", embedModel: ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET /v1/models = %v, want %v", got, want)
	}
	gw.checkPickerStreamsClean(t, 20)
}

// TestModelMovedBetweenPoolsUnderLoad: a model's rule is edited from one pool to another
// (both serve it, as when a model is migrated) while a bounded closed-loop load runs
// through real Envoy: no request fails, the load ends up on the new pool.
func TestModelMovedBetweenPoolsUnderLoad(t *testing.T) {
	const model = "moving-model"
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	w := newWorld(t, ips)
	w.Pods = []pod{
		{Name: "old-0", IP: ips[0], App: "old"}, {Name: "old-1", IP: ips[1], App: "old"},
		{Name: "new-0", IP: ips[2], App: "new"}, {Name: "new-1", IP: ips[3], App: "new"},
	}
	routeTo := func(pool string) string {
		return "  rules:\n" + modelRule("X-Gateway-Model-Name", model, "/", pool)
	}
	w.Routes = routeTo("old")
	w.Extra = annotatedPoolYAML(w, "old", map[string]string{stack.AnnotationSimModel: model}) +
		annotatedPoolYAML(w, "new", map[string]string{stack.AnnotationSimModel: model})
	gw := startGateway(t, w, func(c *stack.Config) { c.ProbeModel = model })

	// Closed loop: 4 workers, each pausing 5 ms between requests, at most 4000 requests or
	// 30 s in all. (Unpaced, the sims answer so fast that a count bound can run out before a
	// manifest edit reaches Envoy on a loaded machine.)
	const workers, maxRequests = 4, 4000
	deadline := time.Now().Add(30 * time.Second)
	var mu sync.Mutex
	var failures []string
	var byPod []string // the answering pod of each request, in completion order
	var sent int
	var moved sync.Once
	movedAt := -1
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(`{"model":"` + model + `","max_tokens":2,"messages":[{"role":"user","content":"move"}]}`)
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if sent >= maxRequests || time.Now().After(deadline) {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				status, pod, err := postStatus(gw.url+"/v1/chat/completions", body)
				mu.Lock()
				if err != nil || status != 200 {
					failures = append(failures, fmt.Sprintf("status %d err %v", status, err))
				} else {
					byPod = append(byPod, pod)
				}
				mu.Unlock()
			}
		}()
	}
	// Let the load run on the old pool, then move the model by editing the route.
	eventually(t, 20*time.Second, "load on the old pool", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(byPod) >= 50
	})
	moved.Do(func() {
		mu.Lock()
		movedAt = len(byPod)
		mu.Unlock()
		w.Routes = routeTo("new")
		writeFile(t, filepath.Join(gw.dir, "gateway.yaml"), w.gatewayYAML())
	})
	eventually(t, 20*time.Second, "the load on the new pool", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := len(byPod)
		if n < movedAt+50 {
			return false
		}
		for _, p := range byPod[n-20:] {
			if !strings.HasPrefix(p, "new-") {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed while the model moved: %v", len(failures), len(failures)+len(byPod), failures[:min(len(failures), 5)])
	}
	old, nw := 0, 0
	for _, p := range byPod {
		if strings.HasPrefix(p, "old-") {
			old++
		} else if strings.HasPrefix(p, "new-") {
			nw++
		}
	}
	if old < 50 || nw < 20 || old+nw != len(byPod) {
		t.Fatalf("answers: %d old pool, %d new pool, %d in all", old, nw, len(byPod))
	}
	t.Logf("%d requests, none failed: %d on the old pool, %d on the new one after the edit", len(byPod), old, nw)
	gw.checkPickerStreamsClean(t, int64(len(byPod)))
}

// postStatus sends one request and returns its status and answering pod; for load loops
// that must not call t.Fatal from their goroutines.
func postStatus(url string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("x-sim-instance"), nil
}
