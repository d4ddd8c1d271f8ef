package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

const maxModelsBytes = 4 << 20

var errNotOpenAI = errors.New("not an OpenAI model list")

// modelList is the OpenAI GET /v1/models answer; vLLM sets parent on LoRA adapters.
type modelList struct {
	Data []struct {
		ID     string  `json:"id"`
		Parent *string `json:"parent"`
	} `json:"data"`
}

// refreshModels learns which models and adapters the endpoint serves. A failure keeps
// the last known list (an unknown list filters nothing).
func (r *Router) refreshModels(ctx context.Context, e *endpoint, url string) {
	ms, err := r.fetchModels(ctx, url)
	if err != nil {
		if ctx.Err() == nil {
			r.metrics.modelsErrors.WithLabelValues(e.pool, e.spec.Address).Inc()
			r.log.Debug("router: model list refresh failed", "pool", e.pool, "endpoint", e.spec.Address, "error", err)
		}
		return
	}
	e.models.Store(&ms)
}

func (r *Router) fetchModels(ctx context.Context, url string) (modelSet, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("models %s: %w", url, err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("models %s: %w", url, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("models %s: status %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxModelsBytes))
	if err != nil {
		return nil, fmt.Errorf("models %s: read: %w", url, err)
	}
	ms, err := parseModelList(body)
	if err != nil {
		return nil, fmt.Errorf("models %s: %w", url, err)
	}
	return ms, nil
}

// parseModelList parses an OpenAI model list into id → parent ("" for base models).
func parseModelList(body []byte) (modelSet, error) {
	var list modelList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotOpenAI, err)
	}
	if list.Data == nil {
		return nil, fmt.Errorf("%w: no data array", errNotOpenAI)
	}
	ms := make(modelSet, len(list.Data))
	for _, m := range list.Data {
		if m.ID == "" {
			continue
		}
		parent := ""
		if m.Parent != nil && *m.Parent != m.ID {
			parent = *m.Parent
		}
		ms[m.ID] = parent
	}
	return ms, nil
}
