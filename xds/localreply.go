package xds

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// localReplyConfig gives the replies Envoy writes itself the OpenAI-style JSON error body
// the picker uses, {"error":{"message","type","param","code"}}, so a client parses one
// schema whichever component answered. Mappers are tried in order; the first match wins.
//
// The picker's own answers (ImmediateResponse, response code details "infergw_…") and the
// routes' direct responses ("direct_response", already JSON where a client reads them)
// are local replies too: every mapper but the first excludes them, so they keep their bodies.
func (b *builder) localReplyConfig() *hcmv3.LocalReplyConfig {
	unavailable := errorBody(structpb.NewStringValue("endpoint picker unavailable"), "service_unavailable", structpb.NewStringValue("endpoint_picker_unavailable"))
	mappers := make([]*hcmv3.ResponseMapper, 0, 2+len(envoyLocalReplies))
	mappers = append(mappers,
		// A FailClose picker that cannot be reached: its ext_proc stream failed, or it was
		// skipped (failure_mode_allow) and the pool cluster had no endpoint to fall back to.
		b.localReplyMapper(extProcErrorCEL, unavailable),
		b.localReplyMapper(noPickCEL, unavailable),
	)
	for _, r := range envoyLocalReplies {
		cel := envoyOwnReplyCEL + " && response.code == " + r.status
		if r.status == "" {
			cel = envoyOwnReplyCEL + " && response.code >= 400"
		}
		msg := structpb.NewStringValue(r.message)
		if r.message == "" {
			// Envoy's own reason ("no healthy upstream", "upstream request timeout", …):
			// fixed texts of Envoy's, never the client's input.
			msg = structpb.NewStringValue("%LOCAL_REPLY_BODY%")
		}
		mappers = append(mappers, b.localReplyMapper(cel, errorBody(msg, r.errType, structpb.NewStringValue(r.code))))
	}
	return &hcmv3.LocalReplyConfig{Mappers: mappers}
}

// envoyLocalReplies are the replies Envoy itself sends, by status; the last row (no
// status) catches every other error status. An empty message means Envoy's own text.
var envoyLocalReplies = []struct {
	status, errType, code, message string
}{
	{"400", "invalid_request_error", "bad_request", "the request is not valid HTTP"},
	{"404", "invalid_request_error", "not_found", "no route matches this request"},
	{"408", "invalid_request_error", "request_timeout", "the request was not received in time"},
	{"413", "invalid_request_error", "request_too_large", "request body is larger than the gateway accepts"},
	{"426", "invalid_request_error", "upgrade_required", "HTTP/1.1 or newer is required"},
	{"431", "invalid_request_error", "request_header_fields_too_large", "request headers are too large"},
	{"502", "server_error", "bad_gateway", ""},
	{"503", "service_unavailable", "upstream_unavailable", ""},
	{"504", "server_error", "upstream_timeout", ""},
	{"", "server_error", "%RESPONSE_CODE_DETAILS%", ""},
}

// extProcErrorCEL matches local replies caused by an ext_proc stream failure (their
// response code details start with "ext_proc_error").
const extProcErrorCEL = `response.code == 503 && response.code_details.startsWith('ext_proc_error')`

// noPickCEL matches a pool request that reached its cluster without the picker's choice
// and found no endpoint: the FailClose pool's cluster has none to fall back to.
const noPickCEL = `response.code == 503 && response.code_details == 'no_healthy_upstream' && xds.cluster_name.startsWith('pool/') && !('` + HeaderDestinationEndpoint + `' in request.headers)`

// envoyOwnReplyCEL matches local replies that are neither the picker's (details
// "infergw_<code>", from its ImmediateResponse) nor a route's direct response.
const envoyOwnReplyCEL = `!response.code_details.startsWith('infergw_') && response.code_details != 'direct_response'`

func errorBody(message *structpb.Value, errType string, code *structpb.Value) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"error": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"message": message,
			"type":    structpb.NewStringValue(errType),
			"param":   structpb.NewNullValue(),
			"code":    code,
		}}),
	}}
}

func (b *builder) localReplyMapper(cel string, body *structpb.Struct) *hcmv3.ResponseMapper {
	return &hcmv3.ResponseMapper{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name:       "envoy.access_loggers.extension_filters.cel",
			ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: b.any(&celv3.ExpressionFilter{Expression: cel})},
		}}},
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format:      &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: body},
			ContentType: "application/json",
		},
	}
}
