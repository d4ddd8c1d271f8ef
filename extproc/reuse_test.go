package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestExchangesDoNotLeakIntoEachOther: exchanges and their answer blocks are pooled, so
// each request must see none of an earlier one's state. Many streams at once, each a mix
// of request kinds that leave different traces (a BUFFERED model rewrite with a
// corrected content-length, a removed client header and a rewritten JSON response; a
// large full-duplex body answered in several chunks; a small one), each with its own
// prompt. Every answer is checked against its own request only.
func TestExchangesDoNotLeakIntoEachOther(t *testing.T) {
	forEachTransport(t, testExchangesDoNotLeak)
}

func testExchangesDoNotLeak(t *testing.T, tr Transport) {
	h := newHarness(t, Options{Transport: tr})
	const workers, perWorker = 12, 15
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				tag := fmt.Sprintf("request %d/%d", w, i)
				var err error
				switch (w + i) % 3 {
				case 0:
					err = reuseBuffered(h, tag)
				case 1:
					err = reuseDuplex(h, tag, 150_000)
				default:
					err = reuseDuplex(h, tag, 300)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", tag, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// reuseStream opens a stream with its own deadline (the helpers run off the test's
// goroutine, so they return errors instead of failing the test).
func reuseStream(h *harness) (extprocv3.ExternalProcessor_ProcessClient, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	st, err := h.client.Process(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return st, cancel, nil
}

func sendAll(st extprocv3.ExternalProcessor_ProcessClient, msgs ...*extprocv3.ProcessingRequest) error {
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

// streamEnds closes the client's side, as Envoy does when the HTTP exchange is over, and
// checks that the picker ends the stream with OK and no further answer.
func streamEnds(st extprocv3.ExternalProcessor_ProcessClient) error {
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	r, err := st.Recv()
	switch {
	case err == nil:
		return fmt.Errorf("another answer after the response's end: %v", r)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("stream ended with %w", err)
	}
	return nil
}

// checkPickHeaders checks the set and removed headers of a pick against what this request
// alone should cause.
func checkPickHeaders(mut *extprocv3.HeaderMutation, wantLength int, wantRemove []string, streaming bool) error {
	set := setHeaders(mut)
	if len(set[HeaderRequestID]) != 36 || set[HeaderDestination] == "" {
		return fmt.Errorf("pick headers incomplete: %v", set)
	}
	if got, ok := set[HeaderContentLength]; (wantLength < 0) == ok || (ok && got != strconv.Itoa(wantLength)) {
		return fmt.Errorf("content-length %q (set %v), want %d (-1: none)", got, ok, wantLength)
	}
	// A streaming request's pick bounds its first byte; no other's does.
	if got, ok := set[HeaderPerTryTimeout]; ok != streaming || (ok && got != "10000") {
		return fmt.Errorf("%s = %q (set %v), want it set to the 10 s default: %v", HeaderPerTryTimeout, got, ok, streaming)
	}
	if len(set) != 2+map[bool]int{true: 1}[wantLength >= 0]+map[bool]int{true: 1}[streaming] {
		return fmt.Errorf("unexpected headers set: %v", set)
	}
	if rm := mut.GetRemoveHeaders(); fmt.Sprint(rm) != fmt.Sprint(wantRemove) {
		return fmt.Errorf("removed headers %v, want %v", rm, wantRemove)
	}
	return nil
}

// reuseBuffered is a BUFFERED request whose model is rewritten, with a client-sent pool
// header, and a JSON response whose model is written back.
func reuseBuffered(h *harness, tag string) error {
	st, cancel, err := reuseStream(h)
	if err != nil {
		return err
	}
	defer cancel()
	body := fmt.Appendf(nil, `{"model":"friendly","prompt":%q}`, tag)
	if err := sendAll(st, reqHeaders(protocol(buffered, buffered), false, ":path", "/v1/completions",
		"content-length", strconv.Itoa(len(body)), HeaderPool, "spoofed/pool")); err != nil {
		return err
	}
	if r, err := st.Recv(); err != nil || r.GetRequestHeaders() == nil {
		return fmt.Errorf("headers answer %v: %v", r, err)
	}
	if err := sendAll(st, reqBody(body, true)); err != nil {
		return err
	}
	r, err := st.Recv()
	if err != nil {
		return err
	}
	common := r.GetRequestBody().GetResponse()
	newBody := common.GetBodyMutation().GetBody()
	var sent struct{ Model, Prompt string }
	if err := json.Unmarshal(newBody, &sent); err != nil || sent.Model != "lora-a" || sent.Prompt != tag {
		return fmt.Errorf("rewritten body %s (%v)", newBody, err)
	}
	if err := checkPickHeaders(common.GetHeaderMutation(), len(newBody), []string{HeaderPool}, false); err != nil {
		return err
	}
	resp := fmt.Sprintf(`{"model":"lora-a","choices":[{"text":%q}],"usage":{"prompt_tokens":4,"completion_tokens":1}}`, tag)
	if err := sendAll(st, respHeaders(false, ":status", "200", "content-type", "application/json")); err != nil {
		return err
	}
	if r, err := st.Recv(); err != nil || r.GetResponseHeaders() == nil {
		return fmt.Errorf("response headers answer %v: %v", r, err)
	}
	if err := sendAll(st, respBody([]byte(resp), true)); err != nil {
		return err
	}
	if r, err = st.Recv(); err != nil {
		return err
	}
	var back struct {
		Model   string
		Choices []struct{ Text string }
	}
	if err := json.Unmarshal(r.GetResponseBody().GetResponse().GetBodyMutation().GetBody(), &back); err != nil ||
		back.Model != "friendly" || len(back.Choices) != 1 || back.Choices[0].Text != tag {
		return fmt.Errorf("response written back wrongly: %v (%v)", r, err)
	}
	return streamEnds(st)
}

// reuseDuplex is a FULL_DUPLEX_STREAMED request of size prompt bytes, sent in 3 chunks,
// with an SSE response: bytes come back unchanged, no content-length, nothing removed.
func reuseDuplex(h *harness, tag string, size int) error {
	st, cancel, err := reuseStream(h)
	if err != nil {
		return err
	}
	defer cancel()
	body := bytes.Replace(chatRequest("base", size), []byte("The quick"), []byte(tag), 1)
	if err := sendAll(st, reqHeaders(protocol(duplex, duplex), false, ":path", "/v1/chat/completions")); err != nil {
		return err
	}
	chunks := splitN(body, 3)
	for i, c := range chunks {
		if err := sendAll(st, reqBody(c, i == len(chunks)-1)); err != nil {
			return err
		}
	}
	r, err := st.Recv()
	if err != nil {
		return err
	}
	if err := checkPickHeaders(r.GetRequestHeaders().GetResponse().GetHeaderMutation(), -1, nil, true); err != nil {
		return err
	}
	var got []byte
	for {
		r, err := st.Recv()
		if err != nil {
			return fmt.Errorf("body answer: %w", err)
		}
		sb := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sb == nil {
			return fmt.Errorf("want a streamed body answer, got %v", r)
		}
		got = append(got, sb.GetBody()...)
		if sb.GetEndOfStream() {
			break
		}
	}
	if !bytes.Equal(got, body) {
		return fmt.Errorf("body came back different (%d bytes, sent %d)", len(got), len(body))
	}
	sse := sseResponse("base") + "data: " + strconv.Quote(tag) + "\n\n"
	if err := sendAll(st, respHeaders(false, ":status", "200", "content-type", "text/event-stream")); err != nil {
		return err
	}
	if r, err := st.Recv(); err != nil || r.GetResponseHeaders() == nil || r.GetResponseHeaders().GetResponse() != nil {
		return fmt.Errorf("response headers answer should be a plain CONTINUE: %v (%v)", r, err)
	}
	if err := sendAll(st, respBody([]byte(sse), true)); err != nil {
		return err
	}
	r, err = st.Recv()
	if err != nil {
		return err
	}
	if sb := r.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse(); string(sb.GetBody()) != sse || !sb.GetEndOfStream() {
		return fmt.Errorf("response body changed: %v", r)
	}
	return streamEnds(st)
}
