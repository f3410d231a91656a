package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

var chainNames = map[string]string{
	"a": "(a) bridge + host-local",
	"b": "(b) bridge(ipMasq) + host-local + portmap, 1 hostPort per pod",
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func (r *Report) find(chain, impl, cs, op string) *Series {
	for _, s := range r.Series {
		if s.Chain == chain && s.Impl == impl && s.Case == cs && s.Op == op {
			return s
		}
	}
	return nil
}

// Throughput is operations per second of a concurrent series.
func (s *Series) Throughput() float64 {
	if s.Wall == 0 {
		return 0
	}
	return float64(len(s.Samples)) / s.Wall.Seconds()
}

// churn is the operations per second of the churn case: ADDs and DELs
// together over its wall time.
func (r *Report) churn(chain, impl string) float64 {
	a, d := r.find(chain, impl, "churn", "ADD"), r.find(chain, impl, "churn", "DEL")
	if a == nil || d == nil || a.Wall == 0 {
		return 0
	}
	return float64(len(a.Samples)+len(d.Samples)) / a.Wall.Seconds()
}

// Print writes the report as Markdown tables: per chain, case and verb the
// median, p90 and p99 of linen and of the reference, and their ratio.
func (r *Report) Print(w io.Writer) {
	var chains []string
	seen := map[string]bool{}
	for _, s := range r.Series {
		if !seen[s.Chain] {
			seen[s.Chain] = true
			chains = append(chains, s.Chain)
		}
	}
	for _, ch := range chains {
		fmt.Fprintf(w, "\n### %s\n\n", chainNames[ch])
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "| case\t verb\t linen median / p90 / p99 (ms)\t reference median / p90 / p99 (ms)\t ratio (median)\t ratio (p90)\t errors |")
		fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t--- |")
		var cases []string
		cseen := map[string]bool{}
		for _, s := range r.Series {
			if s.Chain == ch && !cseen[s.Case] {
				cseen[s.Case] = true
				cases = append(cases, s.Case)
			}
		}
		for _, cs := range cases {
			for _, op := range []string{"ADD", "DEL"} {
				l, ref := r.find(ch, "linen", cs, op), r.find(ch, "reference", cs, op)
				if l == nil || ref == nil {
					continue
				}
				lm, rm := Quantile(l.Samples, 0.5), Quantile(ref.Samples, 0.5)
				l9, r9 := Quantile(l.Samples, 0.9), Quantile(ref.Samples, 0.9)
				fmt.Fprintf(tw, "| %s (n=%d)\t %s\t %s / %s / %s\t %s / %s / %s\t %s\t %s\t %d / %d |\n",
					cs, len(l.Samples), op,
					ms(lm), ms(l9), ms(Quantile(l.Samples, 0.99)),
					ms(rm), ms(r9), ms(Quantile(ref.Samples, 0.99)),
					ratio(lm, rm), ratio(l9, r9), l.Errors, ref.Errors)
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, op := range []string{"ADD", "DEL"} {
			l, ref := r.find(ch, "linen", "concurrent", op), r.find(ch, "reference", "concurrent", op)
			if l == nil || ref == nil || ref.Throughput() == 0 {
				continue
			}
			fmt.Fprintf(w, "- concurrent %s: linen %.0f ops/s, reference %.0f ops/s: %.1fx the reference's throughput\n",
				op, l.Throughput(), ref.Throughput(), l.Throughput()/ref.Throughput())
		}
		if l, ref := r.churn(ch, "linen"), r.churn(ch, "reference"); l > 0 && ref > 0 {
			fmt.Fprintf(w, "- churn (ADD then DEL, back to back, all at once): linen %.0f ops/s, reference %.0f ops/s: %.1fx the reference's throughput\n",
				l, ref, l/ref)
		}
		for _, impl := range []string{"linen", "reference"} {
			var zero, full *Series
			for _, s := range r.Series {
				if s.Chain == ch && s.Impl == impl && s.Op == "ADD" {
					switch {
					case s.Case == "0 pods present":
						zero = s
					case strings.HasSuffix(s.Case, "pods present"):
						full = s
					}
				}
			}
			if zero != nil && full != nil {
				z, f := Quantile(zero.Samples, 0.5), Quantile(full.Samples, 0.5)
				fmt.Fprintf(w, "- %s ADD median with %s: %s ms vs %s ms on an empty node (%+.1f %%)\n",
					impl, strings.TrimSuffix(full.Case, " present"), ms(f), ms(z), 100*(float64(f)/float64(z)-1))
			}
		}
	}
	if r.StateFS != "" {
		fmt.Fprintf(w, "\nPer-pod files (IPAM reservations, result cache, pod records) on %s (%s).\n", r.StateFS, r.StateDir)
	}
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}
