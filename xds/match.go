package xds

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// precedence orders routes inside a virtual host the Gateway API way: exact path, then the
// longest prefix, then method, most headers, most query params, oldest route, route name,
// rule and match order. Regular-expression paths (implementation-specific) go after prefixes.
type precedence struct {
	pathKind   int // 3 exact, 2 prefix, 1 regex
	pathLen    int
	method     bool
	headers    int
	query      int
	poolHeader bool
	// bodyRouting ranks a body-routing route before routes of equal specificity;
	// gatewayOwned ranks a route the gateway adds after them (bodyrouting.go).
	bodyRouting  bool
	gatewayOwned bool
	created      time.Time
	route        string
	rule         int
	match        int
}

func (p precedence) before(q precedence) bool {
	switch {
	case p.pathKind != q.pathKind:
		return p.pathKind > q.pathKind
	case p.pathLen != q.pathLen:
		return p.pathLen > q.pathLen
	case p.method != q.method:
		return p.method
	case p.headers != q.headers:
		return p.headers > q.headers
	case p.query != q.query:
		return p.query > q.query
	case p.bodyRouting != q.bodyRouting:
		return p.bodyRouting
	case p.gatewayOwned != q.gatewayOwned:
		return q.gatewayOwned
	case !p.created.Equal(q.created):
		return p.created.Before(q.created)
	case p.route != q.route:
		return p.route < q.route
	case p.rule != q.rule:
		return p.rule < q.rule
	case p.match != q.match:
		return p.match < q.match
	default:
		return p.poolHeader && !q.poolHeader
	}
}

// routeMatch translates one HTTPRouteMatch. It rejects what Envoy would NACK (bad regular
// expressions, unknown match types) so that one bad route never blocks a whole update.
func routeMatch(m *gwapiv1.HTTPRouteMatch) (*routev3.RouteMatch, precedence, error) {
	rm := &routev3.RouteMatch{}
	var prec precedence
	pathType, value := gwapiv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			pathType = *m.Path.Type
		}
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
	}
	switch pathType {
	case gwapiv1.PathMatchExact:
		if !strings.HasPrefix(value, "/") {
			return nil, prec, fmt.Errorf("path %q must start with /", value)
		}
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: value}
		prec.pathKind = 3
	case gwapiv1.PathMatchPathPrefix:
		if !strings.HasPrefix(value, "/") {
			return nil, prec, fmt.Errorf("path prefix %q must start with /", value)
		}
		// Gateway API prefixes match whole path segments: "/v1" matches "/v1/x", not "/v1x".
		if trimmed := strings.TrimRight(value, "/"); trimmed == "" {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		} else {
			rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: trimmed}
		}
		prec.pathKind = 2
	case gwapiv1.PathMatchRegularExpression:
		if err := checkRegex(value); err != nil {
			return nil, prec, err
		}
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}
		prec.pathKind = 1
	default:
		return nil, prec, fmt.Errorf("path match type %q is not supported", pathType)
	}
	prec.pathLen = len(value)
	for _, h := range m.Headers {
		sm, err := stringMatch(h.Type != nil && *h.Type == gwapiv1.HeaderMatchRegularExpression, h.Value)
		if err != nil {
			return nil, prec, fmt.Errorf("header %s: %w", h.Name, err)
		}
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 strings.ToLower(string(h.Name)),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	prec.headers = len(m.Headers)
	if m.Method != nil {
		rm.Headers = append(rm.Headers, exactHeader(":method", string(*m.Method)))
		prec.method = true
	}
	for _, q := range m.QueryParams {
		sm, err := stringMatch(q.Type != nil && *q.Type == gwapiv1.QueryParamMatchRegularExpression, q.Value)
		if err != nil {
			return nil, prec, fmt.Errorf("query param %s: %w", q.Name, err)
		}
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         string(q.Name),
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm},
		})
	}
	prec.query = len(m.QueryParams)
	return rm, prec, nil
}

func stringMatch(regex bool, value string) (*matcherv3.StringMatcher, error) {
	if !regex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}, nil
	}
	if err := checkRegex(value); err != nil {
		return nil, err
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}}, nil
}

// checkRegex rejects expressions RE2 (Go's regexp is RE2 syntax) cannot compile.
func checkRegex(expr string) error {
	if expr == "" {
		return errors.New("empty regular expression")
	}
	if _, err := regexp.Compile(expr); err != nil {
		return fmt.Errorf("regular expression %q: %w", expr, err)
	}
	return nil
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}

func cloneMatch(m *routev3.RouteMatch) *routev3.RouteMatch {
	return proto.Clone(m).(*routev3.RouteMatch)
}
