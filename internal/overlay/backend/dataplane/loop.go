package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Loop serialises a backend's reconciliations and runs them again on its
// own: when asked to (Kick, e.g. from a link watcher), after a failure (with
// backoff from MinBackoff doubling up to MaxBackoff) and every resync
// period. The reconcile function always works from the backend's latest
// inputs, so a re-run is just another level-triggered pass.
type Loop struct {
	mu        sync.Mutex // held while fn or a Do function runs
	fn        func() error
	resync    time.Duration
	log       *slog.Logger
	kick      chan struct{}
	failed    chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once

	minBackoff, maxBackoff time.Duration
}

// Backoff bounds for re-running a failed reconciliation.
const (
	MinBackoff = time.Second
	MaxBackoff = 30 * time.Second
)

// NewLoop returns a loop around fn (not started). resync <= 0 turns the
// periodic pass off.
func NewLoop(fn func() error, resync time.Duration, log *slog.Logger) *Loop {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Loop{fn: fn, resync: resync, log: log,
		kick: make(chan struct{}, 1), failed: make(chan struct{}, 1), done: make(chan struct{}),
		minBackoff: MinBackoff, maxBackoff: MaxBackoff}
}

// ResyncPeriod turns Options.Resync into the loop's period.
func ResyncPeriod(o Options) time.Duration {
	switch {
	case o.Resync == 0:
		return DefaultResync
	case o.Resync < 0:
		return 0
	}
	return o.Resync
}

// Start starts the background goroutine (once).
func (l *Loop) Start() {
	l.startOnce.Do(func() {
		l.wg.Add(1)
		go l.run()
	})
}

// Do runs f under the loop's lock; if f fails (also with ErrRetry), the
// loop re-runs the reconcile function with backoff until it succeeds.
func (l *Loop) Do(f func() error) error {
	l.mu.Lock()
	err := f()
	l.mu.Unlock()
	if err != nil {
		select {
		case l.failed <- struct{}{}:
		default:
		}
	}
	return err
}

// Kick asks for a reconciliation soon (coalesced).
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Close stops the goroutine and waits for it.
func (l *Loop) Close() {
	l.closeOnce.Do(func() { close(l.done) })
	l.wg.Wait()
}

// Done is closed when Close is called.
func (l *Loop) Done() <-chan struct{} { return l.done }

func (l *Loop) run() {
	defer l.wg.Done()
	var tick <-chan time.Time
	if l.resync > 0 {
		t := time.NewTicker(l.resync)
		defer t.Stop()
		tick = t.C
	}
	var backoff time.Duration
	var retry *time.Timer
	var retryC <-chan time.Time
	arm := func() {
		if retry != nil {
			retry.Stop()
		}
		retry = time.NewTimer(backoff)
		retryC = retry.C
	}
	for {
		why := ""
		select {
		case <-l.done:
			if retry != nil {
				retry.Stop()
			}
			return
		case <-l.failed:
			if backoff == 0 {
				backoff = l.minBackoff
				arm()
			}
			continue
		case <-l.kick:
			why = "kick"
		case <-tick:
			why = "resync"
		case <-retryC:
			why = "retry"
			retryC = nil
		}
		l.mu.Lock()
		err := l.fn()
		l.mu.Unlock()
		if err == nil {
			if backoff != 0 {
				l.log.Info("data plane reconciled after earlier failures", "trigger", why)
			}
			backoff = 0
			if retry != nil {
				retry.Stop()
				retryC = nil
			}
			continue
		}
		switch {
		case backoff == 0:
			backoff = l.minBackoff
		case retryC == nil:
			backoff = min(2*backoff, l.maxBackoff)
		}
		level := slog.LevelWarn
		if errors.Is(err, ErrRetry) {
			level = slog.LevelDebug
		}
		l.log.Log(context.Background(), level, "reconcile data plane", "trigger", why, "err", err, "retry-in", backoff)
		if retryC == nil {
			arm()
		}
	}
}
