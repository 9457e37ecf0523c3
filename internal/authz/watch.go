package authz

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the folder must stay quiet before a reload, so that an
// editor's or a deploy's burst of writes becomes one reload.
const settle = 200 * time.Millisecond

// Watch reloads the policies whenever a file of the policy folder changes,
// until ctx ends. It returns once the watch is set up; reloads then run in
// the background with Reload's rules: a broken tree is logged and the
// previous policies stay in force.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policies: %w", err)
	}
	if err := addDirs(w, e.dir); err != nil {
		w.Close()
		return fmt.Errorf("watch policies in %s: %w", e.dir, err)
	}
	go e.watchLoop(ctx, w)
	return nil
}

func (e *Engine) watchLoop(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	timer := time.NewTimer(settle)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write|fsnotify.Create) {
				continue
			}
			timer.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			e.log.Warn("policy watch error", "dir", e.dir, "err", err)
		case <-timer.C:
			// New folders (a new project) need watches of their own.
			if err := addDirs(w, e.dir); err != nil {
				e.log.Warn("policy watch error", "dir", e.dir, "err", err)
			}
			_ = e.Reload() // logged by Reload; the old tree stays on error
		}
	}
}

// addDirs watches root and every folder below it, following the symlinks of
// a mounted config map. Adding an already watched folder is harmless.
func addDirs(w *fsnotify.Watcher, root string) error {
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		if depth > 8 {
			return nil
		}
		if err := w.Add(dir); err != nil {
			return err
		}
		des, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, de := range des {
			full := filepath.Join(dir, de.Name())
			fi, err := os.Stat(full)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			// Hidden and linked folders are watched too: a config map swaps
			// its "..data" link on update. depth bounds link loops.
			if fi.IsDir() {
				if err := walk(full, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, 0)
}
