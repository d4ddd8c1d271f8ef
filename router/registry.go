package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	kjson "sigs.k8s.io/json"
)

// The scheduler is built from plugins: filters narrow the candidates, weighted scorers rank
// them, a picker chooses. Each plugin type is registered in a Registry under a type name
// with a factory that takes its own typed parameters, decoded strictly from a config file.
// A Registry is a value (NewRegistry returns one holding the built-in plugins); a plugin
// that lives in another package registers itself through an exported function of that
// package, called from the command's wiring with the registry the config is read with.

// Kind is the role of a plugin type.
type Kind string

// Kinds the scheduler wires from a profile. Other packages may register plugins of kinds
// of their own (a flow-control policy, say); the scheduler builds and validates them but
// leaves their use to their package (SchedulerConfig.Other, Registry.Build).
const (
	KindFilter         Kind = "filter"
	KindScorer         Kind = "scorer"
	KindPicker         Kind = "picker"
	KindProfileHandler Kind = "profile-handler"
)

// Filter narrows the candidates of a pick with PickContext.Keep. It must leave at least one
// candidate when it received some (a pick whose filters leave none fails with
// ErrNoReadyEndpoint).
type Filter interface {
	Filter(pc *PickContext)
}

// Scorer writes one score in [0,1] per candidate of pc into out (len(out) == pc.Len()),
// higher is better. It runs on the pick's hot path: no allocation, no blocking.
type Scorer interface {
	Score(pc *PickContext, out []float64)
}

// Picker moves the indices of the k chosen candidates to the front of order (a permutation
// of 0..pc.Len()-1), best first. total is each candidate's weighted score sum; it is nil
// for a picker that reports IgnoresScores (the scorers are then not run).
type Picker interface {
	Pick(pc *PickContext, total []float64, order []int32, k int)
}

// scoreIgnorer is implemented by pickers that do not read scores (the random picker).
type scoreIgnorer interface{ IgnoresScores() bool }

// PluginInfo describes a plugin type.
type PluginInfo struct {
	// Type is the unique type name, as written in an EndpointPickerConfig's plugins[].type
	// (GIE's name where the behaviour matches GIE's plugin).
	Type string
	// Kind is the plugin's role.
	Kind Kind
	// ShortName is the plugin's name in infergw's own format (filters[].name,
	// scorers[].name, picker); "" = only Type is accepted there.
	ShortName string
	// Aliases are other type names with the same behaviour and parameters (older GIE names).
	Aliases []string
	// DefaultWeight is a scorer's weight when infergw's format gives none (an
	// EndpointPickerConfig's default weight is 1, as in GIE).
	DefaultWeight float64
	// Doc says what the plugin does, in a sentence or a short paragraph (Markdown).
	Doc string
}

// PluginType is a registrable plugin type: its description, its parameter struct and its
// factory. Make one with NewFilterType, NewScorerType, NewPickerType or NewPluginType.
type PluginType struct {
	PluginInfo
	params   reflect.Type // the parameter struct type, for the reference
	defaults any          // the parameter struct holding the defaults
	build    func(params any) (any, error)
}

// NoParams is the parameter struct of a plugin that takes none: any key is an error.
type NoParams struct{}

// NewFilterType defines a filter type with parameters P (a struct decoded strictly; fields
// keep defaults' values when omitted; a Validate() error method on P is called).
func NewFilterType[P any](info PluginInfo, defaults P, factory func(P) (Filter, error)) PluginType {
	info.Kind = KindFilter
	return newPluginType(info, defaults, func(p P) (any, error) { return factory(p) })
}

// NewScorerType defines a scorer type with parameters P (see NewFilterType).
func NewScorerType[P any](info PluginInfo, defaults P, factory func(P) (Scorer, error)) PluginType {
	info.Kind = KindScorer
	return newPluginType(info, defaults, func(p P) (any, error) { return factory(p) })
}

// NewPickerType defines a picker type with parameters P (see NewFilterType).
func NewPickerType[P any](info PluginInfo, defaults P, factory func(P) (Picker, error)) PluginType {
	info.Kind = KindPicker
	return newPluginType(info, defaults, func(p P) (any, error) { return factory(p) })
}

// NewPluginType defines a plugin of any kind (info.Kind, which must be set) with
// parameters P (see NewFilterType). Its instances are what factory returns.
func NewPluginType[P any](info PluginInfo, defaults P, factory func(P) (any, error)) PluginType {
	return newPluginType(info, defaults, factory)
}

func newPluginType[P any](info PluginInfo, defaults P, factory func(P) (any, error)) PluginType {
	return PluginType{
		PluginInfo: info,
		params:     reflect.TypeFor[P](),
		defaults:   defaults,
		build: func(raw any) (any, error) {
			p, err := decodeParams(defaults, raw)
			if err != nil {
				return nil, err
			}
			inst, err := factory(p)
			if err != nil {
				return nil, err
			}
			if inst == nil {
				return nil, errors.New("factory returned no plugin")
			}
			return inst, nil
		},
	}
}

