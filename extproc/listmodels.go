package extproc

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/infergw/infergw/discovery"
)

// AnnotationBaseModels on an InferencePool fixes adapters' base models for body-based
// routing ("adapter=base[,adapter=base…]"), where the servers' /v1/models does not say
// (or says it only once an adapter is loaded). It wins over what the servers list.
const AnnotationBaseModels = "infergw.dev/base-models"

// maxBaseModels bounds the configured adapter → base entries of one snapshot.
const maxBaseModels = 10000

// baseModelsOf reads every pool's AnnotationBaseModels. A malformed item is logged and
// skipped; the first pool (in snapshot order) that names an adapter wins.
func (s *Server) baseModelsOf(snap *discovery.Snapshot) map[string]string {
	out := map[string]string{}
	for _, p := range snap.Pools {
		v := p.Annotations[AnnotationBaseModels]
		if v == "" {
			continue
		}
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			adapter, base, ok := strings.Cut(item, "=")
			adapter, base = strings.TrimSpace(adapter), strings.TrimSpace(base)
			if !ok || adapter == "" || base == "" {
				s.log.Warn("pool annotation: item is not adapter=base; skipped", "pool", discovery.Key(p.Namespace, p.Name),
					"annotation", AnnotationBaseModels, "item", truncateForEcho(item))
				continue
			}
			if _, dup := out[adapter]; dup {
				continue
			}
			if len(out) >= maxBaseModels {
				s.log.Warn("too many configured base models; the rest are ignored", "limit", maxBaseModels)
				return out
			}
			out[adapter] = base
		}
	}
	return out
}

// modelObject is one entry of the OpenAI model list the gateway answers.
type modelObject struct {
	ID      string  `json:"id"`
	Object  string  `json:"object"`
	Created int64   `json:"created"`
	OwnedBy string  `json:"owned_by"`
	Parent  *string `json:"parent"`
}

type modelListBody struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

// answerModelList answers GET /v1/models for the route's pools: the union of what their
// servers list (an adapter keeps its parent), plus the model names InferenceModelRewrites
// accept, deduplicated and sorted by id.
func (x *exchange) answerModelList(st *routingState) {
	x.picked, x.rejected = true, true // the exchange ends with this answer
	pools, err := parsePools(x.listModels)
	if err != nil {
		x.reject(errInternal("proxy sent a bad list of pools: " + err.Error()))
		return
	}
	models := map[string]string{}
	for _, p := range pools {
		if x.s.catalog != nil {
			for id, parent := range x.s.catalog.PoolModels(p.Key) {
				if old, ok := models[id]; !ok || old == "" {
					models[id] = parent
				}
			}
		}
		for _, r := range st.rewrites[p.Key] {
			for _, alias := range r.models {
				if _, ok := models[alias]; !ok {
					models[alias] = ""
				}
			}
		}
	}
	ids := make([]string, 0, len(models))
	for id := range models {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	list := modelListBody{Object: "list", Data: make([]modelObject, 0, len(ids))}
	created := x.s.started.Unix()
	for _, id := range ids {
		m := modelObject{ID: id, Object: "model", Created: created, OwnedBy: "infergw"}
		if parent := models[id]; parent != "" {
			m.Parent = &parent
		}
		list.Data = append(list.Data, m)
	}
	body, err := json.Marshal(list)
	if err != nil {
		x.reject(errInternal(fmt.Sprintf("encode model list: %v", err)))
		return
	}
	x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				setHeader(HeaderContentType, "application/json"),
			}},
			Body:    body,
			Details: "infergw_model_list",
		},
	}})
}
