package main

import (
	"fmt"
	"io"

	"github.com/infergw/infergw/kvroute"
	"github.com/infergw/infergw/router"
)

// newPluginRegistry returns the scheduler's plugin registry: the router's built-in
// plugins plus those of other packages, each registered by its package's exported
// Register function here (one line per package), so that --scheduler-config and
// --list-plugins see them all.
//
// kv answers the precise-prefix scorer once the KV-event subscriber runs (nil: never).
func newPluginRegistry(kv *kvroute.Ref) (*router.Registry, error) {
	if kv == nil {
		kv = new(kvroute.Ref)
	}
	reg := router.NewRegistry()
	for _, register := range []func(*router.Registry) error{
		// Plugins of other packages register here.
		func(r *router.Registry) error { return kvroute.Register(r, kv) },
	} {
		if err := register(reg); err != nil {
			return nil, fmt.Errorf("plugin registry: %w", err)
		}
	}
	return reg, nil
}

// listPlugins prints the reference of every registered plugin (Markdown).
func listPlugins(w io.Writer) error {
	reg, err := newPluginRegistry(nil)
	if err != nil {
		return err
	}
	return reg.WriteReference(w)
}
