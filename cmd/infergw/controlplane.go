package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the controlplane package lands; replaced by the real wiring.
func newControlPlaneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "controlplane",
		Short: "(controlplane is not built yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("controlplane is not built yet")
		},
	}
}
