package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
func (r *Router) refreshModels(ctx context.Context, e *endpoint, c *endpointClient, buf *bytes.Buffer) {
	ms, err := r.fetchModels(ctx, c, buf)
	if err != nil {
		if ctx.Err() == nil {
			r.metrics.modelsErrors.WithLabelValues(e.pool, e.spec.Address).Inc()
			r.log.Debug("router: model list refresh failed", "pool", e.pool, "endpoint", e.spec.Address, "error", err)
		}
		return
	}
	e.models.Store(&ms)
}

func (r *Router) fetchModels(ctx context.Context, c *endpointClient, buf *bytes.Buffer) (modelSet, error) {
	buf.Reset()
	status, err := c.get(ctx, "/v1/models", r.cfg.ScrapeTimeout, maxModelsBytes, buf)
	if err != nil {
		return nil, fmt.Errorf("models %s: %w", c.addr, err)
	}
	if status != 200 {
		return nil, fmt.Errorf("models %s: status %d", c.addr, status)
	}
	ms, err := parseModelList(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("models %s: %w", c.addr, err)
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
