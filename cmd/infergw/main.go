// Command infergw is the one binary of infergw: the picker, the control plane, the local
// stack, the simulator and the load tester. Subcommands only parse flags and wire packages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "infergw:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "infergw",
		Short:         "A model-aware inference gateway for LLM serving, with Envoy as the data plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newUpCmd(),
		newPickerCmd(),
		newControlPlaneCmd(),
		newSimCmd(),
		newLoadtestCmd(),
	)
	return root
}

// exitCoder lets a subcommand choose the process exit code (the load tester exits 99 when a
// threshold fails, like k6).
type exitCoder interface{ ExitCode() int }

func exitCode(err error) int {
	if ec, ok := err.(exitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
