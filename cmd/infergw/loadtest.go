package main

import (
	"github.com/spf13/cobra"

	"github.com/infergw/infergw/loadtest/cli"
)

// newLoadtestCmd wires `infergw loadtest`; flags and behaviour live in loadtest/cli.
func newLoadtestCmd() *cobra.Command { return cli.NewCommand() }
