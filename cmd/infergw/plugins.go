package main

import (
	"fmt"
	"io"

	"github.com/infergw/infergw/router"
)

// newPluginRegistry returns the scheduler's plugin registry: the router's built-in
// plugins plus those of other packages, each registered by its package's exported
// Register function here (one line per package), so that --scheduler-config and
// --list-plugins see them all.
func newPluginRegistry() (*router.Registry, error) {
	reg := router.NewRegistry()
	for _, register := range []func(*router.Registry) error{
		// Plugins of other packages register here.
	} {
		if err := register(reg); err != nil {
			return nil, fmt.Errorf("plugin registry: %w", err)
		}
	}
	return reg, nil
}

// listPlugins prints the reference of every registered plugin (Markdown).
func listPlugins(w io.Writer) error {
	reg, err := newPluginRegistry()
	if err != nil {
		return err
	}
	return reg.WriteReference(w)
}
