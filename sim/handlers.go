package sim

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/valyala/fasthttp"
)

func (s *Server) writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode response", "err", err)
		ctx.Error("internal error", fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(b)
}

func (s *Server) writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	s.writeJSON(ctx, e.status, e.body())
}

func (s *Server) handleModels(ctx *fasthttp.RequestCtx) {
	base := s.cfg.Model
	list := modelList{Object: "list", Data: []modelCard{{
		ID: base, Object: "model", Created: s.created, OwnedBy: "vllm", Root: base,
		MaxModelLen: s.cfg.MaxModelLen, Permission: []string{},
	}}}
	s.adaptersMu.RLock()
	names := make([]string, 0, len(s.adapters))
	for name := range s.adapters {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		list.Data = append(list.Data, modelCard{
			ID: name, Object: "model", Created: s.created, OwnedBy: "vllm", Root: s.adapters[name],
			Parent: &base, MaxModelLen: s.cfg.MaxModelLen, Permission: []string{},
		})
	}
	s.adaptersMu.RUnlock()
	s.writeJSON(ctx, fasthttp.StatusOK, list)
}

func (s *Server) handleLoadLoRA(ctx *fasthttp.RequestCtx) {
	req, apiErr := decodeLoRARequest(ctx.PostBody())
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	if req.LoRAName == "" || req.LoRAPath == "" {
		s.writeError(ctx, badRequest("Both 'lora_name' and 'lora_path' must be provided."))
		return
	}
	if req.LoRAName == s.cfg.Model {
		s.writeError(ctx, badRequest("The lora adapter '%s' has the base model's name.", req.LoRAName))
		return
	}
	s.adaptersMu.Lock()
	_, exists := s.adapters[req.LoRAName]
	if !exists {
		s.adapters[req.LoRAName] = req.LoRAPath
	}
	s.adaptersMu.Unlock()
	if exists {
		s.writeError(ctx, &apiError{status: fasthttp.StatusBadRequest, errType: "InvalidUserInput",
			message: fmt.Sprintf("The lora adapter '%s' has already been loaded.", req.LoRAName)})
		return
	}
	s.log.Info("lora adapter loaded", "lora_name", req.LoRAName)
	ctx.SetStatusCode(fasthttp.StatusOK)
	fmt.Fprintf(ctx, "Success: LoRA adapter '%s' added successfully.", req.LoRAName)
}

func (s *Server) handleUnloadLoRA(ctx *fasthttp.RequestCtx) {
	req, apiErr := decodeLoRARequest(ctx.PostBody())
	if apiErr != nil {
		s.writeError(ctx, apiErr)
		return
	}
	if req.LoRAName == "" {
		s.writeError(ctx, badRequest("'lora_name' must be provided."))
		return
	}
	s.adaptersMu.Lock()
	_, exists := s.adapters[req.LoRAName]
	delete(s.adapters, req.LoRAName)
	s.adaptersMu.Unlock()
	if !exists {
		s.writeError(ctx, &apiError{status: fasthttp.StatusNotFound, errType: "NotFoundError", param: "lora_name",
			message: fmt.Sprintf("The lora adapter '%s' cannot be found.", req.LoRAName)})
		return
	}
	s.log.Info("lora adapter unloaded", "lora_name", req.LoRAName)
	ctx.SetStatusCode(fasthttp.StatusOK)
	fmt.Fprintf(ctx, "Success: LoRA adapter '%s' removed successfully.", req.LoRAName)
}

func decodeLoRARequest(body []byte) (*loadLoRARequest, *apiError) {
	var req loadLoRARequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, badRequest("invalid JSON body: %v", err)
	}
	return &req, nil
}

// servesModel reports whether name is the base model or a loaded adapter, and which adapter
// ("" for the base model).
func (s *Server) servesModel(name string) (adapter string, ok bool) {
	if name == s.cfg.Model {
		return "", true
	}
	s.adaptersMu.RLock()
	_, ok = s.adapters[name]
	s.adaptersMu.RUnlock()
	return name, ok
}
