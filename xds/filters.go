package xds

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// headerMods are the header changes of a rule's RequestHeaderModifier and
// ResponseHeaderModifier filters, as Envoy route fields.
type headerMods struct {
	reqAdd     []*corev3.HeaderValueOption
	reqRemove  []string
	respAdd    []*corev3.HeaderValueOption
	respRemove []string
	// redirect, when set, answers the route with a redirect instead of a backend.
	redirect *routev3.RedirectAction
}

// headerModifiers translates the filters infergw supports; the others are reported and
// ignored.
func (b *builder) headerModifiers(routeKey string, ri int, filters []gwapiv1.HTTPRouteFilter) headerMods {
	var m headerMods
	for _, f := range filters {
		switch f.Type {
		case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier != nil {
				m.reqAdd, m.reqRemove = applyHeaderFilter(f.RequestHeaderModifier, m.reqAdd, m.reqRemove)
			}
		case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier != nil {
				m.respAdd, m.respRemove = applyHeaderFilter(f.ResponseHeaderModifier, m.respAdd, m.respRemove)
			}
		case gwapiv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect != nil {
				m.redirect = b.redirect(routeKey, ri, f.RequestRedirect)
			}
		default:
			b.ix.warnf("httproute %s rule %d: filter %s is not supported; ignored", routeKey, ri, f.Type)
		}
	}
	return m
}

// redirect translates a RequestRedirect filter: hostname, status code (302 by default),
// scheme and port. Path rewrites in redirects are not supported (reported).
func (b *builder) redirect(routeKey string, ri int, f *gwapiv1.HTTPRequestRedirectFilter) *routev3.RedirectAction {
	ra := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f.Hostname != nil {
		ra.HostRedirect = string(*f.Hostname)
	}
	if f.StatusCode != nil && *f.StatusCode == 301 {
		ra.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	}
	if f.Scheme != nil {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Port != nil {
		ra.PortRedirect = uint32(*f.Port) //nolint:gosec // G115: a port number validated by the CRD (1-65535)
	}
	if f.Path != nil {
		b.ix.warnf("httproute %s rule %d: RequestRedirect path is not supported; ignored", routeKey, ri)
	}
	return ra
}

func applyHeaderFilter(f *gwapiv1.HTTPHeaderFilter, add []*corev3.HeaderValueOption, remove []string) ([]*corev3.HeaderValueOption, []string) {
	for _, h := range f.Set {
		add = append(add, setHeader(strings.ToLower(string(h.Name)), h.Value))
	}
	for _, h := range f.Add {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: strings.ToLower(string(h.Name)), Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	for _, name := range f.Remove {
		remove = append(remove, strings.ToLower(name))
	}
	return add, remove
}

// setHeader replaces any existing value of the header.
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
