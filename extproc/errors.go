package extproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/infergw/infergw/extproc/openai"
	"github.com/infergw/infergw/router"
)

// apiError is an error answered to the client as an ImmediateResponse: one row of the
// status table in README.md. code is also the error_code label of the error metric.
type apiError struct {
	status  int
	errType string
	code    string
	param   string
	message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message) }

func errBadJSON(err error) *apiError {
	return &apiError{400, "invalid_request_error", "invalid_json", "", "request body is not valid JSON: " + err.Error()}
}

func errNoModel() *apiError {
	return &apiError{400, "invalid_request_error", "missing_model", "model", "request body has no \"model\" string"}
}

func errEmptyBody() *apiError {
	return &apiError{400, "invalid_request_error", "missing_body", "", "request body is empty; expected a JSON object with a \"model\""}
}

func errEmptyModel() *apiError {
	return &apiError{400, "invalid_request_error", "missing_model", "model", "request body has an empty \"model\""}
}

// errNoRoute answers a request without a model on a listener that routes by model and has
// no route for requests without one (the status and code of Envoy's own "no route" reply).
func errNoRoute() *apiError {
	return &apiError{404, "invalid_request_error", "not_found", "", "no route matches this request: it names no model and every route needs one"}
}

func errModelNotFound(model string) *apiError {
	return &apiError{404, "invalid_request_error", "model_not_found", "model", fmt.Sprintf("the model %q does not exist or is not served by this gateway", truncateForEcho(model))}
}

// maxEchoBytes bounds what of a client's input an error message or log line repeats: a
// 100 KB model name reflected back in full would let a client amplify or smuggle content.
const maxEchoBytes = 256

// truncateForEcho returns s cut to at most maxEchoBytes on a UTF-8 boundary, marked with
// "…" when it was cut.
func truncateForEcho(s string) string {
	if len(s) <= maxEchoBytes {
		return s
	}
	cut := maxEchoBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func errTooLarge(limit int) *apiError {
	return &apiError{413, "invalid_request_error", "request_too_large", "", fmt.Sprintf("request body is larger than the limit of %d bytes", limit)}
}

func errShed(pool string) *apiError {
	return &apiError{429, "rate_limit_error", "rate_limit_exceeded", "", fmt.Sprintf("pool %s is saturated and the request is sheddable; retry later", pool)}
}

func errNoEndpoint(msg string) *apiError {
	return &apiError{503, "service_unavailable", "no_ready_endpoint", "", msg}
}

func errInternal(msg string) *apiError {
	return &apiError{500, "internal_error", "internal_error", "", msg}
}

// classifyPickError maps router errors to the status table.
func classifyPickError(pool string, err error) *apiError {
	switch {
	case errors.Is(err, router.ErrSaturated):
		return errShed(pool)
	case errors.Is(err, router.ErrNoReadyEndpoint), errors.Is(err, router.ErrEmptySubset),
		errors.Is(err, router.ErrUnknownPool):
		return errNoEndpoint(err.Error())
	default:
		return errInternal("endpoint picker failed: " + err.Error())
	}
}

// classifyParseError maps body parse errors to the status table.
func classifyParseError(err error) *apiError {
	if errors.Is(err, openai.ErrNoModel) {
		return errNoModel()
	}
	return errBadJSON(err)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// body renders the OpenAI-style error JSON. encoding/json escapes whatever the message holds,
// so the body is valid JSON for any input.
func (e *apiError) body() []byte {
	d := errorDetail{Message: e.message, Type: e.errType, Code: e.code}
	if e.param != "" {
		p := e.param
		d.Param = &p
	}
	b, err := json.Marshal(errorBody{Error: d})
	if err != nil { // cannot happen for these field types; keep the client's answer valid anyway
		return []byte(`{"error":{"message":"internal error","type":"internal_error","param":null,"code":"internal_error"}}`)
	}
	return b
}

// immediate builds the ImmediateResponse that ends the exchange with e.
func (e *apiError) immediate() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &extprocv3.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode(e.status)}, //nolint:gosec // G115: an HTTP status (100-599) from this package
				Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setHeader("content-type", "application/json"),
				}},
				Body:    e.body(),
				Details: "infergw_" + e.code,
			},
		},
	}
}
