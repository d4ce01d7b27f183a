package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/trustamp/trustamp/api"
	"github.com/trustamp/trustamp/signing"
)

func newPublishersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "publishers", Short: "Trusted release publisher keys"}
	var (
		cf     clientFlags
		keyF   string
		types  []string
		output string
	)
	add := &cobra.Command{
		Use:   "add NAME --key PUB [--types otelcol,fluent-bit]",
		Short: "Trust a publisher's public key for some package types (audited)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pem, err := os.ReadFile(keyF)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			p, err := c.AddPublisher(cmd.Context(), api.PublisherRequest{Name: args[0], PublicKey: string(pem), Types: types})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "publisher %s trusted (key %s) for %s\n", p.Name, p.KeyHint, typesOrAny(p.Types))
			return nil
		},
	}
	cf.register(add)
	add.Flags().StringVar(&keyF, "key", "", "publisher public key, PEM (required)")
	add.Flags().StringSliceVar(&types, "types", nil, "package types it may publish (default: any)")
	add.MarkFlagRequired("key")
	var lcf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List trusted publishers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := lcf.client(g)
			if err != nil {
				return err
			}
			ps, err := c.Publishers(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), ps)
			}
			rows := make([][]string, 0, len(ps))
			for _, p := range ps {
				rows = append(rows, []string{p.Name, p.KeyHint, typesOrAny(p.Types), fmtTime(&p.AddedAt), p.AddedBy})
			}
			return printTable(cmd.OutOrStdout(), []string{"NAME", "KEY", "TYPES", "ADDED", "BY"}, rows)
		},
	}
	lcf.register(list)
	list.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(add, list)
	return cmd
}

func typesOrAny(t []string) string {
	if len(t) == 0 {
		return "any type"
	}
	return strings.Join(t, ",")
}

func newPackagesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "packages", Short: "Publish, list and yank signed agent releases"}
	cmd.AddCommand(newPublishCmd(g), newPackagesListCmd(g), newYankCmd(g), newPromoteCmd(g), newPinsCmd(g), newRolloutStatusCmd(g), newPackagesShowCmd(g))
	return cmd
}

func newPublishCmd(g *globals) *cobra.Command {
	var (
		cf                     clientFlags
		typ, version, platform string
		bundleFile, output     string
	)
	cmd := &cobra.Command{
		Use:   "publish --type T --version V --platform OS/ARCH [--signature FILE.sigstore.json] FILE",
		Short: "Upload a signed release (streamed; verified against trusted publishers)",
		Long: `publish streams FILE to the server with its Sigstore bundle (from trustamp
sign; default FILE.sigstore.json). The server checks the signature against
the publishers trusted for the type before storing a byte, stores the file
under its SHA-256 (refusing bytes other than the signed ones), and records the
release, audited. Progress goes to stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			if bundleFile == "" {
				bundleFile = args[0] + signing.BundleSuffix
			}
			bundle, err := os.ReadFile(bundleFile)
			if err != nil {
				return fmt.Errorf("--signature: %w", err)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			pr := &progressReader{r: f}
			stop := pr.report(cmd.ErrOrStderr(), fi.Size())
			rel, err := c.Publish(cmd.Context(), typ, version, platform, bundle, pr, fi.Size())
			stop()
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), rel)
			}
			return printTable(cmd.OutOrStdout(), []string{"TYPE", "VERSION", "PLATFORM", "SHA256", "SIZE", "PUBLISHER"},
				[][]string{{rel.Type, rel.Version, rel.Platform, rel.SHA256, fmt.Sprint(rel.Size), rel.Publisher}})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&typ, "type", "", "package type: the agent's service.name, e.g. otelcol (required)")
	cmd.Flags().StringVar(&version, "version", "", "semantic version (required)")
	cmd.Flags().StringVar(&platform, "platform", "", "os/arch, e.g. linux/amd64 (required)")
	cmd.Flags().StringVar(&bundleFile, "signature", "", "Sigstore bundle (default FILE.sigstore.json)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	for _, f := range []string{"type", "version", "platform"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

func newPackagesListCmd(g *globals) *cobra.Command {
	var (
		cf          clientFlags
		typ, output string
	)
	cmd := &cobra.Command{
		Use:   "list [--type T]",
		Short: "List releases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			rs, err := c.Packages(cmd.Context(), url.Values{"type": {typ}})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			rows := make([][]string, 0, len(rs))
			for _, r := range rs {
				rows = append(rows, []string{r.Type, r.Version, r.Platform, r.State, r.SHA256[:16] + "…", fmt.Sprint(r.Size), r.Publisher, fmtTime(&r.PublishedAt)})
			}
			return printTable(cmd.OutOrStdout(), []string{"TYPE", "VERSION", "PLATFORM", "STATE", "SHA256", "SIZE", "PUBLISHER", "PUBLISHED"}, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&typ, "type", "", "only this package type")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newPackagesShowCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "show TYPE VERSION",
		Short: "Show one version's releases on every platform: digest, size, publisher, state",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			rs, err := c.Packages(cmd.Context(), url.Values{"type": {args[0]}, "version": {args[1]}})
			if err != nil {
				return err
			}
			if len(rs) == 0 {
				return fmt.Errorf("no release %s %s (trustamp packages list)", args[0], args[1])
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			var rows [][]string
			for _, r := range rs {
				state := r.State
				if r.StateReason != "" {
					state += " (" + r.StateReason + ")"
				}
				rows = append(rows, []string{"platform", r.Platform}, []string{"  id", r.ID}, []string{"  sha256", r.SHA256},
					[]string{"  size", strconv.FormatInt(r.Size, 10)}, []string{"  publisher", r.Publisher},
					[]string{"  published", fmtTime(&r.PublishedAt) + " by " + r.PublishedBy}, []string{"  state", state})
			}
			return printTable(cmd.OutOrStdout(), []string{"FIELD", "VALUE"}, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newYankCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "yank TYPE VERSION --reason TEXT",
		Short: "Withdraw a release on every platform (audited; never offered again)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			rs, err := c.Yank(cmd.Context(), args[0], args[1], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "yanked %s %s on %d platform(s)\n", args[0], args[1], len(rs))
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why (required, audited)")
	cmd.MarkFlagRequired("reason")
	return cmd
}

func newPromoteCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		labels []string
	)
	cmd := &cobra.Command{
		Use:   "promote TYPE VERSION [--labels k=v]...",
		Short: "Assign a release to the agents of a type (all, or those with the labels); audited",
		Long: `Pins TYPE to VERSION for every agent of that type, or with --labels for the
agents carrying all of those labels (the most specific matching pin wins).
Connected agents are offered it at once. A version lower than what an agent
runs is a deliberate downgrade: the offer is marked so the agent accepts it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := labelSelector(labels, "")
			if err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			p, err := c.Promote(cmd.Context(), args[0], args[1], sel)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s pinned to %s for %s\n", p.Type, p.Version, selectorOrAll(p.Selector))
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&labels, "labels", nil, "only agents with this label, key=value (repeatable)")
	return cmd
}

