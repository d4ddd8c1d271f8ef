package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Placeholder until the picker package lands; replaced by the real wiring.
func newPickerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "picker",
		Short: "(picker is not built yet)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("picker is not built yet")
		},
	}
}
