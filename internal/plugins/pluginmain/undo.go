package pluginmain

// Undo is an ADD's undo stack: each step that changes state pushes its
// reversal; a failed ADD runs them newest first from one defer, so it leaves
// nothing behind.
//
//	var undo pluginmain.Undo
//	defer undo.OnError(&err)
type Undo []func()

// Push records a reversal.
func (u *Undo) Push(fn func()) { *u = append(*u, fn) }

// OnError runs the reversals, newest first, when *err is set.
func (u *Undo) OnError(err *error) {
	if *err == nil {
		return
	}
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
}
