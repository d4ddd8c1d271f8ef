package xds

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/infergw/infergw/model"
)

// BodyMode is how Envoy's ext_proc filter sends a message body to the picker.
type BodyMode string

const (
	// BodyFullDuplexStreamed streams body chunks both ways (the GIE default).
	BodyFullDuplexStreamed BodyMode = "FULL_DUPLEX_STREAMED"
	// BodyBuffered buffers the whole request body before sending it (request side only).
	BodyBuffered BodyMode = "BUFFERED"
	// BodyStreamed streams body chunks to the picker; the picker answers each chunk (response side only).
	BodyStreamed BodyMode = "STREAMED"
)

// Options tune the translation. The zero value is usable: Defaults fills in every unset field.
type Options struct {
	// ListenerAddress is the IP every Envoy listener binds to. Default "0.0.0.0".
	ListenerAddress string
	// ListenerPortMap maps a Gateway listener port to the port Envoy binds for it, for a
	// proxy that may not bind the Gateway's port itself (a non-root Envoy and port 80,
	// reached through a Service whose port 80 targets 10080). Unmapped ports are bound as
	// they are.
	ListenerPortMap map[int32]int32
	// GatewayPorts, when set, gives every (Gateway, listener port) an Envoy port of its own
	// from this range (model.Options.GatewayPorts): one address per Gateway, each reached
	// through its own Service. ListenerPortMap does not apply then.
	GatewayPorts model.PortRange
	// ReadyPort, when set, adds a listener on that port answering 200 to every request: a
	// readiness probe for an Envoy whose other ports are allocated per Gateway (it opens
	// only once Envoy has its first configuration from the control plane).
	ReadyPort int32
	// RouteTimeout is the whole-request timeout of routes without an HTTPRoute request
	// timeout. Zero (the default) disables it: LLM streams may run for minutes.
	RouteTimeout time.Duration
	// StreamIdleTimeout ends a stream with no bytes in either direction for this long.
	// Default 5m (a model can think for a long time before its first token).
	StreamIdleTimeout time.Duration
	// ConnectTimeout is the upstream TCP connect timeout of every cluster. Default 5s.
	ConnectTimeout time.Duration
	// NumRetries is how often Envoy retries a request whose connection failed, was refused
	// or reset before any response byte; each retry goes to the next endpoint the picker
	// listed. Default 2; negative disables retries.
	NumRetries int
	// RequestBodyMode and ResponseBodyMode are the ext_proc body modes of FailClose pool
	// routes (FailOpen routes always use BUFFERED and STREAMED). Defaults BUFFERED and
	// STREAMED: the only pair with which Envoy 1.40 lets a streaming response continue when
	// the picker is lost mid-response (every pool route fails open in ext_proc; FailClose
	// pools fail closed in their cluster). FULL_DUPLEX_STREAMED (the GIE default) spares
	// the per-chunk picker round trip of STREAMED and Envoy's buffering of the request, but
	// a picker crash then cuts the responses streaming through it.
	RequestBodyMode  BodyMode
	ResponseBodyMode BodyMode
	// NoResponseObserver leaves every response body of a pool route to the picker's own
	// filter, one round trip per chunk. By default (with STREAMED responses) a second
	// ext_proc filter in observability mode reads the bodies that need no change, and the
	// picker turns its own body processing off for them (observer.go).
	NoResponseObserver bool
	// PickerMessageTimeout bounds each picker answer in BUFFERED/STREAMED modes (Envoy
	// applies no per-message timeout in FULL_DUPLEX_STREAMED). Default 30s, because the
	// picker may queue a request while the pool is saturated.
	PickerMessageTimeout time.Duration
	// MaxRequestsPerCluster raises Envoy's circuit-breaker limits (default 1024), which
	// long-lived LLM streams reach quickly. Default 100000.
	MaxRequestsPerCluster uint32
	// DisablePicker routes pool traffic without the endpoint picker: no ext_proc on pool
	// routes, and the pool cluster's override-host fallback is plain round robin, so Envoy's
	// own load balancing chooses every endpoint. It exists as the "round-robin" baseline of
	// the routing benchmark (bench/routing); a real deployment never wants it.
	DisablePicker bool
	// PickerHealthInterval is how often Envoy checks each picker's readiness over gRPC
	// health (a picker that is down or not ready gets no requests; its pools fail open or
	// closed at once). Default 1s; negative disables the checks.
	PickerHealthInterval time.Duration
	// FirstByteTimeout bounds each try of a pool request until the first response byte
	// (Envoy's per_try_timeout, which Envoy ignores once the response to the client has
	// started, so a long stream is never cut). A try that times out is retried on the
	// picker's next endpoint (NumRetries). Default 0: off, because a non-streaming
	// completion sends its first byte only when generation ends; set it where requests
	// stream, or per pool with the infergw.dev/first-byte-timeout annotation.
	FirstByteTimeout time.Duration
	// RetryBudgetPercent caps the retries in flight on a pool cluster at this percentage
	// of its active requests (at least 3 are always allowed): retries cannot storm a pool
	// that is failing everywhere. Default 20; negative removes the budget.
	RetryBudgetPercent float64
	// MaxRequestBodyBytes is how much of a request body Envoy buffers on a pool route
	// (ext_proc BUFFERED mode, and retries); a larger body gets 413. Default 16 MiB, the
	// picker's own --max-body-bytes default.
	MaxRequestBodyBytes uint64
	// PickerTLS, when set, makes every picker cluster connect with TLS (see PickerTLS).
	// Default: plaintext.
	PickerTLS PickerTLS
}

// Defaults returns o with every unset field set to its default.
func (o Options) Defaults() Options {
	if o.ListenerAddress == "" {
		o.ListenerAddress = "0.0.0.0"
	}
	if o.StreamIdleTimeout == 0 {
		o.StreamIdleTimeout = 5 * time.Minute
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.NumRetries == 0 {
		o.NumRetries = 2
	}
	if o.RequestBodyMode == "" {
		o.RequestBodyMode = BodyBuffered
	}
	if o.ResponseBodyMode == "" {
		o.ResponseBodyMode = BodyStreamed
	}
	if o.PickerMessageTimeout == 0 {
		o.PickerMessageTimeout = 30 * time.Second
	}
	if o.MaxRequestBodyBytes == 0 {
		o.MaxRequestBodyBytes = 16 << 20
	}
	if o.PickerHealthInterval == 0 {
		o.PickerHealthInterval = time.Second
	}
	if o.RetryBudgetPercent == 0 {
		o.RetryBudgetPercent = 20
	}
	if o.MaxRequestsPerCluster == 0 {
		o.MaxRequestsPerCluster = 100000
	}
	return o
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// ModelOptions are the options of the model the translation resolves (Translate).
func (o Options) ModelOptions() model.Options {
	return model.Options{GatewayPorts: o.GatewayPorts}
}
