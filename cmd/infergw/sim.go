package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the sim package lands; replaced by the real wiring.
func newSimCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sim",
		Short: "(sim is not built yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("sim is not built yet")
		},
	}
}
