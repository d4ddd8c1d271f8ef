package extproc

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/infergw/infergw/contract"
)

// Header names of the GIE endpoint-picker protocol and of infergw; the names the control
// plane relies on too come from package contract.
const (
	HeaderDestination   = contract.HeaderDestinationEndpoint
	HeaderObjective     = contract.HeaderObjective
	HeaderModelRewrite  = contract.HeaderModelRewrite
	HeaderFairnessID    = contract.HeaderFairnessID
	HeaderRequestID     = "x-request-id"
	HeaderPool          = contract.HeaderPool
	HeaderContentLength = "content-length"
	HeaderContentType   = "content-type"
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	// HeaderUpstream is the response header the control plane's routes set to the
	// endpoint Envoy really used (%UPSTREAM_HOST%; xds.HeaderUpstream).
	HeaderUpstream = contract.HeaderUpstream
	headerStatus   = ":status"

	// MetadataPools is the gRPC initial metadata key listing the route's pools.
	MetadataPools = contract.MetadataPools
	// HeaderExchange, MetadataObserver and MetadataObserved: the response observer
	// (observe.go).
	HeaderExchange   = contract.HeaderExchange
	MetadataObserver = contract.MetadataObserver
	MetadataObserved = contract.MetadataObserved
	// NamespaceLB and KeyDestination are where the pick goes in dynamic metadata.
	NamespaceLB    = contract.MetadataNamespaceLB
	KeyDestination = contract.MetadataKeyDestination
	// NamespaceSubset and KeySubset are where the proxy's candidate subset arrives.
	NamespaceSubset = contract.MetadataNamespaceSubset
	KeySubset       = contract.MetadataKeySubset
)

func setHeader(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// requestHeaders is what the picker keeps of the request headers.
type requestHeaders struct {
	path       string
	method     string
	requestID  string
	objective  string
	fairnessID string        // x-gateway-inference-fairness-id, at most maxFairnessIDBytes
	sloTTFT    time.Duration // x-slo-ttft-ms (flow control's EDF deadline); 0 = none
	rewrite    string
	clientPool bool // the client sent x-infergw-pool: it must be removed
	// clientExchange: the client sent x-infergw-exchange; it is removed (or overwritten).
	clientExchange bool
	contentLength  int // -1 when absent or invalid
	traceparent    string
	tracestate     string
}

func (h *requestHeaders) read(headers []wireHeader) {
	h.contentLength = -1
	h.sloTTFT = 0
	for _, hv := range headers {
		// string(hv.key) in a switch does not allocate; the values kept are copied.
		switch string(hv.key) {
		case HeaderContentLength:
			if n, err := strconv.Atoi(string(hv.value)); err == nil && n >= 0 {
				h.contentLength = n
			}
		case ":path":
			h.path = string(hv.value)
		case ":method":
			h.method = string(hv.value)
		case HeaderRequestID:
			h.requestID = string(hv.value)
		case HeaderObjective:
			h.objective = string(hv.value)
		case HeaderFairnessID:
			v := hv.value
			if len(v) > maxFairnessIDBytes {
				v = v[:maxFairnessIDBytes]
			}
			h.fairnessID = string(v)
		case HeaderSLOTTFT:
			h.sloTTFT = parseSLOMillis(hv.value)
		case HeaderModelRewrite:
			h.rewrite = string(hv.value)
		case HeaderPool:
			h.clientPool = true
		case HeaderExchange:
			h.clientExchange = true
		case HeaderTraceparent:
			h.traceparent = string(hv.value)
		case HeaderTracestate:
			h.tracestate = string(hv.value)
		}
	}
}

// newRequestID returns a random UUIDv4-formatted id. Request ids need uniqueness, not
// secrecy, so the fast runtime generator is enough.
func newRequestID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j)) //nolint:gosec // G115: the bytes of v, truncation intended
		}
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// subsetHint reads the proxy's candidate subset from the request's metadata context.
// present is false when there is no hint at all; an empty list is present and empty.
func subsetHint(md *corev3.Metadata) (subset []string, present bool) {
	ns, ok := md.GetFilterMetadata()[NamespaceSubset]
	if !ok {
		return nil, false
	}
	v, ok := ns.GetFields()[KeySubset]
	if !ok {
		return nil, false
	}
	subset = []string{}
	switch k := v.GetKind().(type) {
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if s := e.GetStringValue(); s != "" {
				subset = append(subset, s)
			}
		}
	case *structpb.Value_StringValue:
		// Tolerate a comma-separated string, which some proxies send.
		for _, s := range strings.Split(k.StringValue, ",") {
			if s = strings.TrimSpace(s); s != "" {
				subset = append(subset, s)
			}
		}
	}
	return subset, true
}

// destinationMetadata is the dynamic metadata carrying the pick to Envoy's load balancer.
func destinationMetadata(dest string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		NamespaceLB: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			KeyDestination: structpb.NewStringValue(dest),
		}}),
	}}
}
