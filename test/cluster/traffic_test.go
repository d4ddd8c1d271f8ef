package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/infergw/infergw/internal/wirescan"
)

// result is one answer through the gateway.
type result struct {
	status   int
	header   http.Header
	body     []byte
	instance string // x-sim-instance: the Pod name of the sim that answered
	upstream string // x-infergw-upstream: the endpoint Envoy sent the request to
	chunks   int    // SSE data events of a streamed answer
	done     bool   // a streamed answer ended with data: [DONE]
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func (e *testEnv) chat(ctx context.Context, model, prompt string, stream bool, hdr map[string]string) (result, error) {
	body, err := json.Marshal(map[string]any{
		"model":      model,
		"max_tokens": 8,
		"stream":     stream,
		"messages":   []map[string]string{{"role": "user", "content": prompt}},
	})
	if err != nil {
		return result{}, err
	}
	return e.post(ctx, "/v1/chat/completions", body, hdr)
}

func (e *testEnv) post(ctx context.Context, path string, body []byte, hdr map[string]string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.envoyURL+path, bytes.NewReader(body))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	r := result{status: resp.StatusCode, header: resp.Header,
		instance: resp.Header.Get("x-sim-instance"), upstream: resp.Header.Get("x-infergw-upstream")}
	if strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		var all bytes.Buffer
		sse := wirescan.NewSSEReader(io.TeeReader(resp.Body, &all), 0)
		for {
			ev, err := sse.Next()
			if err != nil {
				r.body = all.Bytes()
				if errors.Is(err, io.EOF) {
					err = nil
				}
				return r, err
			}
			if string(ev.Data) == "[DONE]" {
				r.done = true
			} else {
				r.chunks++
			}
		}
	}
	r.body, err = io.ReadAll(resp.Body)
	return r, err
}

// loadStats counts the answers of a bounded load.
type loadStats struct {
	mu        sync.Mutex
	ok        int
	failures  map[string]int // "503 {json error}" or the transport error, counted
	instances map[string]int
	bad       []string // non-200 answers that are not a clean OpenAI-style JSON error
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d ok, failures %v, instances %v", s.ok, s.failures, s.instances)
}

func (s *loadStats) failed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.failures {
		n += c
	}
	return n
}

func (s *loadStats) seen() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.instances {
		out[k] = v
	}
	return out
}

// runLoad sends chat completions from `workers` goroutines, one request at a time each with
// a short pause between, until ctx ends: a bounded load (at most `workers` in flight).
func (e *testEnv) runLoad(ctx context.Context, workers int) (*loadStats, func()) {
	s := &loadStats{failures: map[string]int{}, instances: map[string]int{}}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
				r, err := e.chat(rctx, baseModel, fmt.Sprintf("load %d/%d: tell me about the weather", w, i), false, nil)
				rcancel()
				s.mu.Lock()
				switch {
				case err != nil:
					s.failures["transport: "+err.Error()]++
				case r.status == 200:
					s.ok++
					s.instances[r.instance]++
				default:
					s.failures[fmt.Sprintf("%d", r.status)]++
					if !isJSONError(r.body) {
						s.bad = append(s.bad, fmt.Sprintf("%d %q", r.status, r.body))
					}
				}
				s.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}(w)
	}
	return s, func() { cancel(); wg.Wait() }
}

// isJSONError reports whether body is an OpenAI-style error: {"error":{"message":…,"type":…}}.
func isJSONError(body []byte) bool {
	var e struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	return json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Message != "" && e.Error.Type != ""
}
