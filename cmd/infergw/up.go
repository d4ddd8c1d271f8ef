package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the up package lands; replaced by the real wiring.
func newUpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "(up is not built yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("up is not built yet")
		},
	}
}
