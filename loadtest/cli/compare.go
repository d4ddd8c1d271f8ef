package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/infergw/infergw/loadtest"
)

// newCompareCommand returns `loadtest compare`: runs side by side from their summaries.
func newCompareCommand() *cobra.Command {
	var report string
	cmd := &cobra.Command{
		Use:   "compare BASELINE.json RUN.json [RUN.json…]",
		Short: "compare runs side by side from their --summary-export files",
		Long: `Prints each measure of every run next to the first (the baseline): the value, the change
against the baseline, and whether the change is outside both runs' 95% bootstrap intervals
(better / worse) or within them (~: no clear difference). --report writes the table and
the runs' TTFT and end-to-end CDFs, overlaid, as one HTML page.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			runs := make([]loadtest.NamedSummary, 0, len(args))
			for _, a := range args {
				r, err := loadtest.ReadSummary(a)
				if err != nil {
					return err
				}
				runs = append(runs, r)
			}
			if err := loadtest.WriteCompareText(cmd.OutOrStdout(), runs); err != nil {
				return err
			}
			if report == "" {
				return nil
			}
			f, err := os.Create(report)
			if err != nil {
				return fmt.Errorf("compare report: %w", err)
			}
			if err := loadtest.WriteCompareHTML(f, runs); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
	}
	cmd.Flags().StringVar(&report, "report", "", "also write the comparison as a self-contained HTML page to FILE")
	return cmd
}
