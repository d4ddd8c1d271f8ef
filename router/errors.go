package router

import "errors"

// Sentinel errors of Pick. Callers map them to HTTP status codes with errors.Is; the
// returned errors wrap them with context (pool name, model).
var (
	// ErrUnknownPool: the request names a pool the router does not know (SetPool was never
	// called for it, or it was removed).
	ErrUnknownPool = errors.New("router: unknown pool")
	// ErrNoReadyEndpoint (503): no endpoint is left after filtering (empty pool, a subset
	// hint that matches no endpoint of the pool, or no endpoint serving the model).
	ErrNoReadyEndpoint = errors.New("router: no ready endpoint")
	// ErrEmptySubset (503): the proxy sent a subset hint that lists no endpoint at all.
	ErrEmptySubset = errors.New("router: empty endpoint subset hint")
	// ErrSaturated (429): every candidate endpoint is saturated and the request is
	// sheddable (Priority < 0). Never returned for Priority >= 0.
	ErrSaturated = errors.New("router: all candidate endpoints are saturated")
)