// decodeParams turns a plugin's parameters into its parameter struct: nil keeps the
// defaults; JSON is decoded strictly (unknown, duplicate or miscased keys are errors) over
// the defaults; a P or *P is taken as is. The result's Validate method, if any, is called.
func decodeParams[P any](defaults P, raw any) (P, error) {
	p := defaults
	switch v := raw.(type) {
	case nil:
	case json.RawMessage:
		if err := decodeStrict(v, &p); err != nil {
			return p, err
		}
	case []byte:
		if err := decodeStrict(v, &p); err != nil {
			return p, err
		}
	case P:
		p = v
	case *P:
		if v != nil {
			p = *v
		}
	default:
		return p, fmt.Errorf("parameters of Go type %T, want JSON or %v", raw, reflect.TypeFor[P]())
	}
	if v, ok := any(&p).(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return p, fmt.Errorf("parameters: %w", err)
		}
	}
	return p, nil
}

// decodeStrict decodes JSON parameters exactly: sigs.k8s.io/json's strict mode reports
// unknown fields, duplicate fields and keys that differ from a field's name only by case,
// which encoding/json alone would accept.
func decodeStrict(data []byte, dst any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil
	}
	strict, err := kjson.UnmarshalStrict(data, dst, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("parameters: %w", err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("parameters: %w", errors.Join(strict...))
	}
	return nil
}

// Registry maps plugin type names to their factories. Make one with NewRegistry; it is not
// safe for concurrent Register calls (register everything at start-up, then read).
type Registry struct {
	types  map[string]*PluginType // by Type and by alias
	byKind map[Kind]map[string]*PluginType
	order  []*PluginType // registration order
}

// NewRegistry returns a registry holding infergw's built-in plugins (plugins.go).
func NewRegistry() *Registry {
	r := &Registry{types: map[string]*PluginType{}, byKind: map[Kind]map[string]*PluginType{}}
	if err := r.Register(builtinPlugins()...); err != nil {
		panic("router: built-in plugins: " + err.Error()) // a programming error, caught by every test
	}
	return r
}

// Register adds plugin types. A type name, alias or short name (within its kind) already
// taken is an error, as is a type without a name, kind or factory.
func (r *Registry) Register(types ...PluginType) error {
	for i := range types {
		t := types[i]
		switch {
		case t.Type == "":
			return errors.New("register plugin: empty type name")
		case t.Kind == "":
			return fmt.Errorf("register plugin %s: no kind", t.Type)
		case t.build == nil:
			return fmt.Errorf("register plugin %s: no factory (make it with NewScorerType and friends)", t.Type)
		case t.DefaultWeight < 0:
			return fmt.Errorf("register plugin %s: negative default weight", t.Type)
		}
		for _, name := range append([]string{t.Type}, t.Aliases...) {
			if prev, dup := r.types[name]; dup {
				return fmt.Errorf("register plugin %s: type name %q is taken by %s", t.Type, name, prev.Type)
			}
		}
		short := r.byKind[t.Kind]
		if short == nil {
			short = map[string]*PluginType{}
			r.byKind[t.Kind] = short
		}
		if t.ShortName != "" {
			if prev, dup := short[t.ShortName]; dup {
				return fmt.Errorf("register plugin %s: %s name %q is taken by %s", t.Type, t.Kind, t.ShortName, prev.Type)
			}
		}
		pt := &t
		for _, name := range append([]string{t.Type}, t.Aliases...) {
			r.types[name] = pt
		}
		if t.ShortName != "" {
			short[t.ShortName] = pt
		}
		r.order = append(r.order, pt)
	}
	return nil
}

// Lookup finds a plugin type by its type name or an alias.
func (r *Registry) Lookup(typ string) (PluginType, bool) {
	t, ok := r.types[typ]
	if !ok {
		return PluginType{}, false
	}
	return *t, true
}

// lookupNative finds a plugin of a kind by the name infergw's format uses: its short name
// or its type name.
func (r *Registry) lookupNative(kind Kind, name string) (*PluginType, bool) {
	if t, ok := r.byKind[kind][name]; ok {
		return t, true
	}
	if t, ok := r.types[name]; ok && t.Kind == kind {
		return t, true
	}
	return nil, false
}

// Types returns the registered plugin types, by kind (filters, scorers, pickers, profile
// handlers, then other kinds) and type name.
func (r *Registry) Types() []PluginType {
	out := make([]PluginType, 0, len(r.order))
	for _, t := range r.order {
		out = append(out, *t)
	}
	slices.SortStableFunc(out, func(a, b PluginType) int {
		if c := kindRank(a.Kind) - kindRank(b.Kind); c != 0 {
			return c
		}
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.Type, b.Type)
	})
	return out
}

func kindRank(k Kind) int {
	if i := slices.Index([]Kind{KindFilter, KindScorer, KindPicker, KindProfileHandler}, k); i >= 0 {
		return i
	}
	return 4
}

// names lists the type names of a kind (for error messages).
func (r *Registry) names(kind Kind, native bool) string {
	var names []string
	for _, t := range r.order {
		if t.Kind != kind {
			continue
		}
		if native && t.ShortName != "" {
			names = append(names, t.ShortName)
		} else {
			names = append(names, t.Type)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// allTypeNames lists every type name and alias (for error messages).
func (r *Registry) allTypeNames() string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Build makes one plugin instance from its spec: the type's factory called with the
// spec's parameters. Errors name the plugin.
func (r *Registry) Build(spec PluginSpec) (any, error) {
	t, ok := r.types[spec.Type]
	if !ok {
		return nil, fmt.Errorf("plugin %s: unknown type %q (known: %s)", spec.displayName(), spec.Type, r.allTypeNames())
	}
	inst, err := t.build(spec.Parameters)
	if err != nil {
		return nil, fmt.Errorf("plugin %s (%s): %w", spec.displayName(), t.Type, err)
	}
	return inst, nil
}
