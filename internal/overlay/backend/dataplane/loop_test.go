package dataplane

import (
	"errors"
	"testing"
	"time"
)

// calls returns a reconcile function that reports each call on a channel
// and fails its first `failures` calls.
func calls(failures int) (func() error, chan int) {
	ch := make(chan int, 100)
	n := 0
	return func() error {
		n++
		ch <- n
		if n <= failures {
			return errors.New("kernel said no")
		}
		return nil
	}, ch
}

func waitCall(t *testing.T, ch chan int, want int) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("call %d, want %d", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("reconcile call %d did not come", want)
	}
}

func TestLoopRetriesAfterFailureWithBackoff(t *testing.T) {
	fn, ch := calls(2)
	l := NewLoop(fn, 0, nil)
	l.minBackoff, l.maxBackoff = time.Millisecond, 4*time.Millisecond
	l.Start()
	defer l.Close()
	if err := l.Do(fn); err == nil {
		t.Fatal("first call succeeded")
	}
	waitCall(t, ch, 1)
	waitCall(t, ch, 2) // the loop's retry, failing again
	waitCall(t, ch, 3) // the next retry succeeds
}

func TestLoopKickAndResync(t *testing.T) {
	fn, ch := calls(0)
	l := NewLoop(fn, 0, nil)
	l.Start()
	l.Kick()
	waitCall(t, ch, 1)
	l.Close()

	fn, ch = calls(0)
	l = NewLoop(fn, time.Millisecond, nil)
	l.Start()
	waitCall(t, ch, 1)
	waitCall(t, ch, 2)
	l.Close()
}

func TestResyncPeriod(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{{0, DefaultResync}, {-1, 0}, {time.Minute, time.Minute}} {
		if got := ResyncPeriod(Options{Resync: tt.in}); got != tt.want {
			t.Errorf("ResyncPeriod(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