func selectorOrAll(sel string) string {
	if sel == "" {
		return "every agent of the type"
	}
	return "agents with " + sel
}

func newPinsCmd(g *globals) *cobra.Command {
	return newListCmd(g, listing[api.Pin]{
		Use: "pins", Short: "List which version each package type (and label selector) is pinned to",
		Header: []string{"TYPE", "AGENTS", "VERSION", "BY", "AT"},
		Fetch:  (*api.Client).Pins,
		Row: func(p api.Pin) []string {
			return []string{p.Type, selectorOrAll(p.Selector), p.Version, p.PinnedBy, fmtTime(&p.PinnedAt)}
		},
	})
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var (
		cf     clientFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status TYPE VERSION",
		Short: "Show a release's rollout: agents by state, and each failure",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			c, err := cf.client(g)
			if err != nil {
				return err
			}
			ro, err := c.Rollout(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), ro)
			}
			w := cmd.OutOrStdout()
			for _, r := range ro.Releases {
				state := r.State
				if r.StateReason != "" {
					state += " (" + r.StateReason + ")"
				}
				fmt.Fprintf(w, "%s %s %s: %s\n", r.Type, r.Version, r.Platform, state)
			}
			var rows [][]string
			for _, st := range []string{"offered", "downloading", "installing", "installed", "failed"} {
				rows = append(rows, []string{st, strconv.Itoa(ro.Counts[st])})
			}
			if err := printTable(w, []string{"STATE", "AGENTS"}, rows); err != nil {
				return err
			}
			if len(ro.Failures) == 0 {
				return nil
			}
			fmt.Fprintln(w)
			rows = rows[:0]
			for _, f := range ro.Failures {
				rows = append(rows, []string{f.UID, fmtTime(&f.UpdatedAt), f.Message})
			}
			return printTable(w, []string{"FAILED AGENT", "AT", "MESSAGE"}, rows)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// progressReader counts bytes read; report prints a line a second.
type progressReader struct {
	r io.Reader
	n atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

func (p *progressReader) report(w io.Writer, total int64) (stop func()) {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := p.n.Load()
				fmt.Fprintf(w, "uploaded %d of %d MB (%.0f%%), %.1f MB/s\n", n>>20, total>>20,
					100*float64(n)/float64(max(total, 1)), float64(n)/1e6/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done) }
}
