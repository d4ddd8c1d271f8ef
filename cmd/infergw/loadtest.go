package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the loadtest package lands; replaced by the real wiring.
func newLoadtestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "loadtest",
		Short: "(loadtest is not built yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("loadtest is not built yet")
		},
	}
}
