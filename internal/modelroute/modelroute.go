// Package modelroute is the wire contract of body-based routing between the control plane
// (xds) and the picker (extproc): the table of model routes a listener's "body-routing"
// route hands to the picker in gRPC initial metadata, and how the picker evaluates it.
//
// Why a table at all: Envoy builds a request's filter chain, per-route configs included,
// from the route it matched first; clearing the route cache later changes the route and
// cluster but not the ext_proc config (envoyproxy/envoy#44739). So the one ext_proc stream
// that reads the body must already know, when it starts, which pools every model route of
// the listener leads to. The control plane writes that table into the body-routing route;
// the picker reads the body once, finds the first route whose model headers match, picks
// an endpoint in that route's pools, sets the headers and has Envoy re-match. The table
// and the routes come in one RouteConfiguration, so a request always sees a consistent pair.
package modelroute

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Header names of GIE's body-based routing.
const (
	HeaderModelName     = "x-gateway-model-name"
	HeaderBaseModelName = "x-gateway-base-model-name"
)

// Metadata keys (gRPC initial metadata the control plane sets on the picker's stream).
const (
	// MetadataTable carries a Table (JSON) on a body-routing route.
	MetadataTable = "x-infergw-model-routes"
	// MetadataListModels carries the pool list (x-infergw-pools syntax) whose models the
	// picker answers GET /v1/models with.
	MetadataListModels = "x-infergw-list-models"
)

// MaxTableBytes bounds an encoded table. Envoy sends it as a gRPC header on every stream,
// and its default header list limit is 60 KiB; the control plane refuses bigger tables.
const MaxTableBytes = 32 << 10

// Cond is one header condition of a route: an exact value or an RE2 expression that must
// match the whole value (Envoy's safe_regex semantics).
type Cond struct {
	Exact string `json:"exact,omitempty"`
	Regex string `json:"regex,omitempty"`
}

// Route is one model route, in the listener's route order.
type Route struct {
	// Model and Base are the route's conditions on X-Gateway-Model-Name and
	// X-Gateway-Base-Model-Name; all must hold. A route without any is a catch-all.
	Model []Cond `json:"model,omitempty"`
	Base  []Cond `json:"base,omitempty"`
	// Pools is the route's pool list in x-infergw-pools syntax ("ns/a" or "ns/a=3,ns/b=1");
	// empty for a route that is not a pool route of this picker (Envoy's re-match alone
	// decides where the request goes).
	Pools string `json:"pools,omitempty"`
}

// Table is the ordered list of model routes a body-routing route can lead to.
type Table struct {
	Routes []Route `json:"routes"`
}

// Encode renders t for gRPC metadata (printable ASCII: JSON with non-ASCII escaped).
func Encode(t Table) (string, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode model routes: %w", err)
	}
	s := asciiJSON(b)
	if len(s) > MaxTableBytes {
		return "", fmt.Errorf("model route table is %d bytes, over the %d-byte limit", len(s), MaxTableBytes)
	}
	return s, nil
}

// asciiJSON escapes every non-ASCII rune of valid JSON as \uXXXX (gRPC metadata values must
// be printable ASCII).
func asciiJSON(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for _, r := range string(b) {
		switch {
		case r < 0x80:
			sb.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&sb, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&sb, `\u%04x`, r)
		}
	}
	return sb.String()
}

// Compiled is a decoded table, ready to match.
type Compiled struct {
	routes []compiledRoute
	// UsesBase reports whether any route has a base-model condition, so that the picker
	// resolves a model's base only when it matters.
	UsesBase bool
}

type compiledRoute struct {
	model, base []matcher
	pools       string
}

type matcher struct {
	exact string
	re    *regexp.Regexp // nil for exact
}

func (m matcher) match(v string, present bool) bool {
	if !present {
		return false // Envoy's header matchers never match an absent header
	}
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.exact
}

// maxRoutes bounds the routes of a decoded table (the metadata comes from Envoy, whose
// configuration the control plane writes; the bound keeps a bad peer from costing much).
const maxRoutes = 1024

// Decode parses and compiles an encoded table.
func Decode(s string) (*Compiled, error) {
	if len(s) > MaxTableBytes {
		return nil, fmt.Errorf("model route table: %d bytes, over the %d-byte limit", len(s), MaxTableBytes)
	}
	var t Table
	if err := json.Unmarshal([]byte(s), &t); err != nil {
		return nil, fmt.Errorf("model route table: %w", err)
	}
	if len(t.Routes) > maxRoutes {
		return nil, fmt.Errorf("model route table: %d routes, over the limit of %d", len(t.Routes), maxRoutes)
	}
	c := &Compiled{routes: make([]compiledRoute, 0, len(t.Routes))}
	for i, r := range t.Routes {
		cr := compiledRoute{pools: r.Pools}
		var err error
		if cr.model, err = compile(r.Model); err != nil {
			return nil, fmt.Errorf("model route table: route %d: %w", i, err)
		}
		if cr.base, err = compile(r.Base); err != nil {
			return nil, fmt.Errorf("model route table: route %d: %w", i, err)
		}
		c.UsesBase = c.UsesBase || len(cr.base) > 0
		c.routes = append(c.routes, cr)
	}
	return c, nil
}

func compile(conds []Cond) ([]matcher, error) {
	out := make([]matcher, 0, len(conds))
	for _, c := range conds {
		switch {
		case c.Regex != "" && c.Exact != "":
			return nil, errors.New("a condition has both exact and regex")
		case c.Regex != "":
			re, err := regexp.Compile("^(?:" + c.Regex + ")$")
			if err != nil {
				return nil, fmt.Errorf("regex %q: %w", c.Regex, err)
			}
			out = append(out, matcher{re: re})
		default:
			out = append(out, matcher{exact: c.Exact})
		}
	}
	return out, nil
}

// Match returns the pool list of the first route whose conditions hold for the headers
// the picker is about to set: model always, base when hasBase. ok is false when no route
// matches (the model is served by no route of the listener).
func (c *Compiled) Match(model, base string, hasBase bool) (pools string, ok bool) {
	for i := range c.routes {
		r := &c.routes[i]
		if all(r.model, model, true) && all(r.base, base, hasBase) {
			return r.pools, true
		}
	}
	return "", false
}

// CatchAll returns the pool list of the first route without conditions: where Envoy sends
// a request that carries no model (and so gets no model header). ok is false when no such
// route exists.
func (c *Compiled) CatchAll() (pools string, ok bool) {
	for i := range c.routes {
		if r := &c.routes[i]; len(r.model) == 0 && len(r.base) == 0 {
			return r.pools, true
		}
	}
	return "", false
}

func all(ms []matcher, v string, present bool) bool {
	for _, m := range ms {
		if !m.match(v, present) {
			return false
		}
	}
	return true
}
