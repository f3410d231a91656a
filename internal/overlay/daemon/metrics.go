package daemon

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"
)

// metrics is the daemon's state for /metrics, written in Prometheus' text
// format by hand (no client library for a dozen numbers).
type metrics struct {
	mu             sync.Mutex
	ready          bool
	leases         int
	reconciles     uint64
	reconcileErrs  uint64
	reconcileSecs  float64
	lastReconcile  time.Time
	leaseRenewals  uint64
	leaseReacquire uint64
	backendStats   func() map[string]uint64
}

func (m *metrics) setReady(v bool) {
	m.mu.Lock()
	m.ready = v
	m.mu.Unlock()
}

func (m *metrics) isReady() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

func (m *metrics) reconciled(n int, d time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leases = n
	m.reconciles++
	m.reconcileSecs += d.Seconds()
	m.lastReconcile = time.Now()
	if err != nil {
		m.reconcileErrs++
	}
}

func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v)
	}
	counter := func(name, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %g\n", name, help, name, name, v)
	}
	ready := 0.0
	if m.ready {
		ready = 1
	}
	gauge("linen_ready", "1 once the data plane is programmed and subnet.env written.", ready)
	gauge("linen_leases", "Subnet leases in the cluster, the node's own included.", float64(m.leases))
	counter("linen_reconciles_total", "Data-plane reconciliations.", float64(m.reconciles))
	counter("linen_reconcile_errors_total", "Reconciliations that failed.", float64(m.reconcileErrs))
	counter("linen_reconcile_seconds_total", "Time spent reconciling the data plane.", m.reconcileSecs)
	counter("linen_lease_renewals_total", "Renewals of the node's lease.", float64(m.leaseRenewals))
	counter("linen_lease_reacquisitions_total", "Times the node's lease was lost and acquired again.", float64(m.leaseReacquire))
	if m.backendStats != nil {
		stats := m.backendStats()
		keys := make([]string, 0, len(stats))
		for k := range stats {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "# HELP linen_backend Backend counters (packets, bytes, errors), by name.\n# TYPE linen_backend counter\n")
		for _, k := range keys {
			fmt.Fprintf(w, "linen_backend{counter=%q} %d\n", k, stats[k])
		}
	}
}

// handler serves /healthz (alive), /readyz (503 until ready) and /metrics.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.isReady() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m.write(w)
	})
	return mux
}
